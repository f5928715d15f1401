"""ONNX: fp32 (checked, simplified, provenance in metadata_props), fp16, int8 QDQ, int8-dynamic."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .base import Capability, Format
from .records import ConvertJob, ConvertResult, ExportError, ModelInfo, SkipCombination
from .provenance import stamp

OPSET = 17


def export_fp32(model, path: Path, info: ModelInfo) -> list[str]:
    """torch -> ONNX (TorchScript exporter: one self-contained file), checked and simplified."""
    import onnx
    import torch

    from .common import MainOutput

    notes = []
    x = torch.zeros(1, 3, info.input_size, info.input_size)
    names = info.output_names
    torch.onnx.export(MainOutput(model).eval(), (x,), str(path), opset_version=OPSET,
                      input_names=["input"], output_names=names, do_constant_folding=True,
                      dynamo=False)
    m = onnx.load(str(path))
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(m)
        if ok:
            m = simplified
        else:
            notes.append("onnxsim could not validate its simplification; kept the unsimplified graph")
    except Exception as e:  # simplification is an optimization, never a reason to fail
        notes.append(f"onnxsim skipped: {type(e).__name__}: {e}"[:200])
    onnx.save(m, str(path))
    onnx.checker.check_model(str(path))
    return notes


def ensure_fp32(model, base: Path, info: ModelInfo) -> list[str]:
    """The fp32 ONNX file every ONNX precision (and the onnx2tf route) starts from, built once."""
    if base.exists():
        return []
    tmp = base.with_name(base.name + ".partial")
    notes = export_fp32(model, tmp, info)
    os.replace(tmp, base)
    return notes


def _stamp(path: Path, meta: dict) -> None:
    import onnx

    m = onnx.load(str(path))
    del m.metadata_props[:]
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v
    m.producer_name = "edge-workbench"
    onnx.save(m, str(path))
    onnx.checker.check_model(str(path))


class _Reader:
    def __init__(self, calib: np.ndarray):
        self.data = iter([{"input": calib[i : i + 1]} for i in range(len(calib))])

    def get_next(self):
        return next(self.data, None)


def onnx_nodes_for(layers: list[str], onnx_path: str | Path) -> list[str]:
    """ONNX node names (torch.onnx scope names) of the given torch layer names."""
    import onnx

    nodes = onnx.load(str(onnx_path), load_external_data=False).graph.node
    out = []
    for layer in layers:
        out += [n.name for n in nodes if n.name.startswith("/")
                and ".".join(n.name.split("/")[1:-1]).removeprefix("model.") == layer]
    return out


def _convert(model, info: ModelInfo, out_path: str, precision: str, options: dict, calib, base_fp32: Path,
             version: str) -> ConvertResult:
    out = Path(out_path)
    notes: list[str] = []
    notes += ensure_fp32(model, base_fp32, info)
    if precision == "fp32":
        out.write_bytes(base_fp32.read_bytes())
    elif precision == "fp16":
        import onnx
        from onnxconverter_common import float16

        m16 = float16.convert_float_to_float16(onnx.load(str(base_fp32)), keep_io_types=True)
        onnx.save(m16, str(out))
    elif precision == "int8":
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        if calib is None or len(calib) == 0:
            raise ExportError("int8 needs calibration data (--calib-count >= 1)")
        q = options.get("quant") or {}
        per_channel = bool(q.get("per_channel", True))
        method = q.get("calib_method", "minmax")
        cm = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[method]
        exclude = onnx_nodes_for(q.get("keep_float", []), base_fp32) if q.get("keep_float") else []
        extra_opts = {"CalibPercentile": 99.99} if method == "percentile" else {}
        quantize_static(str(base_fp32), str(out), _Reader(calib), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, calibrate_method=cm, nodes_to_exclude=exclude,
                        extra_options=extra_opts)
        notes.append(f"static QDQ, {'per-channel' if per_channel else 'per-tensor'} int8 weights, {method} "
                     f"calibration on {len(calib)} images"
                     + (f"; kept in float: {', '.join(q['keep_float'])} ({len(exclude)} nodes)" if exclude else ""))
    elif precision == "int8-dynamic":
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        ops = {n.op_type for n in onnx.load(str(base_fp32)).graph.node}
        if not ops & {"MatMul", "Gemm"}:
            raise SkipCombination("no MatMul/Gemm to quantize dynamically (ConvInteger does not "
                                  "load in ONNX Runtime's CPU provider); use int8")
        quantize_dynamic(str(base_fp32), str(out), op_types_to_quantize=["MatMul", "Gemm"],
                         weight_type=QuantType.QUInt8)
        notes.append("dynamic quantization of MatMul/Gemm only; convolutions stay float")
    else:
        raise SkipCombination(f"onnx has no {precision} variant")
    _stamp(out, stamp(info, "onnx", precision, "torch.onnx", version))
    return ConvertResult(route="torch.onnx", notes=notes, extra={"opset": OPSET})



class UnsafeArtifact(ValueError):
    """An artifact that would make a runtime read outside its own folder."""


def check_external_data(path) -> None:
    """Refuse an ONNX file whose external-data locations are absolute or resolve (symlinks
    included) outside the model's folder, before any runtime loads it."""
    import os

    import onnx
    from onnx.external_data_helper import _get_all_tensors

    p = Path(path)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:
        raise UnsafeArtifact(f"{p.name} is not a readable ONNX file ({type(e).__name__}); re-export it") from e
    root = p.resolve().parent
    for t in _get_all_tensors(model):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        loc = next((e.value for e in t.external_data if e.key == "location"), "")
        target = Path(os.path.realpath(root / loc))
        if not loc or os.path.isabs(loc) or (target != root and root not in target.parents):
            raise UnsafeArtifact(f"{p.name}: tensor {t.name!r} reads external data from {loc!r}, outside the model's "
                                 f"folder; refused (keep external data files beside the .onnx)")


class OnnxFormat(Format):
    capability = Capability(
        "onnx", ".onnx", ("fp32", "fp16", "int8", "int8-dynamic"),
        ("opset", "simplify", "quant", "keep_float"),
        "ONNX Runtime (CPU here; CUDA/TensorRT/CoreML/NNAPI execution providers on targets)", True,
        {"int8": "static QDQ, per-channel weights, calibrated",
         "int8-dynamic": "dynamic quantization of MatMul/Gemm only (ConvInteger does not load in ORT CPU)",
         "fp16": "weights and activations fp16, fp32 inputs/outputs"},
        runtime="onnxruntime")

    def convert(self, job: ConvertJob, load_model) -> ConvertResult:
        calib = np.load(job.calib) if job.calib else None
        return _convert(load_model(), job.model.info, job.out_path, job.precision, job.options, calib,
                        Path(job.work_dir) / "base_fp32.onnx", job.producer_version)

    def check_artifact(self, path) -> None:
        check_external_data(path)

    def load(self, path, *, threads: int = 2, options: dict | None = None, accelerator: str = "cpu"):
        from .runtime import onnx_runner

        self.check_accelerator(accelerator)
        self.check_artifact(path)
        return onnx_runner(str(path), threads)
