"""The exporter protocol, the capability table and the manifest row.

One small protocol: an exporter turns a PyTorch model into one artifact file for one
precision. Everything about a format that callers need to know sits in ``CAPABILITIES``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol

PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic", "int16x8", "pal4", "pal6", "pal8")


@dataclass(frozen=True)
class Capability:
    format: str
    suffix: str
    precisions: tuple[str, ...]
    options: tuple[str, ...]
    runs_on: str  # where the artifact can run
    runnable_here: bool  # can this host (Linux x86) execute it for fidelity checks
    precision_notes: dict = field(default_factory=dict)


CAPABILITIES: dict[str, Capability] = {
    "onnx": Capability(
        "onnx", ".onnx", ("fp32", "fp16", "int8", "int8-dynamic"),
        ("opset", "simplify"),
        "ONNX Runtime (CPU here; CUDA/TensorRT/CoreML/NNAPI execution providers on targets)", True,
        {"int8": "static QDQ, per-channel weights, calibrated",
         "int8-dynamic": "dynamic quantization of MatMul/Gemm only (ConvInteger does not load in ORT CPU)",
         "fp16": "weights and activations fp16, fp32 inputs/outputs"}),
    "tflite": Capability(
        "tflite", ".tflite", ("fp32", "fp16", "int8-dynamic", "int8", "int16x8"),
        ("nchw", "int8_io", "route"),
        "LiteRT / TFLite interpreter (CPU XNNPACK here; GPU delegate, NNAPI on phones)", True,
        {"fp16": "fp16 weights, the GPU delegate's native precision (CPU dequantizes)",
         "int8-dynamic": "dynamic-range: int8 weights, float activations",
         "int8": "full integer with calibration; float I/O unless int8_io",
         "int16x8": "16-bit activations, 8-bit weights (accurate; no XNNPACK/GPU kernels: slow on CPU)"}),
    "coreml": Capability(
        "coreml", ".mlpackage", ("fp32", "fp16", "int8", "pal4", "pal6", "pal8"),
        ("image_input",),
        "Core ML on iOS/macOS (prediction needs macOS; not runnable on this Linux host)", False,
        {"int8": "linear int8 weight quantization (fp16 compute)",
         "pal4": "4-bit k-means palettized weights", "pal6": "6-bit palettized",
         "pal8": "8-bit palettized"}),
}


def supports(fmt: str, precision: str) -> tuple[bool, str]:
    cap = CAPABILITIES.get(fmt)
    if cap is None:
        return False, f"unknown format {fmt!r}"
    if precision not in cap.precisions:
        return False, f"{fmt} has no {precision} variant (it offers {', '.join(cap.precisions)})"
    return True, ""


class SkipCombination(Exception):
    """The combination cannot be made for a reason that is not a failure (recorded as skipped)."""


@dataclass
class ConvertResult:
    """What a converter reports back (inside its worker process)."""

    route: str
    notes: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


class Exporter(Protocol):
    format: str

    def convert(self, model, out_path: str, precision: str, options: dict, calib) -> ConvertResult:
        """Write the artifact for ``precision`` to ``out_path``; raise on failure."""


@dataclass
class ArtifactRecord:
    model: str
    format: str
    precision: str
    route: str | None
    path: str | None
    sha256: str | None
    size_bytes: int | None
    status: str  # ok | failed | skipped
    reason: str | None
    export_seconds: float | None
    peak_rss_mb: float | None
    fidelity: dict | None
    gpu_delegate: dict | None
    runnable_here: bool
    toolchain: dict
    notes: list[str] = field(default_factory=list)
    gate: dict | None = None
    validation: dict | None = None
    stages: list = field(default_factory=list)  # per-process time and peak memory

    def to_dict(self) -> dict:
        return asdict(self)
