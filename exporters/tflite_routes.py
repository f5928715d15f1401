"""The TFLite format's other routes: onnx2tf 2.x (in its own Python 3.12 environment) and
litert-torch (Google's PyTorch -> LiteRT converter, the ``litert`` extra).

Both write a file per precision; every file is then verified like every other (fidelity against
PyTorch in an isolated process), so a converter's silent error shows as a failed or flagged file.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from .records import ExportError, SkipCombination

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
REPO = Path(__file__).resolve().parents[1]
ONNX2TF_ENV = REPO / ".venv-onnx2tf"

# what each of our precisions is in onnx2tf's output folder (one run per precision)
ONNX2TF_FILES = {
    "fp32": ("", "{stem}_float32.tflite"),
    "fp16": ("", "{stem}_float16.tflite"),
    "int8-dynamic": ("-odrqt", "{stem}_dynamic_range_quant.tflite"),
    "int8": ("-oiqt", "{stem}_integer_quant.tflite"),              # float I/O, int8 inside
    "int8+io": ("-oiqt", "{stem}_full_integer_quant.tflite"),       # int8 I/O
    "int16x8": ("-oiqt", "{stem}_integer_quant_with_int16_act.tflite"),
}


# The ``auto`` route per (model family, precision): the winners of the route table `make bench`
# writes (scripts/bench_routes.py; reports/bench/routes.md; figures in the README). A family or
# precision not listed takes tf-direct, the one route that makes every precision here.
# Every other (family, precision) was won by tf-direct: fp16 (the only CPU-runnable fp16-weight
# file: onnx2tf's computes in fp16 and does not run on LiteRT's CPU kernels, litert-torch writes
# none), int8 where the latencies tie and tf-direct converts faster or the others fail (resnet18,
# mobilenet-v2, ssd300-vgg16, vgg16), int8-dynamic and int16x8 (not in the table: onnx2tf's
# dynamic-range file does not load, litert-torch writes no int16x8).
AUTO_ROUTES: dict[tuple[str, str], str] = {
    ("repvgg", "fp32"): "onnx2tf",      # p50 tied within 5% (14.3 / 14.3 / 14.6 ms); converts in 4.9 s vs 8.0 / 11.9 s
    ("repvgg", "int8"): "onnx2tf",      # tied (3.45 / 3.37 / 3.42 ms); 8.5 s vs 13.4 / 13.3 s
    ("resnet", "fp32"): "onnx2tf",      # tied (19.4 / 19.3 / 18.8 ms); 7.1 s vs 8.7 / 12.2 s
    ("mobilenet", "fp32"): "onnx2tf",   # tied (3.52 / 3.58 / 3.57 ms); 7.9 s vs 12.4 / 13.9 s
    ("ssd", "fp32"): "onnx2tf",         # tied (318.8 / 316.9 / 317.6 ms); 12.2 s vs 14.1 / 17.3 s
    ("vgg", "fp32"): "litert-torch",    # tied (167.0 / 166.5 / 166.3 ms); 25.8 s vs 31.2 s (tf-direct), 54.2 s (onnx2tf)
}
AUTO_BASIS = "route table of 2026-11-25: make bench, scripts/bench_routes.py; figures in the README"


def auto_route(family: str, precision: str, options: dict | None = None) -> tuple[str, str]:
    """The route ``auto`` takes for a model family and precision, and why. Options only tf-direct
    honours (keep-float layers, calibration methods) and litert-torch's int8 I/O keep tf-direct;
    a route whose environment is missing here gives way to tf-direct (said in the note)."""
    options = options or {}
    route = AUTO_ROUTES.get((family, precision), "tf-direct")
    why = f"auto route: {route} for {family or 'this model'} {precision} ({AUTO_BASIS})"
    quant = options.get("quant") or {}
    if route != "tf-direct" and (quant.get("keep_float") or quant.get("calib_method", "minmax") != "minmax"):
        return "tf-direct", why + "; tf-direct instead: only it honours keep-float layers and calibration methods"
    if route == "litert-torch" and precision == "int8" and not options.get("int8_io"):
        return "tf-direct", why + "; tf-direct instead: litert-torch's int8 file has int8 I/O and float I/O was asked"
    if route == "onnx2tf" and not Path(os.environ.get("WORKBENCH_ONNX2TF") or ONNX2TF_ENV / "bin" / "onnx2tf").exists():
        return "tf-direct", why + "; onnx2tf's environment is missing here, so tf-direct (run make setup)"
    if route == "litert-torch" and litert_torch_version() == "not installed":
        return "tf-direct", why + "; litert-torch is not installed here, so tf-direct (pip install 'edge-workbench[litert]')"
    return route, why


def onnx2tf_program() -> Path:
    """The onnx2tf 2.x program: $WORKBENCH_ONNX2TF, else .venv-onnx2tf/bin/onnx2tf from make setup."""
    p = Path(os.environ.get("WORKBENCH_ONNX2TF") or ONNX2TF_ENV / "bin" / "onnx2tf")
    if not p.exists():
        raise ExportError(f"onnx2tf's environment is missing ({p}): run `make setup` (it builds .venv-onnx2tf "
                          "with Python 3.12), or set WORKBENCH_ONNX2TF to an onnx2tf 2.x program")
    return p


def onnx2tf_version() -> str:
    """onnx2tf's version, read from its environment's package metadata (no process started)."""
    try:
        prog = onnx2tf_program()
    except ExportError:
        return "not installed"
    for meta in sorted(prog.resolve().parents[1].glob("lib/python3*/site-packages/onnx2tf-*.dist-info")):
        return meta.name[len("onnx2tf-"):-len(".dist-info")]
    return "unknown"


def calibration_pixels(calib) -> np.ndarray:
    """Our calibration set (NCHW, already normalized) as the NHWC "pixels" onnx2tf reads and then
    normalizes with MEAN / STD: x * STD + MEAN, so that its normalization gives our inputs back
    exactly (not clipped to 0..1: a model with other preprocessing, such as an ssd.pytorch file's
    BGR mean subtraction, has inputs outside it)."""
    sample = calib if calib is not None and len(calib) else np.zeros((1, 3, 128, 128), np.float32)
    return (sample.transpose(0, 2, 3, 1) * STD + MEAN).astype(np.float32)


def convert_onnx2tf(onnx_path: Path, out: Path, precision: str, calib, nchw: bool, work: Path,
                    int8_io: bool = False, quant: dict | None = None, timeout: float = 3600) -> tuple[list[str], dict]:
    """One onnx2tf run for one precision, offline (calibration written by us), in its own
    environment. Returns notes and figures (seconds, program)."""
    prog = onnx2tf_program()
    key = "int8+io" if precision == "int8" and int8_io else precision
    if key not in ONNX2TF_FILES:
        raise SkipCombination(f"onnx2tf writes no {precision} file")
    flag, produced = ONNX2TF_FILES[key]
    onnx_path, out, work = onnx_path.resolve(), out.resolve(), work.resolve()  # onnx2tf runs in its own folder
    run_dir = work / f"onnx2tf-{key}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    # -nuo: our ONNX file is already simplified; -n: quiet
    cmd = [str(prog), "-i", str(onnx_path), "-o", str(run_dir / "out"), "-n", "-nuo"]
    if nchw:
        cmd += ["-k", "input"]
    if flag:
        cmd.append(flag)
    if flag == "-oiqt":
        calib_path = run_dir / "calib.npy"
        np.save(calib_path, calibration_pixels(calib))
        cmd += ["-cind", "input", str(calib_path), json.dumps(MEAN.reshape(1, 1, 1, 3).tolist()),
                json.dumps(STD.reshape(1, 1, 1, 3).tolist())]
        if (quant or {}).get("per_channel") is False:
            cmd += ["-qt", "per-tensor"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PATH"] = str(prog.parent) + os.pathsep + env.get("PATH", "")  # its onnxsim, not ours
    t = time.perf_counter()
    with open(run_dir / "onnx2tf.log", "w") as log:
        try:
            rc = subprocess.run(cmd, cwd=run_dir, stdout=log, stderr=subprocess.STDOUT, env=env,
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            raise ExportError(f"onnx2tf took over {timeout:.0f} s; see {run_dir / 'onnx2tf.log'}") from None
    seconds = time.perf_counter() - t
    src = run_dir / "out" / produced.format(stem=onnx_path.stem)
    if rc != 0 or not src.exists():
        import re

        text = re.sub(r"\x1b\[[0-9;]*m", "", (run_dir / "onnx2tf.log").read_text(errors="replace"))
        tail = [ln for ln in text.splitlines() if ln.strip()][-1:]
        raise ExportError(f"onnx2tf (exit {rc}) wrote no {src.name}: {tail[0][:200] if tail else 'no output'}; "
                          f"log: {run_dir / 'onnx2tf.log'}")
    shutil.copyfile(src, out)
    notes = [f"onnx2tf {onnx2tf_version()} (its own Python 3.12 environment, flatbuffer_direct backend); "
             "validated by the workbench's own fidelity check"]
    if precision == "fp16":
        notes.append("onnx2tf's float16 file computes in fp16 with fp16 input and output (the runner casts)")
    return notes, {"convert_s": seconds, "program": str(prog)}


def convert_litert_torch(model, out: Path, precision: str, calib, nchw: bool, input_size: int,
                         int8_io: bool = False) -> tuple[list[str], dict]:
    """litert-torch: fp32; int8 (PT2E static, per-channel, our calibration set); int8-dynamic."""
    try:
        import litert_torch
    except ImportError:
        raise ExportError("litert-torch is not installed: `pip install 'edge-workbench[litert]'` "
                          "(make setup installs it)") from None
    import torch

    if precision not in ("fp32", "int8", "int8-dynamic"):
        raise SkipCombination(f"litert-torch 0.10 writes no {precision} file (fp32, int8, int8-dynamic only)")
    model = model.eval()
    x = torch.zeros(1, 3, input_size, input_size)
    if not nchw:  # NHWC I/O where the GPU delegate and most apps want it: no input TRANSPOSE
        model = litert_torch.to_channel_last_io(model, args=[0])
        x = x.permute(0, 2, 3, 1).contiguous()
    notes = [f"litert-torch {litert_torch.__version__}" + ("" if nchw else " (NHWC input via to_channel_last_io)")]
    t = time.perf_counter()
    with torch.no_grad():
        if precision == "fp32":
            edge = litert_torch.convert(model, (x,))
        else:
            from litert_torch.quantize import pt2e_quantizer as pq
            from litert_torch.quantize.quant_config import QuantConfig
            from torchao.quantization.pt2e import quantize_pt2e

            dynamic = precision == "int8-dynamic"
            q = pq.PT2EQuantizer().set_global(pq.get_symmetric_quantization_config(is_per_channel=True,
                                                                                  is_dynamic=dynamic))
            gm = quantize_pt2e.prepare_pt2e(torch.export.export(model, (x,)).module(), q)
            samples = calib if calib is not None and len(calib) else np.zeros((1, 3, input_size, input_size), np.float32)
            for s in samples[: 1 if dynamic else len(samples)]:
                xs = torch.from_numpy(np.ascontiguousarray(s[None]))
                gm(xs if nchw else xs.permute(0, 2, 3, 1).contiguous())
            gm = quantize_pt2e.convert_pt2e(gm, fold_quantize=False)
            edge = litert_torch.convert(gm, (x,), quant_config=QuantConfig(pt2e_quantizer=q))
            if not dynamic:
                notes.append(f"PT2E static int8, per-channel weights, {len(samples)} calibration images")
    edge.export(str(out))
    return notes, {"convert_s": time.perf_counter() - t}


def litert_torch_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("litert-torch")
    except metadata.PackageNotFoundError:
        return "not installed"


__all__ = ["convert_onnx2tf", "convert_litert_torch", "onnx2tf_program", "onnx2tf_version", "litert_torch_version"]
