"""``workbench run SWEEP.toml``: a declarative sweep, run unattended, resumable.

The matrix is models x re-parameterization x formats x precisions x devices. Exports are cached
by content (model, weights sha256, classes, input size, re-parameterization, calibration and
toolchain versions) under a cache folder shared between runs, so re-running an unchanged sweep
re-exports nothing. Every finished cell (accuracy of an artifact, latency of an artifact on a
device) is written atomically to ``OUT/cells/`` at once; ``--resume`` after an interruption (even
SIGKILL) keeps those and does only what is missing. ``run.json`` and the reports are rebuilt from
the cells at the end.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import ConfigError, did_you_mean
from .fsutil import atomic_write_json as _atomic_json

TOP_KEYS = {"name", "formats", "precisions", "devices", "reparam", "data", "latency", "models", "export", "quantization"}
MODEL_KEYS = {"name", "weights", "num_classes", "input_size", "optimize", "label"}
DATA_KEYS = {"calibration", "evaluation", "eval_limit", "calib_count"}
LATENCY_KEYS = {"warmup", "warmup_seconds", "min_runs", "min_seconds", "repeats"}
EXPORT_KEYS = {"timeout_s", "route", "fidelity_count", "memory_limit_mb"}
DEFAULT_CACHE = Path(__file__).resolve().parents[1] / "reports" / ".cache" / "exports"


@dataclass
class Sweep:
    name: str
    models: list[dict]
    formats: list[str]
    precisions: list[str]
    devices: list[str]
    reparam: list[bool]
    data: dict = field(default_factory=dict)
    latency: dict = field(default_factory=dict)
    export: dict = field(default_factory=dict)
    quantization: dict = field(default_factory=dict)
    path: str = ""
    text: str = ""


def _check_keys(where: str, got: dict, allowed: set) -> None:
    for k in got:
        if k not in allowed:
            raise ConfigError(f"{where}: unknown key '{k}'{did_you_mean(k, allowed)}; allowed: {', '.join(sorted(allowed))}")


def load_sweep(path: str | os.PathLike) -> Sweep:
    from exporters.base import CAPABILITIES, PRECISIONS

    from .bench.profiles import get_profile
    from .registry import get_spec

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"sweep file {p} does not exist")
    text = p.read_text()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p.name}: not valid TOML ({e})") from e
    _check_keys(p.name, doc, TOP_KEYS)
    models = doc.get("models")
    if not isinstance(models, list) or not models:
        raise ConfigError(f"{p.name}: needs at least one [[models]] entry with a name")
    for i, m in enumerate(models):
        if not isinstance(m, dict) or "name" not in m:
            raise ConfigError(f"{p.name}: models[{i}] needs a name")
        _check_keys(f"{p.name} models[{i}]", m, MODEL_KEYS)
        get_spec(m["name"])
        for k in ("num_classes", "input_size"):
            if k in m and (not isinstance(m[k], int) or isinstance(m[k], bool) or m[k] < 1):
                raise ConfigError(f"{p.name}: models[{i}].{k} must be a positive integer, got {m[k]!r}")
        if m.get("weights"):
            w = (p.parent / m["weights"]).resolve() if not Path(m["weights"]).is_absolute() else Path(m["weights"])
            if not w.exists():
                raise ConfigError(f"{p.name}: models[{i}].weights {m['weights']} does not exist")
            m["weights"] = str(w)
        if "optimize" in m:
            from .optimize.pipeline import tag, validate_optimize

            if not isinstance(m["optimize"], dict):
                raise ConfigError(f"{p.name}: models[{i}].optimize must be a table, e.g. {{prune = 0.3}}")
            m["optimize"] = validate_optimize(m["optimize"], f"{p.name} models[{i}].optimize")
            data = m["optimize"].get("data")
            if data and data not in ("builtin",) and not Path(data).is_absolute():
                m["optimize"]["data"] = str((p.parent / data).resolve())
            m.setdefault("label", m["name"] + tag(m["optimize"]))
        if "label" in m and (not isinstance(m["label"], str) or not m["label"].strip()):
            raise ConfigError(f"{p.name}: models[{i}].label must be a non-empty string")
    labels = [m.get("label", m["name"]) for m in models]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise ConfigError(f"{p.name}: two [[models]] entries are both {sorted(dup)[0]!r}; give one a different label")

    def str_list(key, default, allowed=None):
        v = doc.get(key, default)
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise ConfigError(f"{p.name}: '{key}' must be a list of strings")
        for x in v:
            if allowed is not None and x not in allowed:
                raise ConfigError(f"{p.name}: '{key}' has {x!r}{did_you_mean(x, allowed)}; allowed: {', '.join(allowed)}")
        return v

    formats = str_list("formats", ["onnx", "tflite"], list(CAPABILITIES))
    precisions = str_list("precisions", ["fp32"], list(PRECISIONS))
    devices = str_list("devices", ["host"])
    for d in devices:
        get_profile(d)
    reparam = doc.get("reparam", [True])
    if isinstance(reparam, bool):
        reparam = [reparam]
    if not isinstance(reparam, list) or not all(isinstance(x, bool) for x in reparam):
        raise ConfigError(f"{p.name}: 'reparam' must be true, false or a list of them")
    for key, allowed in (("data", DATA_KEYS), ("latency", LATENCY_KEYS), ("export", EXPORT_KEYS)):
        if not isinstance(doc.get(key, {}), dict):
            raise ConfigError(f"{p.name}: [{key}] must be a table")
        _check_keys(f"{p.name} [{key}]", doc.get(key, {}), allowed)
    for k, v in doc.get("latency", {}).items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f"{p.name}: latency.{k} must be a non-negative number, got {v!r}")
    from .optimize.quant import validate_quant

    if not isinstance(doc.get("quantization", {}), dict):
        raise ConfigError(f"{p.name}: [quantization] must be a table")
    quant = validate_quant(doc.get("quantization", {}), f"{p.name} [quantization]")
    return Sweep(name=doc.get("name", p.stem), models=models, formats=formats, precisions=precisions, devices=devices,
                 reparam=reparam, data=doc.get("data", {}), latency=doc.get("latency", {}), export=doc.get("export", {}),
                 quantization=quant, path=str(p), text=text)


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def export_key(m: dict, reparam: bool, sweep: Sweep) -> str:
    from .export import toolchain_versions

    from exporters.common import sha256_path

    return _sha({"model": m["name"], "weights": sha256_path(m["weights"]) if m.get("weights") else None,
                 "num_classes": m.get("num_classes"), "input_size": m.get("input_size"), "reparam": reparam,
                 "calibration": sweep.data.get("calibration", "builtin"), "calib_count": sweep.data.get("calib_count", 64),
                 "export": sweep.export, "quantization": sweep.quantization, "toolchain": toolchain_versions()})[:20]


def cached_export(m: dict, reparam: bool, sweep: Sweep, cache: Path, say) -> dict:
    """Manifest rows for every requested (format, precision), exporting only what the cache lacks."""
    from .export import ExportOptions, export_model

    d = cache / export_key(m, reparam, sweep)
    merged_path = d / "manifest.json"
    merged = json.loads(merged_path.read_text()) if merged_path.exists() else None
    have = {(a["format"], a["precision"]) for a in (merged or {}).get("artifacts", [])
            if a["status"] in ("ok", "skipped") and (a["status"] == "skipped" or Path(a["path"]).exists())}
    want = [(f, p) for f in sweep.formats for p in sweep.precisions]
    missing = [c for c in want if c not in have]
    if missing:
        part = d / f"part-{len(list(d.glob('part-*'))) if d.exists() else 0}"
        calib = sweep.data.get("calibration", "builtin")
        opts = ExportOptions(formats=tuple(dict.fromkeys(f for f, _ in missing)),
                             precisions=tuple(dict.fromkeys(p for _, p in missing)),
                             calib_dir=None if calib == "builtin" else calib, calib_count=sweep.data.get("calib_count", 64),
                             fidelity_count=sweep.export.get("fidelity_count", 16), reparam=reparam,
                             route=sweep.export.get("route", "auto"), timeout_s=sweep.export.get("timeout_s", 900),
                             memory_limit_mb=sweep.export.get("memory_limit_mb"),
                             quant=sweep.quantization)
        say("export", {"model": m["name"], "reparam": reparam, "combos": len(missing)})
        def fwd(event: str, info: dict) -> None:  # per-artifact progress for the CLI and the dashboard
            if event == "start":
                say("export-step", {"model": m["name"], "reparam": reparam, "format": info["format"],
                                    "precision": info["precision"], "index": info["index"], "total": info["total"]})

        new = export_model(m["name"], out_dir=part, weights=m.get("weights"), num_classes=m.get("num_classes"),
                           input_size=m.get("input_size"), options=opts, progress=fwd)
        new["export_dir"] = str(part)
        if merged is None:
            merged = {**new, "artifacts": []}
        keep = [a for a in merged["artifacts"] if (a["format"], a["precision"]) in have]
        merged["artifacts"] = keep + [dict(a, export_dir=str(part)) for a in new["artifacts"]
                                      if (a["format"], a["precision"]) in missing]
        merged.setdefault("parts", []).append(str(part))
        _atomic_json(merged_path, merged)
    else:
        say("cached", {"model": m["name"], "reparam": reparam, "combos": len(want)})
    rows = [a for a in merged["artifacts"] if (a["format"], a["precision"]) in want]
    return {**merged, "artifacts": rows, "cache_dir": str(d), "exported_now": len(missing)}


ProgressFn = Callable[[str, dict], None]


def optimize_all(sweep: Sweep, cache_dir: Path, say) -> dict[int, dict]:
    """Run each model's ``optimize`` steps once (cached by content under ``cache/optimized``) and
    point the model entry at the optimized weights, so export, accuracy and latency use them."""
    from exporters.common import sha256_path

    from .optimize.pipeline import optimize_model

    reports = {}
    for i, m in enumerate(sweep.models):
        if not m.get("optimize"):
            continue
        src = m.get("source_weights", m.get("weights"))
        key = _sha({"model": m["name"], "weights": sha256_path(src) if src else None, "num_classes": m.get("num_classes"),
                    "input_size": m.get("input_size"), "optimize": m["optimize"], "version": 1})[:20]
        out = cache_dir.parent / "optimized" / key / f"{m['name']}.safetensors"
        report_path = out.with_name(out.name + ".json")
        if out.exists() and report_path.exists():
            say("cached", {"model": m.get("label", m["name"]), "reparam": True, "combos": "optimized weights"})
            rep = json.loads(report_path.read_text())
        else:
            say("optimize", {"model": m.get("label", m["name"]), "steps": m["optimize"]})
            rep = optimize_model(m["name"], m["optimize"], out=out, weights=src, num_classes=m.get("num_classes"),
                                 input_size=m.get("input_size"),
                                 say=lambda msg, lab=m.get("label", m["name"]): say("optimize", {"model": lab, "step": msg}))
        m["source_weights"] = src
        m["weights"] = str(out)
        reports[i] = rep
    return reports


def _relocate(root: Path, old: str, new: str) -> None:
    """Rewrite absolute paths in every manifest under ``root`` (artifacts gathered from a worker)."""
    for mf in root.rglob("manifest.json"):
        mf.write_text(mf.read_text().replace(old, new))


def _ray_export(m: dict, reparam: bool, sweep: Sweep) -> tuple[dict, bytes, str]:
    """Runs on a Ray worker: export into the worker's own temporary cache and ship it back."""
    import io
    import tarfile
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="wb-ray-"))
    try:
        man = cached_export(m, reparam, sweep, tmp, lambda e, i: None)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            tar.add(man["cache_dir"], arcname=Path(man["cache_dir"]).name)
        return man, buf.getvalue(), str(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def export_all(sweep: Sweep, cache_dir: Path, executor: str, address: str | None, jobs: int, say) -> dict:
    """Every (model, reparam) export, on worker threads (each conversion is its own process) or
    as Ray tasks whose artifacts are gathered back into the local cache."""
    todo = [(i, m, r) for i, m in enumerate(sweep.models) for r in sweep.reparam]
    results: dict = {}
    if executor == "local":
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futs = {(i, r): pool.submit(cached_export, m, r, sweep, cache_dir, say) for i, m, r in todo}
            for k, f in futs.items():
                results[k] = f.result()
        return results
    if executor != "ray":
        raise ConfigError(f"unknown executor {executor!r}; choose local or ray")
    try:
        import ray
    except ImportError as e:
        raise ConfigError("--executor ray needs the ray package (pip install ray==2.60.0)") from e
    import io
    import tarfile

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 **({} if address else {"num_cpus": max(1, jobs)}))
    try:
        remote = ray.remote(_ray_export)
        refs = {(i, r): remote.remote(m, r, sweep) for i, m, r in todo}
        for (i, r), ref in refs.items():
            say("export", {"model": sweep.models[i]["name"], "reparam": r, "combos": "ray task"})
            man, blob, worker_root = ray.get(ref)
            key = Path(man["cache_dir"]).name
            dest = cache_dir / key
            if dest.exists():
                shutil.rmtree(dest)
            cache_dir.mkdir(parents=True, exist_ok=True)
            with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
                tar.extractall(cache_dir, filter="data")
            _relocate(dest, str(Path(worker_root) / key), str(dest))
            results[(i, r)] = {**json.loads((dest / "manifest.json").read_text()),
                               "cache_dir": str(dest), "exported_now": man["exported_now"],
                               "artifacts": [a for a in json.loads((dest / "manifest.json").read_text())["artifacts"]
                                             if (a["format"], a["precision"]) in
                                             {(f, p) for f in sweep.formats for p in sweep.precisions}]}
    finally:
        if started:
            ray.shutdown()
    return results


def run_sweep(path: str, out: str | os.PathLike | None = None, *, resume: bool = False, cache: str | None = None,
              progress: ProgressFn | None = None, executor: str = "local", address: str | None = None,
              jobs: int = 1) -> dict:
    sweep = load_sweep(path)
    say = progress or (lambda e, i: None)
    out = Path(out or Path("reports") / safe_name(sweep.name))
    out.mkdir(parents=True, exist_ok=True)
    lock = _lock(out)
    try:
        return _run_locked(sweep, out, resume, cache, say, executor, address, jobs)
    finally:
        lock.close()


def safe_name(name: str) -> str:
    """A folder name from a sweep's name: no separators, no '..', nothing hidden."""
    import re

    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "run"
    return cleaned[:80]


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


def _run_locked(sweep: Sweep, out: Path, resume: bool, cache, say, executor, address, jobs) -> dict:
    from .api import model_summary
    from .bench.measure import bench_artifact, estimate_artifact
    from .bench.profiles import get_profile
    from .bench.runners import Protocol, RunnerError
    from .evaluate import evaluate_target
    from .report.build import add_accuracy, add_export, add_latency, new_run, now, write_run
    from .report.render import write_reports

    cells_dir = out / "cells"
    if out.exists() and any(cells_dir.glob("*.json")) and not resume:
        shutil.rmtree(cells_dir)  # a fresh run; exports still come from the content cache
    cells_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(cache or os.environ.get("WORKBENCH_CACHE", DEFAULT_CACHE))
    proto = Protocol(**{k: v for k, v in sweep.latency.items()})
    run = new_run(sweep.name, {"path": sweep.path, "sha256": hashlib.sha256(sweep.text.encode()).hexdigest(), "text": sweep.text})
    stats = {"cells_done": 0, "cells_reused": 0, "cells_failed": 0, "exported_now": 0}
    import time

    t_export = time.perf_counter()
    opt_reports = optimize_all(sweep, cache_dir, say)
    exports = export_all(sweep, cache_dir, executor, address, jobs, say)
    stats["export_seconds"] = round(time.perf_counter() - t_export, 2)
    ok_rows = [(mi, r, a) for (mi, r), man in exports.items() for a in man["artifacts"] if a["status"] == "ok"]
    total = sum((1 if sweep.data.get("evaluation") and a["runnable_here"] else 0) + len(sweep.devices) for *_, a in ok_rows)
    t_cells = time.perf_counter()
    measured_times: list[float] = []

    def tick(kind: str, info: dict) -> None:
        done = stats["cells_done"] + stats["cells_reused"]
        left = total - done
        eta = (sum(measured_times) / len(measured_times) * left) if measured_times else None
        say("cell", {"kind": kind, **info, "done": done, "total": total, "failed": stats["cells_failed"],
                     "running": 1, "eta_s": eta})
    # latency and accuracy cells run one at a time on this machine, so they never disturb each other
    for mi, m in enumerate(sweep.models):
        for reparam in sweep.reparam:
            manifest = exports[(mi, reparam)]
            stats["exported_now"] += manifest["exported_now"]
            label = m.get("label", m["name"])
            if mi in opt_reports:  # figures of the optimized model, not the zoo's
                rep = opt_reports[mi]
                summary = {"params": rep["after"]["params"], "params_deploy": rep["after"]["params"],
                           "macs": rep["after"]["macs"], "macs_deploy": rep["after"]["macs"]}
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
                if a["status"] != "ok":
                    continue
                base = {"model": label, "reparam": reparam, "format": a["format"], "precision": a["precision"],
                        "sha256": a["sha256"]}
                if sweep.data.get("evaluation") and a["runnable_here"]:
                    cid = "acc-" + _sha({**base, "data": sweep.data["evaluation"], "limit": sweep.data.get("eval_limit")})[:20]
                    cell = cells_dir / f"{cid}.json"
                    if cell.exists():
                        stats["cells_reused"] += 1
                    else:
                        tick("accuracy", base)
                        t0 = time.perf_counter()
                        res = evaluate_target(a["path"], sweep.data["evaluation"], limit=sweep.data.get("eval_limit"))
                        _atomic_json(cell, {"kind": "accuracy", **base, "results": res["results"]})
                        stats["cells_done"] += 1
                        measured_times.append(time.perf_counter() - t0)
                    c = json.loads(cell.read_text())
                    first_pt = not any(r["model"] == label and r["runtime"] == "pytorch" and r.get("reparam", True) == reparam
                                       for r in run["accuracy"])
                    add_accuracy(run, label, [r for r in c["results"] if r.get("runtime") != "pytorch" or first_pt],
                                 reparam=reparam)
                for dev in sweep.devices:
                    cid = "lat-" + _sha({**base, "device": dev, "protocol": sweep.latency})[:20]
                    cell = cells_dir / f"{cid}.json"
                    if cell.exists():
                        stats["cells_reused"] += 1
                    else:
                        tick("latency", {"device": dev, **base})
                        t0 = time.perf_counter()
                        prof = get_profile(dev)
                        try:
                            if prof.runner in ("local", "estimate"):
                                st = bench_artifact(a["path"], dev, proto).to_dict()
                            else:  # a remote device is measured only when reachable; else estimated, labelled
                                try:
                                    st = bench_artifact(a["path"], dev, proto).to_dict()
                                except (RunnerError, ConfigError) as e:
                                    st = estimate_artifact(a["path"], dev).to_dict()
                                    st["warnings"] = st.get("warnings", []) + [f"device not reachable ({str(e)[:120]}); estimated"]
                        except Exception as e:  # recorded, the sweep goes on
                            st = {"device": dev, "runner": prof.runner, "estimated": False, "status": "failed",
                                  "reason": f"{type(e).__name__}: {e}"[:300], "p50_ms": None}
                            stats["cells_failed"] += 1
                        _atomic_json(cell, {"kind": "latency", **base, "stats": st})
                        stats["cells_done"] += 1
                        measured_times.append(time.perf_counter() - t0)
                    c = json.loads(cell.read_text())
                    if c["stats"].get("status") == "not measured":
                        continue
                    add_latency(run, label, a["format"], a["precision"], c["stats"], reparam=reparam)
    stats["cell_seconds"] = round(time.perf_counter() - t_cells, 2)
    run["finished"] = now()
    run["sweep_stats"] = stats
    write_run(run, out)
    reports = write_reports(run, out)
    say("done", {"out": str(out), **stats})
    return {"run": run, "out": str(out), "reports": reports, "stats": stats}


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise ConfigError(f"cannot write {type(v).__name__} into a sweep file")


def sweep_to_toml(doc: dict) -> str:
    """A sweep document (the dict ``load_sweep`` reads) as TOML text: what the dashboard writes, so a
    run started there can be re-run headless with ``workbench run``."""
    _check_keys("sweep", doc, TOP_KEYS)
    lines = ["# written by the Edge Workbench dashboard; run it headless with: workbench run sweep.toml"]
    tables = {k: v for k, v in doc.items() if isinstance(v, dict)}
    for k, v in doc.items():
        if k != "models" and not isinstance(v, dict):
            lines.append(f"{k} = {_toml_value(v)}")
    for k, v in tables.items():
        lines += ["", f"[{k}]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    for m in doc.get("models", []):
        lines += ["", "[[models]]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in m.items() if vv is not None]
    return "\n".join(lines) + "\n"

