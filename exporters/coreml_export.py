"""CoreML: ``.mlpackage`` (mlprogram) fp32 / fp16, int8 weight quantization, 4/6/8-bit palettization.

On Linux a CoreML model cannot run (``predict`` needs macOS), so it is validated instead: the
saved package reloads, its MIL op list is recorded, and its (decompressed) weights are compared
with the torch weights as an SNR in dB. No latency or output figure is invented.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from .base import Capability, Format
from .provenance import stamp
from .records import ConvertJob, ConvertResult, ModelInfo, SkipCombination


def _weights_from_program(prog) -> list[np.ndarray]:
    """Weights of conv/linear ops in program order, decompressed where compressed."""
    out = []
    for fn in prog.functions.values():
        for op in fn.operations:
            if op.op_type not in ("conv", "linear"):
                continue
            w = op.weight
            val = w.val
            if val is None and w.op is not None and hasattr(w.op, "materialized_val_inference"):
                val = w.op.materialized_val_inference()
            if val is not None:
                out.append(np.asarray(val, np.float32))
    return out


def weight_snr_db(model, prog) -> dict:
    import torch

    ref = [m.weight.detach().float().numpy() for m in model.modules()
           if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    got = _weights_from_program(prog)
    sig = err = 0.0
    matched = 0
    j = 0
    for r in ref:
        while j < len(got) and got[j].shape != r.shape:
            j += 1
        if j >= len(got):
            break
        sig += float((r.astype(np.float64) ** 2).sum())
        err += float(((r.astype(np.float64) - got[j]) ** 2).sum())
        matched += 1
        j += 1
    if matched == 0:
        return {"weight_snr_db": None, "weights_compared": 0, "reason": "no conv/linear weights matched"}
    snr = float("inf") if err == 0 else 10 * np.log10(sig / err)
    return {"weight_snr_db": snr if np.isfinite(snr) else 999.0, "weights_compared": matched,
            "weights_total": len(ref)}


def _convert(model, info: ModelInfo, out_path: str, precision: str, options: dict, version: str) -> ConvertResult:
    import coremltools as ct
    import coremltools.optimize.coreml as cto
    import torch

    from .common import MainOutput

    size = info.input_size
    wrapped = MainOutput(model).eval()
    x = torch.zeros(1, 3, size, size)
    traced = torch.jit.trace(wrapped, x)
    if options.get("image_input"):
        inp = ct.ImageType(name="input", shape=(1, 3, size, size), scale=1 / (255 * 0.226),
                           bias=[-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225])
    else:
        inp = ct.TensorType(name="input", shape=(1, 3, size, size), dtype=np.float32)
    outs = [ct.TensorType(name=n, dtype=np.float32) for n in info.output_names]
    compute = ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16
    if precision not in ("fp32", "fp16", "int8", "pal4", "pal6", "pal8"):
        raise SkipCombination(f"coreml has no {precision} variant")
    ml = ct.convert(traced, inputs=[inp], outputs=outs, convert_to="mlprogram",
                    compute_precision=compute, minimum_deployment_target=ct.target.iOS16)
    notes = []
    if options.get("image_input"):
        notes.append("image input: CoreML's ImageType takes one scale for all channels, 1/(255 x 0.226) "
                     "(the mean of the ImageNet stds), with per-channel biases; per-channel std differs by up to 1.5%")
    if precision == "int8":
        q = options.get("quant") or {}
        gran = "per_channel" if q.get("per_channel", True) else "per_tensor"
        cfg = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8",
                                                                               granularity=gran))
        ml = cto.linear_quantize_weights(ml, config=cfg)
        notes.append(f"int8 linear-symmetric weights ({gran.replace('_', '-')}), fp16 compute")
        if q.get("keep_float"):
            notes.append("keep_float applies to ONNX QDQ; CoreML int8 here is weight-only (activations stay fp16)")
    elif precision.startswith("pal"):
        nbits = int(precision[3:])
        cfg = cto.OptimizationConfig(global_config=cto.OpPalettizerConfig(nbits=nbits, mode="kmeans"))
        ml = cto.palettize_weights(ml, config=cfg)
        notes.append(f"{nbits}-bit k-means palettized weights, fp16 compute")
    meta = stamp(info, "coreml", precision, "coremltools", version)
    ml.user_defined_metadata.update(meta)
    ml.short_description = f"{meta['model']} ({precision}) exported by edge-workbench"
    validation = weight_snr_db(model, ml._mil_program)
    ops: dict[str, int] = {}
    for fn in ml._mil_program.functions.values():
        for op in fn.operations:
            ops[op.op_type] = ops.get(op.op_type, 0) + 1
    validation["mil_ops"] = ops
    out = Path(out_path)
    if out.exists():
        shutil.rmtree(out)
    ml.save(str(out))
    reloaded = ct.models.MLModel(str(out), skip_model_load=True)
    spec = reloaded.get_spec()
    validation["spec_loads"] = True
    validation["spec_version"] = int(spec.specificationVersion)
    validation["metadata_ok"] = dict(spec.description.metadata.userDefined).get("producer") == "edge-workbench"
    return ConvertResult(route="coremltools", notes=notes, extra={"validation": validation})


NEEDS_MACOS = "not runnable on this host (needs macOS)"


class CoreMLFormat(Format):
    capability = Capability(
        "coreml", ".mlpackage", ("fp32", "fp16", "int8", "pal4", "pal6", "pal8"),
        ("image_input", "quant"),
        "Core ML on iOS/macOS (prediction needs macOS; not runnable on this Linux host)", False,
        {"int8": "linear int8 weight quantization (fp16 compute)",
         "pal4": "4-bit k-means palettized weights", "pal6": "6-bit palettized",
         "pal8": "8-bit palettized"},
        not_runnable_reason="needs macOS",
        compute_precision={"int8": "fp16", "pal4": "fp16", "pal6": "fp16", "pal8": "fp16"})

    def convert(self, job: ConvertJob, load_model) -> ConvertResult:
        return _convert(load_model(), job.model.info, job.out_path, job.precision, job.options, job.producer_version)
