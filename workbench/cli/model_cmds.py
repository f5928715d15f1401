"""Commands on one model or artifact: models, info, reparam, export, train, eval, bench, devices.
Each parses nothing itself: it calls the public API and prints."""
from __future__ import annotations

import sys

from .output import _human, _print_json


def cmd_models(args) -> int:
    from ..api import zoo_table

    rows = zoo_table(args.pattern, include_tiny=not args.no_tiny)
    if args.json:
        _print_json(rows)
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Edge Workbench model zoo ({len(rows)} models; params and MACs counted "
                    "from the architecture at the default input)")
    for col in ("model", "task", "input", "classes", "params (train)", "params (deploy)",
                "MACs (train)", "MACs (deploy)"):
        t.add_column(col, justify="left" if col in ("model", "task") else "right")
    for r in rows:
        t.add_row(r["name"] + (" (tiny)" if r["tiny"] else ""), r["task"], str(r["input_size"]),
                  str(r["num_classes"]), f"{r['params']:,}", f"{r['params_deploy']:,}",
                  _human(r["macs"]), _human(r["macs_deploy"]))
    Console(width=140).print(t)
    return 0


def cmd_info(args) -> int:
    from ..api import model_summary

    info = model_summary(args.model, num_classes=args.num_classes, input_size=args.input_size)
    if info["task"] == "detection":  # the decode configuration in use: from the file, its layout, or ours
        from ..api import load_model

        m = load_model(args.model, weights=args.weights, num_classes=args.num_classes, input_size=args.input_size,
                       decode=args.decode)
        info["decode"] = m.decode_config.summary()
        info["decode_source"] = getattr(m, "decode_note", "ours (no weights given)")
        if args.json:
            info["decode_config"] = m.decode_config.to_dict()
    elif args.weights or args.decode:
        print("note: --weights/--decode change only a detection model's info; params and MACs are the zoo's",
              file=sys.stderr)
    if args.json:
        _print_json(info)
    else:
        for k, v in info.items():
            print(f"{k:15s} {v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"{k:15s} {v}")
    return 0


def cmd_reparam(args) -> int:
    from ..api import load_model, reparameterize, save_state_dict

    model = load_model(args.model, weights=args.weights, num_classes=args.num_classes,
                       input_size=args.input_size)
    result = reparameterize(model, seed=args.seed)
    path = save_state_dict(result.model, args.out)
    out = {"model": model.model_info.name, "out": str(path), **result.to_dict()}
    if args.json:
        _print_json(out)
    else:
        r = result.report
        print(f"{out['model']}: params {result.params_before:,} -> {result.params_after:,}, "
              f"BatchNorm layers {result.bn_before} -> {result.bn_after}, multi-branch blocks "
              f"{result.branches_before} -> {result.branches_after}")
        print(f"equivalence on a seeded check input: max abs diff {r.max_abs_diff:.3e} "
              f"({r.relative_max_diff:.2e} of max |output|), cosine {r.cosine:.9f}")
        print(f"wrote {path}")
    return 0


def _csv(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def cmd_export(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ..api import ExportOptions, export_model

    opts = ExportOptions(formats=_csv(args.formats), precisions=_csv(args.precisions),
                         calib_dir=args.calib, calib_count=args.calib_count, reparam=not args.no_reparam,
                         nchw=args.nchw, int8_io=args.int8_io, route=args.route, timeout_s=args.timeout,
                         memory_limit_mb=args.memory_limit, compat=args.compat,
                         threads=args.threads, image_input=args.image_input).validate()
    console = Console(stderr=True, width=140)
    rows = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, transient=args.json) as bar:
        task = bar.add_task(f"export {args.model}", total=len(opts.formats) * len(opts.precisions))

        def progress(event: str, info: dict) -> None:
            if event == "start":
                bar.update(task, description=f"export {args.model}: {info['format']} {info['precision']}")
            elif event == "done":
                r = info["record"]
                rows.append(r)
                bar.advance(task)
                if not args.json:
                    bar.console.print(_row_line(r))
            elif event == "load":
                bar.update(task, description=f"export {args.model}: loading, re-parameterizing, data")

        manifest = export_model(args.model, out_dir=args.out, weights=args.weights, num_classes=args.num_classes,
                                input_size=args.input_size, options=opts, progress=progress)
    failed = [a for a in manifest["artifacts"] if a["status"] == "failed"]
    if args.json:
        _print_json(manifest)
    else:
        s = manifest["summary"]
        print(f"{s['ok']} ok, {s['failed']} failed, {s['skipped']} skipped; manifest: {args.out}/manifest.json")
    return 1 if failed else 0


def _row_line(r: dict) -> str:
    head = f"{r['format']:7s} {r['precision']:13s}"
    if r["status"] != "ok":
        colour = "red" if r["status"] == "failed" else "yellow"
        return f"[{colour}]{head} {r['status'].upper()}[/]: {r['reason']}"
    f = r.get("fidelity") or {}
    if "cosine" in f:
        fid = f"cos {f['cosine']:.6f}, max|d| {f['max_abs_diff']:.2e}, agree {f.get('agreement', float('nan')):.3f}"
    else:
        v = r.get("validation") or {}
        snr = v.get("weight_snr_db")
        fid = "not runnable here (needs macOS)" + (f"; weight SNR {snr:.1f} dB" if snr is not None else "")
    from ..api import gpu_text, runtime_text

    gpu = r.get("gpu_delegate")
    g = f"; GPU rules {gpu['delegated_ops']}/{gpu['total_ops']} ops" if gpu else ""
    if r.get("gpu"):
        g += f"\n{'':7s} {'':13s} GPU accelerator: {gpu_text(r)}; oldest runtime {runtime_text(r)}"
    line = (f"[green]{head} ok[/] {r['size_bytes'] / 1e6:8.2f} MB {r['export_seconds']:6.1f} s "
            f"{r['peak_rss_mb']:7.0f} MB peak [{r['route']}] {fid}{g}")
    eng = r.get("engine")
    if eng:
        line += (f"\n{'':7s} {'':13s} engine: built in {eng['build_seconds']} s (TensorRT {eng['tensorrt']}, {eng['gpu']})"
                 if eng.get("status") == "built" else f"\n{'':7s} {'':13s} [yellow]engine: {eng['reason']}[/]")
    return line


def cmd_train(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ..api import TrainConfig, train

    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                      train_limit=args.limit, seed=args.seed)
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=args.json) as bar:
        task = bar.add_task(f"train {args.model}", total=None)

        def progress(d: dict) -> None:
            total = d["epochs"] * d["steps"]
            done = (d["epoch"] - 1) * d["steps"] + d["step"]
            bar.update(task, total=total, completed=done,
                       description=f"train {args.model} epoch {d['epoch']}/{d['epochs']} loss {d['loss']:.3f}")

        summary = train(args.model, args.data, out=args.out, input_size=args.input_size,
                        num_classes=args.num_classes, weights=args.weights, config=cfg, progress=progress)
    if args.json:
        _print_json(summary)
    else:
        ev = summary["eval"]
        if "top1" in ev:
            lo, hi = ev["top1_ci95"]
            print(f"{summary['model']}: top-1 {ev['top1']:.3f} (95% CI {lo:.3f}-{hi:.3f}) on {ev['images']} "
                  f"eval images of {ev['data']['source']}")
        else:
            print(f"{summary['model']}: mAP@0.5 {ev['map50']:.3f}, mAP@[.5:.95] {ev['map50_95']:.3f} on {ev['images']} images")
        print(f"weights: {summary['weights']} (checkpoint {summary['checkpoint']}; summary {summary['weights']}.json)")
    return 0


def cmd_eval(args) -> int:
    from ..api import evaluate_target

    res = evaluate_target(args.target, args.data, weights=args.weights, num_classes=args.num_classes,
                          input_size=args.input_size, limit=args.limit, threads=args.threads, decode=args.decode)
    if args.json:
        _print_json(res)
        return 0
    for w in res.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    for r in res["results"]:
        name = r["target"] + (f" ({r['format']} {r['precision']})" if "format" in r else "")
        if "status" in r:
            print(f"{name}: {r['status']}" + (f": {r['reason']}" if r.get("reason") else ""))
        elif "top1" in r:
            lo, hi = r["top1_ci95"]
            agree = r.get("vs_pytorch")
            extra = f"; agreement with PyTorch {agree['agreement']:.3f} ({agree['changed_predictions']} changed)" if agree else ""
            print(f"{name}: top-1 {r['top1']:.3f} (95% CI {lo:.3f}-{hi:.3f}), top-{r['top5_k']} {r['top5']:.3f}, "
                  f"{r['images']} images{extra}")
        else:
            print(f"{name}: mAP@0.5 {r['map50']:.3f}, mAP@[.5:.95] {r['map50_95']:.3f}, {r['images']} images"
                  + (f"; decoded as {r['decode']}" if r.get("decode") else ""))
    return 0


def cmd_bench(args) -> int:
    from ..api import bench_target
    from ..api import Protocol

    proto = Protocol(warmup=args.warmup, min_runs=args.runs, min_seconds=args.min_seconds, repeats=args.repeats)
    rows = bench_target(args.target, args.device, proto)
    if args.json:
        _print_json(rows if len(rows) > 1 else rows[0])
        return 0
    for r in rows:
        name = r["artifact"].rsplit("/", 1)[-1]
        if r["status"] != "ok":
            print(f"{name} on {r['device']}: {r['status']}: {r['reason']}")
            continue
        if r["estimated"]:
            print(f"{name} on {r['device']}: ESTIMATE {r['p50_ms']:.2f} ms ({r['basis']['method']})")
            continue
        est = (r.get("basis") or {}).get("estimate_ms")
        e = f"; roofline estimate {est:.2f} ms ({(r['basis']['estimate_error']) * 100:+.0f}%)" if est else ""
        print(f"{name} on {r['device']} ({r['runtime']}, {r['threads']} threads): p50 {r['p50_ms']:.3f} ms, "
              f"mean {r['mean_ms']:.3f} +- {r['std_ms']:.3f}, p90 {r['p90_ms']:.3f}, p99 {r['p99_ms']:.3f}, "
              f"min {r['min_ms']:.3f}, max {r['max_ms']:.3f} ms over {r['runs']} runs; init {r['init_ms']:.1f} ms, "
              f"first {r['first_ms']:.2f} ms; peak {r['peak_rss_mb']:.0f} MB{e}")
        print(f"  timed: {r['timed_scope']}")
        for w in r.get("warnings", []):
            print(f"  warning: {w}")
    return 0


def cmd_devices(args) -> int:
    from ..api import load_profiles

    profiles, errors = load_profiles()
    if args.json:
        _print_json({"profiles": {n: p.__dict__ for n, p in profiles.items()}, "errors": errors})
        return 0
    for n, p in profiles.items():
        print(f"{n:18s} {p.runner:8s} threads={p.threads!s:4s} {', '.join(p.runtimes):22s} {p.description}")
    for f, e in errors.items():
        print(f"error: {e}", file=sys.stderr)
    return 2 if errors else 0
