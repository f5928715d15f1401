"""Run an artifact in a process of its own (``exporters.worker`` run mode): a runtime that
crashes on a damaged file (SIGBUS on a truncated .tflite) is a failed row, never a lost run.
Fidelity (export), evaluation and the study all run artifacts through ``run_artifact``."""
from __future__ import annotations

import json
import sys
import tempfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from exporters.records import ConvertJob, ConvertResult, FailureKind, ModelInfo, ModelRef, Status

from .errors import WorkbenchError
from .proc import run_isolated, worker_env


class ArtifactRunError(WorkbenchError):
    """The artifact could not run here (refused, crashed, hung); the message is the row's reason."""

    def __init__(self, message: str, kind: FailureKind = FailureKind.ERROR, status: Status = Status.FAILED):
        super().__init__(message)
        self.kind = kind
        self.status = status  # SKIPPED: the runtime said it cannot run here (e.g. no GPU device)


def run_artifact(path: str | Path, fmt: str, inputs: np.ndarray, *, options: dict | None = None, threads: int = 2,
                 timeout_s: float = 900.0, work: Path | None = None, tag: str = "artifact",
                 accelerator: str = "cpu") -> tuple[list, dict]:
    """(outputs, what the format inspected: e.g. GPU-delegate placement). ``work``: keep the job,
    log and outputs there as ``TAG.run.*`` (an export keeps them for debugging); else a temp folder."""
    with (nullcontext(str(work)) if work else tempfile.TemporaryDirectory(prefix="wb-run-")) as d:
        d = Path(d)
        inp = d / f"{tag}.inputs.npy"
        np.save(inp, inputs.astype(np.float32))
        result = d / f"{tag}.run.json"
        result.unlink(missing_ok=True)
        job = ConvertJob(mode="run", format=fmt, precision="", out_path=str(path), work_dir=str(d),
                         result_path=str(result), model=ModelRef(ModelInfo(name="-"), "", ""), threads=threads,
                         options=dict(options or {}), inputs=str(inp), outputs=str(d / f"{tag}.outputs.npz"),
                         accelerator=accelerator)
        (d / f"{tag}.run.job.json").write_text(json.dumps(job.to_dict()))
        pr = run_isolated([sys.executable, "-m", "exporters.worker", str(d / f"{tag}.run.job.json")], timeout=timeout_s,
                          log_path=d / f"{tag}.run.log", env=worker_env())
        res = None
        if result.exists():
            try:
                res = ConvertResult.from_dict(json.loads(result.read_text()))
            except (json.JSONDecodeError, TypeError, ValueError):
                res = None
        if pr.timed_out or res is None:
            kind = FailureKind.TIMEOUT if pr.timed_out else (
                FailureKind.OUT_OF_MEMORY if pr.out_of_memory else FailureKind.CRASH)
            raise ArtifactRunError(f"{Path(path).name}: {pr.describe_failure().replace('worker', 'runtime process')}",
                                   kind)
        if res.status != Status.OK:
            raise ArtifactRunError(f"{Path(path).name}: {res.reason}", res.failure or FailureKind.ERROR, res.status)
        with np.load(job.outputs) as z:
            return [z[f"arr_{i}"] for i in range(len(z.files))], res.extra
