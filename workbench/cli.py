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
