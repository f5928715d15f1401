"""Shared helpers for converters (run inside worker processes)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn as nn


class MainOutput(nn.Module):
    """Exported graphs carry the main output only (RepVGGplus train form returns a dict)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        y = self.model(x)
        return y["main"] if isinstance(y, dict) else y


def output_names(model: nn.Module) -> list[str]:
    spec_task = getattr(model, "workbench_task", None)
    return ["loc", "conf"] if spec_task == "detection" else ["logits"]


def provenance(model: nn.Module, fmt: str, precision: str, route: str) -> dict[str, str]:
    import workbench

    return {
        "producer": "edge-workbench",
        "workbench_version": workbench.__version__,
        "model": str(getattr(model, "workbench_name", type(model).__name__)),
        "num_classes": str(getattr(model, "workbench_num_classes", "")),
        "input_size": str(getattr(model, "workbench_input_size", "")),
        "weights": str(getattr(model, "workbench_weights", "random init")),
        "deploy": str(bool(getattr(model, "workbench_deploy", False))),
        "format": fmt,
        "precision": precision,
        "route": route,
        "torch": torch.__version__,
    }


def sha256_path(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents, sorted)."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(str(f.relative_to(p)).encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
    else:
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def size_bytes(path: str | os.PathLike) -> int:
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size
