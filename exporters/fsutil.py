"""Atomic file writes: a reader sees the old file or the new one, never half of either.

The text goes to a hidden temporary file in the same folder (per process, so concurrent
writers do not collide), then ``os.replace`` swaps it in. A failed write (disk full, quota)
removes the temporary file and leaves the previous file untouched.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.partial")
    try:
        tmp.write_text(text)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def finite(obj):
    """``obj`` with every NaN / Inf float replaced by None: JSON stays valid JSON (a bare ``NaN`` is
    not), and a figure that could not be computed reads as missing, never as a number."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(finite(obj), indent=2, default=str, allow_nan=False))
