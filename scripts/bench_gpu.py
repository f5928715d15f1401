"""``make bench`` (part three): every TFLite precision of the full-size models on LiteRT's real GPU
accelerator, against the rule table.

For repvgg-a0, vgg16, ssd300-vgg16, resnet18 and mobilenet-v2 at fp32, fp16, int8-dynamic, int8 and
int16x8 (auto route, random weights): the file is exported and verified on the CPU as usual, then
run on the GPU accelerator (WebGPU over Vulkan) in its own process. Per file: fully accelerated or
not, GPU ops / total, the ops that fell back and why, GPU fidelity against PyTorch (and against the
CPU run of the same file), the GPU time with its label (on llvmpipe it is not a device latency),
whether the rule table (exporters.gpu_delegate) said the same, and the oldest runtime that loads
the file (with the tflite-runtime 2.14 load check).

Results: reports/bench/gpu.json and gpu.md. ``--models`` / ``--precisions`` narrow the run.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from exporters.provenance import toolchain_versions  # noqa: E402
from workbench.export import ExportOptions, export_model  # noqa: E402

MODELS = ("repvgg-a0", "vgg16", "ssd300-vgg16", "resnet18", "mobilenet-v2")
PRECISIONS = ("fp32", "fp16", "int8-dynamic", "int8", "int16x8")


def row(model: str, a: dict) -> dict:
    g = a.get("gpu") or {}
    r = a.get("gpu_delegate") or {}
    c = a.get("runtime_compat") or {}
    chk = (c.get("checked") or {}).get("tflite-runtime 2.14.0") or {}
    return {
        "model": model, "precision": a["precision"], "status": a["status"], "reason": a.get("reason"),
        "route": a.get("route"), "size_mb": round((a.get("size_bytes") or 0) / 1e6, 2),
        "cpu_cosine": (a.get("fidelity") or {}).get("cosine"),
        "gpu_status": g.get("status"), "gpu_reason": g.get("reason"), "device": (g.get("device") or {}).get("name"),
        "fully_accelerated": g.get("fully_accelerated"), "gpu_ops": g.get("gpu_ops"), "total_ops": g.get("total_ops"),
        "fallback_by_op": g.get("fallback_by_op"), "fallback_reasons": g.get("fallback_reasons"),
        "accepted_left_on_cpu": g.get("accepted_left_on_cpu"), "shader_errors": g.get("shader_errors"),
        "gpu_cosine": (g.get("fidelity") or {}).get("cosine"), "gpu_max_abs_diff": (g.get("fidelity") or {}).get("max_abs_diff"),
        "gpu_psnr_db": (g.get("fidelity") or {}).get("psnr_db"), "gpu_agreement": (g.get("fidelity") or {}).get("agreement"),
        "gpu_vs_cpu_cosine": (g.get("vs_cpu") or {}).get("cosine"), "gpu_gate": (g.get("gate") or {}).get("reason"),
        "gpu_p50_ms": (g.get("time") or {}).get("p50_ms"), "gpu_time_label": (g.get("time") or {}).get("label"),
        "rules_fully_delegated": r.get("fully_delegated"), "rules_fallback_by_op": r.get("fallback_by_op"),
        "rules_agree": g.get("rules_agree"), "rules_disagreement": g.get("rules_disagreement"),
        "oldest_runtime": c.get("oldest_runtime"), "deciding_op": c.get("deciding"),
        "loads_in_tflite_runtime_2_14": chk.get("loads"), "tflite_runtime_2_14_error": chk.get("error"),
    }


def _f(v, p=6):
    return "-" if v is None else (f"{v:.{p}f}" if isinstance(v, float) else str(v))


def markdown(result: dict) -> str:
    L = ["# TFLite files on LiteRT's GPU accelerator vs the rule table", "",
         f"Run {result['created']} on {result['host']}; {result['toolchain']}. Random weights, auto route, "
         f"{result['fidelity_images']} fidelity images. Device: {result['device'] or 'none'}. "
         "On llvmpipe (Mesa's software Vulkan, type CPU) placement and numerics are the accelerator's own; "
         "the time is not a device latency.", "",
         "| model | precision | route | fully accelerated | GPU ops / total | fallback (refused) | GPU cos vs PyTorch | "
         "vs CPU run | GPU gate | GPU time ms | rules say | rules agree | oldest runtime | tflite-runtime 2.14 |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if r["status"] != "ok":
            why = " ".join(str(r["reason"]).split())
            L.append(f"| {r['model']} | {r['precision']} | {r['route'] or '-'} | export {r['status']}: {why} |"
                     + " - |" * 10)
            continue
        fb = ", ".join(f"{k} x{v}" for k, v in (r["fallback_by_op"] or {}).items()) or "none"
        rules = ("fully" if r["rules_fully_delegated"] else
                 "fallback " + ", ".join(f"{k} x{v}" for k, v in (r["rules_fallback_by_op"] or {}).items()))
        L.append(f"| {r['model']} | {r['precision']} | {r['route']} | "
                 f"{_f(r['fully_accelerated']) if r['gpu_status'] not in ('failed', 'not available') else r['gpu_status'] + ': ' + str(r['gpu_reason'])} | "
                 f"{_f(r['gpu_ops'])} / {_f(r['total_ops'])} | {fb} | {_f(r['gpu_cosine'])} | {_f(r['gpu_vs_cpu_cosine'])} | "
                 f"{r['gpu_gate'] or '-'} | {_f(r['gpu_p50_ms'], 1)} | {rules} | "
                 f"{'-' if r['rules_agree'] is None else ('yes' if r['rules_agree'] else 'NO: ' + str(r['rules_disagreement']))} | "
                 f"{_f(r['oldest_runtime'])} ({r['deciding_op'] or '-'}) | "
                 f"{'-' if r['loads_in_tflite_runtime_2_14'] is None else ('loads' if r['loads_in_tflite_runtime_2_14'] else 'refused')} |")
    return "\n".join(L) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--fidelity-count", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench"))
    ap.add_argument("--render", action="store_true", help="rewrite gpu.md from an earlier gpu.json, measure nothing")
    args = ap.parse_args()
    out = Path(args.out)
    if args.render:
        (out / "gpu.md").write_text(markdown(json.loads((out / "gpu.json").read_text())))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    import platform

    result = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "host": platform.node(),
              "toolchain": {k: v for k, v in toolchain_versions().items() if k in ("ai-edge-litert", "tensorflow", "onnx2tf")},
              "fidelity_images": args.fidelity_count, "device": None, "rows": []}
    for model in args.models.split(","):
        t0 = time.time()
        opts = ExportOptions(formats=("tflite",), precisions=tuple(args.precisions.split(",")), calib_count=32,
                             fidelity_count=args.fidelity_count, timeout_s=3600)
        m = export_model(model, out_dir=out / "gpu-work" / model, options=opts)
        for a in m["artifacts"]:
            r = row(model, a)
            result["device"] = result["device"] or r["device"]
            result["rows"].append(r)
            print(f"{model:14s} {a['precision']:13s} {r['gpu_status']}: full={r['fully_accelerated']} "
                  f"{r['gpu_ops']}/{r['total_ops']} cos={_f(r['gpu_cosine'])} rules_agree={r['rules_agree']} "
                  f"oldest={r['oldest_runtime']} 2.14={r['loads_in_tflite_runtime_2_14']}", flush=True)
        print(f"{model}: {time.time() - t0:.0f} s", flush=True)
        (out / "gpu.json").write_text(json.dumps(result, indent=1))  # kept as it goes
        (out / "gpu.md").write_text(markdown(result))
    print(f"wrote {out / 'gpu.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
