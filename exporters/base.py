"""The format contract: one class per format, registered in ``exporters.FORMATS``.

A format knows its capability (suffix, precisions, options, where it runs, whether it runs
here), how to convert a job into an artifact (inside the isolated worker), and how to load an
artifact into a callable runner that fidelity, evaluation and latency share. Callers look a
format up; nobody outside ``exporters/`` compares a format name to a string.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .records import ConvertJob, ConvertResult, ModelInfo, SkipCombination

PRECISIONS = ("fp32", "fp16", "int8", "int8-dynamic", "int16x8", "pal4", "pal6", "pal8")

# A loaded artifact: NCHW float32 inputs (N images) -> the model's outputs, in the source's order
Runner = Callable[[np.ndarray], list]


@dataclass(frozen=True)
class Capability:
    format: str
    suffix: str
    precisions: tuple[str, ...]
    options: tuple[str, ...]
    runs_on: str  # where the artifact can run
    runnable_here: bool  # can this host (Linux x86) execute it for fidelity checks
    precision_notes: dict = field(default_factory=dict)
    runtime: str | None = None  # the runtime that executes it here (None: not runnable here)
    not_runnable_reason: str = ""  # why not, when not runnable here
    # precision -> the arithmetic a device computes in (weight-only formats compute in float)
    compute_precision: dict = field(default_factory=dict)
    # accelerators ``load`` can run an artifact on here, besides the CPU (TFLite: LiteRT's GPU accelerator)
    accelerators: tuple[str, ...] = ("cpu",)


class Format:
    """Base class of a format. Subclasses set ``capability`` and implement ``convert`` and,
    when ``runnable_here``, ``load``."""

    capability: Capability

    @property
    def name(self) -> str:
        return self.capability.format

    @property
    def suffix(self) -> str:
        return self.capability.suffix

    @property
    def runs_here(self) -> bool:
        return self.capability.runnable_here

    def supports(self, precision: str) -> tuple[bool, str]:
        if precision not in self.capability.precisions:
            return False, f"{self.name} has no {precision} variant (it offers {', '.join(self.capability.precisions)})"
        return True, ""

    def has_option(self, option: str) -> bool:
        return option in self.capability.options

    def compute_precision(self, precision: str) -> str:
        return self.capability.compute_precision.get(precision, precision)

    def artifact_options(self, options: dict, info: ModelInfo, precision: str) -> tuple[dict, str | None]:
        """The options for one artifact (a choice the format makes per model and precision, such as
        TFLite's ``auto`` route), and a note saying what was chosen and why (None when nothing was)."""
        return options, None

    def stages(self, options: dict) -> tuple[str, ...]:
        """Worker processes one conversion takes (a shared preparation stage, then convert)."""
        return ("convert",)

    def prepare(self, job: ConvertJob, load_model) -> ConvertResult:
        return ConvertResult()

    def convert(self, job: ConvertJob, load_model) -> ConvertResult:
        """Write the artifact for ``job.precision`` to ``job.out_path``; raise on failure,
        ``SkipCombination`` when the combination cannot be made. ``load_model()`` returns the
        (deploy) torch model, loaded once and only when the conversion needs it."""
        raise NotImplementedError

    def load(self, path: str | Path, *, threads: int = 2, options: dict | None = None,
             accelerator: str = "cpu") -> Runner:
        """A runner on ``accelerator`` (one of ``capability.accelerators``). A runner that knows more
        than its outputs (the GPU run's device and placement) keeps it in its ``report`` dict."""
        raise SkipCombination(f"{self.name} artifacts cannot run on this host: {self.capability.not_runnable_reason}")

    def check_accelerator(self, accelerator: str) -> None:
        if accelerator not in self.capability.accelerators:
            raise SkipCombination(f"{self.name} artifacts run here on {', '.join(self.capability.accelerators)}, "
                                  f"not {accelerator}")

    def check_artifact(self, path: str | Path) -> None:
        """Refuse (raise ``ValueError`` with one line) a file that is unsafe to hand to a runtime."""

    def inspect(self, path: str | Path) -> dict:
        """Static facts about an artifact worth recording beside its fidelity (e.g. GPU placement)."""
        return {}

    def latency_warnings(self, path: str | Path) -> list[str]:
        """Known slow paths of this artifact on a CPU runtime."""
        return []
