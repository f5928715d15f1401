"""Fidelity of an artifact against the PyTorch model it came from, and the per-precision gates."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_GATES = {
    # metric, minimum; int8 gates apply to trained models (random weights make agreement noise)
    "fp32": {"cosine": 0.99999, "relative_max_diff_max": 1e-4},
    "fp16": {"cosine": 0.999},
    "int8": {"agreement": 0.9},
    "int8-dynamic": {"agreement": 0.9},
    "int16x8": {"agreement": 0.95},
}


def compare(reference: list[np.ndarray], candidate: list[np.ndarray], task: str, priors=None) -> dict:
    """Max/mean abs difference, cosine, PSNR over all outputs; top-1 or detection agreement."""
    if len(reference) != len(candidate):
        raise ValueError(f"output count differs: {len(reference)} vs {len(candidate)}")
    for r, c in zip(reference, candidate):
        if r.shape != c.shape:
            raise ValueError(f"output shape differs: {r.shape} vs {c.shape}")
    a = np.concatenate([r.reshape(-1).astype(np.float64) for r in reference])
    b = np.concatenate([c.reshape(-1).astype(np.float64) for c in candidate])
    diff = np.abs(a - b)
    peak = float(np.abs(a).max()) or 1e-30
    mse = float((diff ** 2).mean())
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    out = {
        "images": int(reference[0].shape[0]),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "max_abs_output": peak,
        "relative_max_diff": float(diff.max()) / peak,
        "cosine": float(a @ b / denom) if denom > 0 else (1.0 if mse == 0 else 0.0),
        "psnr_db": float("inf") if mse == 0 else float(10 * np.log10(peak ** 2 / mse)),
    }
    if task == "classification":
        ra, ca = reference[0].argmax(1), candidate[0].argmax(1)
        out["top1_agreement"] = float((ra == ca).mean())
        out["changed_predictions"] = int((ra != ca).sum())
        out["agreement"] = out["top1_agreement"]
    elif task == "detection" and priors is not None:
        out.update(detection_agreement(reference, candidate, priors))
        out["agreement"] = out["detection_agreement"]
    if out["psnr_db"] == float("inf"):
        out["psnr_db"] = 999.0
    return out


def detection_agreement(reference, candidate, priors, score: float = 0.3, iou_min: float = 0.5) -> dict:
    """F1 of decoded detections (same label, IoU >= 0.5) of the artifact against PyTorch's."""
    from .detection import iou, postprocess

    matched = n_ref = n_cand = 0
    for i in range(reference[0].shape[0]):
        r = postprocess(reference[0][i], reference[1][i], priors, score_threshold=score)
        c = postprocess(candidate[0][i], candidate[1][i], priors, score_threshold=score)
        n_ref, n_cand = n_ref + len(r.scores), n_cand + len(c.scores)
        used: set[int] = set()
        if len(r.scores) and len(c.scores):
            ious = iou(r.boxes, c.boxes)
            for a in range(len(r.scores)):
                for b in np.argsort(-ious[a]):
                    if b not in used and ious[a, b] >= iou_min and r.labels[a] == c.labels[b]:
                        used.add(int(b))
                        matched += 1
                        break
    f1 = 1.0 if n_ref + n_cand == 0 else 2 * matched / (n_ref + n_cand)
    return {"detection_agreement": f1, "detections_reference": n_ref, "detections_artifact": n_cand,
            "detections_matched": matched}


@dataclass(frozen=True)
class GateResult:
    passed: bool | None  # None: not applied
    checks: dict
    reason: str

    def to_dict(self) -> dict:
        return {"passed": self.passed, "checks": self.checks, "reason": self.reason}


def apply_gate(precision: str, fidelity: dict, gates: dict, trained: bool) -> GateResult:
    rule = gates.get(precision)
    if not rule:
        return GateResult(None, {}, f"no gate for {precision}")
    if precision.startswith(("int8", "int16")) and not trained:
        return GateResult(None, dict(rule), "not applied: random weights (pass --weights of a trained "
                                              "model; agreement of untrained logits is noise)")
    checks, failed = {}, []
    for key, bound in rule.items():
        if key.endswith("_max"):
            metric = key[: -len("_max")]
            value = fidelity.get(metric)
            ok = value is not None and value <= bound
            checks[metric] = {"value": value, "max": bound, "ok": ok}
        else:
            value = fidelity.get(key)
            ok = value is not None and value >= bound
            checks[key] = {"value": value, "min": bound, "ok": ok}
        if not ok:
            failed.append(f"{key.replace('_max', '')} {value:.6g} vs {'<=' if key.endswith('_max') else '>='} {bound}"
                          if value is not None else f"{key} missing")
    return GateResult(not failed, checks, "; ".join(failed) if failed else "passed")


# The GPU run computes in fp16 (LiteRT's GPU accelerator's default), whatever the file's precision,
# and runs 8-bit files through dequantized weights: a float file is gated against PyTorch with a
# bound suited to fp16 arithmetic; a quantized file like its CPU run (agreement, trained weights
# only). The comparison with the CPU run of the same file is recorded, not gated: for an int8 file
# the two compute differently by design (integer kernels vs float on dequantized weights). One
# check holds for every file, random weights too: the GPU may not be clearly worse than the CPU
# run of the same file (cosine against PyTorch at most GPU_NOT_WORSE below the CPU's).
GPU_GATES = {"fp32": {"cosine": 0.999}, "fp16": {"cosine": 0.999}}
GPU_NOT_WORSE = 0.05


def gpu_gate(precision: str, vs_pytorch: dict, trained: bool, cpu: dict | None = None) -> dict:
    checks, failed, notes = {}, [], []
    cpu_cos, gpu_cos = (cpu or {}).get("cosine"), vs_pytorch.get("cosine")
    if cpu_cos is not None and gpu_cos is not None:
        ok = gpu_cos >= cpu_cos - GPU_NOT_WORSE
        checks["cosine_vs_cpu_run"] = {"value": gpu_cos, "min": cpu_cos - GPU_NOT_WORSE, "ok": ok}
        if not ok:
            failed.append(f"cosine {gpu_cos:.6g} vs the CPU run's {cpu_cos:.6g}: the GPU computes the file "
                          f"differently (more than {GPU_NOT_WORSE} worse)")
    rule = GPU_GATES.get(precision)
    if rule is None and trained and precision in DEFAULT_GATES:
        rule = DEFAULT_GATES[precision]
    if rule is None:
        notes.append("against PyTorch not gated: quantized file with random weights")
    else:
        r = apply_gate(precision, vs_pytorch, {precision: rule}, True)
        checks.update(r.checks)
        if r.passed is False:
            failed.append(r.reason)
    reason = "; ".join(failed) if failed else "passed"
    return {"passed": (not failed) if checks else None, "checks": checks, "rule": rule,
            "reason": reason + (f" ({'; '.join(notes)})" if notes else "")}


def gpu_rule_agreement(rules: dict | None, run: dict) -> dict:
    """Does the rule table (``exporters.gpu_delegate``) say what the executed GPU run did?"""
    if not rules or run.get("fully_accelerated") is None:
        return {"rules_agree": None}
    said, did = set(rules.get("fallback_by_op") or {}), set(run.get("fallback_by_op") or {})
    same = bool(rules.get("fully_delegated")) == bool(run["fully_accelerated"]) and said == did
    out: dict = {"rules_agree": same}
    if not same:
        out["rules_disagreement"] = (f"rules: {'fully delegated' if rules.get('fully_delegated') else 'fallback ' + ', '.join(sorted(said))}; "
                                     f"executed: {'fully accelerated' if run['fully_accelerated'] else 'fallback ' + ', '.join(sorted(did)) or 'some ops on the CPU'}")
    return out
