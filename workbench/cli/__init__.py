"""``workbench`` command line: it parses arguments and prints; the work is the public API's
(``workbench.api``).

Every error prints one line and exits with code 2; set WORKBENCH_DEBUG=1 for the traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
import traceback

from ..errors import WorkbenchError
from .model_cmds import (cmd_bench, cmd_devices, cmd_eval, cmd_export, cmd_info, cmd_models, cmd_reparam, cmd_train)
from .run_cmds import app_command, cmd_app, cmd_compare, cmd_demo, cmd_optimize, cmd_report, cmd_run  # noqa: F401


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

    decode_help = ("SSD: decode with this layout's rules instead of the file's (ours, ssd.pytorch-voc, "
                   "ssd.pytorch-coco, torchvision)")
    s = sub.add_parser("info", help="params, MACs and output shapes of one model (SSD: its decode configuration)")
    model_args(s)
    s.add_argument("--decode", metavar="LAYOUT", help=decode_help)
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
    s.add_argument("--route", default="auto", choices=["auto", "tf-direct", "onnx2tf", "litert-torch"],
                   help="TFLite conversion route (default auto: the measured route table in the README)")
    s.add_argument("--compat", metavar="RUNTIME", help="TFLite: make every file load on this runtime, e.g. "
                   "tflite-runtime==2.14 (older op versions), or fail that row saying why it cannot")
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
    s.add_argument("--decode", metavar="LAYOUT", help=decode_help)
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
    s.add_argument("--yes", action="store_true", help="run a plan of more than 2000 measured cells without asking")
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


def _interrupt_on_sigterm() -> None:
    """SIGTERM stops a run the way Ctrl-C does: running conversions are killed, cells kept."""
    import signal

    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, raise_interrupt)


def _stop_children() -> None:
    from ..api import cancel_all  # every command has imported it already

    cancel_all()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _interrupt_on_sigterm()
    try:
        return int(args.func(args) or 0)
    except WorkbenchError as e:
        if os.environ.get("WORKBENCH_DEBUG"):
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # the output went to a pager or `head` that closed: nothing to report
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0
    except OSError as e:  # a file or folder the system refused: one line, never a traceback
        if os.environ.get("WORKBENCH_DEBUG"):
            traceback.print_exc()
        what = f"{e.filename}: " if e.filename else ""
        print(f"error: {what}{e.strerror or e}; check the path, its permissions and free space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _stop_children()
        hint = "; re-run with --resume (cells already measured are kept)" if args.command == "run" else ""
        print(f"interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
