"""Typed records that cross the process boundary and the package boundary.

One serializer (``to_dict`` / ``from_dict``) for every record: a conversion job goes to the worker
as JSON and its result comes back the same way. ``Status`` replaces free status strings; a
failure carries a typed ``FailureKind`` (out of memory, timeout, crash) instead of a substring.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import asdict, dataclass, field


class Status(str, enum.Enum):
    """Outcome of an export, a run or a measurement. A ``str`` enum: JSON keeps the plain word."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"          # the combination cannot be made (not a failure)
    UNSUPPORTED = "unsupported"  # a route cannot map the model (the caller may fall back)
    NOT_MEASURED = "not measured"  # the device does not run this format

    def __str__(self) -> str:  # f-strings and reports print the word
        return self.value


class FailureKind(str, enum.Enum):
    ERROR = "error"
    OUT_OF_MEMORY = "out of memory"
    TIMEOUT = "timeout"
    CRASH = "crash"

    def __str__(self) -> str:
        return self.value


class ExportError(Exception):
    """A conversion failed for a reason worth one line (raised in the worker, recorded as the row's reason)."""

    def __init__(self, message: str, kind: FailureKind = FailureKind.ERROR):
        super().__init__(message)
        self.kind = kind


class SkipCombination(Exception):
    """The combination cannot be made for a reason that is not a failure (recorded as skipped)."""


OOM_MARKERS = ("MemoryError", "bad_alloc", "Cannot allocate memory", "failed to map segment", "out of memory", "OOM")


def failure_kind_of(exc: BaseException) -> FailureKind:
    """Typed reason for an exception raised inside a conversion."""
    if isinstance(exc, ExportError):
        return exc.kind
    if isinstance(exc, MemoryError):
        return FailureKind.OUT_OF_MEMORY
    text = f"{type(exc).__name__}: {exc}"
    return FailureKind.OUT_OF_MEMORY if any(m in text for m in OOM_MARKERS) else FailureKind.ERROR


class _Record:
    """``to_dict`` / ``from_dict`` for a dataclass of plain fields, enums and nested records."""

    def to_dict(self) -> dict:
        return _plain(asdict(self))

    @classmethod
    def from_dict(cls, d: dict):
        kw = {}
        hints = {f.name: f for f in dataclasses.fields(cls)}
        for k, v in d.items():
            if k not in hints:
                continue  # newer writer, older reader: ignore unknown fields
            sub = _NESTED.get((cls.__name__, k))
            kw[k] = sub.from_dict(v) if (sub is not None and isinstance(v, dict)) else v
        for k, enum_type in _ENUMS.get(cls.__name__, {}).items():
            if kw.get(k) is not None:
                kw[k] = enum_type(kw[k])
        return cls(**kw)


def _plain(x):
    if isinstance(x, enum.Enum):
        return x.value
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


@dataclass(frozen=True)
class ModelInfo(_Record):
    """What a model is, carried by the model (``model.model_info``) instead of loose attributes."""

    name: str
    task: str = "classification"  # classification | detection
    num_classes: int = 1000
    input_size: int = 224
    weights: str = "random init"  # a label for provenance, not necessarily a path
    deploy: bool = False
    pruned: bool = False
    family: str = ""  # the registry's family (repvgg, vgg, ssd, ...): the TFLite auto route is chosen by it

    @property
    def output_names(self) -> list[str]:
        return ["loc", "conf"] if self.task == "detection" else ["logits"]

    def with_(self, **changes) -> "ModelInfo":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ModelRef(_Record):
    """How a worker process gets the model: a saved weights file and a loader entry point
    (``module:function`` taking ``name, weights, num_classes, input_size``). Exporters never
    import the model code themselves."""

    info: ModelInfo
    weights_path: str
    loader: str


@dataclass(frozen=True)
class ConvertJob(_Record):
    """One (format, precision) conversion, or one artifact run, for the worker."""

    mode: str  # prepare | convert | run
    format: str
    precision: str
    out_path: str
    work_dir: str
    result_path: str
    model: ModelRef
    producer_version: str = ""
    calib: str | None = None
    threads: int = 2
    options: dict = field(default_factory=dict)  # format options (nchw, int8_io, route, image_input, quant)
    inputs: str | None = None   # run mode: .npy of NCHW float32 inputs
    outputs: str | None = None  # run mode: .npz written with the outputs
    accelerator: str = "cpu"  # run mode: which of the format's accelerators runs it (cpu | gpu)


@dataclass
class ConvertResult(_Record):
    """What a worker reports back (also what a format's ``convert`` returns, status ok)."""

    status: Status = Status.OK
    route: str | None = None
    notes: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    reason: str | None = None
    failure: FailureKind | None = None
    traceback: str | None = None


@dataclass
class ArtifactRecord(_Record):
    """One row of an export manifest."""

    model: str
    format: str
    precision: str
    runnable_here: bool
    toolchain: dict
    route: str | None = None
    path: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    status: Status = Status.SKIPPED
    reason: str | None = None
    export_seconds: float | None = None
    peak_rss_mb: float | None = None
    fidelity: dict | None = None
    gpu_delegate: dict | None = None
    notes: list = field(default_factory=list)
    gate: dict | None = None
    validation: dict | None = None
    stages: list = field(default_factory=list)  # per-process time and peak memory
    failure: FailureKind | None = None
    engine: dict | None = None  # tensorrt: the engine built from the artifact, or why none was
    gpu: dict | None = None  # tflite: the executed run on LiteRT's GPU accelerator (placement, fidelity, time)
    runtime_compat: dict | None = None  # tflite: op versions, the oldest runtime that loads it, load checks


_NESTED = {("ModelRef", "info"): ModelInfo, ("ConvertJob", "model"): ModelRef}
_ENUMS = {"ConvertResult": {"status": Status, "failure": FailureKind},
          "ArtifactRecord": {"status": Status, "failure": FailureKind}}
