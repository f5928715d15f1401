"""``workbench`` command line: a thin shell over ``workbench.api``.

Every error prints one line and exits with code 2; set WORKBENCH_DEBUG=1 for the traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

from .errors import WorkbenchError


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


def _human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def cmd_models(args) -> int:
    from .api import zoo_table

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
    from .api import model_summary

    info = model_summary(args.model, num_classes=args.num_classes, input_size=args.input_size)
    if args.json:
        _print_json(info)
    else:
        for k, v in info.items():
            print(f"{k:15s} {v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"{k:15s} {v}")
    return 0


def cmd_reparam(args) -> int:
    from .api import load_model, reparameterize, save_state_dict

    model = load_model(args.model, weights=args.weights, num_classes=args.num_classes,
                       input_size=args.input_size)
    result = reparameterize(model, seed=args.seed)
    path = save_state_dict(result.model, args.out)
    out = {"model": model.workbench_name, "out": str(path), **result.to_dict()}
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

    from .export import ExportOptions, export_model

    opts = ExportOptions(formats=_csv(args.formats), precisions=_csv(args.precisions),
                         calib_dir=args.calib, calib_count=args.calib_count, reparam=not args.no_reparam,
                         nchw=args.nchw, int8_io=args.int8_io, route=args.route, timeout_s=args.timeout,
                         memory_limit_mb=args.memory_limit,
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
    gpu = r.get("gpu_delegate")
    g = f"; GPU delegate {gpu['delegated_ops']}/{gpu['total_ops']} ops" if gpu else ""
    return (f"[green]{head} ok[/] {r['size_bytes'] / 1e6:8.2f} MB {r['export_seconds']:6.1f} s "
            f"{r['peak_rss_mb']:7.0f} MB peak [{r['route']}] {fid}{g}")


def cmd_train(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from .train import TrainConfig, train

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
    from .evaluate import evaluate_target

    res = evaluate_target(args.target, args.data, weights=args.weights, num_classes=args.num_classes,
                          input_size=args.input_size, limit=args.limit, threads=args.threads)
    if args.json:
        _print_json(res)
        return 0
    for r in res["results"]:
        name = r["target"] + (f" ({r['format']} {r['precision']})" if "format" in r else "")
        if "status" in r:
            print(f"{name}: {r['status']}")
        elif "top1" in r:
            lo, hi = r["top1_ci95"]
            agree = r.get("vs_pytorch")
            extra = f"; agreement with PyTorch {agree['agreement']:.3f} ({agree['changed_predictions']} changed)" if agree else ""
            print(f"{name}: top-1 {r['top1']:.3f} (95% CI {lo:.3f}-{hi:.3f}), top-{r['top5_k']} {r['top5']:.3f}, "
                  f"{r['images']} images{extra}")
        else:
            print(f"{name}: mAP@0.5 {r['map50']:.3f}, mAP@[.5:.95] {r['map50_95']:.3f}, {r['images']} images")
    return 0


def cmd_bench(args) -> int:
    from .bench.measure import bench_target
    from .bench.runners import Protocol

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
    from .bench.profiles import load_profiles

    profiles, errors = load_profiles()
    if args.json:
        _print_json({"profiles": {n: p.__dict__ for n, p in profiles.items()}, "errors": errors})
        return 0
    for n, p in profiles.items():
        print(f"{n:18s} {p.runner:8s} threads={p.threads!s:4s} {', '.join(p.runtimes):22s} {p.description}")
    for f, e in errors.items():
        print(f"error: {e}", file=sys.stderr)
    return 2 if errors else 0


def cmd_optimize(args) -> int:
    from pathlib import Path

    from .errors import ConfigError

    def say(msg: str) -> None:
        print(f"... {msg}", file=sys.stderr, flush=True)

    if args.sensitivity:
        return _optimize_sensitivity(args)
    if args.quant_study:
        from .optimize.study import quant_study

        if not args.weights:
            raise ConfigError("--quant-study needs --weights of a trained model (INT8 loss of random weights is noise)")
        st = quant_study(args.model, args.weights, args.quant_study, data=args.data or "builtin", input_size=args.input_size,
                         keep_worst=args.keep_worst, qat_epochs=args.qat if args.qat is not None else 2,
                         qa_model=args.qa_model, qa_weights=args.qa_weights, qa_epochs=args.qa_epochs, eval_limit=args.eval_limit,
                         say=say)
        if args.json:
            _print_json({k: v for k, v in st.items() if k != "sensitivity"})
        else:
            print(Path(args.quant_study, "study.md").read_text())
        return 0
    steps = {k: v for k, v in {"prune": args.prune, "norm": args.norm if args.prune else None,
                               "prune_stages": _stage_ratios(args.prune_stages), "finetune_epochs": args.finetune,
                               "sparsity": args.sparsity, "qat_epochs": args.qat, "data": args.data, "lr": args.lr}.items()
             if v not in (None, {}, 0)}
    if not args.out:
        raise ConfigError("--out FILE.safetensors is required for --prune / --sparsity / --qat")
    from .optimize.pipeline import compare_before_after, optimize_model

    rep = optimize_model(args.model, steps, out=args.out, weights=args.weights, num_classes=args.num_classes,
                         input_size=args.input_size, say=say)
    if args.measure:
        rep["measured"] = compare_before_after(args.model, rep, data=args.data or "builtin", device=args.device,
                                               eval_limit=args.eval_limit, say=say)
        from .fsutil import atomic_write_json

        atomic_write_json(Path(rep["out"] + ".json"), rep)
    if args.json:
        _print_json(rep)
        return 0
    b, a = rep["before"], rep["after"]
    print(f"{args.model}: {', '.join(f'{k}={v}' for k, v in steps.items())}")
    print(f"  params {b['params']:,} -> {a['params']:,} (-{rep['params_reduction']:.1%}); MACs {b['macs'] / 1e9:.4f}G -> "
          f"{a['macs'] / 1e9:.4f}G (-{rep['macs_reduction']:.1%})")
    print(f"  weights file {b['file_bytes'] / 2**20:.2f} -> {a['file_bytes'] / 2**20:.2f} MB; gzip "
          f"{b['file_gzip_bytes'] / 2**20:.2f} -> {a['file_gzip_bytes'] / 2**20:.2f} MB")
    if "prune" in rep:
        r = rep["prune"]["reparam_after_pruning"]
        print(f"  re-parameterization after pruning: relative max diff {r['relative_max_diff']:.2e}, cosine {r['cosine']:.9f}")
    if "finetune" in rep:
        pre = rep["prune"].get("eval_top1_before_finetune")
        print(f"  fine-tuned {rep['finetune']['epochs']} epochs: eval top-1 "
              + (f"{pre:.3f} right after pruning -> " if pre is not None else "") + f"{rep['finetune']['eval_top1']:.3f}")
    if "qat" in rep:
        h = rep["qat"]["history"][-1]
        print(f"  QAT {rep['qat']['epochs']} epochs: train top-1 under fake quantization {h['train_top1_fakequant']:.3f}")
    if rep.get("note"):
        print(f"  note: {rep['note']}")
    m = rep.get("measured")
    if m:
        for which in ("before", "after"):
            r = m[which]
            acc = f"top-1 {r['top1']:.3f}" if r["top1"] is not None else "top-1 n/a"
            print(f"  {which:6s}: ONNX fp32 {r['onnx_bytes'] / 2**20:.2f} MB, {acc}, p50 {r['p50_ms']:.3f} ms on {m['device']}")
        print(f"  latency {m['latency_change']:+.1%} ({'dropped beyond the repeat spread' if m['latency_dropped'] else 'no drop beyond the repeat spread'})"
              + (f"; top-1 {m['top1_change_pp']:+.1f} pp" if "top1_change_pp" in m else ""))
    print(f"wrote {rep['out']} and {rep['out']}.json")
    return 0


def _stage_ratios(text: str | None) -> dict:
    from .errors import ConfigError

    if not text:
        return {}
    out = {}
    for part in text.split(","):
        name, _, val = part.partition("=")
        try:
            out[name.strip()] = float(val)
        except ValueError:
            raise ConfigError(f"--prune-stages takes NAME=RATIO pairs, e.g. stage3=0.5,stage4=0.2; got {part!r}") from None
    return out


def _optimize_sensitivity(args) -> int:
    from .api import load_model
    from .optimize.quant import sensitivity_on_data

    model = load_model(args.model, weights=args.weights, num_classes=args.num_classes, input_size=args.input_size)
    s = sensitivity_on_data(model, args.data or "builtin", eval_limit=args.eval_limit)
    if args.json:
        _print_json(s)
        return 0
    print(f"{args.model}: per-layer INT8 sensitivity (one layer quantized at a time), worst first")
    print(f"{'layer':32s} {'SQNR dB':>8s} {'agree':>6s} {'w max/std':>9s}")
    for r in s["layers"]:
        print(f"{r['layer']:32s} {r['sqnr_db']:8.1f} {r.get('top1_agreement', float('nan')):6.3f} {r['weight_absmax_over_std']:9.1f}")
    a = s["all_layers"]
    print(f"{'(all layers)':32s} {a['sqnr_db']:8.1f} {a.get('top1_agreement', float('nan')):6.3f}")
    return 0


def cmd_run(args) -> int:
    from rich.console import Console

    from .sweep import run_sweep

    console = Console(stderr=True)

    def progress(event: str, info: dict) -> None:
        if event == "export":
            console.print(f"export {info['model']} ({'deploy' if info['reparam'] else 'train-time'}): {info['combos']} artifacts")
        elif event == "optimize":
            console.print(f"optimize {info['model']}: {info.get('step') or info.get('steps')}")
        elif event == "export-step":
            console.print(f"  exporting {info['format']} {info['precision']} ({info['index'] + 1}/{info['total']})")
        elif event == "cached":
            console.print(f"cached {info['model']} ({'deploy' if info['reparam'] else 'train-time'}): {info['combos']} artifacts reused")
        elif event == "cell":
            eta = f", ~{info['eta_s']:.0f} s left" if info.get("eta_s") is not None else ""
            console.print(f"[{info['done']}/{info['total']} done, {info['running']} running, {info['failed']} failed{eta}] "
                          f"{info['kind']} {info['model']} {info['format']} {info['precision']} {info.get('device', '')}")

    res = run_sweep(args.sweep, args.out, resume=args.resume, cache=args.cache, progress=progress,
                    executor=args.executor, address=args.address, jobs=args.jobs)
    st = res["stats"]
    failed = [f for f in res["run"]["failures"]]
    print(f"{st['cells_done']} cells measured, {st['cells_reused']} reused, {len(failed)} failures; "
          f"exported {st['exported_now']} artifacts; report: {res['reports']['html']}")
    return 1 if failed else 0


def cmd_report(args) -> int:
    from pathlib import Path

    from .errors import ConfigError
    from .report.build import validate_run
    from .report.render import write_reports

    d = Path(args.dir)
    path = d / "run.json"
    if not path.exists():
        raise ConfigError(f"{d} has no run.json; pass a run folder (written by workbench demo or run)")
    try:
        run = json.loads(path.read_text())
        validate_run(run)
    except (json.JSONDecodeError, Exception) as e:
        raise ConfigError(f"{path} is not a valid run record ({type(e).__name__}: {str(e).splitlines()[0][:160]})") from e
    fmts = ("html", "md", "csv", "devices") if args.format == "all" else (args.format,)
    if args.format == "json":
        print(json.dumps(run, indent=2))
        return 0
    for kind, where in write_reports(run, d, fmts).items():
        print(f"{kind}: {where}")
    return 0


def cmd_compare(args) -> int:
    from .report.compare import compare_runs

    res = compare_runs(args.dir_a, args.dir_b)
    if args.json:
        _print_json(res)
        return 0
    changed = [r for r in res["latency"] if r["changed"]]
    print(f"latency: {len(changed)} of {len(res['latency'])} cells changed beyond their noise")
    for r in res["latency"]:
        mark = "CHANGED" if r["changed"] else "same   "
        est = " (estimates)" if r["estimated"] else ""
        form = "" if r["reparam"] else " (train-time)"
        print(f"  {mark} {r['model']}{form} {r['format']} {r['precision']} on {r['device']}: {r['p50_a_ms']:.3f} -> "
              f"{r['p50_b_ms']:.3f} ms ({r['delta_rel'] * 100:+.1f}%, noise {r['noise_ms']:.3f} ms){est}")
    for r in res["accuracy"]:
        mark = "CHANGED" if r["changed"] else "same   "
        print(f"  {mark} top-1 {r['model']} {r['format']} {r['precision']}: {r['top1_a']:.3f} -> {r['top1_b']:.3f}")
    for k in res["only_in_a"]:
        print(f"  only in {args.dir_a}: {k}")
    for k in res["only_in_b"]:
        print(f"  only in {args.dir_b}: {k}")
    return 0


def app_command(args) -> tuple[list[str], dict]:
    """The streamlit command line and environment ``workbench app`` runs (tested without starting it)."""
    import os
    import sys
    from pathlib import Path

    from .errors import ConfigError

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port} is not a TCP port; use 1-65535")
    if args.max_upload_mb <= 0:
        raise ConfigError("--max-upload-mb must be positive")
    main = Path(__file__).resolve().parent / "app" / "main.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(main), "--server.address", args.address,
           "--server.port", str(args.port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.maxUploadSize", str(int(args.max_upload_mb)), "--server.fileWatcherType", "none",
           "--global.developmentMode", "false", "--client.toolbarMode", "minimal"]
    env = {**os.environ, "WORKBENCH_DATA": str(Path(args.data_dir).resolve()),
           "WORKBENCH_MAX_UPLOAD_MB": str(args.max_upload_mb)}
    return cmd, env


def cmd_app(args) -> int:
    import os

    cmd, env = app_command(args)
    if args.address not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.address}: anyone who can reach this machine can use the dashboard "
              "and read its runs", file=sys.stderr)
    print(f"Edge Workbench dashboard on http://{args.address}:{args.port} (data: {env['WORKBENCH_DATA']}); Ctrl+C stops it",
          file=sys.stderr)
    os.execve(cmd[0], cmd, env)
    return 0  # not reached


def cmd_demo(args) -> int:
    from pathlib import Path

    from .demo import run_demo

    cmd_models(argparse.Namespace(pattern="*", no_tiny=True, json=False))
    run_demo(Path(args.out))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="workbench", description=(
        "Edge Workbench: re-parameterize, export, verify and measure VGG / RepVGG / SSD models "
        "for phones and boards. Set WORKBENCH_DEBUG=1 to see tracebacks."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("models", help="list the model zoo with params and MACs")
    s.add_argument("pattern", nargs="?", default="*", help="wildcard, e.g. 'repvgg-*'")
    s.add_argument("--no-tiny", action="store_true", help="hide the test-sized models")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_models)

    def model_args(s, weights: bool = True) -> None:
        s.add_argument("model", help="model name (see `workbench models`)")
        if weights:
            s.add_argument("--weights", metavar="PATH", help=".pth/.pt/.safetensors state dict")
        s.add_argument("--num-classes", type=int, metavar="N")
        s.add_argument("--input-size", type=int, metavar="S")
        s.add_argument("--json", action="store_true")

    s = sub.add_parser("info", help="params, MACs and output shapes of one model")
    model_args(s, weights=False)
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("reparam", help="re-parameterize to the deploy form and write its weights")
    model_args(s)
    s.add_argument("--out", required=True, metavar="FILE", help=".pth or .safetensors to write")
    s.add_argument("--seed", type=int, default=0, help="seed of the equivalence check input")
    s.set_defaults(func=cmd_reparam)
    s = sub.add_parser("export", help="export to ONNX / TFLite / CoreML and verify every artifact")
    model_args(s)
    s.add_argument("--formats", default="onnx,tflite,coreml", help="comma list (default: %(default)s)")
    s.add_argument("--precisions", default="fp32,fp16,int8",
                   help="comma list of fp32, fp16, int8, int8-dynamic, pal4, pal6, pal8 (default: %(default)s)")
    s.add_argument("--calib", metavar="DIR", help="folder of calibration images (default: built-in set)")
    s.add_argument("--calib-count", type=int, default=64, metavar="N")
    s.add_argument("--no-reparam", action="store_true", help="export the train-time form as is")
    s.add_argument("--nchw", action="store_true", help="TFLite input in NCHW (default NHWC)")
    s.add_argument("--int8-io", action="store_true", help="TFLite int8: int8 input/output tensors")
    s.add_argument("--image-input", action="store_true", help="CoreML: image input instead of a tensor")
    s.add_argument("--route", default="auto", choices=["auto", "tf-direct", "onnx2tf"],
                   help="TFLite conversion route (default: tf-direct, onnx2tf as fallback)")
    s.add_argument("--timeout", type=float, default=900, metavar="S", help="per conversion (default: %(default)s)")
    s.add_argument("--memory-limit", type=int, metavar="MB", help="cap each conversion process's memory; one that "
                   "exceeds it is recorded as out of memory and the others go on")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--out", required=True, metavar="DIR")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("train", help="short CPU training on labelled data (resumable)")
    model_args(s)
    s.add_argument("--data", required=True, help="builtin, builtin-det, an ImageFolder dir, COCO .json or VOC dir")
    s.add_argument("--epochs", type=int, default=5)
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--lr", type=float, default=3e-3)
    s.add_argument("--optimizer", default="adamw", choices=["adamw", "sgd"])
    s.add_argument("--limit", type=int, help="use at most N training images")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, metavar="FILE", help=".pth or .safetensors; OUT.ckpt resumes")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", help="task accuracy of a model, an artifact or an export folder")
    s.add_argument("target", help="model name, .onnx/.tflite file, or export folder")
    s.add_argument("--data", required=True)
    s.add_argument("--weights", metavar="PATH")
    s.add_argument("--num-classes", type=int)
    s.add_argument("--input-size", type=int)
    s.add_argument("--limit", type=int, help="evaluate at most N images")
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("bench", help="latency of an artifact or export folder on a device profile")
    s.add_argument("target", help=".tflite/.onnx/.mlpackage file, export folder, or a zoo model (PyTorch eager)")
    s.add_argument("--device", default="host", help="device profile name (see `workbench devices`)")
    s.add_argument("--warmup", type=int, default=10)
    s.add_argument("--runs", type=int, default=50, help="minimum timed runs per repeat")
    s.add_argument("--min-seconds", type=float, default=2.0, help="minimum time per repeat")
    s.add_argument("--repeats", type=int, default=3)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("devices", help="list the device profiles")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_devices)

    s = sub.add_parser("optimize", help="pruning, sparsity, QAT, INT8 sensitivity and the INT8 study")
    model_args(s)
    s.add_argument("--prune", type=float, metavar="RATIO", help="structured: fraction of channels to remove, e.g. 0.3")
    s.add_argument("--prune-stages", metavar="NAME=R,...", help="per-stage ratios, e.g. stage3=0.5,stage4=0.2")
    s.add_argument("--norm", type=int, default=1, choices=[1, 2], help="L1 or L2 magnitude (default 1)")
    s.add_argument("--finetune", type=int, metavar="EPOCHS", help="fine-tune after pruning (needs --data)")
    s.add_argument("--sparsity", type=float, metavar="S", help="unstructured: zero the smallest S of the weights")
    s.add_argument("--qat", type=int, metavar="EPOCHS", help="quantization-aware training of the deploy model (needs --data)")
    s.add_argument("--lr", type=float, help="learning rate for --finetune / --qat")
    s.add_argument("--data", help="builtin or an ImageFolder path (fine-tune, QAT, evaluation)")
    s.add_argument("--measure", action="store_true", help="export before and after to ONNX and measure top-1 and host latency")
    s.add_argument("--device", default="host", help="device profile for --measure (default host)")
    s.add_argument("--eval-limit", type=int, default=500, help="evaluation images (default 500)")
    s.add_argument("--sensitivity", action="store_true", help="print the per-layer INT8 sensitivity table")
    s.add_argument("--quant-study", metavar="DIR", help="fp32 vs PTQ INT8 vs the fixes, with the sensitivity table")
    s.add_argument("--keep-worst", type=int, default=2, help="study: layers kept in float by sensitivity (default 2)")
    s.add_argument("--qa-model", help="study: the QARepVGG variant to compare, e.g. qarepvgg-a0")
    s.add_argument("--qa-weights", help="study: trained weights of --qa-model")
    s.add_argument("--qa-epochs", type=int, default=0, help="study: train --qa-model here for this many epochs")
    s.add_argument("--out", metavar="FILE.safetensors")
    s.set_defaults(func=cmd_optimize)

    s = sub.add_parser("run", help="run a sweep file (resumable, cached by content)")
    s.add_argument("sweep", help="SWEEP.toml")
    s.add_argument("--out", metavar="DIR", help="run folder (default reports/NAME)")
    s.add_argument("--resume", action="store_true", help="keep the cells an interrupted run finished")
    s.add_argument("--cache", metavar="DIR", help="export cache (default reports/.cache/exports or $WORKBENCH_CACHE)")
    s.add_argument("--jobs", type=int, default=1, help="exports in parallel (latency is always measured one at a time)")
    s.add_argument("--executor", default="local", choices=["local", "ray"])
    s.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("report", help="rebuild reports from DIR/run.json without re-running")
    s.add_argument("dir")
    s.add_argument("--format", default="all", choices=["all", "html", "md", "csv", "json"])
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("compare", help="what changed between two runs (beyond noise)")
    s.add_argument("dir_a")
    s.add_argument("dir_b")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_compare)

    s = sub.add_parser("app", help="start the Streamlit dashboard (on 127.0.0.1 unless --address says otherwise)")
    s.add_argument("--address", default="127.0.0.1", help="interface to listen on (default 127.0.0.1, this machine only)")
    s.add_argument("--port", type=int, default=8501)
    s.add_argument("--data-dir", default="reports", metavar="DIR", help="where runs are written and read (default reports/)")
    s.add_argument("--max-upload-mb", type=float, default=600, help="largest weights upload accepted (default 600 MB)")
    s.set_defaults(func=cmd_app)

    s = sub.add_parser("demo", help="run the main job on the embedded default")
    s.add_argument("--out", default="reports/demo", metavar="DIR")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except WorkbenchError as e:
        if os.environ.get("WORKBENCH_DEBUG"):
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
