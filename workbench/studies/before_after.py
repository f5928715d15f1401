"""Before/after an optimization: both models exported to ONNX fp32 through the executor, their
accuracy measured on the same data and their latency on the same device, side by side."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ..errors import ConfigError
from ..executor import Plan, execute

PROTOCOL = {"warmup": 5, "min_runs": 30, "min_seconds": 1.0, "repeats": 3}


def compare_before_after(name: str, report: dict, *, data: str = "builtin", device: str = "host",
                         eval_limit: int | None = 500, work: str | os.PathLike | None = None, say=None) -> dict:
    """Export both models to ONNX fp32, then measure accuracy on ``data`` and latency on ``device``."""
    say = say or (lambda msg: None)
    work = Path(work or tempfile.mkdtemp(prefix="wb-opt-cmp-"))
    rows = {}
    for which, w in (("before", report.get("weights")), ("after", report["out"])):
        say(f"exporting and measuring the {which} model")
        plan = Plan(name=f"{name}-{which}", models=[{"name": name, "weights": w, "num_classes": report["num_classes"],
                                                      "input_size": report["input_size"]}],
                    formats=["onnx"], precisions=["fp32"], devices=[device], reparam=[True],
                    data={"evaluation": data, "eval_limit": eval_limit}, latency=dict(PROTOCOL))
        res = execute(plan, work / which, cache=work / "cache", write_report=False)
        run = res["run"]
        art = run["artifacts"][0]
        if art["status"] != "ok":
            raise ConfigError(f"export of the {which} model failed: {art['reason']}")
        acc = next((r for r in run["accuracy"] if r["runtime"] != "pytorch"), {})
        lat = next((r for r in run["latency"] if r["device"] == device), {})
        rows[which] = {"top1": acc.get("top1"), "top1_ci95": acc.get("top1_ci95"), "p50_ms": lat.get("p50_ms"),
                       "repeat_p50_ms": lat.get("repeat_p50_ms"), "onnx_bytes": art["size_bytes"],
                       "weights": w or "random init"}
    b, a = rows["before"], rows["after"]
    spread = max([max(r["repeat_p50_ms"]) - min(r["repeat_p50_ms"]) for r in rows.values() if r.get("repeat_p50_ms")] or [0])
    rows["latency_change"] = a["p50_ms"] / b["p50_ms"] - 1
    rows["latency_dropped"] = b["p50_ms"] - a["p50_ms"] > max(spread, 0.02 * b["p50_ms"])
    if b["top1"] is not None and a["top1"] is not None:
        rows["top1_change_pp"] = 100 * (a["top1"] - b["top1"])
    rows["device"] = device
    return rows
