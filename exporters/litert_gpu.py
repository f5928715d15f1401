"""Run a ``.tflite`` file on LiteRT's real GPU accelerator and report what it did.

ai-edge-litert 2.3 ships ``libLiteRtWebGpuAccelerator.so``: LiteRT's GPU accelerator (the ML Drift
GPU kernels over WebGPU/Dawn, which needs a Vulkan device). ``CompiledModel.from_file(path,
hardware_accel=GPU | CPU)`` compiles the file for it, with the CPU taking whatever the GPU refuses.

What the API tells: ``is_fully_accelerated()``. What it does not tell through the API, LiteRT
writes to the process's native stderr while compiling, and this module reads it from there:

- ``Selected adapter: NAME, arch=..., vendor=..., backend=Vulkan, adapterType=CPU / Software``:
  the device (llvmpipe, Mesa's software Vulkan, reports type CPU);
- ``Following operations are not supported by GPU delegate:`` then one ``OP: reason`` line per
  refused node, and ``N operations will run on the GPU, and the remaining M operations will run
  on the CPU.``: the placement;
- ``No adapters found``: no Vulkan device at all.

The same code on a machine with a hardware GPU and a Vulkan driver reports that device (type
DiscreteGPU / IntegratedGPU) and its time is a real latency of that device. Android's OpenCL GPU
delegate shares the ML Drift kernels but is not this binary: placement and numerics carry over,
timings do not.
"""
from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

NOT_AVAILABLE = "GPU accelerator not available here: install mesa-vulkan-drivers >= 24 (bookworm-backports)"
SOFTWARE_LABEL = "not a device latency: software Vulkan on the CPU"
HOW_FOUND_LOG = "LiteRT's compile log (the GPU delegate's list of unsupported operations)"
HOW_FOUND_API = "CompiledModel.is_fully_accelerated() (every op of the file on the GPU)"
TIMED_RUNS = 10

_ADAPTER = re.compile(r"Selected adapter: (?P<name>.+?), arch=(?P<arch>[^,]*), vendor=(?P<vendor>[^,]*), "
                      r"backend=(?P<backend>[^,]*), adapterType=(?P<type>[^\n]+)")
_SPLIT = re.compile(r"(?P<gpu>\d+) operations? will run on the GPU, and the remaining (?P<cpu>\d+) operations? will run on the CPU")
_UNSUPPORTED_HEAD = "Following operations are not supported by GPU delegate:"
_OP_LINE = re.compile(r"^(?P<op>[A-Z][A-Z0-9_]+): (?P<why>.+)$")


class GpuUnavailable(RuntimeError):
    """No GPU accelerator here (no Vulkan device, or the accelerator library is missing)."""


class GpuRefused(RuntimeError):
    """The accelerator refused the file (the refusal text is the message)."""


@contextmanager
def native_stderr(sink: list):
    """Capture what native code writes to fd 2 (LiteRT logs there) into ``sink[0]``; the text is
    written back to the real stderr afterwards, so the worker's log keeps it."""
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            sink.append(text)
            os.write(2, text.encode())


def parse_log(text: str) -> dict:
    """Device, placement and problems from LiteRT's compile log."""
    out: dict = {"device": None, "fallback": [], "gpu_ops": None, "cpu_ops": None, "shader_errors": []}
    m = _ADAPTER.search(text)
    if m:
        out["device"] = {k: v.strip() for k, v in m.groupdict().items()}
        out["device"]["software"] = "cpu" in m["type"].lower() or m["arch"].strip() == "software"
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if _UNSUPPORTED_HEAD in line:
            for nxt in lines[i + 1:]:
                om = _OP_LINE.match(nxt.strip())
                if not om:
                    break
                why, _, node = om["why"].strip().partition(". ")  # "Tensor type(INT16) is not supported. NODE"
                out["fallback"].append({"op": om["op"], "reason": why.rstrip(".") + ".", "node": node or None})
        if "Validation error" in line:
            msg = line.split("Validation error:", 1)[-1].strip()
            if msg and msg not in out["shader_errors"]:
                out["shader_errors"].append(msg[:300])
    m = _SPLIT.search(text)
    if m:
        out["gpu_ops"], out["cpu_ops"] = int(m["gpu"]), int(m["cpu"])
    out["no_adapter"] = ("No adapters found" in text or "Failed to initialize WebGPU environment" in text
                         or "Found no drivers" in text)
    return out


def op_count(path: str) -> int:
    """Operators in the file's main subgraph (what LiteRT places on GPU or CPU)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    return len(it._get_ops_details())


def _io_details(path: str):
    """Signature input/output details (dtype, quantization) from the interpreter, in the output order
    the CPU runner uses, so both paths return the same list."""
    from ai_edge_litert.interpreter import Interpreter

    from .runtime import _output_order

    it = Interpreter(model_path=str(path))
    if it.get_signature_list():
        runner = it.get_signature_runner()
        ins = runner.get_input_details()
        outs = runner.get_output_details()
    else:  # no signature: LiteRT gives the file a placeholder one named after the tensors
        ins = {d["name"]: d for d in it.get_input_details()}
        outs = {d["name"]: d for d in it.get_output_details()}
    return ins, outs, _output_order(list(outs))


class GpuRunner:
    """A callable (NCHW float32 images -> outputs) over one CompiledModel on the GPU accelerator, with
    ``report`` (device, placement, time) filled as it goes."""

    def __init__(self, path: str, nchw: bool = False):
        from ai_edge_litert.compiled_model import CompiledModel, HardwareAccelerator

        self.path, self.nchw = str(path), nchw
        total = op_count(self.path)
        log: list[str] = []
        t0 = time.perf_counter()
        error = None
        with native_stderr(log):
            try:
                self.model = CompiledModel.from_file(self.path,
                                                     hardware_accel=HardwareAccelerator.GPU | HardwareAccelerator.CPU)
                full = self.model.is_fully_accelerated()
            except Exception as e:  # noqa: BLE001 - the runtime's own words become the row's reason
                error = e
        parsed = parse_log(log[0] if log else "")
        if error is not None:
            if parsed["no_adapter"]:
                raise GpuUnavailable(NOT_AVAILABLE) from None
            text = " ".join(str(error).split())
            raise GpuRefused(f"the GPU accelerator refused the file: {text}"[:500]) from None
        compile_ms = (time.perf_counter() - t0) * 1e3
        if parsed["device"] is None:
            # compiled, but no adapter line: the CPU took the whole graph (no GPU device was used)
            if parsed["no_adapter"] or not full:
                raise GpuUnavailable(NOT_AVAILABLE)
        if full:
            gpu_ops, cpu_ops, how = total, 0, HOW_FOUND_API
        elif parsed["gpu_ops"] is not None:
            gpu_ops, cpu_ops, how = parsed["gpu_ops"], parsed["cpu_ops"], HOW_FOUND_LOG
        elif parsed["fallback"]:  # every op refused: the log lists them and prints no split line
            cpu_ops = len(parsed["fallback"])
            gpu_ops, how = max(0, total - cpu_ops), HOW_FOUND_LOG
        else:
            gpu_ops, cpu_ops, how = None, None, "not told: is_fully_accelerated() is False and the log names no split"
        by_op: dict[str, int] = {}
        reasons: dict[str, str] = {}
        for f in parsed["fallback"]:
            by_op[f["op"]] = by_op.get(f["op"], 0) + 1
            reasons.setdefault(f["op"], f["reason"])
        self.report = {
            "status": "ok", "accelerator": "LiteRT GPU accelerator (WebGPU, ML Drift kernels)",
            "device": parsed["device"], "fully_accelerated": bool(full), "total_ops": total,
            "gpu_ops": gpu_ops, "cpu_ops": cpu_ops, "fallback_by_op": by_op, "fallback_reasons": reasons,
            "fallback_found_by": how, "shader_errors": parsed["shader_errors"],
            # ops the GPU accepted but LiteRT left on the CPU (partitioning: too small a GPU island)
            "accepted_left_on_cpu": (cpu_ops - sum(by_op.values())) if cpu_ops is not None else None,
            "compile_ms": round(compile_ms, 2),
        }
        sig = next(iter(self.model.get_signature_list()))
        self.sig_index = self.model.get_signature_index(sig)
        self.in_det, self.out_det, self.out_names = _io_details(self.path)
        self.cm_outputs = list(self.model.get_output_tensor_details(sig))
        self.inputs = self.model.create_input_buffers(self.sig_index)
        self.outputs = self.model.create_output_buffers(self.sig_index)

    def _run_one(self, x: np.ndarray) -> list[np.ndarray]:
        from .runtime import _dequantize_out, _prepare, _quantize_in

        in_name = next(iter(self.in_det))
        self.inputs[0].write(np.ascontiguousarray(_quantize_in(_prepare(x, self.nchw), self.in_det[in_name])))
        self.model.run_by_index(self.sig_index, self.inputs, self.outputs)
        got = {}
        for name, buf in zip(self.cm_outputs, self.outputs):
            det = self.out_det[name]
            shape = tuple(det["shape"])
            got[name] = _dequantize_out(buf.read(int(np.prod(shape)), det["dtype"]).reshape(shape), det)
        return [got[n] for n in self.out_names]

    def __call__(self, inputs: np.ndarray) -> list[np.ndarray]:
        results = [self._run_one(inputs[i:i + 1]) for i in range(len(inputs))]
        if len(inputs):
            self.report["time"] = self.time(inputs[:1])
        return [np.concatenate([r[k] for r in results]) for k in range(len(results[0]))]

    def time(self, x: np.ndarray, runs: int = TIMED_RUNS) -> dict:
        """Median of ``runs`` timed runs after one warm-up, labelled by what the device is."""
        self._run_one(x)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            self._run_one(x)
            times.append((time.perf_counter() - t) * 1e3)
        dev = self.report.get("device") or {}
        label = (SOFTWARE_LABEL if dev.get("software")
                 else f"device latency on {dev.get('name', 'the GPU')} ({dev.get('type', '?')}), host-side wall time per run")
        return {"p50_ms": round(statistics.median(times), 3), "min_ms": round(min(times), 3),
                "max_ms": round(max(times), 3), "runs": runs, "label": label, "device_latency": not dev.get("software")}


def gpu_runner(path: str | Path, nchw: bool = False) -> GpuRunner:
    return GpuRunner(str(path), nchw=nchw)
