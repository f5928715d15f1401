"""TensorRT: fp32, fp16 and int8 (explicit quantization), the seed's first route for VGG16.

What is written here, on any machine: a **TensorRT-ready ONNX** file per precision
(``MODEL_PRECISION.trt.onnx``): static shapes, opset 17, only operators TensorRT's ONNX parser
takes (``TRT_OPS``), fp16 as fp16 weights and arithmetic with fp32 I/O, and int8 as an
explicitly quantized graph whose Q/DQ nodes sit where TensorRT fuses them. Each file is run in
ONNX Runtime and gated against PyTorch like every other artifact.

Where an NVIDIA GPU with CUDA and the ``tensorrt`` package are present, the engine is built from
that file (``.engine`` beside it) and its build time, TensorRT version and GPU are recorded;
elsewhere the row says the engine needs one. Nothing about an engine is ever estimated here.

Q/DQ placement follows the TensorRT 10.x Developer Guide, "Working with Quantized Types" ->
"Explicit Quantization" -> "Q/DQ Layer-Placement Recommendations"
(https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/work-quantized-types.html):
  R1 quantize all inputs of weighted operations (Conv, Gemm, MatMul): activations per-tensor;
  R2 weights per-channel (the output-channel axis), stored int8 with a DequantizeLinear;
  R3 symmetric int8 only (zero points 0; TensorRT supports no other);
  R4 do not simulate the BatchNorm / ReLU fusions: no Q/DQ between a weighted op and its
     activation (TensorRT fuses Conv+BN+ReLU first and then the following Q);
  R5 quantize a tensor once (one Q/DQ pair shared by all its weighted consumers);
  R6 no Q/DQ that feeds anything but a quantizable operator (Conv, Gemm, MatMul, Add) or a graph
     output: such a pair stays in the engine as a reformat;
  R7 a residual Add gets a Q/DQ on its skip input, so that TensorRT fuses it into the preceding
     convolution (the guide's ResNet example).
``qdq_violations`` checks a graph against these rules node by node.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .base import Capability, Format
from .records import ConvertJob, ConvertResult, ExportError, SkipCombination

RULES_SOURCE = ("TensorRT 10.x Developer Guide, Working with Quantized Types > Explicit Quantization > "
                "Q/DQ Layer-Placement Recommendations")
OPSET = 17
WEIGHTED = ("Conv", "Gemm", "MatMul")
QUANTIZABLE_CONSUMERS = WEIGHTED + ("Add",)
ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "BatchNormalization")
# operators of onnx-tensorrt's supported list (docs/operators.md, TensorRT 10.x) that our models emit
TRT_OPS = frozenset({
    "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "Conv", "DequantizeLinear",
    "Div", "Flatten", "Gather", "Gemm", "GlobalAveragePool", "HardSigmoid", "Identity", "LeakyRelu", "MatMul",
    "MaxPool", "Mul", "Pad", "Pow", "QuantizeLinear", "ReduceL2", "ReduceMean", "ReduceSum", "Relu", "Reshape",
    "Resize", "Shape", "Sigmoid", "Slice", "Softmax", "Split", "Sqrt", "Squeeze", "Sub", "Transpose", "Unsqueeze",
})


# --- calibration and Q/DQ insertion ---------------------------------------------------------

def _producers(graph) -> dict:
    return {o: n for n in graph.node for o in n.output}


def _consumers(graph) -> dict:
    out: dict = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def activation_tensors(model) -> list[str]:
    """The activation tensors the rules quantize: weighted ops' data inputs (R1) and residual Adds'
    skip inputs (R7)."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    prod = _producers(g)
    names: list[str] = []
    for n in g.node:
        if n.op_type in WEIGHTED and n.input[0] not in inits:
            names.append(n.input[0])
        elif n.op_type == "Add" and len(n.input) == 2 and not set(n.input) & inits:
            # the skip branch: the input not computed by a convolution (+BN/ReLU) right before
            skip = [i for i in n.input if (prod.get(i) is None or prod[i].op_type not in WEIGHTED + ("BatchNormalization",))]
            names += skip[:1]
    return list(dict.fromkeys(names))


def calibrate_amax(onnx_path: Path, tensors: list[str], calib: np.ndarray, threads: int = 2) -> dict[str, float]:
    """max |x| of each tensor over the calibration images (TensorRT's max calibration), from ONNX
    Runtime on the fp32 graph with those tensors exposed as outputs."""
    import onnx
    import onnxruntime as ort

    m = onnx.load(str(onnx_path))
    have = {o.name for o in m.graph.output}
    for t in tensors:
        if t not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every named tensor
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    amax = {t: 0.0 for t in tensors}
    for i in range(len(calib)):
        outs = dict(zip(names, sess.run(names, {"input": calib[i : i + 1].astype(np.float32)})))
        for t in tensors:
            amax[t] = max(amax[t], float(np.abs(outs[t]).max()))
    return amax


def _scale(amax: float) -> float:
    return amax / 127.0 if amax > 0 else 1.0


def insert_qdq(model, amax: dict[str, float]):
    """The explicitly quantized graph: per-tensor Q/DQ on the activations in ``amax``, per-channel
    int8 weights with a DequantizeLinear on every weighted op, by the rules in this module's doc."""
    import onnx
    from onnx import helper, numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    new_inits, qdq_nodes = [], []
    dq_of: dict[str, str] = {}
    zero = "qdq_zero_point"
    new_inits.append(numpy_helper.from_array(np.array(0, np.int8), zero))
    for t, a in amax.items():
        s = f"{t}_scale"
        new_inits.append(numpy_helper.from_array(np.array(_scale(a), np.float32), s))
        q, dq = f"{t}_quantized", f"{t}_dequantized"
        qdq_nodes.append(helper.make_node("QuantizeLinear", [t, s, zero], [q], name=f"{t}_QuantizeLinear"))
        qdq_nodes.append(helper.make_node("DequantizeLinear", [q, s, zero], [dq], name=f"{t}_DequantizeLinear"))
        dq_of[t] = dq
    for n in g.node:
        targets = []
        if n.op_type in WEIGHTED:
            targets = [0]
        elif n.op_type == "Add":
            targets = [k for k, i in enumerate(n.input) if i in dq_of]
        for k in targets:
            if n.input[k] in dq_of:
                n.input[k] = dq_of[n.input[k]]
        if n.op_type in WEIGHTED and len(n.input) > 1 and n.input[1] in inits:
            w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
            if n.op_type == "Conv":
                axis = 0
            elif n.op_type == "Gemm":
                axis = 0 if any(a.name == "transB" and a.i == 1 for a in n.attribute) else 1
            else:  # MatMul: weight [K, N], one scale per output column
                axis = w.ndim - 1
            red = tuple(d for d in range(w.ndim) if d != axis)
            amax_c = np.abs(w).max(axis=red)
            scale = np.where(amax_c > 0, amax_c / 127.0, 1.0).astype(np.float32)
            shape = [1] * w.ndim
            shape[axis] = -1
            wq = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
            base = n.input[1]
            new_inits += [numpy_helper.from_array(wq, f"{base}_int8"), numpy_helper.from_array(scale, f"{base}_wscale"),
                          numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{base}_wzero")]
            dq = f"{base}_dequantized_{n.name or id(n)}"
            qdq_nodes.append(helper.make_node("DequantizeLinear", [f"{base}_int8", f"{base}_wscale", f"{base}_wzero"],
                                              [dq], name=f"{base}_DequantizeLinear_{len(qdq_nodes)}", axis=axis))
            n.input[1] = dq
    # float weights no longer used by any node go (the file keeps only the int8 copies)
    used = {i for n in list(g.node) + qdq_nodes for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep + new_inits)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(_topological(qdq_nodes + nodes, {i.name for i in g.input} | {i.name for i in g.initializer}))
    onnx.checker.check_model(model)
    return model


def _topological(nodes, available: set[str]):
    done, out, pending = set(available), [], list(nodes)
    while pending:
        ready = [n for n in pending if all((not i) or i in done for i in n.input)]
        if not ready:
            raise ExportError("the quantized graph has a cycle or a missing input; please report this model")
        for n in ready:
            out.append(n)
            done.update(n.output)
        pending = [n for n in pending if n not in ready]
    return out


def qdq_violations(model) -> list[str]:
    """Every place the graph breaks a placement rule (module doc), one line each; [] when it follows them."""
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    prod, cons = _producers(g), _consumers(g)
    outputs = {o.name for o in g.output}
    bad: list[str] = []

    def const(name):
        return numpy_helper.to_array(inits[name]) if name in inits else None

    for n in g.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2:
            zp = const(n.input[2])
            if zp is None or zp.dtype != np.int8 or np.any(zp != 0):
                bad.append(f"R3 {n.name}: zero point must be int8 0 (symmetric)")
        if n.op_type in WEIGHTED:
            p = prod.get(n.input[0])
            if p is None or p.op_type != "DequantizeLinear" or prod.get(p.input[0]) is None \
                    or prod[p.input[0]].op_type != "QuantizeLinear":
                bad.append(f"R1 {n.name}: its activation input is not quantized (no Q/DQ pair before it)")
            elif const(p.input[1]) is None or const(p.input[1]).size != 1:
                bad.append(f"R1 {n.name}: its activation is not quantized per-tensor")
            w = prod.get(n.input[1]) if len(n.input) > 1 else None
            if w is None or w.op_type != "DequantizeLinear" or w.input[0] not in inits:
                bad.append(f"R2 {n.name}: its weights are not int8 with a DequantizeLinear")
            else:
                wq, sc = const(w.input[0]), const(w.input[1])
                axis = next((a.i for a in w.attribute if a.name == "axis"), 1)
                if wq.dtype != np.int8 or sc is None or sc.ndim != 1 or sc.size != wq.shape[axis]:
                    bad.append(f"R2 {n.name}: its weights are not quantized per output channel")
                elif n.op_type == "Conv" and axis != 0:
                    bad.append(f"R2 {n.name}: per-channel axis {axis}, TensorRT wants the output channels (axis 0)")
        if n.op_type in ACTIVATIONS:
            p = prod.get(n.input[0])
            if p is not None and p.op_type == "DequantizeLinear":
                bad.append(f"R4 {n.name}: a Q/DQ pair sits between a weighted op and its {n.op_type} "
                           "(TensorRT fuses those first; quantize the next layer's input instead)")
        if n.op_type == "DequantizeLinear" and n.input[0] not in inits:
            users = cons.get(n.output[0], [])
            if n.output[0] in outputs:
                bad.append(f"R6 {n.name}: a Q/DQ pair on a graph output stays as a reformat")
            for u in users:
                if u.op_type not in QUANTIZABLE_CONSUMERS:
                    bad.append(f"R6 {n.name}: feeds {u.op_type} {u.name}, which TensorRT cannot fuse it into "
                               "(a reformat stays in the engine)")
    seen: dict[str, str] = {}
    for n in g.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits:
            if n.input[0] in seen:
                bad.append(f"R5 {n.name}: tensor {n.input[0]} is quantized twice (also by {seen[n.input[0]]})")
            seen[n.input[0]] = n.name
    for n in g.node:
        if n.op_type == "Add" and len(n.input) == 2 and not set(n.input) & set(inits):
            fed = [prod.get(i) for i in n.input]
            if all(p is not None and p.op_type != "DequantizeLinear" for p in fed) and \
                    any(p.op_type in WEIGHTED + ("BatchNormalization",) for p in fed):
                bad.append(f"R7 {n.name}: residual Add without a Q/DQ on its skip input (no conv+add fusion)")
    return bad


def readiness_problems(model) -> list[str]:
    """What keeps TensorRT's ONNX parser from building a static engine from this graph."""
    bad = []
    for i in model.graph.input:
        dims = i.type.tensor_type.shape.dim
        if not dims or any(not d.HasField("dim_value") or d.dim_value <= 0 for d in dims):
            bad.append(f"input {i.name} has a dynamic shape (TensorRT-ready files here are static)")
    ops = {n.op_type for n in model.graph.node} - TRT_OPS
    if ops:
        bad.append(f"operators outside the TensorRT ONNX parser set used here: {', '.join(sorted(ops))}")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset > 21:
        bad.append(f"opset {opset} (TensorRT 10 parses up to 21)")
    return bad


# --- engines (only with an NVIDIA GPU) ------------------------------------------------------------

def engine_support() -> str | None:
    """None when a TensorRT engine can be built here, else why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "needs an NVIDIA GPU with CUDA and the tensorrt package; the TensorRT-ready ONNX was verified here"
    try:
        import torch

        if not torch.cuda.is_available():
            return "needs an NVIDIA GPU with CUDA (tensorrt is installed, no CUDA device); the TensorRT-ready ONNX was verified here"
    except ImportError:
        return "needs CUDA (no torch to query it)"
    return None


def build_engine(onnx_path: Path, precision: str, engine_path: Path) -> dict:
    """Build and save a TensorRT engine: fp32 as is, fp16 with the FP16 builder flag, int8 from
    the explicitly quantized file as a strongly typed network (no precision flags, per the guide)."""
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if precision == "int8" and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT's ONNX parser refused {onnx_path.name}: {errs[:300]}")
    config = builder.create_builder_config()
    if precision == "fp16" and not flags:
        config.set_flag(trt.BuilderFlag.FP16)
    t = time.perf_counter()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"TensorRT could not build an engine from {onnx_path.name}")
    engine_path.write_bytes(bytes(plan))
    return {"status": "built", "path": str(engine_path), "tensorrt": trt.__version__,
            "gpu": torch.cuda.get_device_name(0), "build_seconds": round(time.perf_counter() - t, 2)}


# --- the format -------------------------------------------------------------------------------

class TensorRTFormat(Format):
    capability = Capability(
        "tensorrt", ".trt.onnx", ("fp32", "fp16", "int8"), ("int8_io", "quant"),
        "TensorRT engine on an NVIDIA GPU (Jetson, desktop, server); built from the TensorRT-ready ONNX", True,
        {"fp32": "TensorRT-ready ONNX (static shapes, TensorRT's operator set); engine built as fp32",
         "fp16": "fp16 weights and arithmetic, fp32 I/O; engine built with the FP16 flag",
         "int8": "explicit quantization: symmetric int8 Q/DQ placed by TensorRT's rules, calibrated; "
                 "float I/O with int8 inside (int8_io: int8 input, scale recorded)"},
        runtime="onnxruntime (the TensorRT-ready ONNX; engines need an NVIDIA GPU)")

    def convert(self, job: ConvertJob, load_model) -> ConvertResult:
        import onnx

        from .onnx_export import _stamp, ensure_fp32
        from .provenance import stamp

        out, work, info = Path(job.out_path), Path(job.work_dir), job.model.info
        base = work / "base_fp32.onnx"
        notes = ensure_fp32(load_model(), base, info) if not base.exists() else []
        m = onnx.load(str(base))
        extra: dict = {}
        check: dict = {"trt_ready": True}
        if job.precision == "fp32":
            pass
        elif job.precision == "fp16":
            from onnxconverter_common import float16

            m = float16.convert_float_to_float16(m, keep_io_types=True)
        elif job.precision == "int8":
            calib = np.load(job.calib) if job.calib else None
            if calib is None or not len(calib):
                raise ExportError("tensorrt int8 needs calibration images (--calib-count >= 1)")
            if (job.options.get("quant") or {}).get("per_channel") is False:
                raise ExportError("tensorrt int8 quantizes weights per channel (TensorRT's rule R2); drop per_channel=false")
            tensors = activation_tensors(m)
            amax = calibrate_amax(base, tensors, calib, job.threads)
            m = insert_qdq(m, amax)
            violations = qdq_violations(m)
            if violations:
                raise ExportError(f"Q/DQ placement breaks TensorRT's rules: {violations[0]} (+{len(violations) - 1} more)")
            int8_io = bool(job.options.get("int8_io"))
            check.update(qdq_rules=RULES_SOURCE, qdq_violations=0, quantized_tensors=len(amax), int8_io=int8_io)
            notes.append(f"explicit quantization: {len(amax)} activation tensors per-tensor, weights per-channel, "
                         f"symmetric int8, max calibration on {len(calib)} images; placement checked against "
                         f"{RULES_SOURCE}")
            notes.append("I/O: int8 input (trtexec --inputIOFormats=int8:chw; quantize with the recorded input scale, "
                         "zero point 0: the same values the graph's first QuantizeLinear makes, which is what the "
                         "fidelity run feeds)" if int8_io else "I/O: float input and output, int8 inside (the default)")
            if int8_io:
                check["input_scale"] = _scale(amax["input"]) if "input" in amax else None
        else:
            raise SkipCombination(f"tensorrt has no {job.precision} variant (fp32, fp16, int8)")
        problems = readiness_problems(m)
        if problems:
            raise ExportError(f"not TensorRT-ready: {problems[0]}")
        onnx.save(m, str(out))
        _stamp(out, stamp(info, "tensorrt", job.precision, "torch.onnx+trt-ready", job.producer_version))
        why = engine_support()
        if why is None:
            extra["engine"] = build_engine(out, job.precision, out.with_suffix("").with_suffix(".engine"))
        else:
            extra["engine"] = {"status": "not built", "reason": why}
        extra["validation"] = check
        return ConvertResult(route="torch.onnx+trt-ready", notes=notes, extra=extra)

    def check_artifact(self, path) -> None:
        from .onnx_export import check_external_data

        check_external_data(path)

    def load(self, path, *, threads: int = 2, options: dict | None = None, accelerator: str = "cpu"):
        from .runtime import onnx_runner

        self.check_accelerator(accelerator)
        self.check_artifact(path)
        return onnx_runner(str(path), threads)


__all__ = ["TensorRTFormat", "qdq_violations", "insert_qdq", "activation_tensors", "readiness_problems",
           "engine_support", "RULES_SOURCE", "TRT_OPS"]
