"""Worker process: one conversion (or one artifact run) per process, driven by a JSON job file.

``python -m exporters.worker JOB.json`` writes ``job["result_path"]``. The parent owns the
timeout, measures wall time and peak memory (wait4), and turns a crash into a failed row.

Fault injection for tests: ``WORKBENCH_FAULT=crash:FORMAT:PRECISION`` (or ``hang:...``) makes
the matching conversion abort or hang, so the isolation can be tested with real processes.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np


def _fault(fmt: str, precision: str) -> None:
    spec = os.environ.get("WORKBENCH_FAULT", "")
    for item in filter(None, spec.split(",")):
        kind, _, target = item.partition(":")
        if target in (f"{fmt}:{precision}", fmt, "*"):
            if kind == "crash":
                os.abort()
            if kind == "hang":
                time.sleep(10 ** 6)


def _load(job: dict):
    import torch

    from workbench.api import load_model

    torch.set_num_threads(int(job.get("threads", 2)))
    m = job["model"]
    model = load_model(m["name"], weights=m["weights"], num_classes=m["num_classes"],
                       input_size=m["input_size"])
    model.workbench_weights = m.get("weights_label", m["weights"])
    return model.eval()


def convert(job: dict) -> dict:
    from .base import SkipCombination

    fmt, precision = job["format"], job["precision"]
    _fault(fmt, precision)
    work = Path(job["work_dir"])
    calib = np.load(job["calib"]) if job.get("calib") else None
    out = Path(job["out_path"])
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")  # converters check the suffix
    cached = {}

    def model_loader():
        if "m" not in cached:
            cached["m"] = _load(job)
        return cached["m"]

    try:
        if fmt == "onnx":
            model = model_loader()
            from . import onnx_export

            r = onnx_export.convert(model, str(partial), precision, job["options"], calib, work / "base_fp32.onnx")
        elif fmt == "tflite":
            from . import tflite_export

            base = work / "base_fp32.onnx"

            def build_onnx():
                from . import onnx_export  # imports torch: only on the onnx2tf route

                if not base.exists():
                    onnx_export.ensure_fp32(model_loader(), base)

            # the torch model is loaded only when the shared SavedModel is not built yet
            r = tflite_export.convert(model_loader, str(partial), precision, job["options"], calib, work,
                                      onnx_base=base, onnx_builder=build_onnx)
        elif fmt == "coreml":
            from . import coreml_export

            r = coreml_export.convert(model_loader(), str(partial), precision, job["options"], calib)
        else:
            raise SkipCombination(f"unknown format {fmt}")
    except SkipCombination as e:
        return {"status": "skipped", "reason": str(e)}
    if out.exists():
        import shutil

        shutil.rmtree(out) if out.is_dir() else out.unlink()
    os.replace(partial, out)
    return {"status": "ok", "route": r.route, "notes": r.notes, "extra": r.extra}


def prepare(job: dict) -> dict:
    """tf-direct stage 1: build the shared SavedModel (a process of its own keeps peaks apart)."""
    from . import tflite_export
    from .tf_graph import UnsupportedOp

    nchw = bool(job["options"].get("nchw"))
    saved = tflite_export.saved_model_dir(Path(job["work_dir"]), nchw)
    if saved.exists():
        return {"status": "ok", "cached": True}
    try:
        counts = tflite_export.build_saved_model(_load(job), saved, nchw)
    except UnsupportedOp as e:
        return {"status": "unsupported", "reason": str(e)}
    return {"status": "ok", "graph_ops": counts}


def run(job: dict) -> dict:
    from .runtime import run_artifact

    inputs = np.load(job["inputs"])
    outs = run_artifact(job["out_path"], job["format"], inputs, threads=job.get("threads", 2),
                        nchw=bool(job["options"].get("nchw")))
    np.savez(job["outputs"], *outs)
    result = {"status": "ok"}
    if job["format"] == "tflite":
        from .gpu_delegate import analyze

        result["gpu_delegate"] = analyze(job["out_path"])
    return result


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        result = {"convert": convert, "run": run, "prepare": prepare}[job["mode"]](job)
    except Exception as e:  # reported to the parent as the row's reason
        result = {"status": "failed", "reason": f"{type(e).__name__}: {e}"[:500],
                  "traceback": traceback.format_exc()[-4000:]}
    from workbench.fsutil import atomic_write_json

    atomic_write_json(job["result_path"], result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
