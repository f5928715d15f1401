"""Run a command in its own process group with a timeout; measure wall time and peak memory.

Peak memory is the child's own high-water mark (``VmHWM`` in /proc, read every 50 ms; being a
high-water mark, sampling loses only the last 50 ms) plus the resident memory of any helper
processes it starts. ``wait4``'s ``ru_maxrss`` is not used: Linux carries the parent's
high-water mark across fork+exec, so a small child of a large parent would report the parent's.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from exporters.records import OOM_MARKERS


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

    memory_limit_mb: int | None = None

    @property
    def out_of_memory(self) -> bool:
        return self.crashed and any(m in self.log_tail for m in OOM_MARKERS)

    def describe_failure(self) -> str:
        if self.timed_out:
            return f"timed out after {self.seconds:.0f} s (raise --timeout)"
        if self.out_of_memory:
            cap = f" (memory limit {self.memory_limit_mb} MB; raise --memory-limit)" if self.memory_limit_mb else \
                " (free memory or export one precision at a time)"
            return f"out of memory during the conversion{cap}"
        rc = self.returncode
        if rc is not None and rc < 0:
            sig = signal.Signals(-rc).name
            hint = " (likely out of memory)" if sig == "SIGKILL" else ""
            return f"worker killed by {sig}{hint}"
        return f"worker exited with code {rc}"


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
        pass
    return 0


def _tree_peak_kb(pid: int) -> int:
    """The process's VmHWM plus the current VmRSS of its descendants."""
    total = _status_kb(pid, "VmHWM")
    try:
        import psutil

        for c in psutil.Process(pid).children(recursive=True):
            total += _status_kb(c.pid, "VmRSS")
    except Exception:  # the tree changes under us; the next sample catches up
        pass
    return total




def _limit_memory(mb: int | None):
    if not mb:
        return None

    def apply():  # in the child, before exec: a cap on its address space
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (int(mb) << 20, int(mb) << 20))
    return apply


PROJECT_ROOT = Path(__file__).resolve().parents[1]


def worker_env() -> dict:
    """The environment of a worker process (a conversion or an artifact run): this checkout on the
    import path, the venv's bin on PATH (onnx2tf runs onnxsim as a program), TensorFlow quiet."""
    import sys

    return {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}


class Cancelled(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C, SIGTERM, a cancel): no new process starts. A KeyboardInterrupt,
    so no ``except Exception`` that records a failed row swallows it."""


# Every isolated child runs in its own process group (so a timeout kills its helpers too); these
# are the groups alive now, so an interrupt can stop all of them at once.
_LIVE: set[int] = set()
_LIVE_LOCK = threading.Lock()
CANCEL = threading.Event()


def cancel_all() -> None:
    """Stop every isolated child process group now and refuse to start new ones."""
    CANCEL.set()
    with _LIVE_LOCK:
        groups = list(_LIVE)
    for pg in groups:
        _kill_group(pg)


def _kill_group(pg: int) -> None:
    try:
        os.killpg(pg, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _child_setup(memory_limit_mb: int | None):
    limit = _limit_memory(memory_limit_mb)

    def apply():  # in the child, before exec
        try:  # die with the parent (Linux): a killed run leaves no converter behind
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except Exception:
            pass
        if limit:
            limit()
    return apply


def run_isolated(cmd: list[str], *, timeout: float, log_path: Path, env: dict | None = None,
                 cwd: str | None = None, memory_limit_mb: int | None = None) -> ProcResult:
    if CANCEL.is_set():
        raise Cancelled("interrupted")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, env=env, cwd=cwd, preexec_fn=_child_setup(memory_limit_mb))
        with _LIVE_LOCK:
            _LIVE.add(p.pid)
        deadline = t0 + timeout
        timed_out = False
        peak_kb = 0
        try:
            while True:
                peak_kb = max(peak_kb, _tree_peak_kb(p.pid))
                pid, status, _ = os.wait4(p.pid, os.WNOHANG)
                if pid == p.pid:
                    break
                if time.perf_counter() > deadline or CANCEL.is_set():
                    timed_out = not CANCEL.is_set()
                    _kill_group(p.pid)
                    _, status, _ = os.wait4(p.pid, 0)
                    break
                time.sleep(0.05)
        except BaseException:  # Ctrl-C or SIGTERM in this thread: the child group goes with us
            _kill_group(p.pid)
            os.wait4(p.pid, 0)
            raise
        finally:
            _kill_group(p.pid)  # helpers the child left in its group
            with _LIVE_LOCK:
                _LIVE.discard(p.pid)
        if CANCEL.is_set():
            raise Cancelled("interrupted")
        p.returncode = os.waitstatus_to_exitcode(status)  # keep Popen from waiting again
    seconds = time.perf_counter() - t0
    tail = log_path.read_bytes()[-3000:].decode("utf-8", "replace") if log_path.exists() else ""
    return ProcResult(p.returncode, seconds, peak_kb / 1024.0, timed_out, tail, memory_limit_mb)
