"""Atomic file writes: a reader sees the old file or the new one, never half of either.

The text goes to a hidden temporary file in the same folder (per process, so concurrent
writers do not collide), then ``os.replace`` swaps it in. A failed write (disk full, quota)
removes the temporary file and leaves the previous file untouched.
"""
from __future__ import annotations

import json
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


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str))
