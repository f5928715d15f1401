"""Worker process: one conversion stage (or one artifact run) per process, driven by a JSON job.

``python -m exporters.worker JOB.json`` reads a ``ConvertJob`` and writes a ``ConvertResult`` to
``job.result_path``. The parent owns the timeout, measures wall time and peak memory, and turns
a crash into a failed row. The model is loaded through the job's loader entry point
(``module:function``), so this package imports no model code.

Fault injection for tests: ``WORKBENCH_FAULT=crash:FORMAT:PRECISION`` (or ``hang:...``) makes
the matching conversion abort or hang, so the isolation can be tested with real processes;
``crash:run-gpu:FORMAT`` (or ``hang:``) does the same to an artifact's run on the GPU accelerator.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from . import get_format
from .fsutil import atomic_write_json
from .records import ConvertJob, ConvertResult, SkipCombination, Status, failure_kind_of


def _fault(fmt: str, precision: str) -> None:
    spec = os.environ.get("WORKBENCH_FAULT", "")
    for item in filter(None, spec.split(",")):
        kind, _, target = item.partition(":")
        if target in (f"{fmt}:{precision}", fmt, "*"):
            if kind == "crash":
                os.abort()
            if kind == "hang":
                time.sleep(10 ** 6)


def model_loader(job: ConvertJob):
    """A function returning the job's model, loaded once, on first use."""
    cached = {}

    def load():
        if "m" not in cached:
            import torch

            torch.set_num_threads(int(job.threads))
            module, _, func = job.model.loader.partition(":")
            info = job.model.info
            model = getattr(importlib.import_module(module), func)(
                info.name, weights=job.model.weights_path, num_classes=info.num_classes, input_size=info.input_size)
            model.model_info = info  # the label of the original weights, not the temporary file
            cached["m"] = model.eval()
        return cached["m"]
    return load


def convert(job: ConvertJob) -> ConvertResult:
    fmt = get_format(job.format)
    _fault(job.format, job.precision)
    out = Path(job.out_path)
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")  # converters check the suffix
    try:
        result = fmt.convert(_with_out(job, partial), model_loader(job))
    except SkipCombination as e:
        return ConvertResult(status=Status.SKIPPED, reason=str(e))
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    os.replace(partial, out)
    return result


def _with_out(job: ConvertJob, path: Path) -> ConvertJob:
    import dataclasses

    return dataclasses.replace(job, out_path=str(path))


def prepare(job: ConvertJob) -> ConvertResult:
    return get_format(job.format).prepare(job, model_loader(job))


def run(job: ConvertJob) -> ConvertResult:
    fmt = get_format(job.format)
    if job.accelerator != "cpu":
        _fault(f"run-{job.accelerator}", job.format)
    try:
        runner = fmt.load(job.out_path, threads=job.threads, options=job.options, accelerator=job.accelerator)
    except SkipCombination as e:  # e.g. no GPU device here: not a failure of the artifact
        return ConvertResult(status=Status.SKIPPED, reason=str(e))
    outs = runner(np.load(job.inputs))
    np.savez(job.outputs, *outs)
    if job.accelerator != "cpu":
        return ConvertResult(extra={"accelerator_run": getattr(runner, "report", {})})
    return ConvertResult(extra=fmt.inspect(job.out_path))


def main(argv: list[str]) -> int:
    job = ConvertJob.from_dict(json.loads(Path(argv[0]).read_text()))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        result = {"convert": convert, "run": run, "prepare": prepare}[job.mode](job)
    except Exception as e:  # reported to the parent as the row's reason, with a typed failure kind
        result = ConvertResult(status=Status.FAILED, reason=f"{type(e).__name__}: {e}"[:500],
                               failure=failure_kind_of(e), traceback=traceback.format_exc()[-4000:])
    atomic_write_json(job.result_path, result.to_dict())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
