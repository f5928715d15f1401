"""Roofline latency estimate from the model's per-layer multiply-adds and bytes and a profile's
peak compute per precision and memory bandwidth. Always labelled ``estimated: true`` with its
basis. On the host, the peaks come from probes run here (a GEMM and a memory copy)."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

BYTES = {"fp32": 4, "fp16": 2, "int8": 1, "int8-dynamic": 1, "pal4": 0.5, "pal6": 0.75, "pal8": 1}
PEAK_KEY = {"fp32": "fp32_gflops", "fp16": "fp16_gflops", "int8": "int8_gops", "int8-dynamic": "fp32_gflops",
            "pal4": "fp16_gflops", "pal6": "fp16_gflops", "pal8": "fp16_gflops"}
CACHE = Path(__file__).resolve().parents[2] / "reports" / ".cache" / "host_probe.json"


def _has_vnni() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def probe_host(threads: int, refresh: bool = False) -> dict:
    """Measured peak fp32 GFLOP/s (ONNX Runtime MLAS GEMM, ``threads`` threads; it reaches what
    XNNPACK's conv kernels reach) and copy bandwidth (GB/s); cached per thread count."""
    import numpy as np
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper, numpy_helper

    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    from ..hostinfo import cpu_model as _cpu_model

    key = f"{_cpu_model()}|{os.cpu_count()}|{threads}"  # a probe belongs to one machine
    if key in cache and not refresh:
        return cache[key]
    n = 1024
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32), "W")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "gemm_probe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((n, n)).astype(np.float32)
    for _ in range(3):
        sess.run(None, {"x": x})
    best = float("inf")
    for _ in range(15):
        t = time.perf_counter()
        sess.run(None, {"x": x})
        best = min(best, time.perf_counter() - t)
    gflops = 2 * n ** 3 / best / 1e9
    src = torch.empty(64 * 2**20 // 4)
    dst = torch.empty_like(src)
    bw = 0.0
    for _ in range(5):
        t = time.perf_counter()
        dst.copy_(src)
        bw = max(bw, 2 * src.numel() * 4 / (time.perf_counter() - t) / 1e9)
    vnni = _has_vnni()
    out = {"fp32_gflops": round(gflops, 1), "memory_bandwidth_gbs": round(bw, 1), "threads": threads,
           "int8_ratio": 4 if vnni else 2,
           "probe": "ONNX Runtime float32 1024^3 MatMul (best of 15)",
           "bandwidth_probe": "256 MB tensor copy (read + write, best of 5)",
           "int8_basis": ("4x fp32: the CPU has VNNI (4 int8 MACs per 32-bit lane)" if vnni else
                          "2x fp32: no VNNI on this CPU")}
    from ..fsutil import atomic_write_json

    cache[key] = out
    atomic_write_json(CACHE, cache)
    return out


def resolve_compute(profile, threads: int) -> tuple[dict, dict]:
    """The profile's figures with "probe" entries measured here; and their sources."""
    comp = dict(profile.compute)
    sources = dict(profile.sources)
    if any(v == "probe" for v in comp.values()):
        pr = probe_host(threads)
        for k, v in list(comp.items()):
            if v != "probe":
                continue
            if k == "memory_bandwidth_gbs":
                comp[k], sources[k] = pr["memory_bandwidth_gbs"], f"probed here: {pr['bandwidth_probe']}"
            elif k == "int8_gops":
                comp[k], sources[k] = pr["fp32_gflops"] * pr["int8_ratio"], f"probed here: {pr['probe']}; {pr['int8_basis']}"
            else:  # fp16 on x86 CPUs runs at the fp32 rate (weights are dequantized)
                comp[k], sources[k] = pr["fp32_gflops"], f"probed here: {pr['probe']}"
    return comp, sources


def estimate_ms(model_name: str, num_classes: int, input_size: int, precision: str, profile, threads: int,
                compute_precision: str | None = None) -> dict:
    """``precision`` sets the bytes per weight; ``compute_precision`` (the format's, e.g. fp16 for
    CoreML's weight-only int8) sets which peak figure the arithmetic runs at."""
    import torch

    from ..registry import create_model
    from ..stats import layer_stats

    with torch.device("meta"):
        m = create_model(model_name, num_classes=num_classes, input_size=input_size, deploy=True)
    rows, _ = layer_stats(m, input_size)
    comp, sources = resolve_compute(profile, threads)
    key = PEAK_KEY.get(compute_precision or precision, "fp32_gflops")
    if key not in comp or "memory_bandwidth_gbs" not in comp:
        raise ValueError(f"profile {profile.name} has no {key} / memory_bandwidth_gbs figure for an estimate")
    peak = comp[key] * 1e9
    bw = comp["memory_bandwidth_gbs"] * 1e9
    wb = BYTES.get(precision, 4)
    cp = compute_precision or precision  # activations are stored at the compute precision
    ab = 1 if cp == "int8" else (2 if cp in ("fp16", "pal4", "pal6", "pal8") else 4)
    total = compute_s = memory_s = 0.0
    for r in rows:
        c = 2 * r.macs / peak
        mem = (r.params * wb + (r.input_elements + r.output_elements) * ab) / bw
        total += max(c, mem)
        compute_s += c
        memory_s += mem
    macs = sum(r.macs for r in rows)
    return {"estimate_ms": total * 1e3, "basis": {
        "method": "roofline: sum over conv/linear layers of max(2*MACs / peak, bytes / bandwidth)",
        "macs": macs, "peak": {key: comp[key], "memory_bandwidth_gbs": comp["memory_bandwidth_gbs"]},
        "sources": {key: sources.get(key), "memory_bandwidth_gbs": sources.get("memory_bandwidth_gbs")},
        "compute_bound_ms": compute_s * 1e3, "memory_bound_ms": memory_s * 1e3, "precision": precision,
        "ignores": "elementwise ops, pooling, runtime overheads and kernel efficiency (assumes peak)"}}
