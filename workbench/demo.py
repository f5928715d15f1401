"""``workbench demo`` / ``make demo``: the main job on the embedded default.

Train a small RepVGG on the built-in set, re-parameterize it (with the equivalence proof),
export ONNX / TFLite / CoreML at fp32, fp16 and int8, evaluate accuracy and fidelity, measure
latency on the host and estimate the phone profiles. Every figure printed is measured or
computed here; estimates say so.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

DEMO_MODEL = "repvgg-a0"
DEMO_SIZE = 64
PHONES = ("pixel8-cpu", "pixel8-gpu", "iphone15-coreml", "rpi5")


def run_demo(out: Path, model: str = DEMO_MODEL) -> dict:
    from rich.console import Console
    from rich.table import Table

    from .api import load_model, reparameterize
    from .bench.measure import bench_artifact, estimate_artifact
    from .bench.runners import Protocol
    from .evaluate import evaluate_target
    from .export import ExportOptions, export_model
    from .train import TrainConfig, train

    console = Console(width=150)
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    weights = out / f"{model}.pth"
    summary_file = weights.with_name(weights.name + ".json")
    console.rule(f"1/5 train {model} on the built-in shapes set ({DEMO_SIZE}px)")
    if weights.exists() and summary_file.exists():
        tr = json.loads(summary_file.read_text())
        console.print(f"reusing {weights} (delete it to retrain)")
    else:
        tr = train(model, "builtin", out=weights, input_size=DEMO_SIZE,
                   config=TrainConfig(epochs=12, train_limit=1500, lr=3e-3),
                   progress=lambda d: None if d["step"] != d["steps"] else console.print(
                       f"  epoch {d['epoch']}/{d['epochs']} loss {d['loss']:.3f}"))
    ev = tr["eval"]
    console.print(f"PyTorch top-1 {ev['top1']:.3f} (95% CI {ev['top1_ci95'][0]:.3f}-{ev['top1_ci95'][1]:.3f}) "
                  f"on {ev['images']} held-out images")

    console.rule("2/5 re-parameterize")
    m = load_model(model, weights=str(weights), input_size=DEMO_SIZE)
    r = reparameterize(m)
    console.print(f"{r.branches_before} multi-branch blocks -> one 3x3 conv each; BatchNorm {r.bn_before} -> "
                  f"{r.bn_after}; params {r.params_before:,} -> {r.params_after:,}; deploy vs train max abs diff "
                  f"{r.report.max_abs_diff:.2e} ({r.report.relative_max_diff:.1e} of max |output|), cosine {r.report.cosine:.9f}")

    console.rule("3/5 export ONNX / TFLite / CoreML at fp32, fp16, int8 (each verified against PyTorch)")
    export_dir = out / "export"
    manifest = export_model(model, out_dir=export_dir, weights=str(weights), input_size=DEMO_SIZE,
                            options=ExportOptions(formats=("onnx", "tflite", "coreml"),
                                                  precisions=("fp32", "fp16", "int8"), calib_count=64,
                                                  fidelity_count=64),
                            progress=lambda e, i: console.print(f"  {i['record']['format']:6s} {i['record']['precision']:5s} "
                                                                f"{i['record']['status']}") if e == "done" else None)

    console.rule("4/5 accuracy of every artifact on the same 500 images")
    evals = evaluate_target(str(export_dir), "builtin")["results"]

    console.rule("5/5 latency: measured on this host, estimated for phones and boards")
    proto = Protocol(warmup=5, min_runs=30, min_seconds=1.0, repeats=3)
    lat: dict = {}
    for a in manifest["artifacts"]:
        if a["status"] != "ok":
            continue
        key = (a["format"], a["precision"])
        if a["runnable_here"]:
            lat[key] = {"host": bench_artifact(a["path"], "host", proto).to_dict()}
        else:
            lat[key] = {"host": None}
        for dev in PHONES:
            try:
                lat[key][dev] = estimate_artifact(a["path"], dev).to_dict()
            except Exception as e:  # a profile without figures for this precision: recorded as such
                lat[key][dev] = {"device": dev, "runner": "estimate", "estimated": True, "status": "failed",
                                 "reason": f"no estimate: {e}", "p50_ms": None}

    acc = {(r.get("format"), r.get("precision")): r for r in evals if "format" in r}
    t = Table(title=f"{model} ({DEMO_SIZE}px, trained here) - measured on this host; phone columns are roofline ESTIMATES")
    for col in ("format", "precision", "size MB", "fidelity cos", "top-1", "agree", "host p50 ms"):
        t.add_column(col, justify="right")
    for dev in PHONES:
        t.add_column(f"{dev} est. ms", justify="right")
    rows = []
    for a in manifest["artifacts"]:
        key = (a["format"], a["precision"])
        f = a.get("fidelity") or {}
        e = acc.get(key, {})
        host = (lat.get(key) or {}).get("host")
        row = {"format": a["format"], "precision": a["precision"], "status": a["status"], "size_mb": (a["size_bytes"] or 0) / 1e6,
               "cosine": f.get("cosine"), "top1": e.get("top1"), "agreement": (e.get("vs_pytorch") or {}).get("agreement"),
               "host_p50_ms": host["p50_ms"] if host else None,
               "estimates_ms": {d: (lat.get(key) or {}).get(d, {}).get("p50_ms") for d in PHONES}}
        rows.append(row)
        fmt = lambda v, p=3: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
        t.add_row(a["format"], a["precision"], fmt(row["size_mb"], 2), fmt(row["cosine"], 6),
                  fmt(row["top1"]) if a["runnable_here"] else "needs macOS", fmt(row["agreement"]),
                  fmt(row["host_p50_ms"]) if a["runnable_here"] else "needs macOS",
                  *[fmt(row["estimates_ms"][d], 2) for d in PHONES])
    console.print(t)
    from .api import model_summary
    from .report.build import add_accuracy, add_export, add_latency, new_run, now, write_run
    from .report.render import write_reports

    run = new_run("demo")
    add_export(run, manifest, model_summary(model, num_classes=manifest["num_classes"], input_size=DEMO_SIZE))
    add_accuracy(run, model, evals)
    for (fmt_, prec), per_dev in lat.items():
        for dev, st in per_dev.items():
            if st and st["status"] != "not measured":  # skip formats a device does not run
                add_latency(run, model, fmt_, prec, st)
    run["finished"] = now()
    run_path = write_run(run, out)
    reports = write_reports(run, out)
    result = {"model": model, "input_size": DEMO_SIZE, "train": {k: tr[k] for k in ("eval", "history", "weights")},
              "reparam": r.to_dict(), "manifest": str(export_dir / "manifest.json"), "rows": rows,
              "evaluations": evals, "latency": {f"{k[0]}-{k[1]}": v for k, v in lat.items()},
              "seconds": round(time.perf_counter() - t_all, 1)}
    from .fsutil import atomic_write_json

    path = atomic_write_json(out / "demo.json", result)
    console.print(f"demo finished in {result['seconds']:.0f} s; run record {run_path}; summary {path}; "
                  f"manifest {export_dir / 'manifest.json'}")
    console.print(f"report: {Path(reports['html']).resolve()}")
    return result
