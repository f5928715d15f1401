"""``workbench compare DIR_A DIR_B``: what changed between two runs, beyond their noise.

Latency: a change counts when the p50 moved by more than the larger of the two runs' repeat
spreads (max - min of the repeats' p50) and 2%. Accuracy: when the 95% intervals do not overlap.
Estimates are compared too but labelled, since their "noise" is the model, not the machine.
A row flagged noisy in either run (``workbench.bench.noise``) is never called changed: it is
"inconclusive: machine busy in run A". Above the metrics, ``settings`` lists what differed between
the two runs: sweep settings, toolchain versions, host, and the device profiles' figures.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError


def _load(d: str) -> dict:
    p = Path(d) / "run.json"
    if not p.exists():
        raise ConfigError(f"{d} has no run.json; pass two run folders")
    return json.loads(p.read_text())


def _k(r: dict) -> tuple:
    return (r["model"], r.get("reparam", True), r["format"], r["precision"])


def compare_runs(dir_a: str, dir_b: str, min_rel: float = 0.02) -> dict:
    a, b = _load(dir_a), _load(dir_b)
    lat_a = {(*_k(r), r["device"]): r for r in a["latency"] if r.get("p50_ms") is not None}
    lat_b = {(*_k(r), r["device"]): r for r in b["latency"] if r.get("p50_ms") is not None}
    latency = []
    for key in sorted(set(lat_a) & set(lat_b), key=str):
        ra, rb = lat_a[key], lat_b[key]
        delta = rb["p50_ms"] - ra["p50_ms"]
        spreads = [max(r["repeat_p50_ms"]) - min(r["repeat_p50_ms"]) for r in (ra, rb) if r.get("repeat_p50_ms")]
        noise = max([min_rel * ra["p50_ms"], *spreads])
        busy = [name for name, r in (("A", ra), ("B", rb)) if r.get("noisy")]
        row = {"model": key[0], "reparam": key[1], "format": key[2], "precision": key[3], "device": key[4],
               "p50_a_ms": ra["p50_ms"], "p50_b_ms": rb["p50_ms"], "delta_ms": delta,
               "delta_rel": delta / ra["p50_ms"], "noise_ms": noise, "changed": abs(delta) > noise and not busy,
               "estimated": bool(ra.get("estimated") or rb.get("estimated")), "inconclusive": None}
        if busy:
            row["inconclusive"] = f"machine busy in run {' and '.join(busy)}"
        latency.append(row)
    acc_a = {(*_k(r), r["runtime"]): r for r in a["accuracy"] if "top1" in r}
    acc_b = {(*_k(r), r["runtime"]): r for r in b["accuracy"] if "top1" in r}
    accuracy = []
    for key in sorted(set(acc_a) & set(acc_b), key=str):
        ra, rb = acc_a[key], acc_b[key]
        (la, ha), (lb, hb) = ra["top1_ci95"], rb["top1_ci95"]
        accuracy.append({"model": key[0], "reparam": key[1], "format": key[2], "precision": key[3],
                         "top1_a": ra["top1"], "top1_b": rb["top1"], "delta": rb["top1"] - ra["top1"],
                         "changed": hb < la or lb > ha})
    only = lambda x, y: sorted(str(k) for k in set(x) - set(y))  # noqa: E731
    return {"a": dir_a, "b": dir_b, "settings": settings_diff(a, b), "latency": latency, "accuracy": accuracy,
            "only_in_a": only(lat_a, lat_b), "only_in_b": only(lat_b, lat_a)}


def _flat(d, prefix: str = "") -> dict:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flat(v, f"{prefix}{k}." if not isinstance(v, list) or not v or isinstance(v[0], dict) else f"{prefix}{k}."))
        return out
    if isinstance(d, list) and d and all(isinstance(x, dict) for x in d):
        for i, x in enumerate(d):
            out.update(_flat(x, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): d}


def _sweep_doc(run: dict) -> dict:
    import tomllib

    text = ((run.get("provenance") or {}).get("sweep") or {}).get("text")
    try:
        return tomllib.loads(text) if text else {}
    except tomllib.TOMLDecodeError:
        return {}


def settings_diff(a: dict, b: dict) -> list[dict]:
    """What differed between two runs' settings: sweep, toolchain, host, device profiles."""
    pa, pb = a.get("provenance") or {}, b.get("provenance") or {}
    parts = {"sweep": (_sweep_doc(a), _sweep_doc(b)), "toolchain": (pa.get("toolchain"), pb.get("toolchain")),
             "host": (pa.get("host"), pb.get("host")), "device": (pa.get("devices"), pb.get("devices"))}
    out = []
    for where, (x, y) in parts.items():
        fx, fy = _flat(x or {}), _flat(y or {})
        for k in sorted(set(fx) | set(fy)):
            if fx.get(k) != fy.get(k):
                out.append({"where": where, "setting": k, "a": fx.get(k), "b": fy.get(k)})
    return out
