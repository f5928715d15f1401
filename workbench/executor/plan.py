"""A plan: models x re-parameterization x formats x precisions x devices, plus the data, latency
protocol, export settings and quantization that every cell shares. ``workbench run`` reads one
from a sweep file; the demo, the INT8 study and the before/after comparison build one in code."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Plan:
    name: str
    models: list[dict]  # {name, weights?, num_classes?, input_size?, optimize?, label?}
    formats: list[str]
    precisions: list[str]
    devices: list[str]
    reparam: list[bool] = field(default_factory=lambda: [True])
    data: dict = field(default_factory=dict)       # calibration, evaluation, eval_limit, calib_count
    latency: dict = field(default_factory=dict)    # the protocol, plus remote = "try" | "estimate"
    export: dict = field(default_factory=dict)     # timeout_s, route, fidelity_count, memory_limit_mb, compat
    quantization: dict = field(default_factory=dict)
    gates: dict = field(default_factory=dict)      # fidelity gate overrides (in code only)
    path: str = ""
    text: str = ""

    @property
    def exports(self) -> int:
        return len(self.models) * len(self.reparam) * len(self.formats) * len(self.precisions)

    @property
    def cells(self) -> int:
        """Upper bound on measured cells: one accuracy cell (when evaluating) and one latency cell per
        device for every artifact."""
        per_artifact = len(self.devices) + (1 if self.data.get("evaluation") else 0)
        return self.exports * per_artifact

    def protocol(self) -> dict:
        return {k: v for k, v in self.latency.items() if k != "remote"}
