"""Run an artifact in a process of its own (``exporters.worker`` run mode): a runtime that
crashes on a damaged file (SIGBUS on a truncated .tflite) is a failed row, never a lost run."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from exporters.records import ConvertJob, ConvertResult, ModelInfo, ModelRef, Status

from .errors import WorkbenchError
from .proc import run_isolated

PROJECT_ROOT = Path(__file__).resolve().parents[1]


class ArtifactRunError(WorkbenchError):
    """The artifact could not run here (refused, crashed, hung); the message is the row's reason."""


def run_artifact(path: str | Path, fmt: str, inputs: np.ndarray, *, options: dict | None = None, threads: int = 2,
                 timeout_s: float = 900.0) -> list[np.ndarray]:
    import os

    with tempfile.TemporaryDirectory(prefix="wb-run-") as d:
        d = Path(d)
        np.save(d / "inputs.npy", inputs.astype(np.float32))
        job = ConvertJob(mode="run", format=fmt, precision="", out_path=str(path), work_dir=str(d),
                         result_path=str(d / "result.json"), model=ModelRef(ModelInfo(name="-"), "", ""),
                         threads=threads, options=dict(options or {}), inputs=str(d / "inputs.npy"),
                         outputs=str(d / "outputs.npz"))
        (d / "job.json").write_text(json.dumps(job.to_dict()))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
        pr = run_isolated([sys.executable, "-m", "exporters.worker", str(d / "job.json")], timeout=timeout_s,
                          log_path=d / "run.log", env=env)
        res = None
        if (d / "result.json").exists():
            res = ConvertResult.from_dict(json.loads((d / "result.json").read_text()))
        if pr.timed_out or res is None:
            raise ArtifactRunError(f"{Path(path).name}: {pr.describe_failure().replace('worker', 'runtime process')}")
        if res.status != Status.OK:
            raise ArtifactRunError(f"{Path(path).name}: {res.reason}")
        with np.load(d / "outputs.npz") as z:
            return [z[f"arr_{i}"] for i in range(len(z.files))]
