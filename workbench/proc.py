"""Run a command in its own process group with a timeout; measure wall time and peak memory."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcResult:
    returncode: int | None
    seconds: float
    peak_rss_mb: float
    timed_out: bool
    log_tail: str

    @property
    def crashed(self) -> bool:
        return not self.timed_out and (self.returncode is None or self.returncode != 0)

    def describe_failure(self) -> str:
        if self.timed_out:
            return f"timed out after {self.seconds:.0f} s (raise --timeout)"
        rc = self.returncode
        if rc is not None and rc < 0:
            sig = signal.Signals(-rc).name
            hint = " (likely out of memory)" if sig == "SIGKILL" else ""
            return f"worker killed by {sig}{hint}"
        return f"worker exited with code {rc}"


def run_isolated(cmd: list[str], *, timeout: float, log_path: Path, env: dict | None = None,
                 cwd: str | None = None) -> ProcResult:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, env=env, cwd=cwd)
        deadline = t0 + timeout
        status = rusage = None
        timed_out = False
        while True:
            pid, st, ru = os.wait4(p.pid, os.WNOHANG)
            if pid == p.pid:
                status, rusage = st, ru
                break
            if time.perf_counter() > deadline:
                timed_out = True
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _, status, rusage = os.wait4(p.pid, 0)
                break
            time.sleep(0.05)
        p.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting again
    seconds = time.perf_counter() - t0
    tail = log_path.read_bytes()[-3000:].decode("utf-8", "replace") if log_path.exists() else ""
    return ProcResult(p.returncode, seconds, rusage.ru_maxrss / 1024.0, timed_out, tail)
