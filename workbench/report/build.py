"""Assemble and validate ``run.json`` (schema: ``run.schema.json`` beside this file)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from exporters.provenance import toolchain_versions
from exporters.records import Status

from ..hostinfo import cpu_model

SCHEMA_PATH = Path(__file__).with_name("run.schema.json")
RUN_VERSION = 3  # 2: latency rows carry noisy / noise / retakes (workbench.bench.noise); 3: artifacts carry gpu, runtime_compat
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _git_commit() -> str | None:
    try:
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(sweep: dict | None = None) -> dict:
    import workbench

    return {"workbench_version": workbench.__version__, "toolchain": toolchain_versions(), "git_commit": _git_commit(),
            "host": {"cpu_model": cpu_model(), "cores": os.cpu_count() or 1, "platform": platform.platform()},
            "sweep": sweep}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run(name: str, sweep: dict | None = None) -> dict:
    return {"schema": "edge-workbench/run", "version": RUN_VERSION, "name": name, "created": now(), "finished": None,
            "provenance": provenance(sweep), "models": [], "datasets": [], "artifacts": [], "accuracy": [],
            "latency": [], "failures": []}


def add_export(run: dict, manifest: dict, summary: dict, *, reparam: bool = True) -> None:
    """One model's export manifest (and its zoo summary) into the run."""
    src = manifest.get("source", {})
    if not any(m["model"] == manifest["model"] and m.get("weights") == src.get("weights") for m in run["models"]):
        run["models"].append({"model": manifest["model"], "params": summary["params"],
                              "params_deploy": summary["params_deploy"], "macs": summary["macs"],
                              "macs_deploy": summary["macs_deploy"], "input_size": manifest["input_size"],
                              "num_classes": manifest["num_classes"], "weights": src.get("weights"),
                              "weights_sha256": src.get("weights_sha256"), "reparam": src.get("reparam")})
    for a in manifest["artifacts"]:
        row = {k: a.get(k) for k in ("model", "format", "precision", "route", "path", "sha256", "size_bytes", "status",
                                     "reason", "export_seconds", "peak_rss_mb", "fidelity", "gate", "gpu_delegate",
                                     "runnable_here", "validation", "engine", "gpu", "runtime_compat")}
        row["reparam"] = reparam
        if a.get("cache"):  # a cached file that failed its check and was re-exported
            row["cache"] = a["cache"]
        run["artifacts"].append(row)
        if a["status"] == "failed":
            run["failures"].append({"stage": "export", "model": a["model"], "format": a["format"],
                                    "precision": a["precision"], "reason": a["reason"]})


def add_accuracy(run: dict, model: str, results: list[dict], *, reparam: bool = True) -> None:
    for r in results:
        if r.get("status"):  # not runnable here / failed
            if r["status"] == Status.FAILED:
                run["failures"].append({"stage": "eval", "model": model, "format": r.get("format"),
                                        "precision": r.get("precision"), "reason": r.get("reason")})
            continue
        data = r.get("data") or {}
        if data and not any(d.get("sha256") == data.get("sha256") for d in run["datasets"]):
            run["datasets"].append(data)
        row = {"model": model, "reparam": reparam, "runtime": r["runtime"], "format": r.get("format", "pytorch"),
               "precision": r.get("precision", "fp32"), "images": r["images"], "dataset_sha256": data.get("sha256")}
        for k in ("top1", "top1_ci95", "top5", "top5_ci95", "map50", "map50_95", "vs_pytorch"):
            if k in r:
                row[k] = r[k]
        run["accuracy"].append(row)


def add_latency(run: dict, model: str, fmt: str, precision: str, stats: dict, *, reparam: bool = True) -> None:
    row = {"model": model, "reparam": reparam, "format": fmt, "precision": precision, **stats}
    run["latency"].append(row)
    if stats.get("status") == "failed":
        run["failures"].append({"stage": "latency", "model": model, "format": fmt, "precision": precision,
                                "device": stats.get("device"), "reason": stats.get("reason")})


def validate_run(run: dict) -> None:
    import jsonschema

    jsonschema.validate(run, json.loads(SCHEMA_PATH.read_text()))


def write_run(run: dict, out_dir: Path) -> Path:
    from ..fsutil import atomic_write_json

    validate_run(run)
    return atomic_write_json(Path(out_dir) / "run.json", run)
