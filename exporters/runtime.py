"""Runners for artifacts runnable here (ONNX Runtime, LiteRT): NCHW float32 inputs, one image at a time.

A format's ``load`` returns one of these; fidelity, evaluation and the study share them."""
from __future__ import annotations

import numpy as np


def onnx_runner(path: str, threads: int = 2):
    """A callable over an ONNX Runtime CPU session (created once)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(inputs: np.ndarray) -> list[np.ndarray]:
        outs = [sess.run(None, {name: inputs[i : i + 1].astype(np.float32)}) for i in range(len(inputs))]
        return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]
    return run


QUANTIZED_IO = (np.int8, np.uint8, np.int16)


def _quantize_in(x: np.ndarray, det: dict) -> np.ndarray:
    """Float32 input into the file's input type: quantized (int8, uint8, int16 with its scale and zero
    point) or float16 (onnx2tf's float16 files take fp16 input)."""
    if det["dtype"] in QUANTIZED_IO:
        scale, zp = det["quantization"]
        info = np.iinfo(det["dtype"])
        return np.clip(np.round(x / scale + zp), info.min, info.max).astype(det["dtype"])
    if det["dtype"] == np.float16:
        return x.astype(np.float16)
    return x


def _dequantize_out(y: np.ndarray, det: dict) -> np.ndarray:
    if det["dtype"] in QUANTIZED_IO:
        scale, zp = det["quantization"]
        return (y.astype(np.float32) - zp) * scale
    return y.astype(np.float32)


def _output_order(names: list[str]) -> list[str]:
    if all(n.startswith("output_") and n[7:].isdigit() for n in names):  # tf-direct: output_0, output_1
        return sorted(names, key=lambda n: int(n[7:]))
    if set(names) == {"loc", "conf"}:  # onnx2tf keeps the ONNX output names
        return ["loc", "conf"]
    return names


def tflite_runner(path: str, threads: int = 2, nchw: bool = False):
    """A callable over one LiteRT interpreter (created once)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    return lambda inputs: _run_tflite(it, inputs, nchw)


def _run_tflite(it, inputs: np.ndarray, nchw: bool) -> list[np.ndarray]:
    """Through the signature runner when the file has one, else through tensor indices (the
    subgraph's output order, which follows the source graph's)."""
    results: list[list[np.ndarray]] = []
    if it.get_signature_list():
        runner = it.get_signature_runner()
        in_name = next(iter(runner.get_input_details()))
        in_det = runner.get_input_details()[in_name]
        out_det = runner.get_output_details()
        names = _output_order(list(out_det))
        for i in range(len(inputs)):
            x = _prepare(inputs[i : i + 1], nchw)
            out = runner(**{in_name: _quantize_in(x, in_det)})
            results.append([_dequantize_out(out[n], out_det[n]) for n in names])
    else:
        it.allocate_tensors()
        in_det = it.get_input_details()[0]
        outs = it.get_output_details()
        by_name = {d["name"]: d for d in outs}
        order = [by_name[n] for n in _output_order(list(by_name))]
        for i in range(len(inputs)):
            it.set_tensor(in_det["index"], _quantize_in(_prepare(inputs[i : i + 1], nchw), in_det))
            it.invoke()
            results.append([_dequantize_out(it.get_tensor(d["index"]), d) for d in order])
    return [np.concatenate([r[k] for r in results]) for k in range(len(results[0]))]


def _prepare(x: np.ndarray, nchw: bool) -> np.ndarray:
    x = x.astype(np.float32)
    return x if nchw else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
