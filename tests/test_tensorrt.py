"""TensorRT: TensorRT-ready ONNX per precision (explicit quantization for int8, placed by
TensorRT's rules and checked node by node), honest engine rows without a GPU, the trtexec parser
on published outputs, the Jetson GPU profile's labelled estimate, and the engine build where a GPU
exists (skipped here with the reason)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from exporters import format_for_path, get_format
from exporters.tensorrt_export import engine_support, qdq_violations, readiness_problems
from workbench.export import ExportOptions, export_model

FIX = Path(__file__).parent / "fixtures" / "trtexec"


@pytest.fixture(scope="module")
def trt_exports(tmp_path_factory):
    out = {}
    for name in ("repvgg-tiny", "vgg-tiny", "ssd-tiny"):
        d = tmp_path_factory.mktemp(f"trt-{name}")
        m = export_model(name, out_dir=d, options=ExportOptions(formats=("tensorrt",), precisions=("fp32", "fp16", "int8"),
                                                                 calib_count=16, fidelity_count=8))
        out[name] = {a["precision"]: a for a in m["artifacts"]}
    return out


def _producer(g, name):
    return next((n for n in g.node if name in n.output), None)


@pytest.mark.parametrize("name", ["repvgg-tiny", "vgg-tiny", "ssd-tiny"])
def test_trt_ready_onnx_per_precision_verified_and_engine_row_is_honest(trt_exports, name):
    rows = trt_exports[name]
    for prec in ("fp32", "fp16", "int8"):
        r = rows[prec]
        assert r["status"] == "ok", (prec, r["reason"])
        assert r["path"].endswith(f"_{prec}.trt.onnx") and format_for_path(r["path"]).name == "tensorrt"
        assert r["fidelity"]["cosine"] >= {"fp32": 0.99999, "fp16": 0.999, "int8": 0.98}[prec], r["fidelity"]
        m = onnx.load(r["path"])
        assert readiness_problems(m) == []
        assert {p.key: p.value for p in m.metadata_props}["format"] == "tensorrt"
        if engine_support() is not None:
            assert r["engine"] == {"status": "not built", "reason": engine_support()}
            assert "needs an NVIDIA GPU" in r["engine"]["reason"] and "verified here" in r["engine"]["reason"]
    assert rows["fp32"]["fidelity"]["max_abs_diff"] <= 1e-4 * rows["fp32"]["fidelity"]["max_abs_output"]


@pytest.mark.parametrize("name", ["repvgg-tiny", "vgg-tiny", "ssd-tiny"])
def test_int8_qdq_placement_node_by_node(trt_exports, name):
    """Every weighted op: a per-tensor symmetric Q/DQ on its activation, int8 per-output-channel
    weights behind a DequantizeLinear; no Q/DQ before a ReLU; no other Q/DQ anywhere."""
    m = onnx.load(trt_exports[name]["int8"]["path"])
    g = m.graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    assert qdq_violations(m) == []
    weighted = [n for n in g.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert weighted
    for n in weighted:
        dq = _producer(g, n.input[0])
        assert dq.op_type == "DequantizeLinear" and _producer(g, dq.input[0]).op_type == "QuantizeLinear"
        assert inits[dq.input[1]].size == 1 and inits[dq.input[2]].dtype == np.int8 and inits[dq.input[2]] == 0
        wdq = _producer(g, n.input[1])
        wq, ws = inits[wdq.input[0]], inits[wdq.input[1]]
        axis = next(a.i for a in wdq.attribute if a.name == "axis")
        assert wq.dtype == np.int8 and np.abs(wq).max() <= 127 and ws.shape == (wq.shape[axis],)
        if n.op_type == "Conv":
            assert axis == 0
    for n in g.node:
        if n.op_type == "Relu":
            assert _producer(g, n.input[0]).op_type in ("Conv", "Gemm", "Add", "BatchNormalization"), n.name
        if n.op_type == "DequantizeLinear" and n.input[0] not in inits:
            users = [u.op_type for u in g.node if n.output[0] in u.input]
            assert users and set(users) <= {"Conv", "Gemm", "MatMul", "Add"}, (n.name, users)
    quantized = [n.input[0] for n in g.node if n.op_type == "QuantizeLinear"]
    assert len(quantized) == len(set(quantized))  # each tensor once
    assert not any(i.name.endswith("_dequantized") for i in g.output)


def _move_qdq_between_conv_and_relu(m):
    """The misplacement the rules forbid: take the Q/DQ pair in front of a Conv fed by a ReLU and put
    it between the previous Conv and that ReLU instead."""
    g = m.graph
    prod = {o: n for n in g.node for o in n.output}
    for conv in (n for n in g.node if n.op_type == "Conv"):
        dq = prod.get(conv.input[0])
        q = prod.get(dq.input[0]) if dq is not None else None
        relu = prod.get(q.input[0]) if q is not None else None
        if relu is None or relu.op_type != "Relu" or prod.get(relu.input[0]) is None:
            continue
        prev = prod[relu.input[0]]
        if prev.op_type != "Conv":
            continue
        conv.input[0] = relu.output[0]          # the next Conv reads the ReLU directly: R1 broken
        q.input[0] = prev.output[0]             # Q/DQ now right after the previous Conv ...
        relu.input[0] = dq.output[0]            # ... and before its ReLU: R4 broken
        nodes = list(g.node)
        nodes.remove(q)
        nodes.remove(dq)
        i = nodes.index(prev) + 1
        nodes[i:i] = [q, dq]
        del g.node[:]
        g.node.extend(nodes)
        return conv.name, relu.name
    raise AssertionError("no Conv -> ReLU -> Q/DQ -> Conv chain found")


def test_a_qdq_pair_moved_where_tensorrt_says_not_to_is_caught(trt_exports):
    m = onnx.load(trt_exports["vgg-tiny"]["int8"]["path"])
    assert qdq_violations(m) == []
    conv, relu = _move_qdq_between_conv_and_relu(m)
    found = qdq_violations(m)
    assert any(v.startswith(f"R1 {conv}") for v in found), found
    assert any(v.startswith(f"R4 {relu}") for v in found), found


def test_asymmetric_zero_point_and_per_tensor_weights_are_caught(trt_exports):
    m = onnx.load(trt_exports["repvgg-tiny"]["int8"]["path"])
    g = m.graph
    zp = next(i for i in g.initializer if i.name == "qdq_zero_point")
    zp.CopyFrom(onnx.numpy_helper.from_array(np.array(3, np.int8), "qdq_zero_point"))
    wdq = next(n for n in g.node if n.op_type == "DequantizeLinear" and n.input[0].endswith("_int8"))
    sc = next(i for i in g.initializer if i.name == wdq.input[1])
    sc.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(sc)[:1], sc.name))
    found = qdq_violations(m)
    assert any(v.startswith("R3") for v in found) and any(v.startswith("R2") and "per output channel" in v for v in found)


def test_trtexec_parser_on_published_outputs():
    from workbench.bench.runners import parse_trtexec, trtexec_stats

    t10 = parse_trtexec((FIX / "trt10_issue4177.txt").read_text())
    assert t10["throughput_qps"] == 130.298 and t10["total_host_walltime_s"] == 3.00082
    assert t10["metrics"]["host_latency"] == {"min": 5.38672, "max": 13.3664, "mean": 7.60628, "median": 7.16092,
                                              "p90": 10.2996, "p95": 10.8698, "p99": 12.9675}
    assert t10["metrics"]["gpu_compute"]["median"] == 7.14139 and t10["metrics"]["h2d"]["p99"] == 0.0515137
    assert t10["metrics"]["d2h"]["mean"] == 0.0100141 and t10["total_gpu_compute_s"] == 2.96536
    s = trtexec_stats(t10, device="jetson-orin-nano-gpu", runner="ssh+trtexec", artifact="a.trt.onnx", runtime="trt")
    assert s.p50_ms == 7.16092 and s.p90_ms == 10.2996 and s.p99_ms == 12.9675 and s.estimated is False
    assert s.runs == round(3.00082 * 130.298) and not s.warnings

    t8 = parse_trtexec((FIX / "trt8_yolov7_pr329.txt").read_text())
    assert t8["metrics"]["host_latency"]["p99"] == 1.55853 and "p90" not in t8["metrics"]["host_latency"]
    assert t8["metrics"]["h2d"]["mean"] == 0 and t8["gpu_compute_cv_percent"] == 2.10486
    s8 = trtexec_stats(t8, device="d", runner="ssh+trtexec", artifact="a", runtime="trt")
    assert s8.p50_ms == 1.38037 and s8.p90_ms is None and "no p90" in s8.warnings[0]

    t7 = parse_trtexec((FIX / "trt7_issue1221.txt").read_text())
    assert t7["metrics"]["end_to_end"]["median"] == 636.003 and t7["metrics"]["host_latency"]["max"] == 638.123

    from workbench.bench.runners import RunnerError

    with pytest.raises(RunnerError, match="no performance summary"):
        parse_trtexec("[I] Starting inference\n[E] Error[1]: CUDA initialization failure")


def test_trtexec_flags_follow_the_precision_and_int8_io():
    from workbench.bench.runners import Protocol, trtexec_flags

    p = Protocol(warmup=5, warmup_seconds=0.5, min_runs=50, min_seconds=3.0)
    assert "--fp16" in trtexec_flags("fp16", p, "m.trt.onnx")
    i8 = trtexec_flags("int8", p, "m.trt.onnx")
    assert "--stronglyTyped" in i8 and "--int8" not in i8 and not any(f.startswith("--inputIOFormats") for f in i8)
    assert "--inputIOFormats=int8:chw" in trtexec_flags("int8", p, "m.trt.onnx", int8_io=True)
    assert {"--onnx=m.trt.onnx", "--warmUp=500", "--duration=3", "--iterations=50"} <= set(trtexec_flags("fp32", p, "m.trt.onnx"))


def test_jetson_gpu_profile_estimates_and_host_does_not_pretend(trt_exports):
    from workbench.bench.measure import bench_artifact, estimate_artifact

    path = trt_exports["vgg-tiny"]["int8"]["path"]
    est = {p: estimate_artifact(trt_exports["vgg-tiny"][p]["path"], "jetson-orin-nano-gpu") for p in ("fp32", "fp16", "int8")}
    for p, e in est.items():
        assert e.estimated is True and e.runner == "estimate" and e.p50_ms > 0
        assert "data sheet" in json.dumps(e.basis["sources"])
    assert est["int8"].p50_ms <= est["fp16"].p50_ms < est["fp32"].p50_ms
    host = bench_artifact(path, "host")
    assert host.p50_ms is None and host.estimated is False


def test_tensorrt_in_a_sweep_and_its_report(tmp_path):
    from workbench.sweep import run_sweep

    sweep = tmp_path / "trt.toml"
    sweep.write_text('name = "trt"\nformats = ["tensorrt"]\nprecisions = ["fp32", "int8"]\n'
                     'devices = ["host-1t", "jetson-orin-nano-gpu"]\n\n[latency]\nremote = "estimate"\nwarmup = 1\n'
                     'warmup_seconds = 0.05\nmin_runs = 5\nmin_seconds = 0.1\nrepeats = 1\n\n'
                     '[[models]]\nname = "vgg-tiny"\n')
    out = tmp_path / "out"
    run_sweep(str(sweep), out, cache=str(tmp_path / "cache"))
    run = json.loads((out / "run.json").read_text())
    arts = [a for e in run["exports"] for a in e["artifacts"]] if "exports" in run else []
    lat = {(r["precision"], r["device"]): r for r in run["latency"]}
    assert lat[("int8", "jetson-orin-nano-gpu")]["estimated"] is True and lat[("int8", "jetson-orin-nano-gpu")]["p50_ms"] > 0
    assert not [k for k in lat if k[1] == "host-1t"]  # no host latency is ever shown for a TensorRT engine
    html = (out / "report.html").read_text()
    assert "tensorrt" in html and "jetson-orin-nano-gpu" in html and "TensorRT engines" in html
    assert "needs an NVIDIA GPU" in html or engine_support() is None
    assert arts == [] or all(a["format"] == "tensorrt" for a in arts)


@pytest.mark.skipif(engine_support() is not None, reason=f"{engine_support()}")
def test_engine_build_on_a_gpu(tmp_path):  # pragma: no cover - runs only where CUDA and tensorrt exist
    m = export_model("repvgg-tiny", out_dir=tmp_path, options=ExportOptions(formats=("tensorrt",),
                     precisions=("fp32", "fp16", "int8"), calib_count=8, fidelity_count=4))
    for a in m["artifacts"]:
        assert a["engine"]["status"] == "built" and Path(a["engine"]["path"]).stat().st_size > 0
        assert a["engine"]["build_seconds"] > 0 and a["engine"]["tensorrt"]


def test_format_is_registered_like_any_other():
    f = get_format("tensorrt")
    assert f.capability.precisions == ("fp32", "fp16", "int8") and f.runs_here
    assert format_for_path("x_int8.trt.onnx").name == "tensorrt" and format_for_path("x_int8.onnx").name == "onnx"


def test_dashboard_offers_tensorrt_and_writes_it_into_the_sweep(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "reports"))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "reports").mkdir()
    at = AppTest.from_file(str(Path(__file__).parents[1] / "workbench" / "app" / "main.py"), default_timeout=180)
    at.run()
    at.switch_page("views/run.py").run()
    assert "tensorrt" in at.multiselect(key="run-formats").options
    assert any("jetson-orin-nano-gpu" in o for o in at.multiselect(key="run-devices").options)
