"""Which TFLite / LiteRT runtimes load a ``.tflite`` file, from its operator versions.

A runtime loads a file only if its op resolver registers every (operator, version) pair the file
uses: an older runtime refuses a newer version with "Didn't find op for builtin opcode 'OP'
version 'N'". This module reads the pairs from the flatbuffer and states the oldest runtime
that registers them all.

The table is TensorFlow's own (``tensorflow/lite/tools/versioning/runtime_version.cc``, the map
the converter uses to write ``min_runtime_version``), restated for the operators our graphs
use, as of TF 2.13. Pairs added later are marked with their source. A pair that is not in the
table makes the answer a lower bound, and the report says so. The converter's own
``min_runtime_version`` metadata is recorded beside it. It is not trusted alone: it is absent
from onnx2tf and litert-torch files, and TF 2.21 writes 1.6.0 into int16x8 files that use
version-2 and version-3 ops.

The claim is also checked by loading: where a ``tflite-runtime`` 2.14 environment exists
(``make setup`` builds ``.venv-tflite214``; ``WORKBENCH_TFLITE214_PYTHON`` points elsewhere),
the file is loaded and run once there, and the result is recorded beside the table's prediction.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

TABLE_SOURCE = ("tensorflow/lite/tools/versioning/runtime_version.cc (TF 2.13: the converter's op -> minimum "
                "runtime map), plus pairs measured here (see LEARNED)")

# (op, version) -> first TFLite runtime release that registers it
_T: dict[str, tuple[str, ...]] = {  # version 1, 2, ... in order
    "ADD": ("1.5.0", "1.14.0", "2.4.0", "2.6.0"),
    "AVERAGE_POOL_2D": ("1.5.0", "1.14.0", "2.3.0"),
    "BATCH_MATMUL": ("2.3.0", "2.3.0", "2.4.0", "2.5.0"),
    "CAST": ("1.5.0", "2.7.0", "2.8.0", "2.9.0", "2.12.0"),
    "CONCATENATION": ("1.5.0", "1.14.0", "2.3.0"),
    "CONV_2D": ("1.5.0", "1.14.0", "1.14.0", "2.3.0", "2.4.0", "2.9.0", "2.11.0"),
    "DEPTHWISE_CONV_2D": ("1.5.0", "1.12.0", "1.14.0", "2.2.0", "2.3.0", "2.3.0", "2.11.0"),
    "DEQUANTIZE": ("1.13.1", "1.14.0", "1.15.0", "2.2.0", "2.7.0"),
    "DIV": ("1.6.0", "2.3.0"),
    "EXP": ("1.7.0",),
    "EXPAND_DIMS": ("1.10.0",),
    "FULLY_CONNECTED": ("1.5.0", "1.10.0", "1.14.0", "1.14.0", "2.0.0", "2.1.0", "2.3.0", "2.3.0", "2.3.0", "2.11.0"),
    "GATHER": ("1.6.0", "1.14.0", "1.15.0", "2.4.0", "2.5.0"),
    "HARD_SWISH": ("1.15.0",),
    "L2_NORMALIZATION": ("1.5.0", "1.14.0"),
    "LOCAL_RESPONSE_NORMALIZATION": ("1.5.0",),
    "LOGISTIC": ("1.14.0", "1.14.0", "2.3.0"),
    "MAX_POOL_2D": ("1.5.0", "1.14.0", "2.3.0"),
    "MAXIMUM": ("1.14.0", "1.14.0", "2.3.0", "2.3.0"),
    "MEAN": ("1.6.0", "1.14.0", "2.4.0"),
    "MINIMUM": ("1.14.0", "1.14.0", "2.3.0", "2.3.0"),
    "MUL": ("1.5.0", "1.14.0", "1.15.0", "2.3.0", "2.6.0", "2.11.0"),
    "PACK": ("1.11.0", "1.14.0", "2.3.0"),
    "PAD": ("1.5.0", "1.14.0", "2.4.0", "2.6.0"),
    "PADV2": ("1.9.0", "1.14.0", "2.4.0", "2.6.0"),
    "QUANTIZE": ("1.14.0", "1.15.0", "2.7.0"),
    "REDUCE_MAX": ("1.11.0", "1.14.0", "2.5.0"),
    "RELU": ("1.5.0", "2.1.0", "2.5.0"),
    "RELU6": ("1.5.0", "1.14.0", "2.5.0"),
    "RESHAPE": ("1.5.0",),
    "RESIZE_BILINEAR": ("1.7.0", "1.14.0", "2.2.0", "2.5.0"),
    "RESIZE_NEAREST_NEIGHBOR": ("1.13.1", "1.14.0", "2.3.0", "2.4.0"),
    "RSQRT": ("1.10.0", "2.5.0"),
    "SOFTMAX": ("1.5.0", "1.14.0", "2.3.0"),
    "SPLIT": ("1.5.0", "1.14.0", "1.14.0", "2.3.0"),
    "SPLIT_V": ("1.13.1", "2.3.0"),
    "SQRT": ("1.10.0",),
    "SQUARE": ("1.12.0",),
    "SQUEEZE": ("1.6.0", "2.5.0"),
    "STRIDED_SLICE": ("1.6.0", "1.14.0", "2.1.0", "2.2.0", "2.5.0", "2.6.0"),
    "SUB": ("1.6.0", "1.14.0", "2.3.0", "2.4.0", "2.4.0"),
    "SUM": ("1.10.0", "1.15.0"),
    "TANH": ("1.14.0", "1.14.0", "2.3.0"),
    "TRANSPOSE": ("1.6.0", "1.14.0", "1.15.0", "2.3.0", "2.4.0", "2.12.0"),
    "ARG_MAX": ("1.9.0", "1.14.0", "2.9.0"),
    "SPACE_TO_BATCH_ND": ("1.6.0", "1.14.0", "2.3.0"),
    "BATCH_TO_SPACE_ND": ("1.6.0", "1.14.0", "2.3.0"),
    "TOPK_V2": ("1.7.0", "1.14.0"),
    "NON_MAX_SUPPRESSION_V4": ("2.1.0",),
    "NON_MAX_SUPPRESSION_V5": ("2.1.0",),
}
TABLE: dict[tuple[str, int], str] = {(op, i + 1): v for op, vs in _T.items() for i, v in enumerate(vs)}
# pairs newer than the TF 2.13 table, with how each was learned
LEARNED: dict[tuple[str, int], tuple[str, str]] = {
    ("FULLY_CONNECTED", 12): ("2.17.0", "TF 2.21's converter wrote min_runtime_version 2.17.0 into a dynamic-range "
                                        "file whose only newer op is FULLY_CONNECTED v12 (per-channel int8 weights); "
                                        "tflite-runtime 2.14.0 refuses it (measured here)"),
    ("SQRT", 2): ("2.21.0", "TF 2.21's converter wrote min_runtime_version 2.21.0 into an int8 SSD300 file whose only "
                            "pair outside the TF 2.13 table is SQRT v2 (int8 SQRT); tflite-runtime 2.14.0 refuses it "
                            "(measured here)"),
}
# weights stored after the flatbuffer (buffer offsets, files over 2 GB or the converter's
# _experimental_use_buffer_offset): tflite-runtime 2.14.0 loads and runs such a file (vgg16 fp16,
# measured here); older releases were not tried, so 2.14 is the oldest known to load one
BUFFER_OFFSET_RUNTIME = "2.14.0"
LOAD_CHECK_RUNTIME = "tflite-runtime 2.14.0"
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def vtuple(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in str(v).split(".") if p.isdigit())


def op_versions(path: str) -> tuple[list[tuple[str, int]], str | None, bool]:
    """((op, version) pairs used, the converter's min_runtime_version metadata, buffer offsets used)."""
    from ai_edge_litert import schema_py_generated as s

    names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
    buf = Path(path).read_bytes()
    m = s.Model.GetRootAs(buf, 0)
    pairs = []
    for i in range(m.OperatorCodesLength()):
        oc = m.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        name = names.get(code, f"op{code}")
        if name == "CUSTOM":
            name = f"CUSTOM:{(oc.CustomCode() or b'').decode(errors='replace')}"
        pairs.append((name, int(oc.Version())))
    meta = None
    for i in range(m.MetadataLength()):
        md = m.Metadata(i)
        if md.Name() == b"min_runtime_version":
            b = m.Buffers(md.Buffer())
            meta = bytes(b.DataAsNumpy()).split(b"\0")[0].decode() if b.DataLength() else None
    offsets = any(m.Buffers(i).Offset() > 1 for i in range(m.BuffersLength()))
    return sorted(set(pairs)), meta or None, offsets


def runtime_compat(path: str, check: bool = True) -> dict:
    """Op versions, the oldest runtime that registers them all (or a lower bound), the converter's
    claim, and, where the 2.14 environment exists, whether tflite-runtime 2.14 loaded the file."""
    pairs, meta, offsets = op_versions(path)
    ops, unknown = [], []
    oldest, deciding = "1.5.0", None
    for op, ver in pairs:
        need = TABLE.get((op, ver)) or LEARNED.get((op, ver), (None,))[0]
        ops.append({"op": op, "version": ver, "min_runtime": need})
        if need is None:
            unknown.append(f"{op} v{ver}")
        elif vtuple(need) > vtuple(oldest):
            oldest, deciding = need, f"{op} v{ver}"
    if offsets and vtuple(BUFFER_OFFSET_RUNTIME) > vtuple(oldest):
        oldest, deciding = BUFFER_OFFSET_RUNTIME, "weights after the flatbuffer (buffer offsets)"
    if unknown and meta and vtuple(meta) > vtuple(oldest):
        # the converter that wrote the file knew its own pairs: a claim above ours covers the unknown ones
        oldest, deciding = meta, f"the converter's min_runtime_version ({', '.join(unknown)} not in our table)"
        unknown = []
    out = {"ops": ops, "oldest_runtime": oldest, "deciding": deciding, "lower_bound": bool(unknown),
           "unknown_pairs": unknown, "converter_min_runtime": meta, "buffer_offsets": offsets,
           "source": TABLE_SOURCE}
    out["label"] = (f">= TFLite {oldest}" + (f" ({deciding})" if deciding else "")
                    + (f"; not in the table: {', '.join(unknown)}" if unknown else ""))
    if check:
        res = load_check(path)
        if res is not None:
            predicted = loads_in(out, "2.14.0")
            res["predicted"] = predicted
            res["agrees"] = None if predicted is None else (predicted == res["loads"])
            out["checked"] = {LOAD_CHECK_RUNTIME: res}
    return out


def loads_in(compat: dict, version: str) -> bool | None:
    """The table's answer for a TFLite runtime of ``version``: True, False, or None (unknown pairs
    and a runtime at least as new as the table's bound)."""
    if vtuple(compat["oldest_runtime"]) > vtuple(version):
        return False
    return None if compat.get("lower_bound") else True


def tflite214_python() -> str | None:
    exe = os.environ.get("WORKBENCH_TFLITE214_PYTHON") or str(PROJECT_ROOT / ".venv-tflite214" / "bin" / "python")
    return exe if Path(exe).exists() else None


_LOAD_SCRIPT = """
import sys, numpy as np
from tflite_runtime.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1], num_threads=1)
it.allocate_tensors()
for d in it.get_input_details():
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
it.invoke()
print("LOADED")
"""


def load_check(path: str, timeout_s: float = 300.0) -> dict | None:
    """Load and run the file once in tflite-runtime 2.14 (its own environment, its own process).
    None when that environment is not here."""
    exe = tflite214_python()
    if exe is None:
        return None
    try:
        r = subprocess.run([exe, "-c", _LOAD_SCRIPT, str(path)], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"loads": False, "error": f"no answer in {timeout_s:.0f} s"}
    if r.returncode == 0 and "LOADED" in r.stdout:
        return {"loads": True, "error": None}
    err = [ln.strip() for ln in (r.stderr or "").splitlines() if ln.strip() and not ln.startswith(("INFO:", "Traceback", "  "))]
    text = next((ln for ln in err if "Didn't find op" in ln or "Error" in ln or "error" in ln), err[-1] if err else f"exit {r.returncode}")
    return {"loads": False, "error": text[:300]}


def parse_target(spec: str) -> tuple[str, str]:
    """``tflite-runtime==2.14`` / ``tensorflow==2.14`` / ``2.14`` -> (runtime name, TFLite version).
    ``ai-edge-litert==X``: LiteRT releases were cut after TF 2.18, so they count as 2.18."""
    s = str(spec).strip()
    name, sep, ver = s.partition("==")
    if not sep:
        name, ver = "tflite-runtime", s
    name = name.strip().lower()
    if not vtuple(ver) or name not in ("tflite-runtime", "tensorflow", "ai-edge-litert"):
        raise ValueError(f"runtime {spec!r} is not NAME==VERSION with NAME tflite-runtime, tensorflow or ai-edge-litert "
                         "(for example tflite-runtime==2.14)")
    if name == "ai-edge-litert":
        return name, "2.18.0"
    return name, ver.strip()


def verdict_for(compat: dict | None, spec: str) -> dict:
    """Does a file with this ``runtime_compat`` load on the runtime ``spec``? Measured where the
    2.14 check ran for that version, else the table's answer."""
    name, ver = parse_target(spec)
    if not compat:
        return {"runtime": spec, "loads": None, "why": "no op-version record for this file"}
    chk = (compat.get("checked") or {}).get(LOAD_CHECK_RUNTIME)
    if chk is not None and name == "tflite-runtime" and vtuple(ver)[:2] == (2, 14):
        return {"runtime": spec, "loads": chk["loads"], "measured": True,
                "why": "loaded and ran in tflite-runtime 2.14.0 here" if chk["loads"] else f"refused: {chk['error']}"}
    ok = loads_in(compat, ver)
    why = ("every op version is in the table at or below this runtime" if ok
           else (f"{compat['deciding']} needs TFLite {compat['oldest_runtime']}" if ok is False
                 else f"not known: {', '.join(compat['unknown_pairs'])} not in the table"))
    return {"runtime": spec, "loads": ok, "measured": False, "why": why}
