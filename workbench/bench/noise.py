"""When is a latency measurement not a clean one? The rule, in one place.

A measured row is **noisy** when, during any of its timed windows, other processes used more than
``OTHERS_SHARE_MAX`` of the cores the measurement was pinned to (from /proc/stat, less the
measuring process's own CPU time), or the fixed probe kernel run before and after it was more than
``PROBE_DRIFT_MAX`` slower than this host's recorded typical figure (the median of its last
probes), or the coefficient of variation of its runs is over ``CV_MAX``. The CV is the robust one,
(p75 - p25) / (1.349 x p50): a sub-millisecond model's plain std/mean is dominated by a few
timer and interrupt outliers (measured here on a quiet machine: 0.4 to 12 for repvgg-tiny), while
the robust CV moves only when the bulk of the runs does. A noisy measurement is taken again up to ``RETAKES``
times after a pause; if it stays noisy it is kept and flagged with the figures behind the flag.
``compare`` never calls a change on a flagged row.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

OTHERS_SHARE_MAX = 0.20   # share of the pinned cores' time used by other processes in a timed window
PROBE_DRIFT_MAX = 0.50    # probe slower than this host's typical figure by more than this
CV_MAX = 0.50             # robust CV of the timed runs: (p75 - p25) / (1.349 x p50)
REPEAT_SPREAD_MAX = 0.50  # the repeats' p50s apart by more than this share of their median
PROBE_HISTORY = 25        # probes kept per host; the typical figure is their median
RETAKES = 2               # extra attempts for a noisy measurement
RETAKE_PAUSE_S = 1.0
ESTIMATE_FACTOR = 10.0    # a measured p50 this many times away from the roofline estimate gets a note
RULE = (f"noisy = other processes used > {OTHERS_SHARE_MAX:.0%} of the pinned cores during a timed window, "
        f"or the probe kernel ran > {PROBE_DRIFT_MAX:.0%} slower than this host's typical figure, "
        f"or the robust CV (IQR / 1.349 / p50) > {CV_MAX}, "
        f"or the repeats' p50s differ by > {REPEAT_SPREAD_MAX:.0%} of their median")
PROBE_RECORD = Path(__file__).resolve().parents[2] / "reports" / ".cache" / "quiet_probe.json"


def _record_path() -> Path:
    return Path(os.environ.get("WORKBENCH_PROBE_RECORD", PROBE_RECORD))


def typical_probe_ms(host: str, probes: list[float], record: bool = True) -> float | None:
    """This host's typical probe figure: the median of its recorded probes before this measurement
    (this one's are added afterwards). None until the host has a record."""
    import statistics

    from exporters.fsutil import atomic_write_json

    path = _record_path()
    try:
        rec = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, json.JSONDecodeError):
        rec = {}
    history = [p for p in rec.get(host, []) if isinstance(p, (int, float))] if isinstance(rec.get(host), list) else []
    typical = statistics.median(history) if len(history) >= 3 else None
    if record:  # probes of a measurement that was visibly disturbed are not typical: they are not kept
        try:
            atomic_write_json(path, {**rec, host: (history + [p for p in probes if p])[-PROBE_HISTORY:]})
        except OSError:
            pass  # a read-only cache only loses the record, never the measurement
    return typical


def robust_cv(sorted_ms: list[float]) -> float | None:
    from .stats import percentile

    if len(sorted_ms) < 4:
        return None
    p50 = percentile(sorted_ms, 0.5)
    return (percentile(sorted_ms, 0.75) - percentile(sorted_ms, 0.25)) / (1.349 * p50) if p50 > 0 else None


def judge(raw: dict, cv: float | None, repeat_spread: float | None = None) -> dict:
    """The interference figures of one measurement and whether they make it noisy."""
    inter = raw.get("interference") or {}
    shares = [w["others_share"] for w in inter.get("windows", []) if w.get("others_share") is not None]
    probes = [p for p in inter.get("probe_ms", []) if p]
    host = f"{raw.get('host', '?')}/{raw.get('machine', '?')}"
    busy = bool(shares) and max(shares) > OTHERS_SHARE_MAX
    ref = typical_probe_ms(host, probes, record=not busy) if probes else None
    drift = (max(probes) / ref - 1) if probes and ref else None
    reasons = []
    if busy:
        reasons.append(f"other processes used {max(shares):.0%} of the pinned cores {inter.get('pinned_cores')}")
    if drift is not None and drift > PROBE_DRIFT_MAX:
        reasons.append(f"probe {max(probes):.2f} ms vs {ref:.2f} ms typical here (+{drift:.0%})")
    if cv is not None and cv > CV_MAX:
        reasons.append(f"CV {cv:.2f} > {CV_MAX}")
    if repeat_spread is not None and repeat_spread > REPEAT_SPREAD_MAX:
        reasons.append(f"repeats' p50s differ by {repeat_spread:.0%} of their median (> {REPEAT_SPREAD_MAX:.0%})")
    return {"noisy": bool(reasons), "reasons": reasons, "others_share_max": max(shares) if shares else None,
            "others_share": shares, "probe_ms": probes, "probe_typical_ms": ref, "probe_drift": drift,
            "loadavg": inter.get("loadavg"), "pinned_cores": inter.get("pinned_cores"), "cv": cv,
            "repeat_spread": repeat_spread, "measured": bool(inter), "rule": RULE}


def estimate_note(p50_ms: float | None, estimate_ms: float | None) -> str | None:
    if not p50_ms or not estimate_ms:
        return None
    ratio = p50_ms / estimate_ms
    if ratio > ESTIMATE_FACTOR or ratio < 1 / ESTIMATE_FACTOR:
        return (f"measured p50 {p50_ms:.3f} ms is {ratio:.1f}x the roofline estimate {estimate_ms:.3f} ms "
                f"(beyond {ESTIMATE_FACTOR:g}x): per-call overhead dominates a model this small, the machine was "
                "busy, or the profile's figures are off")
    return None
