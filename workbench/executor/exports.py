"""The export half of the executor: the content-keyed export cache, local or Ray workers, and
the optimization step that runs before export.

Exports are cached by content (model, weights sha256, classes, input size, re-parameterization,
calibration, export settings, quantization and toolchain versions) under a cache folder shared
between runs, so re-running an unchanged plan re-exports nothing.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from exporters.provenance import sha256_path, toolchain_versions

from exporters.records import Status

from ..errors import ConfigError
from ..exportdir import ExportDir
from .plan import Plan


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def export_key(m: dict, reparam: bool, sweep: Plan) -> str:
    return _sha({"model": m["name"], "weights": sha256_path(m["weights"]) if m.get("weights") else None,
                 "num_classes": m.get("num_classes"), "input_size": m.get("input_size"), "reparam": reparam,
                 "calibration": sweep.data.get("calibration", "builtin"), "calib_count": sweep.data.get("calib_count", 64),
                 "export": sweep.export, "quantization": sweep.quantization, "toolchain": toolchain_versions(),
                 "record": 3,  # manifest rows with the GPU run and runtime compatibility (run.json v3)
                 **({"gates": sweep.gates} if sweep.gates else {})})[:20]


def _unusable(a: dict) -> str | None:
    """Why a cached artifact cannot be reused (None when it is whole): every cached file is
    re-hashed against its manifest before use, so an altered or truncated file is re-exported."""
    if a["status"] != Status.OK:
        return None
    p = Path(a["path"])
    if not p.exists():
        return "is missing"
    if sha256_path(p) != a.get("sha256"):
        return "changed since it was exported (sha256 mismatch)"
    return None


def cached_export(m: dict, reparam: bool, sweep: Plan, cache: Path, say) -> dict:
    """Manifest rows for every requested (format, precision), exporting only what the cache lacks.

    The cache key is locked while it is filled (a second run sharing the cache waits, then reuses
    what the first made); every artifact is recorded as soon as it is verified, so a kill loses at
    most the one in progress; parts a killed run left unrecorded are removed."""
    d = cache / export_key(m, reparam, sweep)
    d.mkdir(parents=True, exist_ok=True)
    with _key_lock(d, m["name"], say):
        return _fill(d, m, reparam, sweep, say)


def _key_lock(d: Path, model: str, say):
    import contextlib
    import fcntl

    @contextlib.contextmanager
    def held():
        with open(d / ".lock", "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                say("cache-wait", {"model": model, "reason": "another run is exporting the same model into this cache"})
                fcntl.flock(f, fcntl.LOCK_EX)
            yield
    return held()


def _fill(d: Path, m: dict, reparam: bool, sweep: Plan, say) -> dict:
    from ..export import ExportOptions, export_model

    xd = ExportDir.of(d)
    merged = xd.read() if xd.exists() else None
    for orphan in sorted(d.glob("part-*")):  # left by a run killed before it recorded anything there
        if str(orphan) not in (merged or {}).get("parts", []):
            shutil.rmtree(orphan, ignore_errors=True)
    stale: dict[tuple, str] = {}
    for a in (merged or {}).get("artifacts", []):
        why = _unusable(a)
        if why:
            stale[(a["format"], a["precision"])] = why
            say("cache-stale", {"model": m["name"], "reparam": reparam, "format": a["format"],
                                "precision": a["precision"], "reason": why})
    have = {(a["format"], a["precision"]) for a in (merged or {}).get("artifacts", [])
            if a["status"] in (Status.OK, Status.SKIPPED) and (a["format"], a["precision"]) not in stale}
    want = [(f, p) for f in sweep.formats for p in sweep.precisions]
    missing = [c for c in want if c not in have]
    if not missing:
        say("cached", {"model": m["name"], "reparam": reparam, "combos": len(want)})
    else:
        n = 0
        while (d / f"part-{n}").exists():
            n += 1
        part = d / f"part-{n}"
        calib = sweep.data.get("calibration", "builtin")
        opts = ExportOptions(formats=tuple(dict.fromkeys(f for f, _ in missing)),
                             precisions=tuple(dict.fromkeys(p for _, p in missing)),
                             calib_dir=None if calib == "builtin" else calib, calib_count=sweep.data.get("calib_count", 64),
                             fidelity_count=sweep.export.get("fidelity_count", 16), reparam=reparam,
                             route=sweep.export.get("route", "auto"), timeout_s=sweep.export.get("timeout_s", 900),
                             memory_limit_mb=sweep.export.get("memory_limit_mb"), compat=sweep.export.get("compat"),
                             quant=sweep.quantization, gates=sweep.gates)
        say("export", {"model": m["name"], "reparam": reparam, "combos": len(missing)})
        state = {"merged": merged}

        def record(row: dict) -> None:  # into the cache's manifest the moment the artifact is verified
            key = (row["format"], row["precision"])
            if key not in missing:
                return
            cur = state["merged"] or {**ExportDir.of(part).read(), "artifacts": []}
            if str(part) not in cur.setdefault("parts", []):
                cur["parts"].append(str(part))
            row = dict(row, export_dir=str(part), **({"cache": f"re-exported: the cached file {stale[key]}"}
                                                      if key in stale else {}))
            cur["artifacts"] = [a for a in cur["artifacts"] if (a["format"], a["precision"]) != key] + [row]
            state["merged"] = cur
            xd.write(cur)

        def fwd(event: str, info: dict) -> None:  # per-artifact progress for the CLI and the dashboard
            if event == "start":
                say("export-step", {"model": m["name"], "reparam": reparam, "format": info["format"],
                                    "precision": info["precision"], "index": info["index"], "total": info["total"]})
            elif event == "done":
                record(info["record"])

        new = export_model(m["name"], out_dir=part, weights=m.get("weights"), num_classes=m.get("num_classes"),
                           input_size=m.get("input_size"), options=opts, progress=fwd)
        done = state["merged"] or {"artifacts": [], "parts": [str(part)]}
        merged = {**new, "artifacts": done["artifacts"], "parts": done["parts"], "export_dir": str(part)}
        xd.write(merged)
    rows = [a for a in merged["artifacts"] if (a["format"], a["precision"]) in want]
    return {**merged, "artifacts": rows, "cache_dir": str(d), "exported_now": len(missing)}


def optimize_all(sweep: Plan, cache_dir: Path, say) -> dict[int, dict]:
    """Run each model's ``optimize`` steps once (cached by content under ``cache/optimized``) and
    point the model entry at the optimized weights, so export, accuracy and latency use them."""
    from ..optimize.pipeline import optimize_model

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


def _ray_export(m: dict, reparam: bool, sweep: Plan) -> tuple[dict, bytes, str]:
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


def export_all(sweep: Plan, cache_dir: Path, executor: str, address: str | None, jobs: int, say) -> dict:
    """Every (model, reparam) export, on worker threads (each conversion is its own process) or
    as Ray tasks whose artifacts are gathered back into the local cache."""
    todo = [(i, m, r) for i, m in enumerate(sweep.models) for r in sweep.reparam]
    results: dict = {}
    if executor == "local":
        from concurrent.futures import ThreadPoolExecutor

        from ..proc import cancel_all

        pool = ThreadPoolExecutor(max_workers=max(1, jobs))
        try:
            futs = {(i, r): pool.submit(cached_export, m, r, sweep, cache_dir, say) for i, m, r in todo}
            for k, f in futs.items():
                results[k] = f.result()
        except BaseException:  # an interrupt: stop the queue and the running conversions now
            cancel_all()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        pool.shutdown()
        return results
    if executor != "ray":
        raise ConfigError(f"unknown executor {executor!r}; choose local or ray")
    try:
        import ray
    except ImportError as e:
        raise ConfigError("--executor ray needs ray: pip install 'edge-workbench[ray]' (make setup installs it)") from e
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
            merged = ExportDir.of(dest).read()
            results[(i, r)] = {**merged, "cache_dir": str(dest), "exported_now": man["exported_now"],
                               "artifacts": [a for a in merged["artifacts"]
                                             if (a["format"], a["precision"]) in
                                             {(f, p) for f in sweep.formats for p in sweep.precisions}]}
    finally:
        if started:
            ray.shutdown()
    return results
