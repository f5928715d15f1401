"""GPU-delegate readiness of a ``.tflite`` file, judged against the delegate's documented limits.

TensorFlow's own check (``tf.lite.experimental.Analyzer.analyze(gpu_compatibility=True)``) is a
no-op in TF 2.19 (tensorflow#77042). This static rule check predicts which ops the delegate would
take before anything runs. The executed answer comes from ``exporters.litert_gpu`` (LiteRT's GPU
accelerator over Vulkan, run for every .tflite in the export); each row records whether the two
agree, and the table below was corrected where execution showed it wrong (see EXECUTED_FIXES).
On a phone the delegated node count comes from the ``adb`` runner ("Replacing N out of M node(s)").

The rule table is the one place these limits live. Source: the TFLite GPU delegate's op parsers
in ``tensorflow/lite/delegates/gpu/common/model_builder.cc`` (TF 2.19) and the guide
https://ai.google.dev/edge/litert/performance/gpu ("Supported ops", quantized models). General
limits from the same sources: tensors of rank <= 4, static shapes, float32/float16 compute
(8-bit models run through dequantized constants and quantization simulators), batch 1.
"""
from __future__ import annotations

from collections import Counter

RULES_SOURCE = ("tensorflow/lite/delegates/gpu/common/model_builder.cc (TF 2.19) op parsers; "
                "ai.google.dev/edge/litert/performance/gpu")

# op -> constraint note ("" = no extra constraint beyond the general limits)
GPU_OPS: dict[str, str] = {
    "ABS": "", "ADD": "", "AVERAGE_POOL_2D": "", "BATCH_MATMUL": "", "CAST": "",
    "CONCATENATION": "", "CONV_2D": "", "COS": "", "CUMSUM": "", "DENSIFY": "",
    "DEPTH_TO_SPACE": "", "DEPTHWISE_CONV_2D": "", "DEQUANTIZE": "", "DIV": "", "ELU": "",
    "EQUAL": "", "EXP": "", "FLOOR": "", "FLOOR_DIV": "", "FLOOR_MOD": "", "FULLY_CONNECTED": "",
    "GATHER": "", "GREATER": "", "GREATER_EQUAL": "", "HARD_SWISH": "", "LEAKY_RELU": "",
    "LESS": "", "LESS_EQUAL": "", "LOG": "", "LOGISTIC": "", "LSTM": "basic LSTM only",
    "MAX_POOL_2D": "", "MAXIMUM": "", "MEAN": "", "MINIMUM": "", "MIRROR_PAD": "", "MUL": "",
    "NEG": "", "NOT_EQUAL": "", "ONE_HOT": "", "PACK": "", "PAD": "", "PADV2": "", "POW": "",
    "PRELU": "", "QUANTIZE": "", "REDUCE_MAX": "", "REDUCE_MIN": "", "REDUCE_PROD": "",
    "RELU": "", "RELU6": "", "RELU_N1_TO_1": "", "RESHAPE": "", "RESIZE_BILINEAR": "",
    "RESIZE_NEAREST_NEIGHBOR": "", "RSQRT": "", "SELECT_V2": "", "SIN": "", "SLICE": "",
    "SOFTMAX": "", "SPACE_TO_DEPTH": "", "SPLIT": "", "SPLIT_V": "", "SQRT": "", "SQUARE": "",
    "SQUARED_DIFFERENCE": "", "STRIDED_SLICE": "", "SUB": "", "SUM": "", "TANH": "", "TILE": "",
    "TRANSPOSE": "", "TRANSPOSE_CONV": "",
    "TOPK_V2": "executed: LiteRT's GPU accelerator takes it (Android's OpenCL delegate may not)",
}
# where execution on LiteRT's GPU accelerator (ai-edge-litert 2.3, WebGPU) showed the first table wrong
EXECUTED_FIXES = {
    "TOPK_V2": "listed as CPU-only; the accelerator ran a TOPK_V2 file fully accelerated (2/2 ops)",
    "int16 tensors": ("every op on int16 tensors was listed as refused; in 16x8 files of repvgg-a0, resnet18 and vgg16 "
                      "the accelerator refuses CONV_2D, FULLY_CONNECTED, MAX_POOL_2D, MEAN, RELU, SPLIT, QUANTIZE and "
                      "DEQUANTIZE on them but not INT16_ACCEPTED (those still run on the CPU: LiteRT leaves them "
                      "between refused ops, so a 16x8 file gets 1-2 ops on the GPU)"),
}
# ops whose GPU parser does not check tensor types: int16 tensors do not make them refused
INT16_ACCEPTED = {"PAD", "ADD", "TRANSPOSE", "RESHAPE", "CONCATENATION"}
# ops users meet in detection and RepVGG exports that the delegate does not take
KNOWN_CPU_FALLBACK: dict[str, str] = {
    "SPACE_TO_BATCH_ND": "not supported (a dilated conv lowered to SpaceToBatch runs on CPU)",
    "BATCH_TO_SPACE_ND": "not supported",
    "NON_MAX_SUPPRESSION_V4": "no NMS on the GPU delegate", "NON_MAX_SUPPRESSION_V5": "no NMS on the GPU delegate",
    "TFLite_Detection_PostProcess": "custom op, CPU only",
    "ARG_MAX": "not supported", "ARG_MIN": "not supported",
    "LOCAL_RESPONSE_NORMALIZATION": "not supported", "L2_NORMALIZATION": "not supported",
    "WHILE": "control flow is not supported", "IF": "control flow is not supported",
}
FLOAT_TYPES = {"float32", "float16"}
QUANT_TYPES = {"int8", "uint8", "int32"}  # int32: quantized biases


def _dtype_name(d) -> str:
    return getattr(d, "__name__", str(d)).replace("numpy.", "")


def analyze(path: str) -> dict:
    """Per-op verdicts for one ``.tflite`` file (reads the graph, runs nothing)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    delegated: Counter = Counter()
    fallback: Counter = Counter()
    reasons: dict[str, str] = {}
    dynamic = False
    for op in it._get_ops_details():
        name = op["op_name"]
        why = None
        if name not in GPU_OPS:
            why = KNOWN_CPU_FALLBACK.get(name, "not in the GPU delegate's op list")
        io = [tensors[i] for i in list(op["inputs"]) + list(op["outputs"]) if i >= 0 and i in tensors]
        for t in io:
            if len(t["shape"]) > 4:
                why = why or f"tensor {t['name']} has rank {len(t['shape'])} > 4"
            if -1 in list(t.get("shape_signature", t["shape"])):
                dynamic = True
                why = why or f"tensor {t['name']} has a dynamic shape"
            dt = _dtype_name(t["dtype"])
            if dt == "int16" and name in INT16_ACCEPTED:
                continue
            if dt not in FLOAT_TYPES | QUANT_TYPES:
                why = why or f"tensor {t['name']} is {dt}"
        if why:
            fallback[name] += 1
            reasons.setdefault(name, why)
        else:
            delegated[name] += 1
    total = sum(delegated.values()) + sum(fallback.values())
    quantized = any(_dtype_name(t["dtype"]) in ("int8", "uint8") for t in tensors.values())
    return {
        "delegated_ops": sum(delegated.values()),
        "fallback_ops": sum(fallback.values()),
        "total_ops": total,
        "fully_delegated": total > 0 and not fallback,
        "partitions_estimate": _partitions(it, set(fallback)),
        "delegated_by_op": dict(delegated),
        "fallback_by_op": dict(fallback),
        "fallback_reasons": reasons,
        "dynamic_shapes": dynamic,
        "quantized_model": quantized,
        "note": ("8-bit model: the delegate runs it through dequantized weights (fp16/fp32 on the GPU)"
                 if quantized else "float model: the delegate computes in fp16 by default"),
        "latency": "not measured by the rule table (the executed GPU run is the row's gpu; a phone: the adb runner)",
        "rules_source": RULES_SOURCE,
    }


def _partitions(it, fallback_names: set[str]) -> int:
    """Contiguous runs of delegatable ops in execution order (each becomes one delegate kernel)."""
    runs, inside = 0, False
    for op in it._get_ops_details():
        ok = op["op_name"] not in fallback_names and op["op_name"] in GPU_OPS
        if ok and not inside:
            runs += 1
        inside = ok
    return runs
