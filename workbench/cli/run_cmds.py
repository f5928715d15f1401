"""Commands over runs: optimize, run, report, compare, app, demo. Each calls the public API and prints."""
from __future__ import annotations

import argparse
import json
import sys

from .output import _print_json

from .model_cmds import cmd_models


def cmd_optimize(args) -> int:
    from pathlib import Path

    from ..errors import ConfigError

    def say(msg: str) -> None:
        print(f"... {msg}", file=sys.stderr, flush=True)

    if args.sensitivity:
        return _optimize_sensitivity(args)
    if args.quant_study:
        from ..api import quant_study

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
    from ..api import compare_before_after, optimize_model

    rep = optimize_model(args.model, steps, out=args.out, weights=args.weights, num_classes=args.num_classes,
                         input_size=args.input_size, say=say)
    if args.measure:
        rep["measured"] = compare_before_after(args.model, rep, data=args.data or "builtin", device=args.device,
                                               eval_limit=args.eval_limit, say=say)
        from ..api import atomic_write_json

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
    from ..errors import ConfigError

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
    from ..api import load_model
    from ..api import sensitivity_on_data

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


PLAN_CONFIRM_CELLS = 2000  # a larger plan needs --yes


def cmd_run(args) -> int:
    from rich.console import Console

    from ..api import run_sweep

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
        elif event == "plan":
            console.print(f"plan: {info['models']} model(s) x {info['reparam']} form(s) x {info['formats']} format(s) x "
                          f"{info['precisions']} precision(s) = {info['exports']} exports; up to {info['cells']} measured cells")
        elif event == "cells-reset":
            console.print(f"a fresh run: removing {info['count']} measured cells from {info['dir']} "
                          "(use --resume to keep them)")
        elif event == "cache-stale":
            console.print(f"cache: {info['model']} {info['format']} {info['precision']}: the cached file {info['reason']}; "
                          "re-exporting it")
        elif event == "cache-wait":
            console.print(f"cache: waiting for {info['model']}: {info['reason']}")
        elif event == "cell":
            eta = f", ~{info['eta_s']:.0f} s left" if info.get("eta_s") is not None else ""
            console.print(f"[{info['done']}/{info['total']} done, {info['running']} running, {info['failed']} failed{eta}] "
                          f"{info['kind']} {info['model']} {info['format']} {info['precision']} {info.get('device', '')}")

    res = run_sweep(args.sweep, args.out, resume=args.resume, cache=args.cache, progress=progress,
                    executor=args.executor, address=args.address, jobs=args.jobs,
                    max_cells=None if args.yes else PLAN_CONFIRM_CELLS)
    st = res["stats"]
    failed = [f for f in res["run"]["failures"]]
    print(f"{st['cells_done']} cells measured, {st['cells_reused']} reused, {len(failed)} failures; "
          f"exported {st['exported_now']} artifacts; report: {res['reports']['html']}")
    return 1 if failed else 0


def cmd_report(args) -> int:
    from pathlib import Path

    from ..errors import ConfigError
    from ..api import validate_run
    from ..api import write_reports

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
    from ..api import compare_runs

    res = compare_runs(args.dir_a, args.dir_b)
    if args.json:
        _print_json(res)
        return 0
    print(f"settings: {len(res['settings'])} differ" + (":" if res["settings"] else " (same sweep, toolchain, host, profiles)"))
    for d in res["settings"]:
        print(f"  {d['where']}: {d['setting']}: {d['a']!r} -> {d['b']!r}")
    changed = [r for r in res["latency"] if r["changed"]]
    busy = [r for r in res["latency"] if r.get("inconclusive")]
    print(f"latency: {len(changed)} of {len(res['latency'])} cells changed beyond their noise"
          + (f"; {len(busy)} inconclusive (machine busy)" if busy else ""))
    for r in res["latency"]:
        mark = "CHANGED" if r["changed"] else ("INCONCLUSIVE" if r.get("inconclusive") else "same   ")
        if r.get("inconclusive"):
            mark += f" ({r['inconclusive']})"
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

    from ..errors import ConfigError

    if not 0 < args.port < 65536:
        raise ConfigError(f"--port {args.port} is not a TCP port; use 1-65535")
    if args.max_upload_mb <= 0:
        raise ConfigError("--max-upload-mb must be positive")
    main = Path(__file__).resolve().parents[1] / "app" / "main.py"
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

    from ..api import run_demo

    cmd_models(argparse.Namespace(pattern="*", no_tiny=True, json=False))
    run_demo(Path(args.out))
    return 0
