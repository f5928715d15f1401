"""Provenance both sides use: content hashes, sizes, toolchain versions, the stamp written into files."""
from __future__ import annotations

import hashlib
import os
import sys
from importlib import metadata
from pathlib import Path

from .records import ModelInfo

TOOLCHAIN_PACKAGES = ("torch", "onnx", "onnxruntime", "onnxsim", "onnxconverter-common", "tensorflow",
                      "ai-edge-litert", "coremltools", "litert-torch")


def producer_version() -> str:
    try:
        return metadata.version("edge-workbench")
    except metadata.PackageNotFoundError:
        return "unknown"


def toolchain_versions() -> dict[str, str]:
    out = {"python": sys.version.split()[0]}
    for pkg in TOOLCHAIN_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    from .tflite_routes import onnx2tf_version  # onnx2tf lives in its own environment

    out["onnx2tf"] = onnx2tf_version()
    return out


def stamp(info: ModelInfo, fmt: str, precision: str, route: str, version: str) -> dict[str, str]:
    """The metadata written into every artifact (ONNX metadata_props, CoreML user metadata)."""
    return {
        "producer": "edge-workbench",
        "workbench_version": version or producer_version(),
        "model": info.name,
        "num_classes": str(info.num_classes),
        "input_size": str(info.input_size),
        "weights": info.weights,
        "deploy": str(bool(info.deploy)),
        "format": fmt,
        "precision": precision,
        "route": route,
        "torch": _version("torch"),
    }


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "not installed"


def sha256_path(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents, sorted)."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def size_bytes(path: str | os.PathLike) -> int:
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size
