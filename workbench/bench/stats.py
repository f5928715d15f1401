"""Summary statistics of a latency measurement (all in milliseconds)."""
from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field


@dataclass
class LatencyStats:
    device: str
    runner: str
    threads: int | None
    init_ms: float | None
    first_ms: float | None
    mean_ms: float | None
    std_ms: float | None
    min_ms: float | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    cv: float | None
    runs: int
    peak_rss_mb: float | None
    timed_scope: str
    estimated: bool
    artifact: str = ""
    runtime: str = ""
    repeat_p50_ms: list = field(default_factory=list)
    repeat_spread: float | None = None  # (max - min) / median of the repeats' p50
    drift: bool | None = None  # later runs slower/faster than earlier ones by > 5%
    warnings: list = field(default_factory=list)
    basis: dict | None = None  # estimates: what the figure is computed from
    status: str = "ok"
    reason: str | None = None
    noisy: bool | None = None  # see workbench.bench.noise (None: not a measurement, e.g. an estimate)
    noise: dict | None = None  # the interference figures behind the flag
    retakes: int = 0
    runtime_check: dict | None = None  # does the artifact load on the profile's named runtime (tflite_compat)

    def to_dict(self) -> dict:
        return asdict(self)


def percentile(sorted_vals: list[float], q: float) -> float:
    k = (len(sorted_vals) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def summarize(raw: dict, *, device: str, runner: str, artifact: str) -> LatencyStats:
    repeats = [r for r in raw["repeats"] if r]
    allv = [v for r in repeats for v in r]
    s = sorted(allv)
    mean = statistics.fmean(allv)
    std = statistics.pstdev(allv) if len(allv) > 1 else 0.0
    rp50 = [statistics.median(r) for r in repeats]
    third = max(1, len(allv) // 3)
    early, late = statistics.median(allv[:third]), statistics.median(allv[-third:])
    drift = abs(late - early) / early > 0.05 if early > 0 else None
    warnings = []
    if drift:
        warnings.append(f"drift: the last third of runs has median {late:.3f} ms vs {early:.3f} ms in the first "
                        "third (thermal throttling or background load?)")
    spread = (max(rp50) - min(rp50)) / statistics.median(rp50) if len(rp50) > 1 else 0.0
    from .noise import judge, robust_cv

    noise = judge(raw, robust_cv(s), spread if len(rp50) > 1 else None)
    if noise["noisy"]:
        warnings.append("noisy: " + "; ".join(noise["reasons"]))
    return LatencyStats(
        device=device, runner=runner, threads=raw.get("threads"), init_ms=raw.get("init_ms"),
        first_ms=raw.get("first_ms"), mean_ms=mean, std_ms=std, min_ms=s[0], p50_ms=percentile(s, 0.5),
        p90_ms=percentile(s, 0.9), p99_ms=percentile(s, 0.99), max_ms=s[-1], cv=std / mean if mean else None,
        runs=len(allv), peak_rss_mb=raw.get("peak_rss_mb"), timed_scope=raw.get("timed_scope", ""),
        estimated=False, artifact=artifact, runtime=raw.get("runtime", ""), repeat_p50_ms=rp50,
        repeat_spread=spread, drift=drift, warnings=warnings, noisy=noise["noisy"], noise=noise)
