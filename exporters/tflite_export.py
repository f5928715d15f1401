"""TFLite: fp32, fp16, int8-dynamic (dynamic range), int8 (full integer) and int16x8 (16-bit activations).

Routes, recorded per file:
- ``tf-direct`` (default): the deploy graph is built in TensorFlow straight from the torch
  weights (``exporters.tf_graph``), saved once as a SavedModel and converted per precision.
- ``onnx2tf``: onnx2tf 2.x from the fp32 ONNX file, run as a program from its own Python 3.12
  environment (``exporters.tflite_routes``); used when tf-direct meets an op it does not map, or
  on request. Calibration is written by us (no download); one run per precision.
- ``litert-torch``: Google's PyTorch -> LiteRT converter on the torch model (the ``litert``
  extra), NHWC I/O; fp32, int8 (PT2E static) and int8-dynamic.
"""
from __future__ import annotations

import gc
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from .base import Capability, Format
from .records import ConvertJob, ConvertResult, ExportError, ModelInfo, SkipCombination, Status


def _quiet_tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" not in sys.modules and "sklearn" not in sys.modules:
        # Keras 3 (imported by TensorFlow) imports scikit-learn for its sklearn wrappers when it
        # can: 0.6 s of every conversion process. Hide it during the import; Keras copes.
        sys.modules["sklearn"] = None  # type: ignore[assignment]
        try:
            import tensorflow  # noqa: F401
        finally:
            del sys.modules["sklearn"]
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")
    return tf


def build_saved_model(model, info: ModelInfo, saved_dir: Path, nchw: bool) -> dict:
    """torch (deploy) model -> SavedModel; frees the graph builder before returning."""
    tf = _quiet_tf()
    from .tf_graph import GraphBuilder

    gb = GraphBuilder(model, info.input_size, nchw_input=nchw)
    holder, cf = gb.build()
    tmp = saved_dir.with_name(saved_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tf.saved_model.save(holder, str(tmp), signatures={"serving_default": cf})
    os.replace(tmp, saved_dir)
    counts = dict(gb.op_counts)
    del gb, holder, cf
    gc.collect()
    return counts


def _representative(calib: np.ndarray, nchw: bool):
    def gen():
        for i in range(len(calib)):
            x = calib[i : i + 1].astype(np.float32)
            yield [x if nchw else np.ascontiguousarray(x.transpose(0, 2, 3, 1))]
    return gen


# Above this much weight data the converter stores tensors after the flatbuffer (buffer offsets):
# it saves one full copy of the weights in converter memory (vgg16: 4.2 -> 3.1 GB peak, 17 -> 8 s)
BUFFER_OFFSET_BYTES = 256 * 2**20


def saved_model_dir(work: Path, nchw: bool) -> Path:
    return work / f"tf_saved_model_{'nchw' if nchw else 'nhwc'}"


def _variables_bytes(saved_dir: Path) -> int:
    return sum(f.stat().st_size for f in (saved_dir / "variables").glob("*") if f.is_file())


def convert_saved_model(saved_dir: Path, out: Path, precision: str, calib, nchw: bool, int8_io: bool,
                        quant: dict | None = None, compat: str | None = None) -> list[str]:
    tf = _quiet_tf()
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_dir))
    notes: list[str] = []
    old_runtime = _compat_version(compat) is not None and _compat_version(compat) < (2, 17)
    if precision == "int8-dynamic" and old_runtime:
        # per-channel dynamic-range FULLY_CONNECTED is op version 12 (TFLite 2.17+); per-tensor is version 9
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
        notes.append(f"--compat {compat}: per-tensor weights in dense layers (FULLY_CONNECTED v9, not v12)")
    before_offsets = _compat_version(compat) is not None and _compat_version(compat) < (2, 14)
    if precision in ("fp32", "fp16") and _variables_bytes(saved_dir) > BUFFER_OFFSET_BYTES and before_offsets:
        notes.append(f"--compat {compat}: weights kept inside the flatbuffer (no buffer offsets; higher converter memory)")
    elif precision in ("fp32", "fp16") and _variables_bytes(saved_dir) > BUFFER_OFFSET_BYTES:
        conv._experimental_use_buffer_offset = True
        notes.append("weights stored after the flatbuffer (buffer offsets): loads in tflite-runtime 2.14 and later")
    if precision == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "int8-dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        notes.append("dynamic range: int8 weights, activations quantized on the fly")
    elif precision in ("int8", "int16x8"):
        if calib is None or len(calib) == 0:
            raise ExportError(f"{precision} needs calibration data (--calib-count >= 1)")
        quant = quant or {}
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = _representative(calib, nchw)
        _quant_options(conv, quant, notes)
        if precision == "int16x8":
            conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
            notes.append(f"16-bit activations, 8-bit weights, calibrated on {len(calib)} images; accurate, but "
                         "XNNPACK and the GPU delegate have no int16 kernels: expect reference-kernel speed on CPU"
                         + ("; keep_float is not applied to 16x8 files" if quant.get("keep_float") else ""))
        else:
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if int8_io:
                conv.inference_input_type = tf.int8
                conv.inference_output_type = tf.int8
            notes.append(f"full integer, calibrated on {len(calib)} images, "
                         f"{'int8' if int8_io else 'float32'} input/output")
            if quant.get("keep_float"):
                out.write_bytes(_mixed_int8(tf, saved_dir, conv, calib, nchw, quant["keep_float"], notes))
                return notes
    elif precision != "fp32":
        raise SkipCombination(f"tflite has no {precision} variant")
    out.write_bytes(conv.convert())
    return notes


def _compat_version(compat: str | None) -> tuple[int, ...] | None:
    if not compat:
        return None
    from .tflite_compat import parse_target, vtuple

    return vtuple(parse_target(compat)[1])


def check_compat(path: Path, compat: str | None, precision: str) -> str | None:
    """With ``compat`` set: the file must load on that runtime; a one-line reason when it cannot."""
    if not compat:
        return None
    from .tflite_compat import loads_in, parse_target, runtime_compat

    c = runtime_compat(str(path), check=False)
    ver = parse_target(compat)[1]
    if loads_in(c, ver) is False:
        return (f"cannot make a {precision} file that loads on {compat}: {c['deciding']} needs TFLite "
                f"{c['oldest_runtime']}; drop --compat, pick another precision or route")
    return None


def _keep_float_nodes(tf, saved_dir: Path, layers: list[str]) -> list[str]:
    """Output tensor names, in the converted file, of the ops made from the given torch layers (the
    tf-direct graph puts each Conv/Linear under the name scope ``wb__<layer>``)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=tf.lite.TFLiteConverter.from_saved_model(str(saved_dir)).convert())
    names = {t["index"]: t["name"] for t in it.get_tensor_details()}
    found = []
    for layer in layers:
        scope = "wb__" + layer.replace(".", "__") + "/"
        hits = [names[o["outputs"][0]] for o in it._get_ops_details()
                if o["op_name"] in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
                and any(n.startswith(scope) for i in [*o["outputs"], *o["inputs"]] if i >= 0 for n in names[i].split(";"))]
        if not hits:
            raise ValueError(f"keep_float: layer {layer} not found in the TFLite graph")
        found += hits
    return found


def _mixed_int8(tf, saved_dir: Path, conv, calib, nchw: bool, layers: list[str], notes: list[str]) -> bytes:
    """Full INT8 except the given layers, which stay float (TFLite's quantization debugger
    denylist; float kernels run between QUANTIZE/DEQUANTIZE pairs)."""
    nodes = _keep_float_nodes(tf, saved_dir, layers)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    dbg = tf.lite.experimental.QuantizationDebugger(
        converter=conv, debug_dataset=_representative(calib, nchw),
        debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=nodes))
    notes.append(f"kept in float: {', '.join(layers)} ({len(nodes)} ops); the rest full INT8")
    return dbg.get_nondebug_quantized_model()


def _quant_options(conv, quant: dict, notes: list[str]) -> None:
    if quant.get("per_channel") is False:
        conv._experimental_disable_per_channel = True
        notes.append("per-tensor weight scales")
    if quant.get("calib_method", "minmax") != "minmax":
        notes.append(f"calib_method {quant['calib_method']} applies to ONNX; the TFLite converter calibrates min/max")


ROUTES = ("auto", "tf-direct", "onnx2tf", "litert-torch")
SINGLE_STAGE_ROUTES = ("onnx2tf", "litert-torch")


class TFLiteFormat(Format):
    capability = Capability(
        "tflite", ".tflite", ("fp32", "fp16", "int8-dynamic", "int8", "int16x8"),
        ("nchw", "int8_io", "route", "quant", "keep_float", "compat"),
        "LiteRT / TFLite interpreter (CPU XNNPACK here; GPU delegate, NNAPI on phones)", True,
        {"fp16": "fp16 weights, the GPU delegate's native precision (CPU dequantizes)",
         "int8-dynamic": "dynamic-range: int8 weights, float activations",
         "int8": "full integer with calibration; float I/O unless int8_io",
         "int16x8": "16-bit activations, 8-bit weights (accurate; no XNNPACK/GPU kernels: slow on CPU)"},
        runtime="litert", accelerators=("cpu", "gpu"))

    def artifact_options(self, options: dict, info: ModelInfo, precision: str) -> tuple[dict, str | None]:
        if options.get("route", "auto") != "auto":
            return options, None
        from .tflite_routes import auto_route

        route, why = auto_route(info.family, precision, options)
        # tf-direct keeps "auto" so that a graph it cannot map still falls back to onnx2tf
        return ({**options, "route": route} if route != "tf-direct" else options), why

    def stages(self, options: dict) -> tuple[str, ...]:
        # tf-direct builds one SavedModel shared by every precision, in a process of its own
        return ("convert",) if options.get("route") in SINGLE_STAGE_ROUTES else ("prepare", "convert")

    def prepare(self, job: ConvertJob, load_model) -> ConvertResult:
        """tf-direct stage 1. A model tf-direct cannot map falls back to onnx2tf here, and only here."""
        from .tf_graph import UnsupportedOp

        nchw = bool(job.options.get("nchw"))
        saved = saved_model_dir(Path(job.work_dir), nchw)
        if saved.exists():
            return ConvertResult(extra={"cached": True})
        try:
            counts = build_saved_model(load_model(), job.model.info, saved, nchw)
        except UnsupportedOp as e:
            if job.options.get("route") == "tf-direct":
                return ConvertResult(status=Status.FAILED, reason=f"tf-direct cannot map {e}; try --route onnx2tf")
            return ConvertResult(status=Status.UNSUPPORTED, reason=f"tf-direct cannot map {e}; used onnx2tf",
                                 extra={"fallback_options": {"route": "onnx2tf"}})
        return ConvertResult(extra={"graph_ops": counts})

    def convert(self, job: ConvertJob, load_model) -> ConvertResult:
        result = self._convert(job, load_model)
        why = check_compat(Path(job.out_path), job.options.get("compat"), job.precision)
        if why:
            raise ExportError(why)
        if job.options.get("compat"):
            result.notes.append(f"--compat {job.options['compat']}: op versions checked against it")
        return result

    def _convert(self, job: ConvertJob, load_model) -> ConvertResult:
        out = Path(job.out_path)
        work = Path(job.work_dir)
        options, precision = job.options, job.precision
        nchw = bool(options.get("nchw"))
        calib = np.load(job.calib) if job.calib else None
        extra: dict = {"layout": "NCHW" if nchw else "NHWC"}
        route = options.get("route", "auto")
        if route == "litert-torch":
            from .tflite_routes import convert_litert_torch

            notes, figures = convert_litert_torch(load_model(), out, precision, calib, nchw, job.model.info.input_size,
                                                  bool(options.get("int8_io")))
            return ConvertResult(route="litert-torch", notes=notes, extra={**extra, **figures})
        if route != "onnx2tf":
            saved = saved_model_dir(work, nchw)
            if not saved.exists():
                extra["graph_ops"] = build_saved_model(load_model(), job.model.info, saved, nchw)
            notes = convert_saved_model(saved, out, precision, calib, nchw, bool(options.get("int8_io")),
                                        options.get("quant"), options.get("compat"))
            return ConvertResult(route="tf-direct", notes=notes, extra=extra)
        base = work / "base_fp32.onnx"
        if not base.exists():
            from .onnx_export import ensure_fp32  # imports torch: only on the onnx2tf route

            ensure_fp32(load_model(), base, job.model.info)
        from .tflite_routes import convert_onnx2tf

        notes, figures = convert_onnx2tf(base, out, precision, calib, nchw, work, bool(options.get("int8_io")),
                                         options.get("quant"))
        return ConvertResult(route="onnx2tf", notes=notes, extra={**extra, **figures})

    def load(self, path, *, threads: int = 2, options: dict | None = None, accelerator: str = "cpu"):
        self.check_accelerator(accelerator)
        nchw = bool((options or {}).get("nchw"))
        if accelerator == "gpu":
            from .litert_gpu import GpuUnavailable, gpu_runner

            try:
                return gpu_runner(str(path), nchw=nchw)
            except GpuUnavailable as e:
                raise SkipCombination(str(e)) from None
        from .runtime import tflite_runner

        return tflite_runner(str(path), threads, nchw=nchw)

    def inspect(self, path) -> dict:
        from .gpu_delegate import analyze
        from .tflite_compat import runtime_compat

        return {"gpu_delegate": analyze(str(path)), "runtime_compat": runtime_compat(str(path))}

    def latency_warnings(self, path) -> list[str]:
        """Known slow paths worth a loud warning (measured here: INT16-activation INT8 runs ~40x slower)."""
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        it = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        dtypes = {getattr(t["dtype"], "__name__", str(t["dtype"])) for t in it.get_tensor_details()}
        if "int16" in dtypes:
            return ["TRAP: int16 activations (16x8 quantization): XNNPACK has no kernels for them, so they run on "
                    "TFLite's reference kernels, typically tens of times slower than int8 or fp32"]
        return []
