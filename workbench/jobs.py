"""Background runs: a sweep started from the dashboard runs in its own process, detached from the
web session, so a browser refresh (or a closed tab) does not stop it; the page reattaches by
reading the run folder.

A job folder is an ordinary run folder (``reports/<name>-<stamp>/``) plus:

- ``sweep.toml``: the sweep the job runs (the same file ``workbench run`` takes);
- ``job.json``: state (``queued``, ``running``, ``done``, ``failed``, ``cancelled``), pid, times, error;
- ``progress.json``: the latest progress event (done/total/failed/eta, current cell);
- ``log.txt``: the process's output.

``python -m workbench.jobs DIR`` is the job process; it calls ``run_sweep`` exactly as the CLI
does, so a dashboard run and a headless run of the same sweep give the same ``run.json``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .errors import ConfigError, WorkbenchError
from .fsutil import atomic_write_json

JOB_FILE = "job.json"
PROGRESS_FILE = "progress.json"
SWEEP_FILE = "sweep.toml"
STALE_QUEUED_S = 60.0


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _read(p: Path) -> dict:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


def allocate(root: str | os.PathLike, name: str) -> Path:
    """A new, empty run folder ``root/<safe name>-<stamp>`` (never an existing one)."""
    from .sweep import safe_name

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = f"{safe_name(name)}-{time.strftime('%Y%m%d-%H%M%S')}"
    for i in range(1000):
        d = root / (base if i == 0 else f"{base}-{i}")
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue
    raise ConfigError(f"could not allocate a run folder under {root}")


def start(out: str | os.PathLike, sweep_text: str) -> Path:
    """Write ``sweep.toml`` into ``out``, check it, and start the job process detached.

    A sweep that does not parse raises ConfigError here, before any process starts."""
    from .sweep import load_sweep

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sweep_path = out / SWEEP_FILE
    sweep_path.write_text(sweep_text)
    try:
        load_sweep(sweep_path)  # one-line error before starting anything
    except WorkbenchError:
        if {p.name for p in out.iterdir()} == {SWEEP_FILE}:  # a folder made only for this run: leave nothing behind
            sweep_path.unlink()
            out.rmdir()
        raise
    state = status(out)
    if state.get("state") in ("queued", "running"):
        raise ConfigError(f"a run is already going in {out}; wait for it or start a new one")
    atomic_write_json(out / JOB_FILE, {"state": "queued", "queued": _now(), "queued_ts": time.time()})
    (out / PROGRESS_FILE).unlink(missing_ok=True)
    log = open(out / "log.txt", "ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.Popen([sys.executable, "-m", "workbench.jobs", str(out)], stdout=log, stderr=subprocess.STDOUT,
                     stdin=subprocess.DEVNULL, start_new_session=True, env=env, cwd=os.getcwd())
    log.close()
    return out


def _alive(pid: int | None, create_time: float | None) -> bool:
    if not pid:
        return False
    try:
        import psutil

        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(p.create_time() - create_time) < 1.0
    except Exception:
        return False


def status(out: str | os.PathLike) -> dict:
    """The job's state as the page shows it; a job whose process vanished is reported as died."""
    out = Path(out)
    job = _read(out / JOB_FILE)
    if not job:
        if (out / "run.json").exists():
            return {"state": "done", "progress": {}, "dir": str(out)}
        return {}
    job["dir"] = str(out)
    job["progress"] = _read(out / PROGRESS_FILE)
    if job.get("state") == "running" and not _alive(job.get("pid"), job.get("create_time")):
        job["state"] = "died"
        job["error"] = "the run process is gone (killed or the machine restarted); start it again with resume"
    if job.get("state") == "queued" and time.time() - job.get("queued_ts", 0) > STALE_QUEUED_S:
        job["state"] = "died"
        job["error"] = "the run process never started; see log.txt"
    return job


def list_runs(root: str | os.PathLike) -> list[dict]:
    """Run folders under ``root`` (newest first): any folder with a run.json or a job.json."""
    root = Path(root)
    rows = []
    if not root.is_dir():
        return rows
    for d in root.iterdir():
        if not d.is_dir() or d.name.startswith("."):
            continue
        if not ((d / "run.json").exists() or (d / JOB_FILE).exists()):
            continue
        st = status(d)
        run = _read(d / "run.json")
        rows.append({"name": d.name, "dir": str(d), "state": st.get("state", "?"),
                     "started": run.get("started") or st.get("queued", ""),
                     "models": sorted({a["model"] for a in run.get("artifacts", [])}),
                     "artifacts": len(run.get("artifacts", [])), "latency_rows": len(run.get("latency", [])),
                     "noisy_rows": sum(bool(r.get("noisy")) for r in run.get("latency", [])),
                     "mtime": d.stat().st_mtime})
    rows.sort(key=lambda r: r["mtime"], reverse=True)
    return rows


def cancel(out: str | os.PathLike, wait_s: float = 20.0) -> dict:
    """Stop a running job: SIGTERM (running conversions are killed, cells already written stay, a
    partial run.json is written), then SIGKILL of its process group if it does not stop in
    ``wait_s``. The run folder's lock goes with the process. Returns the new status."""
    import signal

    out = Path(out)
    s = status(out)
    if s.get("state") not in ("queued", "running"):
        raise ConfigError(f"{out.name} is not running (state: {s.get('state', 'unknown')}); nothing to cancel")
    pid = s.get("pid")
    if pid and _alive(pid, s.get("create_time")):
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + wait_s
        while time.time() < deadline and _alive(pid, s.get("create_time")):
            time.sleep(0.2)
        if _alive(pid, s.get("create_time")):
            try:
                os.killpg(pid, signal.SIGKILL)  # the job started its own session: pgid == pid
            except (ProcessLookupError, PermissionError):
                pass
    job = _read(out / JOB_FILE)
    if job.get("state") != "cancelled":
        job.update(state="cancelled", finished=_now(), error="Stopped from the dashboard; the cells finished before it are kept.")
        atomic_write_json(out / JOB_FILE, job)
    return status(out)


def delete_run(out: str | os.PathLike) -> None:
    """Remove a finished run folder (its results, reports and cells; exports live in the cache).
    A run that is still going is refused: cancel it first."""
    import shutil

    out = Path(out)
    if status(out).get("state") in ("queued", "running"):
        raise ConfigError(f"{out.name} is still running; cancel it first")
    if not ((out / "run.json").exists() or (out / JOB_FILE).exists() or (out / SWEEP_FILE).exists()):
        raise ConfigError(f"{out} is not a run folder (no run.json, job.json or sweep.toml); nothing deleted")
    shutil.rmtree(out)


def main(argv: list[str] | None = None) -> int:
    import signal

    import psutil

    from .proc import cancel_all
    from .sweep import run_sweep

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

    out = Path((argv or sys.argv[1:])[0])
    me = psutil.Process()
    job = {**_read(out / JOB_FILE), "state": "running", "pid": os.getpid(), "create_time": me.create_time(),
           "started": _now()}
    atomic_write_json(out / JOB_FILE, job)
    last = [0.0]

    def progress(event: str, info: dict) -> None:
        now = time.monotonic()
        if event == "cell" and now - last[0] < 0.5:  # keep the disk quiet on fast cells
            return
        last[0] = now
        atomic_write_json(out / PROGRESS_FILE, {"event": event, **info, "time": _now()})
        print(f"[{event}] {json.dumps(info, default=str)}", flush=True)

    resume = any((out / "cells").glob("*.json"))
    try:
        res = run_sweep(str(out / SWEEP_FILE), out, resume=resume, progress=progress)
    except KeyboardInterrupt:  # a cancel: the partial run.json is written, the page shows "cancelled"
        cancel_all()
        job.update(state="cancelled", finished=_now(), error="The cells finished before it are kept.")
        atomic_write_json(out / JOB_FILE, job)
        print("cancelled", flush=True)
        return 130
    except Exception as e:  # recorded for the page; cells already written stay on disk
        job.update(state="failed", finished=_now(), error=f"{type(e).__name__}: {e}"[:500])
        atomic_write_json(out / JOB_FILE, job)
        print(f"failed: {e}", flush=True)
        return 1
    st = res["stats"]
    job.update(state="done", finished=_now(), stats=st)
    atomic_write_json(out / PROGRESS_FILE, {"event": "done", **st, "time": _now()})
    atomic_write_json(out / JOB_FILE, job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
