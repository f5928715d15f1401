"""Printing helpers shared by the commands."""
from __future__ import annotations

import json


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


def _human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))
