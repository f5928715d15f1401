"""The one executor: every run of the pipeline (``workbench run``, ``workbench demo``, the INT8
study, before/after) goes through ``execute``.

Optimization, then exports (content cache, isolated conversions), then the measured cells: the
accuracy of an artifact, the latency of an artifact on a device. Every finished cell is written
atomically to ``OUT/cells/`` at once; ``resume`` after an interruption (even SIGKILL) keeps those
and does only what is missing. ``run.json`` and the reports are rebuilt from the cells at the end.
Progress events have one shape: ``progress(event, info)``.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from exporters.fsutil import atomic_write_json as _atomic_json
from exporters.records import Status

from ..errors import ConfigError
from .exports import _sha, export_all, optimize_all
from .plan import Plan

DEFAULT_CACHE = Path(__file__).resolve().parents[2] / "reports" / ".cache" / "exports"
ProgressFn = Callable[[str, dict], None]


def execute(plan: Plan, out: str | os.PathLike, *, resume: bool = False, cache: str | os.PathLike | None = None,
            progress: ProgressFn | None = None, executor: str = "local", address: str | None = None,
            jobs: int = 1, write_report: bool = True, max_cells: int | None = None) -> dict:
    """Run ``plan`` into ``out``; returns {"run", "out", "reports", "stats"}. ``max_cells``: refuse a
    larger plan (the CLI asks for ``--yes`` above its threshold)."""
    say = progress or (lambda e, i: None)
    say("plan", {"models": len(plan.models), "reparam": len(plan.reparam), "formats": len(plan.formats),
                 "precisions": len(plan.precisions), "devices": len(plan.devices), "exports": plan.exports,
                 "cells": plan.cells})
    if max_cells is not None and plan.cells > max_cells:
        raise ConfigError(f"this plan has {plan.exports} exports and up to {plan.cells} measured cells; "
                          f"pass --yes to run it, or narrow the sweep")
    out = Path(out)
    cache_dir = Path(cache or os.environ.get("WORKBENCH_CACHE", DEFAULT_CACHE))
    writable(out, "the run folder", "--out")  # before any work: a folder we cannot write is one line
    writable(cache_dir, "the export cache", "--cache")
    lock = _lock(out)
    try:
        return _execute_locked(plan, out, resume, cache_dir, say, executor, address, jobs, write_report)
    except OSError as e:  # disk full, quota, a folder gone read-only mid-run: measured cells stay on disk
        where = e.filename or out
        raise ConfigError(f"cannot write {where}: {e.strerror or e}; free space or choose another --out/--cache "
                          f"(cells already measured are kept in {out / 'cells'}; re-run with --resume)") from None
    finally:
        lock.close()


def writable(folder: Path, what: str, flag: str) -> None:
    """Create ``folder`` and prove a file can be written there, or raise one line naming it."""
    probe = folder / f".write-test-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        try:
            probe.unlink()
        except OSError:
            pass
        raise ConfigError(f"cannot write {what} {folder}: {e.strerror or e}; choose another {flag}") from None


def _lock(out: Path):
    """One writer per run folder: a second run into the same folder stops with a clear error."""
    import fcntl

    f = open(out / ".lock", "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise ConfigError(f"another run is writing to {out}; wait for it or pass a different --out") from None
    f.write(str(os.getpid()))
    f.flush()
    return f


class _Cells:
    """The measured cells of one run: cached on disk, counted, timed for the progress line."""

    def __init__(self, plan: Plan, out: Path, resume: bool, say, total: int):
        self.plan, self.dir, self.say, self.total = plan, out / "cells", say, total
        old = list(self.dir.glob("*.json"))
        if old and not resume:  # a fresh run; exports still come from the content cache
            say("cells-reset", {"count": len(old), "dir": str(self.dir)})
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stats = {"cells_done": 0, "cells_reused": 0, "cells_failed": 0, "exported_now": 0}
        self.times: list[float] = []

    def get(self, cid: str, kind: str, info: dict, compute: Callable[[], dict]) -> dict:
        cell = self.dir / f"{cid}.json"
        if cell.exists():
            self.stats["cells_reused"] += 1
        else:
            done = self.stats["cells_done"] + self.stats["cells_reused"]
            eta = (sum(self.times) / len(self.times) * (self.total - done)) if self.times else None
            self.say("cell", {"kind": kind, **info, "done": done, "total": self.total,
                              "failed": self.stats["cells_failed"], "running": 1, "eta_s": eta})
            t0 = time.perf_counter()
            _atomic_json(cell, {"kind": kind, **info, **compute()})
            self.stats["cells_done"] += 1
            self.times.append(time.perf_counter() - t0)
        return json.loads(cell.read_text())


def _latency(a: dict, dev: str, plan: Plan, cells: _Cells) -> dict:
    """One latency measurement; a remote device is measured when reachable, else estimated (labelled)."""
    from ..bench.measure import bench_artifact, estimate_artifact
    from ..bench.profiles import get_profile
    from ..bench.runners import Protocol, RunnerError

    prof = get_profile(dev)
    try:
        if prof.runner in ("local", "estimate"):
            return bench_artifact(a["path"], dev, Protocol(**plan.protocol())).to_dict()
        if plan.latency.get("remote") == "estimate":  # the plan asked not to contact devices
            return estimate_artifact(a["path"], dev).to_dict()
        try:
            return bench_artifact(a["path"], dev, Protocol(**plan.protocol())).to_dict()
        except (RunnerError, ConfigError) as e:
            st = estimate_artifact(a["path"], dev).to_dict()
            st["warnings"] = st.get("warnings", []) + [f"device not reachable ({str(e)[:120]}); estimated"]
            return st
    except Exception as e:  # recorded, the run goes on
        cells.stats["cells_failed"] += 1
        return {"device": dev, "runner": prof.runner, "estimated": False, "status": Status.FAILED.value,
                "reason": f"{type(e).__name__}: {e}"[:300], "p50_ms": None}


def _device_figures(devices: list[str]) -> dict:
    """The profile settings a latency depends on, kept with the run so compare can show what changed."""
    from ..bench.profiles import get_profile

    out = {}
    for d in devices:
        p = get_profile(d)
        out[d] = {"runner": p.runner, "threads": p.threads, "runtimes": list(p.runtimes), "compute": dict(p.compute)}
    return out


def _write_partial(run: dict, out: Path, cells, e: BaseException, write_report: bool) -> None:
    """run.json (and the reports) of a run that stopped early: its exports and finished cells, marked
    ``incomplete`` with why, so Results can show them."""
    from ..report.build import write_run

    state = "cancelled" if isinstance(e, KeyboardInterrupt) else "failed"
    run["incomplete"] = {"state": state, "reason": (str(e) or type(e).__name__)[:500]}
    run["sweep_stats"] = cells.stats
    try:
        write_run(run, out)
        if write_report:
            from ..report.render import write_reports

            write_reports(run, out)
    except Exception:  # noqa: BLE001 - the original error is the one to report
        pass


def _execute_locked(plan: Plan, out: Path, resume: bool, cache, say, executor, address, jobs, write_report) -> dict:
    from ..core import model_summary
    from ..evaluate import evaluate_target
    from ..report.build import add_accuracy, add_export, add_latency, new_run, now, write_run

    cache_dir = Path(cache)
    run = new_run(plan.name, {"path": plan.path, "sha256": hashlib.sha256(plan.text.encode()).hexdigest(),
                              "text": plan.text} if plan.text else None)
    run["provenance"]["devices"] = _device_figures(plan.devices)
    t_export = time.perf_counter()
    opt_reports = optimize_all(plan, cache_dir, say)
    exports = export_all(plan, cache_dir, executor, address, jobs, say)
    export_seconds = round(time.perf_counter() - t_export, 2)
    ok_rows = [a for man in exports.values() for a in man["artifacts"] if a["status"] == Status.OK]
    total = sum((1 if plan.data.get("evaluation") and a["runnable_here"] else 0) + len(plan.devices) for a in ok_rows)
    cells = _Cells(plan, out, resume, say, total)
    try:
        cells.stats["export_seconds"] = export_seconds
        t_cells = time.perf_counter()
        # latency and accuracy cells run one at a time on this machine, so they never disturb each other
        for mi, m in enumerate(plan.models):
            for reparam in plan.reparam:
                manifest = exports[(mi, reparam)]
                cells.stats["exported_now"] += manifest["exported_now"]
                label = m.get("label", m["name"])
                if mi in opt_reports:  # figures of the optimized model, not the zoo's
                    after = opt_reports[mi]["after"]
                    summary = {"params": after["params"], "params_deploy": after["params"], "macs": after["macs"],
                               "macs_deploy": after["macs"]}
                else:
                    summary = model_summary(m["name"], num_classes=manifest["num_classes"], input_size=manifest["input_size"])
                manifest = {**manifest, "model": label, "artifacts": [dict(a, model=label) for a in manifest["artifacts"]]}
                add_export(run, manifest, summary, reparam=reparam)
                if mi in opt_reports:
                    entry = next(x for x in run["models"] if x["model"] == label)
                    entry["optimize"] = {k: opt_reports[mi].get(k) for k in ("steps", "before", "after", "macs_reduction",
                                                                              "params_reduction", "note")}
                    entry["base_model"] = m["name"]
                for a in manifest["artifacts"]:
                    if a["status"] != Status.OK:
                        continue
                    base = {"model": label, "reparam": reparam, "format": a["format"], "precision": a["precision"],
                            "sha256": a["sha256"]}
                    if plan.data.get("evaluation") and a["runnable_here"]:
                        cid = "acc-" + _sha({**base, "data": plan.data["evaluation"], "limit": plan.data.get("eval_limit")})[:20]
                        c = cells.get(cid, "accuracy", base, lambda a=a: {"results": evaluate_target(
                            a["path"], plan.data["evaluation"], limit=plan.data.get("eval_limit"))["results"]})
                        first_pt = not any(r["model"] == label and r["runtime"] == "pytorch" and r.get("reparam", True) == reparam
                                           for r in run["accuracy"])
                        add_accuracy(run, label, [r for r in c["results"] if r.get("runtime") != "pytorch" or first_pt],
                                     reparam=reparam)
                    for dev in plan.devices:
                        cid = "lat-" + _sha({**base, "device": dev, "protocol": plan.latency})[:20]
                        c = cells.get(cid, "latency", base, lambda a=a, dev=dev: {"stats": _latency(a, dev, plan, cells)})
                        if c["stats"].get("status") == Status.NOT_MEASURED:
                            continue
                        add_latency(run, label, a["format"], a["precision"], c["stats"], reparam=reparam)
    except BaseException as e:  # cancelled (KeyboardInterrupt) or failed: what was measured stays reachable
        _write_partial(run, out, cells, e, write_report)
        raise
    stats = cells.stats
    stats["cell_seconds"] = round(time.perf_counter() - t_cells, 2)
    run["finished"] = now()
    run["sweep_stats"] = stats
    write_run(run, out)
    reports = {}
    if write_report:
        from ..report.render import write_reports

        reports = write_reports(run, out)
    say("done", {"out": str(out), **stats})
    return {"run": run, "out": str(out), "reports": reports, "stats": stats, "exports": exports}
