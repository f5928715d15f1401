"""Export one model to every requested (format, precision), each conversion isolated in its own
process, each artifact verified against PyTorch, all recorded in ``DIR/manifest.json``."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from exporters import FORMATS, PRECISIONS, get_format
from exporters.provenance import producer_version, sha256_path, toolchain_versions
from exporters.records import ArtifactRecord, ModelRef, Status

from .errors import ConfigError, did_you_mean
from .exportdir import MANIFEST_SCHEMA, MANIFEST_VERSION, ExportDir
from .modelinfo import info_of

# the worker loads the model through this entry point (exporters import no workbench code)
MODEL_LOADER = "workbench.core:load_model"


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
    route: str = "auto"  # tflite: auto | tf-direct | onnx2tf | litert-torch
    image_input: bool = False  # coreml
    timeout_s: float = 900.0
    threads: int = 2
    seed: int = 0  # random init when no weights are given
    gates: dict = field(default_factory=dict)  # overrides of fidelity.DEFAULT_GATES
    # post-training quantization: per_channel (bool), calib_method (minmax|percentile|entropy),
    # keep_float (layer names, 'first', 'last'), keep_worst (N most sensitive layers kept float)
    quant: dict = field(default_factory=dict)
    memory_limit_mb: int | None = None  # cap on each conversion process (address space); None = no cap
    compat: str | None = None  # tflite: a runtime every file must load on, e.g. "tflite-runtime==2.14"

    def validate(self) -> "ExportOptions":
        for f in self.formats:
            if f not in FORMATS:
                raise ConfigError(f"unknown format {f!r}{did_you_mean(f, FORMATS)}; "
                                  f"choose from {', '.join(FORMATS)}")
        for p in self.precisions:
            if p not in PRECISIONS:
                raise ConfigError(f"unknown precision {p!r}{did_you_mean(p, PRECISIONS)}; "
                                  f"choose from {', '.join(PRECISIONS)}")
        from .optimize.quant import validate_quant

        validate_quant(self.quant, "quantization")
        from exporters.tflite_export import ROUTES

        if self.route not in ROUTES:
            raise ConfigError(f"unknown TFLite route {self.route!r}; choose one of {', '.join(ROUTES)}")
        from .sweep_fields import check_number

        check_number("--calib-count", self.calib_count, "int", 1, 100_000)
        check_number("the fidelity image count", self.fidelity_count, "int", 1, 100_000)
        check_number("--timeout", self.timeout_s, "number", 1, 7 * 86400)
        check_number("--threads", self.threads, "int", 1, 256)
        if self.memory_limit_mb is not None:
            check_number("--memory-limit", self.memory_limit_mb, "int", 256, 1 << 22)
        if self.compat is not None:
            from exporters.tflite_compat import parse_target

            try:
                parse_target(self.compat)
            except ValueError as e:
                raise ConfigError(f"--compat: {e}") from None
        return self


ProgressFn = Callable[[str, dict], None]


def prepare_data(model: torch.nn.Module, opts: ExportOptions, work: Path) -> tuple[dict, dict, np.ndarray]:
    """Calibration images (user folder or the built-in calib split) and fidelity images (the
    built-in eval split: never the calibration images)."""
    from .data.preprocess import for_model, image_folder_arrays
    from .data.synthetic import classification_images

    size = info_of(model).input_size
    pre = for_model(model, size)  # an SSD from another project brings its own preprocessing
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
    from .core import load_model, reparameterize, save_state_dict
    from .fidelity import DEFAULT_GATES

    opts = options.validate()
    gates = {**DEFAULT_GATES, **opts.gates}
    say = progress or (lambda event, info: None)
    xd = ExportDir.of(out_dir)
    work = xd.work
    work.mkdir(parents=True, exist_ok=True)

    say("load", {"model": name})
    with torch.random.fork_rng():  # random-init models are reproducible (seed 0)
        torch.manual_seed(opts.seed)
        model = load_model(name, weights=weights, num_classes=num_classes, input_size=input_size)
    source_info = {"weights": str(weights) if weights else f"random init (seed {opts.seed}, no --weights)",
                   "weights_sha256": sha256_path(weights) if weights else None,
                   "reparameterized": False}
    if opts.reparam:
        r = reparameterize(model)
        model = r.model
        source_info.update(reparameterized=True, reparam=r.to_dict())
    model.eval()
    info = info_of(model).with_(weights=source_info["weights"])
    src = save_state_dict(model, xd.source_weights)
    # intermediate files (fp32 ONNX, SavedModel) are shared between precisions and keyed by
    # the exact source weights, so a re-export of other weights never reuses them
    cache = work / f"src-{sha256_path(src)[:16]}"
    cache.mkdir(exist_ok=True)
    calib_info, fid_info, fid_inputs = prepare_data(model, opts, work)
    ref = reference_outputs(model, fid_inputs)
    quant_job, quant_info = resolve_quant(model, opts, work, fid_inputs)
    priors = model.decode_config if info.task == "detection" else None  # its layout's boxes, coder and rules

    manifest = {
        "schema": MANIFEST_SCHEMA, "version": MANIFEST_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": info.name, "task": info.task, "num_classes": info.num_classes, "input_size": info.input_size,
        "source": source_info, "calibration": calib_info, "fidelity_inputs": fid_info,
        "options": {k: v for k, v in opts.__dict__.items() if k != "gates"}, "gates": gates,
        "quantization": quant_info,
        **({"decode": model.decode_config.to_dict()} if info.task == "detection" else {}),
        "toolchain": toolchain_versions(), "artifacts": [],
    }
    xd.write(manifest)
    from .export_steps import ArtifactContext, export_one

    ctx = ArtifactContext(
        model=ModelRef(info=info, weights_path=str(src), loader=MODEL_LOADER), producer_version=producer_version(),
        out=xd.root, work=work, cache=cache, opts=opts,
        format_options={"nchw": opts.nchw, "int8_io": opts.int8_io, "route": opts.route,
                        "image_input": opts.image_input, "quant": quant_job,
                        **({"compat": opts.compat} if opts.compat else {})},
        reference=ref, task=info.task, priors=priors, gates=gates, trained=weights is not None)
    plan = [(f, p) for f in opts.formats for p in opts.precisions]
    for idx, (fmt_name, precision) in enumerate(plan):
        fmt = get_format(fmt_name)
        rec = ArtifactRecord(model=info.name, format=fmt_name, precision=precision,
                             runnable_here=fmt.runs_here, toolchain=manifest["toolchain"])
        ok, why = fmt.supports(precision)
        say("start", {"index": idx, "total": len(plan), "format": fmt_name, "precision": precision})
        if not ok:
            rec.reason = why
        else:
            rec = export_one(ctx, fmt, rec)
        manifest["artifacts"].append(rec.to_dict())
        xd.write(manifest)
        say("done", {"index": idx, "total": len(plan), "record": rec.to_dict()})
    manifest["summary"] = {s.value: sum(a["status"] == s for a in manifest["artifacts"])
                           for s in (Status.OK, Status.FAILED, Status.SKIPPED)}
    xd.write(manifest)
    return manifest
