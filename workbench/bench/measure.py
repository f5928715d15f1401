"""``workbench bench``: latency of an artifact, an export folder or a zoo model on a device."""
from __future__ import annotations

import json
from pathlib import Path

from exporters import FORMATS, format_for_path, get_format

from ..errors import ConfigError
from .noise import RETAKE_PAUSE_S, RETAKES, estimate_note
from .profiles import get_profile
from .runners import ADB_SUFFIXES, Protocol, RunnerError, not_runnable, run_adb, run_local, run_ssh
from .stats import LatencyStats

SUFFIXES = "/".join(f.suffix for f in FORMATS.values())


def _context(artifact: Path) -> dict:
    """Model, classes, input size and precision for an artifact, from its export manifest."""
    from ..evaluate import artifact_context

    row, manifest = artifact_context(str(artifact))
    return {"model": manifest["model"], "num_classes": manifest["num_classes"], "input_size": manifest["input_size"],
            "precision": row.get("precision") or "fp32", "format": row.get("format") or getattr(format_for_path(artifact), "name", None),
            "int8_io": bool((row.get("validation") or {}).get("int8_io")), "gpu": row.get("gpu"),
            "runtime_compat": row.get("runtime_compat")}


def _runtime_check(stats: LatencyStats, ctx: dict, profile) -> LatencyStats:
    """A profile that names its runtime (``runtime = "tflite-runtime==2.14"``): does this file load there?"""
    if not profile.runtime or ctx.get("format") != "tflite":
        return stats
    from exporters.tflite_compat import verdict_for

    v = verdict_for(ctx.get("runtime_compat"), profile.runtime)
    stats.runtime_check = v
    if v["loads"] is False:
        stats.warnings.append(f"does not load on {profile.runtime}: {v['why']}; re-export with --compat {profile.runtime}")
    return stats


def _gpu_placement(ctx: dict, profile, est: dict) -> str | None:
    """A GPU-delegate profile's estimate uses the executed placement on LiteRT's GPU accelerator.
    Returns a reason when the GPU would take none of the file (no estimate then)."""
    if "gpu" not in profile.delegates or ctx.get("format") != "tflite":
        return None
    g = ctx.get("gpu") or {}
    basis = est["basis"]
    if g.get("status") in ("ok", "gate missed") and g.get("fully_accelerated") is not None:
        dev = (g.get("device") or {}).get("name", "?")
        basis["placement"] = {"source": f"executed on LiteRT's GPU accelerator here (WebGPU, {dev}); Android's OpenCL "
                                        "delegate shares its kernels but is not the same binary",
                              "fully_accelerated": g["fully_accelerated"], "gpu_ops": g.get("gpu_ops"),
                              "total_ops": g.get("total_ops"), "fallback_by_op": g.get("fallback_by_op")}
        if g["fully_accelerated"]:
            return None
        if not g.get("gpu_ops"):
            return (f"the GPU accelerator takes none of this file's ops (executed here on {dev}): it would run on the CPU; "
                    "see the device's CPU profile")
        basis["lower_bound"] = (f"{g.get('cpu_ops')} of {g.get('total_ops')} ops fall back to the CPU (executed placement): "
                                "the estimate covers the GPU arithmetic only, not the CPU part or the GPU<->CPU copies")
        return None
    basis["placement"] = {"source": "rule table only (exporters.gpu_delegate): the GPU run did not happen here"
                                    + (f" ({g.get('reason')})" if g.get("reason") else "")}
    return None


def _estimate(ctx: dict, profile, threads: int, artifact: str) -> LatencyStats:
    from .estimate import estimate_ms

    fmt = get_format(ctx["format"]) if ctx.get("format") else None
    compute = fmt.compute_precision(ctx["precision"]) if fmt else ctx["precision"]
    e = estimate_ms(ctx["model"], ctx["num_classes"], ctx["input_size"], ctx["precision"], profile, threads,
                    compute_precision=compute)
    none_on_gpu = _gpu_placement(ctx, profile, e)
    if none_on_gpu:
        return not_runnable(artifact, profile, "estimate", none_on_gpu)
    v = e["estimate_ms"]
    return LatencyStats(device=profile.name, runner="estimate", threads=threads, init_ms=None, first_ms=None,
                        mean_ms=v, std_ms=None, min_ms=None, p50_ms=v, p90_ms=None, p99_ms=None, max_ms=None,
                        cv=None, runs=0, peak_rss_mb=None, timed_scope="estimate (nothing was timed)", estimated=True,
                        artifact=artifact, runtime="roofline estimate", basis=e["basis"])


def _retaken(measure) -> LatencyStats:
    """Measure; while the result is noisy (workbench.bench.noise), pause and measure again, up to
    RETAKES times. The last attempt is kept, flagged if it is still noisy."""
    import time

    stats = measure()
    retakes = 0
    while stats.noisy and retakes < RETAKES:
        time.sleep(RETAKE_PAUSE_S)
        stats = measure()
        retakes += 1
    stats.retakes = retakes
    if retakes and stats.noisy:
        stats.warnings.append(f"still noisy after {retakes} re-takes: kept and flagged")
    return stats


def estimate_artifact(artifact: str | Path, device: str) -> LatencyStats:
    """The labelled roofline estimate for any profile with [compute] figures (no device needed)."""
    profile = get_profile(device)
    ctx = _context(Path(artifact))
    if profile.runtimes and ctx["format"] not in profile.runtimes:
        return not_runnable(str(artifact), profile, "estimate", f"{profile.name} offers {', '.join(profile.runtimes)}, not {ctx['format']}")
    return _runtime_check(_estimate(ctx, profile, profile.resolved_threads(), str(artifact)), ctx, profile)


def bench_artifact(artifact: str | Path, device: str, protocol: Protocol = Protocol(), *,
                   with_estimate: bool = True) -> LatencyStats:
    stats = _bench_artifact(artifact, device, protocol, with_estimate=with_estimate)
    try:
        ctx = _context(Path(artifact))
    except (ConfigError, ValueError, OSError, KeyError):
        return stats
    return _runtime_check(stats, ctx, get_profile(device))


def _bench_artifact(artifact: str | Path, device: str, protocol: Protocol, *, with_estimate: bool) -> LatencyStats:
    profile = get_profile(device)
    threads = profile.resolved_threads()
    p = Path(artifact)
    if not p.exists():
        raise ConfigError(f"{p} does not exist; pass an artifact file ({SUFFIXES}) or an export folder")
    fmt = format_for_path(p)
    if fmt is None:
        raise ConfigError(f"{p.name}: cannot benchmark {p.suffix or 'this'} files; use one of {SUFFIXES}")
    try:
        fmt.check_artifact(p)  # e.g. ONNX external data that would be read from outside the model's folder
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if profile.runtimes and fmt.name not in profile.runtimes:
        return not_runnable(str(p), profile, profile.runner, f"{profile.name} offers {', '.join(profile.runtimes)}, not {fmt.name}")
    if profile.runner == "estimate":  # after the runtime check: no estimate for a format the device lacks
        return _estimate(_context(p), profile, threads, str(p))
    if profile.runner == "local" and fmt.name == "tensorrt":
        return not_runnable(str(p), profile, "local", "a TensorRT engine needs an NVIDIA GPU with CUDA; the TensorRT-ready "
                            "ONNX is verified here, its latency is measured on a GPU profile")
    if not fmt.runs_here:
        return not_runnable(str(p), profile, profile.runner, f"not runnable on this host ({fmt.capability.not_runnable_reason})")
    if profile.runner == "local":
        stats = _retaken(lambda: run_local(str(p), profile, protocol, threads))
        stats.warnings += fmt.latency_warnings(str(p))
        if with_estimate:
            try:
                est = _estimate(_context(p), profile, threads, str(p))
                stats.basis = {"estimate_ms": est.p50_ms, "estimate_error": est.p50_ms / stats.p50_ms - 1,
                               "estimate_basis": est.basis}
                note = estimate_note(stats.p50_ms, est.p50_ms)
                if note:
                    stats.warnings.append(note)
            except (ConfigError, ValueError) as e:
                stats.basis = {"estimate_ms": None, "estimate_error": None, "why": str(e)}
        return stats
    if profile.runner == "ssh":
        if fmt.name == "tensorrt":  # the engine is built and timed on the board by trtexec
            from .runners import run_trtexec_ssh

            ctx = _context(p)
            return run_trtexec_ssh(str(p), profile, protocol, ctx["precision"], ctx["int8_io"])
        return _retaken(lambda: run_ssh(str(p), profile, protocol, threads))
    if profile.runner == "adb":
        if p.suffix not in ADB_SUFFIXES:
            return not_runnable(str(p), profile, "adb", "benchmark_model runs .tflite files only")
        return run_adb(str(p), profile, protocol, threads)
    raise ConfigError(f"{profile.path}: runner {profile.runner!r} is not implemented")


def bench_model(name: str, device: str, protocol: Protocol = Protocol(), *, weights: str | None = None,
                num_classes: int | None = None, input_size: int | None = None, deploy: bool = True) -> LatencyStats:
    """PyTorch eager latency of a zoo model (deploy form unless ``deploy=False``), local runner only."""
    import tempfile

    from ..registry import get_spec, resolve_input_size
    from .runners import PROJECT_ROOT

    profile = get_profile(device)
    if profile.runner != "local":
        raise ConfigError(f"PyTorch eager runs only on local profiles; {profile.name} uses {profile.runner}: "
                          "export the model and bench the artifact")
    spec = get_spec(name)
    size = resolve_input_size(spec, input_size)
    with tempfile.TemporaryDirectory(prefix="wb-torch-") as d:
        job = Path(d) / f"{spec.name}.torchjob"
        job.write_text(json.dumps({"project_root": str(PROJECT_ROOT), "model": spec.name, "weights": weights,
                                   "num_classes": num_classes, "input_size": size, "deploy": deploy}))
        stats = run_local(str(job), profile, protocol, profile.resolved_threads())
    stats.artifact = f"{spec.name} (pytorch eager, {'deploy' if deploy else 'train-time'} form)"
    return stats


def bench_target(target: str, device: str, protocol: Protocol = Protocol()) -> list[dict]:
    p = Path(target)
    if not p.exists() and not p.suffix:
        from ..registry import list_models

        if target.lower() in list_models():
            return [bench_model(target, device, protocol).to_dict()]
    if p.is_dir() and format_for_path(p) is None:  # an export folder (a .mlpackage is a folder too)
        from ..exportdir import ExportDir

        rows = ExportDir.of(p).artifacts()
        out = []
        for a in rows:
            try:
                out.append(bench_artifact(a["path"], device, protocol).to_dict())
            except RunnerError as e:
                s = not_runnable(a["path"], get_profile(device), get_profile(device).runner, str(e))
                s.status = "failed"
                out.append(s.to_dict())
        return out
    return [bench_artifact(p, device, protocol).to_dict()]
