"""Run an artifact here (ONNX Runtime, LiteRT) on NCHW float32 inputs; one image at a time."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def run_onnx(path: str, inputs: np.ndarray, threads: int = 2) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: inputs[i : i + 1].astype(np.float32)}) for i in range(len(inputs))]
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def run_tflite(path: str, inputs: np.ndarray, threads: int = 2, nchw: bool = False) -> list[np.ndarray]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    runner = it.get_signature_runner()
    in_name = next(iter(runner.get_input_details()))
    in_det = runner.get_input_details()[in_name]
    out_det = runner.get_output_details()
    names = sorted(out_det, key=lambda n: int(n.rsplit("_", 1)[-1]) if n.rsplit("_", 1)[-1].isdigit() else n)
    results: dict[str, list] = {n: [] for n in names}
    for i in range(len(inputs)):
        x = inputs[i : i + 1].astype(np.float32)
        if not nchw:
            x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        if in_det["dtype"] in (np.int8, np.uint8):
            scale, zp = in_det["quantization"]
            x = np.clip(np.round(x / scale + zp), -128 if in_det["dtype"] == np.int8 else 0,
                        127 if in_det["dtype"] == np.int8 else 255).astype(in_det["dtype"])
        out = runner(**{in_name: x})
        for n in names:
            y = out[n]
            if out_det[n]["dtype"] in (np.int8, np.uint8):
                scale, zp = out_det[n]["quantization"]
                y = (y.astype(np.float32) - zp) * scale
            results[n].append(y.astype(np.float32))
    return [np.concatenate(results[n]) for n in names]


def run_artifact(path: str | Path, fmt: str, inputs: np.ndarray, *, threads: int = 2, nchw: bool = False) -> list[np.ndarray]:
    if fmt == "onnx":
        return run_onnx(str(path), inputs, threads)
    if fmt == "tflite":
        return run_tflite(str(path), inputs, threads, nchw)
    raise RuntimeError(f"{fmt} artifacts cannot run on this host")
