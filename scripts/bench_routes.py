"""``make bench`` (part two): the TFLite route table. Every route converts the same model at the
same precision, interleaved (route order rotates per cell, so a slow spell of the shared machine
does not land on one route), and each file is measured the same way: convert seconds and peak
memory (from the export manifest: the conversion processes, ONNX export included for onnx2tf),
size, op histogram, LiteRT latency (XNNPACK, all threads, this host) and fidelity against PyTorch.

Latency is taken after all conversions, per (model, precision), in rounds: each round times
every route's file once (order rotating), so the routes share the machine's quiet and busy spells;
a route's figure is the median of its rounds' p50s, its spread the range of those p50s.
``--remeasure`` redoes only this phase on the files of an earlier run.

The winner per (model, precision) is chosen by one rule, written into the result:
  a route whose file is not verified ok cannot win; among the rest, the lowest LiteRT p50 wins
  unless it is within the spread of the measurements (max of the repeats' spread and 5%) of
  another, in which case the faster conversion wins.
The TFLite format's ``auto`` route (exporters/tflite_routes.AUTO_ROUTES) is this table's result.

Results: reports/bench/routes.json and routes.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from exporters.provenance import toolchain_versions  # noqa: E402
from workbench.export import ExportOptions, export_model  # noqa: E402

MODELS = ("repvgg-a0", "resnet18", "mobilenet-v2", "ssd300-vgg16", "vgg16")
PRECISIONS = ("fp32", "fp16", "int8")
ROUTES = ("tf-direct", "onnx2tf", "litert-torch")


def op_histogram(path: str) -> dict[str, int]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=path)
    return dict(Counter(op["op_name"] for op in it._get_ops_details()).most_common())


def latency(path: str) -> dict:
    from workbench.bench.measure import bench_artifact
    from workbench.bench.runners import Protocol

    r = bench_artifact(path, "host", Protocol(warmup=5, min_runs=20, min_seconds=1.0, repeats=3)).to_dict()
    return {k: r.get(k) for k in ("p50_ms", "repeat_p50_ms", "repeat_spread", "noisy", "threads")}


def cell(model: str, precision: str, route: str, out: Path, timeout: float) -> dict:
    work = out / "work" / f"{model}-{precision}-{route}"
    shutil.rmtree(work, ignore_errors=True)  # nothing cached: each route pays its whole conversion
    opts = ExportOptions(formats=("tflite",), precisions=(precision,), route=route, calib_count=32,
                         fidelity_count=8, timeout_s=timeout)
    try:
        a = export_model(model, out_dir=work, options=opts)["artifacts"][0]
    except Exception as e:  # noqa: BLE001 - a route that cannot run at all is a row, not a crash
        return {"model": model, "precision": precision, "route": route, "status": "failed", "reason": str(e)[:300]}
    row = {"model": model, "precision": precision, "route": route, "status": a["status"], "reason": a.get("reason"),
           "convert_s": a.get("export_seconds"), "peak_mb": a.get("peak_rss_mb"), "size_mb":
           round(a["size_bytes"] / 1e6, 2) if a.get("size_bytes") else None}
    fid = a.get("fidelity") or {}
    row.update(cosine=fid.get("cosine"), max_abs_diff=fid.get("max_abs_diff"), agreement=fid.get("agreement"))
    if a["status"] == "ok":
        row["ops"] = op_histogram(a["path"])
        row["path"] = a["path"]
    shutil.rmtree(work / ".work", ignore_errors=True)
    return row


ROUNDS = 3


def measure_group(cells: list[dict]) -> None:
    """Interleaved latency of one (model, precision) group's files: ROUNDS rounds, order rotating."""
    import statistics

    ok = [c for c in cells if c["status"] == "ok" and c.get("path") and Path(c["path"]).exists()]
    runs: dict[str, list[dict]] = {c["route"]: [] for c in ok}
    for r in range(ROUNDS):
        for c in ok[r % max(1, len(ok)):] + ok[:r % max(1, len(ok))]:
            runs[c["route"]].append(latency(c["path"]))
    for c in ok:
        p50s = [m["p50_ms"] for m in runs[c["route"]]]
        med = statistics.median(p50s)
        c.update(p50_ms=med, round_p50_ms=[round(v, 3) for v in p50s], repeat_spread=(max(p50s) - min(p50s)) / med,
                 noisy=any(m.get("noisy") for m in runs[c["route"]]), threads=runs[c["route"]][0].get("threads"))


def winner(rows: list[dict]) -> tuple[str | None, str]:
    ok = [r for r in rows if r["status"] == "ok" and r.get("p50_ms")]
    if not ok:
        return None, "no route wrote a verified file"
    best = min(ok, key=lambda r: r["p50_ms"])
    tol = max([0.05] + [r.get("repeat_spread") or 0 for r in ok])
    noisy = [r["route"] for r in ok if r.get("noisy")]
    tied = [r for r in ok if r["p50_ms"] <= best["p50_ms"] * (1 + tol)]
    if len(tied) > 1:
        w = min(tied, key=lambda r: r["convert_s"] or 1e9)
        return w["route"], (f"latency tied within {tol:.0%} ({', '.join(r['route'] for r in tied)}); "
                            f"fastest conversion {w['convert_s']:.1f} s" + (f"; noisy rounds: {', '.join(noisy)}" if noisy else ""))
    return best["route"], (f"lowest LiteRT p50 {best['p50_ms']:.2f} ms (beyond the {tol:.0%} spread)"
                           + (f"; noisy rounds: {', '.join(noisy)}" if noisy else ""))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "reports" / "bench"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--remeasure", action="store_true", help="only the latency phase, on the files of routes.json")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    groups: list[list[dict]] = []
    if args.remeasure:
        old = json.loads((out / "routes.json").read_text())["rows"]
        for key in dict.fromkeys((r["model"], r["precision"]) for r in old):
            group = [r for r in old if (r["model"], r["precision"]) == key]
            for r in group:  # rows of an older run name no path: the cell's folder holds the file
                r.setdefault("path", str(out / "work" / f"{r['model']}-{r['precision']}-{r['route']}" /
                                         f"{r['model']}_{r['precision']}.tflite"))
            groups.append(group)
    else:
        k = 0
        for model in args.models.split(","):
            for precision in args.precisions.split(","):
                order = ROUTES[k % 3:] + ROUTES[:k % 3]
                k += 1
                cells = []
                for route in order:
                    r = cell(model, precision, route, out, args.timeout)
                    cells.append(r)
                    print(f"{model:13s} {precision:5s} {route:12s} {r['status']:11s} convert {r.get('convert_s') or 0:7.1f} s "
                          f"peak {r.get('peak_mb') or 0:6.0f} MB  cos {r.get('cosine')}  "
                          f"{'' if r['status'] == 'ok' else (r.get('reason') or '')[:120]}", flush=True)
                groups.append(cells)
                (out / "routes.json").write_text(json.dumps({"rows": [c for g in groups for c in g]}, indent=2))
    rows: list[dict] = []
    winners: list[dict] = []
    for cells in groups:
        model, precision = cells[0]["model"], cells[0]["precision"]
        measure_group(cells)
        for c in cells:
            if c.get("p50_ms"):
                print(f"{model:13s} {precision:5s} {c['route']:12s} p50 {c['p50_ms']:8.2f} ms rounds {c['round_p50_ms']}"
                      f"{' NOISY' if c.get('noisy') else ''}", flush=True)
        rows += cells
        base = next((c for c in cells if c["route"] == "tf-direct" and c["status"] == "ok"), None)
        for c in cells:
            if base and c["status"] == "ok":
                c["convert_vs_tf_direct"] = round(c["convert_s"] / base["convert_s"], 2) if base["convert_s"] else None
                c["p50_vs_tf_direct"] = round(c["p50_ms"] / base["p50_ms"], 3) if base.get("p50_ms") else None
                c["peak_vs_tf_direct"] = round(c["peak_mb"] / base["peak_mb"], 2) if base.get("peak_mb") else None
        w, why = winner(cells)
        winners.append({"model": model, "precision": precision, "winner": w, "why": why})
    result = {"created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cores": len(os.sched_getaffinity(0)),
              "toolchain": toolchain_versions(), "rule": __doc__.split("The winner")[1].split("Results:")[0].strip(),
              "rows": rows, "winners": winners}
    (out / "routes.json").write_text(json.dumps(result, indent=2))
    lines = ["# TFLite routes, side by side", "", f"{result['created']}, {result['cores']} cores, interleaved per cell; "
             f"onnx2tf {result['toolchain'].get('onnx2tf')}, litert-torch {result['toolchain'].get('litert-torch')}, "
             f"TensorFlow {result['toolchain'].get('tensorflow')}, ai-edge-litert {result['toolchain'].get('ai-edge-litert')}", "",
             "| model | precision | route | status | convert s (x tf-direct) | peak MB (x) | size MB | LiteRT p50 ms (x) | "
             "cosine | agreement | ops |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ops = ", ".join(f"{k} {v}" for k, v in list((r.get("ops") or {}).items())[:6])
        lines.append(f"| {r['model']} | {r['precision']} | {r['route']} | {r['status']}"
                     f"{'' if r['status'] == 'ok' else ': ' + (r.get('reason') or '')[:90]} | "
                     f"{r.get('convert_s') or '-'} ({r.get('convert_vs_tf_direct', '-')}) | {r.get('peak_mb') or '-'} "
                     f"({r.get('peak_vs_tf_direct', '-')}) | {r.get('size_mb') or '-'} | "
                     f"{round(r['p50_ms'], 2) if r.get('p50_ms') else '-'} ({r.get('p50_vs_tf_direct', '-')}) | "
                     f"{round(r['cosine'], 6) if r.get('cosine') is not None else '-'} | {r.get('agreement', '-')} | {ops} |")
    lines += ["", "| model | precision | winner | why |", "|---|---|---|---|"]
    lines += [f"| {w['model']} | {w['precision']} | {w['winner']} | {w['why']} |" for w in winners]
    (out / "routes.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-len(winners) - 2:]))
    print(f"results: {out / 'routes.json'}, {out / 'routes.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
