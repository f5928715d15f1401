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

from exporters.fsutil import atomic_write_json

from .executor import execute
from .sweep import load_sweep

DEMO_MODEL = "repvgg-a0"
DEMO_EPOCHS = 20
DEMO_SIZE = 48  # with 20 epochs: top-1 0.926 here, 0.654 at 64 px / 12 epochs (the old recipe)
PHONES = ("pixel8-cpu", "pixel8-gpu", "iphone15-coreml", "rpi5")
DEMO_SWEEP = Path(__file__).resolve().parents[1] / "sweeps" / "demo.toml"  # the matrix; the demo adds training


def run_demo(out: Path, model: str = DEMO_MODEL) -> dict:
    from rich.console import Console

    from .core import load_model, reparameterize
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
                   config=TrainConfig(epochs=DEMO_EPOCHS, train_limit=1500, lr=3e-3),
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
    plan = load_sweep(DEMO_SWEEP)
    plan.models[0].update(weights=str(weights), input_size=DEMO_SIZE)

    def show(event: str, info: dict) -> None:
        if event == "export-step":
            console.print(f"  {info['format']:6s} {info['precision']:5s} ({info['index'] + 1}/{info['total']})")
        elif event == "cell" and info["done"] == 0:
            console.rule("4/5 accuracy of every artifact on the same 500 images; "
                         "5/5 latency: measured on this host, estimated for phones and boards")
    res = execute(plan, out, cache=out / "cache", progress=show)
    run = res["run"]
    rows = _summary_table(console, model, run)
    result = {"model": model, "input_size": DEMO_SIZE, "train": {k: tr[k] for k in ("eval", "history", "weights")},
              "reparam": r.to_dict(), "sweep": str(DEMO_SWEEP), "rows": rows,
              "exports": [m.get("cache_dir") for m in res["exports"].values()],
              "seconds": round(time.perf_counter() - t_all, 1)}
    path = atomic_write_json(out / "demo.json", result)
    console.print(f"demo finished in {result['seconds']:.0f} s; run record {out / 'run.json'}; summary {path}")
    console.print(f"report: {Path(res['reports']['html']).resolve()}")
    return result


def _summary_table(console, model: str, run: dict) -> list[dict]:
    from rich.table import Table

    acc = {(r["format"], r["precision"]): r for r in run["accuracy"] if r["runtime"] != "pytorch"}
    lat = {(r["format"], r["precision"], r["device"]): r for r in run["latency"]}
    t = Table(title=f"{model} ({DEMO_SIZE}px, trained here) - measured on this host; phone columns are roofline ESTIMATES")
    for col in ("format", "precision", "size MB", "fidelity cos", "top-1", "agree", "host p50 ms"):
        t.add_column(col, justify="right")
    for dev in PHONES:
        t.add_column(f"{dev} est. ms", justify="right")
    rows = []
    fmt = lambda v, p=3: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
    for a in run["artifacts"]:
        key = (a["format"], a["precision"])
        f, e = a.get("fidelity") or {}, acc.get(key, {})
        host = lat.get((*key, "host"))
        row = {"format": a["format"], "precision": a["precision"], "status": a["status"],
               "size_mb": (a["size_bytes"] or 0) / 1e6, "cosine": f.get("cosine"), "top1": e.get("top1"),
               "agreement": (e.get("vs_pytorch") or {}).get("agreement"), "host_p50_ms": host["p50_ms"] if host else None,
               "estimates_ms": {d: (lat.get((*key, d)) or {}).get("p50_ms") for d in PHONES}}
        rows.append(row)
        here = a["runnable_here"]
        t.add_row(a["format"], a["precision"], fmt(row["size_mb"], 2), fmt(row["cosine"], 6),
                  fmt(row["top1"]) if here else "not here", fmt(row["agreement"]),
                  fmt(row["host_p50_ms"]) if here else "not here", *[fmt(row["estimates_ms"][d], 2) for d in PHONES])
    console.print(t)
    return rows
