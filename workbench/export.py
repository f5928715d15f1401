"""Export one model to every requested (format, precision), each conversion isolated in its own
process, each artifact verified against PyTorch, all recorded in ``DIR/manifest.json``."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .errors import ConfigError
from .fsutil import atomic_write_json as _atomic_json

TOOLCHAIN_PACKAGES = ("torch", "onnx", "onnxruntime", "onnxsim", "onnxconverter-common", "onnx2tf",
                      "tensorflow", "ai-edge-litert", "coremltools")
MANIFEST_SCHEMA = "edge-workbench/export-manifest"
MANIFEST_VERSION = 1


def toolchain_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in TOOLCHAIN_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


@dataclass(frozen=True)
class ExportOptions:
    formats: tuple[str, ...] = ("onnx", "tflite", "coreml")
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    calib_dir: str | None = None
    calib_count: int = 64
    fidelity_count: int = 16
    reparam: bool = True
    nchw: bool = False
    int8_io: bool = False
    route: str = "auto"  # tflite: auto | tf-direct | onnx2tf
    image_input: bool = False  # coreml
    timeout_s: float = 900.0
    threads: int = 2
    seed: int = 0  # random init when no weights are given
    gates: dict = field(default_factory=dict)  # overrides of fidelity.DEFAULT_GATES
    # post-training quantization: per_channel (bool), calib_method (minmax|percentile|entropy),
    # keep_float (layer names, 'first', 'last'), keep_worst (N most sensitive layers kept float)
    quant: dict = field(default_factory=dict)
    memory_limit_mb: int | None = None  # cap on each conversion process (address space); None = no cap

    def validate(self) -> "ExportOptions":
        from exporters.base import CAPABILITIES, PRECISIONS

        from .errors import did_you_mean

        for f in self.formats:
            if f not in CAPABILITIES:
                raise ConfigError(f"unknown format {f!r}{did_you_mean(f, CAPABILITIES)}; "
                                  f"choose from {', '.join(CAPABILITIES)}")
        for p in self.precisions:
            if p not in PRECISIONS:
                raise ConfigError(f"unknown precision {p!r}{did_you_mean(p, PRECISIONS)}; "
                                  f"choose from {', '.join(PRECISIONS)}")
        from .optimize.quant import validate_quant

        validate_quant(self.quant, "quantization")
        if self.route not in ("auto", "tf-direct", "onnx2tf"):
            raise ConfigError(f"unknown TFLite route {self.route!r}; choose auto, tf-direct or onnx2tf")
        if self.calib_count < 1 or self.fidelity_count < 1:
            raise ConfigError("--calib-count and the fidelity image count must be >= 1")
        if self.timeout_s <= 0:
            raise ConfigError(f"--timeout must be > 0 seconds, got {self.timeout_s}")
        return self


ProgressFn = Callable[[str, dict], None]


def _sha256_file(path: str | os.PathLike) -> str:
    from exporters.common import sha256_path

    return sha256_path(path)


def prepare_data(model: torch.nn.Module, opts: ExportOptions, work: Path) -> tuple[dict, dict, np.ndarray]:
    """Calibration images (user folder or the built-in calib split) and fidelity images (the
    built-in eval split: never the calibration images)."""
    from .data.preprocess import Preprocess, image_folder_arrays
    from .data.synthetic import classification_images

    size = model.workbench_input_size
    pre = Preprocess(size)
    if opts.calib_dir:
        imgs, used, skipped = image_folder_arrays(opts.calib_dir, size, opts.calib_count)
        calib_info = {"source": str(opts.calib_dir), "images": len(imgs), "skipped": skipped[:20],
                      "skipped_count": len(skipped)}
    else:
        imgs, _ = classification_images(opts.calib_count, size, split="calib")
        calib_info = {"source": "built-in synthetic set, calib split", "images": len(imgs)}
    calib = pre(imgs)
    np.save(work / "calib.npy", calib)
    fid_imgs, _ = classification_images(opts.fidelity_count, size, split="eval")
    fid = pre(fid_imgs)
    np.save(work / "fidelity_inputs.npy", fid)
    calib_info["preprocess"] = pre.to_dict()
    fid_info = {"source": "built-in synthetic set, eval split (disjoint from calibration)",
                "images": len(fid), "preprocess": pre.to_dict()}
    return calib_info, fid_info, fid


def resolve_quant(model: torch.nn.Module, opts: ExportOptions, work: Path, eval_inputs: np.ndarray) -> tuple[dict, dict]:
    """The quantization options a worker needs (layer names resolved; the sensitivity table
    computed when ``keep_worst`` asks for it) and what the manifest records about them."""
    q = opts.quant
    job = {"per_channel": q.get("per_channel", True), "calib_method": q.get("calib_method", "minmax"), "keep_float": []}
    info = dict(job)
    if q.get("keep_float") or q.get("keep_worst"):
        from .optimize.quant import resolve_keep_float, sensitivity

        sens = None
        if q.get("keep_worst"):
            calib = torch.from_numpy(np.load(work / "calib.npy"))
            sens = sensitivity(model, calib, torch.from_numpy(eval_inputs), per_channel=job["per_channel"],
                               method="percentile" if job["calib_method"] == "percentile" else "minmax")
            info["sensitivity_worst"] = [{k: r[k] for k in ("layer", "sqnr_db")} for r in sens["layers"][:max(5, q["keep_worst"])]]
        job["keep_float"] = resolve_keep_float(model, q.get("keep_float", []), q.get("keep_worst", 0), sens)
        info["keep_float"] = job["keep_float"]
    return job, info


@torch.no_grad()
def reference_outputs(model: torch.nn.Module, inputs: np.ndarray) -> list[np.ndarray]:
    outs = []
    for i in range(len(inputs)):
        y = model(torch.from_numpy(inputs[i : i + 1]))
        y = y["main"] if isinstance(y, dict) else y
        outs.append([t.numpy() for t in (y if isinstance(y, tuple) else (y,))])
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def export_model(name: str, *, out_dir: str | os.PathLike, weights: str | None = None,
                 num_classes: int | None = None, input_size: int | None = None,
                 options: ExportOptions = ExportOptions(), progress: ProgressFn | None = None) -> dict:
    """Export and verify; returns the manifest (also written to ``out_dir/manifest.json``)."""
    from exporters.base import CAPABILITIES, ArtifactRecord, supports

    from .api import load_model, reparameterize, save_state_dict
    from .fidelity import DEFAULT_GATES, apply_gate, compare
    from .proc import run_isolated

    opts = options.validate()
    gates = {**DEFAULT_GATES, **opts.gates}
    say = progress or (lambda event, info: None)
    out = Path(out_dir)
    work = out / ".work"
    work.mkdir(parents=True, exist_ok=True)

    say("load", {"model": name})
    with torch.random.fork_rng():  # random-init models are reproducible (seed 0)
        torch.manual_seed(opts.seed)
        model = load_model(name, weights=weights, num_classes=num_classes, input_size=input_size)
    trained = weights is not None
    source_info = {"weights": str(weights) if weights else f"random init (seed {opts.seed}, no --weights)",
                   "weights_sha256": _sha256_file(weights) if weights else None,
                   "reparameterized": False}
    if opts.reparam:
        r = reparameterize(model)
        model = r.model
        source_info.update(reparameterized=True, reparam=r.to_dict())
    model.eval()
    src = save_state_dict(model, work / "source.safetensors")
    # intermediate files (fp32 ONNX, SavedModel) are shared between precisions and keyed by
    # the exact source weights, so a re-export of other weights never reuses them
    src_sha = _sha256_file(src)
    cache = work / f"src-{src_sha[:16]}"
    cache.mkdir(exist_ok=True)
    size, n_classes, task = model.workbench_input_size, model.workbench_num_classes, model.workbench_task
    calib_info, fid_info, fid_inputs = prepare_data(model, opts, work)
    ref = reference_outputs(model, fid_inputs)
    quant_job, quant_info = resolve_quant(model, opts, work, fid_inputs)
    priors = None
    if task == "detection":
        from .detection import default_boxes

        priors = default_boxes(model.priors)

    manifest = {
        "schema": MANIFEST_SCHEMA, "version": MANIFEST_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model.workbench_name, "task": task, "num_classes": n_classes, "input_size": size,
        "source": source_info, "calibration": calib_info, "fidelity_inputs": fid_info,
        "options": {k: v for k, v in opts.__dict__.items() if k != "gates"}, "gates": gates,
        "quantization": quant_info,
        "toolchain": toolchain_versions(), "artifacts": [],
    }
    manifest_path = out / "manifest.json"
    _atomic_json(manifest_path, manifest)

    base_job = {"model": {"name": model.workbench_name, "weights": str(src), "num_classes": n_classes,
                          "input_size": size, "weights_label": source_info["weights"]},
                "work_dir": str(cache), "calib": str(work / "calib.npy"), "threads": opts.threads,
                "options": {"nchw": opts.nchw, "int8_io": opts.int8_io, "route": opts.route,
                            "image_input": opts.image_input, "quant": quant_job}}
    env = {**os.environ, "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""),
           "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")]))}
    plan = [(f, p) for f in opts.formats for p in opts.precisions]
    for idx, (fmt, precision) in enumerate(plan):
        cap = CAPABILITIES[fmt]
        rec = ArtifactRecord(model=model.workbench_name, format=fmt, precision=precision, route=None,
                             path=None, sha256=None, size_bytes=None, status="skipped", reason=None,
                             export_seconds=None, peak_rss_mb=None, fidelity=None, gpu_delegate=None,
                             runnable_here=cap.runnable_here, toolchain=manifest["toolchain"])
        ok, why = supports(fmt, precision)
        say("start", {"index": idx, "total": len(plan), "format": fmt, "precision": precision})
        if not ok:
            rec.reason = why
        else:
            rec = _export_one(rec, base_job, out, work, env, opts, cap, ref, task, priors, gates, trained,
                              run_isolated, compare, apply_gate)
        manifest["artifacts"].append(rec.to_dict())
        _atomic_json(manifest_path, manifest)
        say("done", {"index": idx, "total": len(plan), "record": rec.to_dict()})
    manifest["summary"] = {s: sum(a["status"] == s for a in manifest["artifacts"]) for s in ("ok", "failed", "skipped")}
    _atomic_json(manifest_path, manifest)
    return manifest


def _oom_reason(reason: str | None, opts: ExportOptions) -> str | None:
    """Say plainly when a conversion failed for memory (the worker's own words stay after it)."""
    from .proc import OOM_MARKERS

    if not reason or reason.startswith("out of memory") or not any(m in reason for m in OOM_MARKERS):
        return reason
    cap = f"memory limit {opts.memory_limit_mb} MB; raise --memory-limit" if opts.memory_limit_mb else "free memory"
    return f"out of memory during the conversion ({cap}): {reason}"[:500]


def _export_one(rec, base_job, out, work, env, opts, cap, ref, task, priors, gates, trained,
                run_isolated, compare, apply_gate):
    from exporters.common import sha256_path, size_bytes

    fmt, precision = rec.format, rec.precision
    path = out / f"{rec.model}_{precision}{cap.suffix}"
    tag = f"{fmt}-{precision}"
    stages = []
    job = {**base_job, "format": fmt, "precision": precision, "out_path": str(path)}

    def stage(mode: str):
        j = {**job, "mode": mode, "result_path": str(work / f"{tag}.{mode}.json")}
        Path(j["result_path"]).unlink(missing_ok=True)
        job_file = work / f"{tag}.{mode}.job.json"
        job_file.write_text(json.dumps(j))
        pr = run_isolated([sys.executable, "-m", "exporters.worker", str(job_file)], timeout=opts.timeout_s,
                          log_path=work / f"{tag}.{mode}.log", env=env, memory_limit_mb=opts.memory_limit_mb)
        stages.append({"stage": mode, "seconds": round(pr.seconds, 2), "peak_rss_mb": round(pr.peak_rss_mb, 1)})
        rec.export_seconds = round(sum(s["seconds"] for s in stages), 2)
        rec.peak_rss_mb = max(s["peak_rss_mb"] for s in stages)
        return pr, _read_result(j["result_path"])

    if fmt == "tflite" and opts.route != "onnx2tf":
        # stage 1 builds the SavedModel shared by every precision, in a process of its own
        pr, res = stage("prepare")
        if res is None or res["status"] == "failed" or pr.timed_out:
            rec.status = "failed"
            rec.reason = _oom_reason("building the TensorFlow graph failed: " + (res.get("reason") if res else pr.describe_failure()), opts)
            return rec
        if res["status"] == "unsupported":
            if opts.route == "tf-direct":
                rec.status, rec.reason = "failed", f"tf-direct cannot map {res['reason']}; try --route onnx2tf"
                return rec
            job["options"] = {**job["options"], "route": "onnx2tf"}
            rec.notes.append(f"tf-direct cannot map {res['reason']}; used onnx2tf")
        if res.get("cached"):
            stages.pop()  # shared with an earlier precision; its cost is on that row
    pr, res = stage("convert")
    rec.stages = stages
    if pr.timed_out or res is None:
        rec.status, rec.reason = "failed", pr.describe_failure() if (pr.timed_out or pr.crashed) else "worker wrote no result"
        return rec
    if res["status"] != "ok":
        rec.status, rec.reason = res["status"], res.get("reason")
        if rec.status == "failed":
            rec.reason = _oom_reason(rec.reason, opts)
        return rec
    rec.route, rec.notes = res.get("route"), rec.notes + res.get("notes", [])
    rec.path, rec.sha256, rec.size_bytes = str(path), sha256_path(path), size_bytes(path)
    extra = res.get("extra") or {}
    if "validation" in extra:
        rec.validation = extra["validation"]
    rec.status = "ok"
    if not cap.runnable_here:
        rec.fidelity = {"status": "not runnable on this host (needs macOS)"}
        rec.gate = {"passed": None, "checks": {}, "reason": "not runnable on this host (needs macOS); "
                    "validated by spec reload and weight SNR instead"}
        return rec
    run_job = {**base_job, "mode": "run", "format": fmt, "precision": precision, "out_path": str(path),
               "inputs": str(work / "fidelity_inputs.npy"), "outputs": str(work / f"{tag}.outputs.npz"),
               "result_path": str(work / f"{tag}.run.json")}
    Path(run_job["result_path"]).unlink(missing_ok=True)
    run_file = work / f"{tag}.run.job.json"
    run_file.write_text(json.dumps(run_job))
    pr2 = run_isolated([sys.executable, "-m", "exporters.worker", str(run_file)], timeout=opts.timeout_s,
                       log_path=work / f"{tag}.run.log", env=env)
    res2 = _read_result(run_job["result_path"])
    if pr2.timed_out or res2 is None or res2["status"] != "ok":
        rec.status = "failed"
        rec.reason = ("artifact could not run here: " +
                      (res2.get("reason") if res2 else pr2.describe_failure()))
        return rec
    rec.gpu_delegate = res2.get("gpu_delegate")
    with np.load(run_job["outputs"]) as z:
        got = [z[f"arr_{i}"] for i in range(len(z.files))]
    try:
        rec.fidelity = compare(ref, got, task, priors)
    except ValueError as e:
        rec.status, rec.reason = "failed", f"outputs do not match PyTorch's layout: {e}"
        return rec
    gate = apply_gate(precision, rec.fidelity, gates, trained)
    rec.gate = gate.to_dict()
    if gate.passed is False:
        rec.status, rec.reason = "failed", f"fidelity gate missed: {gate.reason}"
    return rec


def _read_result(path: str) -> dict | None:
    p = Path(path)
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return None
