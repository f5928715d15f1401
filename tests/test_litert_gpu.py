"""Every .tflite on LiteRT's real GPU accelerator (WebGPU over software Vulkan here), and which
runtimes load it (op versions, proved by loading in tflite-runtime 2.14)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from exporters.litert_gpu import NOT_AVAILABLE, SOFTWARE_LABEL, parse_log
from exporters.tflite_compat import LOAD_CHECK_RUNTIME, loads_in, runtime_compat, tflite214_python, verdict_for
from workbench.artifact_run import ArtifactRunError, run_artifact
from workbench.export import ExportOptions, export_model
from exporters.records import Status

# recorded from ai-edge-litert 2.3.0 compiling a 16x8 file on llvmpipe (trimmed)
LOG_16X8 = """INFO: [delegate_webgpu.cc:342] Create WebGPU environment (use_low_power=0, enable_host_mapped_pointer=1)
I0000 00:00:1796457257.189308    2990 environment.cc:532] Selected adapter: llvmpipe (LLVM 15.0.6, 256 bits), arch=software, vendor=mesa, backend=Vulkan, adapterType=CPU / Software
ERROR: Following operations are not supported by GPU delegate:
CONV_2D: Tensor type(INT16) is not supported. wb__stage0__rbr_reparam/Pad
CONV_2D: Tensor type(INT16) is not supported. wb__stage1__0__rbr_reparam/Pad
DEQUANTIZE: Unsupported dequantization type.
QUANTIZE: Tensor type(INT16) is not supported. serving_default_input:0_int16
1 operations will run on the GPU, and the remaining 24 operations will run on the CPU.
E0000 00:00:1796457257.203506    2990 environment.cc:105] Validation error: Error while parsing WGSL: :20:27 error: no matching constructor
"""
LOG_NO_DEVICE = """Warning: vkCreateInstance: Found no drivers!
ERROR: [delegate_webgpu.cc:359] Failed to initialize WebGPU environment: INTERNAL: No adapters found
"""


def test_parse_log_reads_device_placement_and_refusals():
    p = parse_log(LOG_16X8)
    assert p["device"]["name"] == "llvmpipe (LLVM 15.0.6, 256 bits)" and p["device"]["backend"] == "Vulkan"
    assert p["device"]["software"] is True and p["device"]["type"] == "CPU / Software"
    assert (p["gpu_ops"], p["cpu_ops"]) == (1, 24)
    assert [f["op"] for f in p["fallback"]] == ["CONV_2D", "CONV_2D", "DEQUANTIZE", "QUANTIZE"]
    assert p["fallback"][0] == {"op": "CONV_2D", "reason": "Tensor type(INT16) is not supported.",
                                "node": "wb__stage0__rbr_reparam/Pad"}
    assert p["shader_errors"] and "WGSL" in p["shader_errors"][0] and not p["no_adapter"]
    q = parse_log(LOG_NO_DEVICE)
    assert q["no_adapter"] and q["device"] is None


@pytest.fixture(scope="module")
def gpu_exports(tmp_path_factory):
    """repvgg-tiny, ssd-tiny and vgg-tiny at fp32 / fp16 / int8, each run on the CPU and the GPU."""
    out = tmp_path_factory.mktemp("gpu")
    opts = ExportOptions(formats=("tflite",), precisions=("fp32", "fp16", "int8"), calib_count=16, fidelity_count=8)
    rows = {}
    for m in ("repvgg-tiny", "ssd-tiny", "vgg-tiny"):
        for a in export_model(m, out_dir=out / m, options=opts)["artifacts"]:
            rows[(m, a["precision"])] = a
    first = next(iter(rows.values()))["gpu"]
    if first["status"] == "not available":
        pytest.skip(f"{first['reason']} (CI installs it: bash scripts/install_vulkan.sh)")
    return rows


def test_every_tiny_file_runs_on_the_gpu_accelerator(gpu_exports):
    for (m, prec), a in gpu_exports.items():
        assert a["status"] == "ok", (m, prec, a["reason"])
        g = a["gpu"]
        assert g["status"] in ("ok", "gate missed"), (m, prec, g)
        assert g["device"]["backend"] == "Vulkan" and g["device"]["name"]
        assert isinstance(g["fully_accelerated"], bool)
        assert g["fully_accelerated"] == (g["gpu_ops"] == g["total_ops"] and g["cpu_ops"] == 0), (m, prec, g)
        # these three graphs are plain conv/pool/FC: every op goes to the GPU
        assert g["fully_accelerated"] and g["fallback_by_op"] == {}, (m, prec, g)
        assert g["rules_agree"] is True, (m, prec, g.get("rules_disagreement"))
        assert g["time"]["p50_ms"] > 0 and g["time"]["runs"] == 10
        if g["device"]["software"]:
            assert g["time"]["label"] == SOFTWARE_LABEL and g["time"]["device_latency"] is False
        fid = g["fidelity"]
        assert fid["images"] == 8 and {"cosine", "max_abs_diff", "psnr_db"} <= set(fid)
        assert "cosine" in g["vs_cpu"]  # against the CPU run of the same file: recorded
        if prec in ("fp32", "fp16"):
            assert fid["cosine"] >= 0.999, (m, prec, fid["cosine"])
            assert g["vs_cpu"]["cosine"] >= 0.999, (m, prec, g["vs_cpu"]["cosine"])
            assert g["gate"]["passed"] is True and g["status"] == "ok"
        else:  # int8 on random weights: not gated against PyTorch (as on the CPU), only "not worse than the CPU run"
            assert "against PyTorch not gated" in g["gate"]["reason"] and set(g["gate"]["checks"]) == {"cosine_vs_cpu_run"}
            assert g["gate"]["passed"] is True, (m, prec, g["gate"])
        if m == "ssd-tiny":
            assert "detection_agreement" in fid
        else:
            assert "top1_agreement" in fid


def _lrn_file(tmp_path: Path) -> Path:
    """A file with LOCAL_RESPONSE_NORMALIZATION (VGG's A-LRN config uses it), which the accelerator refuses."""
    code = ("import tensorflow as tf, sys\n"
            "f = tf.function(lambda x: tf.nn.relu(tf.nn.local_response_normalization(tf.nn.conv2d(x, tf.ones([3, 3, 3, 4]) * 0.1, 1, 'SAME'))),\n"
            "                input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])\n"
            "open(sys.argv[1], 'wb').write(tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f).convert())\n")
    p = tmp_path / "lrn.tflite"
    subprocess.run([sys.executable, "-c", code, str(p)], check=True, capture_output=True)
    return p


def test_an_op_the_gpu_refuses_is_reported_not_hidden(tmp_path):
    from exporters.gpu_delegate import analyze

    p = _lrn_file(tmp_path)
    x = np.random.RandomState(0).rand(2, 3, 8, 8).astype(np.float32)
    try:
        gpu_out, extra = run_artifact(p, "tflite", x, accelerator="gpu", timeout_s=120)
    except ArtifactRunError as e:
        if e.status == Status.SKIPPED:
            pytest.skip(str(e))
        raise
    r = extra["accelerator_run"]
    assert r["fully_accelerated"] is False
    assert r["fallback_by_op"] == {"LOCAL_RESPONSE_NORMALIZATION": 1}
    assert r["fallback_reasons"]["LOCAL_RESPONSE_NORMALIZATION"] == "Operation is not supported."
    assert r["cpu_ops"] >= 1 and r["gpu_ops"] == r["total_ops"] - r["cpu_ops"]
    assert r["fallback_found_by"].startswith("LiteRT's compile log")
    cpu_out, _ = run_artifact(p, "tflite", x, timeout_s=120)
    a, b = cpu_out[0].ravel(), gpu_out[0].ravel()
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.999  # the mixed GPU/CPU run still computes the file
    assert analyze(str(p))["fallback_by_op"] == {"LOCAL_RESPONSE_NORMALIZATION": 1}  # the rule table agrees


def test_no_vulkan_device_is_one_line_and_the_export_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("VK_DRIVER_FILES", str(tmp_path / "none.json"))
    monkeypatch.setenv("VK_ICD_FILENAMES", str(tmp_path / "none.json"))
    opts = ExportOptions(formats=("tflite",), precisions=("fp32",), calib_count=8, fidelity_count=4)
    a = export_model("repvgg-tiny", out_dir=tmp_path / "x", options=opts)["artifacts"][0]
    assert a["status"] == "ok" and a["fidelity"]["cosine"] > 0.9999
    assert a["gpu"]["status"] == "not available" and a["gpu"]["reason"] == NOT_AVAILABLE


def test_a_gpu_crash_is_a_failed_gpu_row_never_a_lost_export(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_FAULT", "crash:run-gpu:tflite")
    opts = ExportOptions(formats=("onnx", "tflite"), precisions=("fp32",), calib_count=8, fidelity_count=4)
    rows = {a["format"]: a for a in export_model("repvgg-tiny", out_dir=tmp_path / "x", options=opts)["artifacts"]}
    assert rows["tflite"]["status"] == "ok" and Path(rows["tflite"]["path"]).exists()
    assert rows["tflite"]["gpu"]["status"] == "failed" and rows["tflite"]["gpu"]["failure"] == "crash"
    assert rows["tflite"]["gpu"]["reason"] == "repvgg-tiny_fp32.tflite: runtime process killed by SIGABRT"
    assert rows["onnx"]["status"] == "ok" and rows["onnx"]["gpu"] is None


@pytest.fixture(scope="module")
def compat_exports(tmp_path_factory):
    if tflite214_python() is None:
        pytest.skip("no tflite-runtime 2.14 environment (make setup builds .venv-tflite214)")
    out = tmp_path_factory.mktemp("compat")
    # 100 classes: the classifier's weights are big enough for dynamic-range quantization
    opts = ExportOptions(formats=("tflite",), precisions=("fp32", "fp16", "int8", "int8-dynamic", "int16x8"),
                         calib_count=8, fidelity_count=4)
    m = export_model("repvgg-tiny", out_dir=out / "plain", num_classes=100, options=opts)
    c = export_model("repvgg-tiny", out_dir=out / "compat", num_classes=100,
                     options=ExportOptions(formats=("tflite",), precisions=("int8-dynamic",), calib_count=8,
                                           fidelity_count=4, compat="tflite-runtime==2.14"))
    return {a["precision"]: a for a in m["artifacts"]}, c["artifacts"][0]


def test_oldest_runtime_agrees_with_what_tflite_runtime_214_loaded(compat_exports):
    rows, _ = compat_exports
    assert set(rows) == {"fp32", "fp16", "int8", "int8-dynamic", "int16x8"}
    for prec, a in rows.items():
        c = a["runtime_compat"]
        chk = c["checked"][LOAD_CHECK_RUNTIME]
        assert chk["predicted"] == loads_in(c, "2.14.0")
        assert chk["agrees"] is True, (prec, c["label"], chk)
        # and independently of the recorded check: load it again now
        r = subprocess.run([tflite214_python(), "-c", "import sys; from tflite_runtime.interpreter import Interpreter as I;"
                            " I(model_path=sys.argv[1]).allocate_tensors()", a["path"]], capture_output=True, text=True)
        assert (r.returncode == 0) == chk["loads"], (prec, r.stderr[-300:])
    dyn = rows["int8-dynamic"]["runtime_compat"]
    assert dyn["oldest_runtime"] == "2.17.0" and dyn["deciding"] == "FULLY_CONNECTED v12"
    assert dyn["checked"][LOAD_CHECK_RUNTIME]["loads"] is False
    assert "FULLY_CONNECTED' version '12'" in dyn["checked"][LOAD_CHECK_RUNTIME]["error"]
    for prec in ("fp32", "fp16", "int8", "int16x8"):
        assert rows[prec]["runtime_compat"]["checked"][LOAD_CHECK_RUNTIME]["loads"] is True, prec
    # int16 activations: the accelerator refuses the int16 convolutions, and says so per op
    g16 = rows["int16x8"]["gpu"]
    if g16["status"] != "not available":
        assert g16["fully_accelerated"] is False and g16["fallback_by_op"].get("CONV_2D", 0) >= 1
        assert g16["fallback_reasons"]["CONV_2D"] == "Tensor type(INT16) is not supported."
        assert g16["cpu_ops"] > g16["gpu_ops"]


@pytest.mark.slow
def test_full_size_repvgg_a0_on_the_gpu_accelerator(tmp_path):
    opts = ExportOptions(formats=("tflite",), precisions=("fp32", "int8"), calib_count=16, fidelity_count=4)
    rows = {a["precision"]: a for a in export_model("repvgg-a0", out_dir=tmp_path, options=opts)["artifacts"]}
    if rows["fp32"]["gpu"]["status"] == "not available":
        pytest.skip(rows["fp32"]["gpu"]["reason"])
    for prec, a in rows.items():
        g = a["gpu"]
        assert g["fully_accelerated"] is True and g["rules_agree"] is True, (prec, g)
        assert g["gate"]["passed"] is True, (prec, g["gate"])
    assert rows["fp32"]["gpu"]["fidelity"]["cosine"] >= 0.999


def test_compat_makes_a_file_that_loads_and_profiles_flag_the_rest(compat_exports):
    from workbench.bench.measure import estimate_artifact

    rows, fixed = compat_exports
    assert fixed["status"] == "ok" and fixed["runtime_compat"]["checked"][LOAD_CHECK_RUNTIME]["loads"] is True
    assert ("FULLY_CONNECTED", 9) in {(o["op"], o["version"]) for o in fixed["runtime_compat"]["ops"]}
    assert any("--compat tflite-runtime==2.14" in n for n in fixed["notes"])
    # rpi5 names tflite-runtime==2.14: its report flags the file that will not load there
    bad = estimate_artifact(rows["int8-dynamic"]["path"], "rpi5")
    assert bad.runtime_check["loads"] is False and bad.runtime_check["measured"] is True
    assert any("does not load on tflite-runtime==2.14" in w and "--compat" in w for w in bad.warnings)
    good = estimate_artifact(fixed["path"], "rpi5")
    assert good.runtime_check["loads"] is True and not any("does not load" in w for w in good.warnings)
    assert verdict_for(rows["int8-dynamic"]["runtime_compat"], "tflite-runtime==2.18")["loads"] is True


def test_compat_that_cannot_hold_fails_the_row_in_one_line(tmp_path):
    # int16x8 needs no newer op here, so ask for a runtime older than the fp16 file's DEQUANTIZE v3 (1.15)
    opts = ExportOptions(formats=("tflite",), precisions=("fp16",), calib_count=8, fidelity_count=4,
                         compat="tflite-runtime==1.14")
    a = export_model("repvgg-tiny", out_dir=tmp_path / "x", options=opts)["artifacts"][0]
    assert a["status"] == "failed"
    assert "cannot make a fp16 file that loads on tflite-runtime==1.14: DEQUANTIZE v3 needs TFLite 1.15.0" in a["reason"]
    assert "\n" not in a["reason"]


def test_runtime_compat_reads_op_versions_without_running(tmp_path):
    p = _lrn_file(tmp_path)
    c = runtime_compat(str(p), check=False)
    assert {"op": "LOCAL_RESPONSE_NORMALIZATION", "version": 1, "min_runtime": "1.5.0"} in c["ops"]
    assert "checked" not in c and c["oldest_runtime"] and json.dumps(c)


def test_gpu_profile_estimate_uses_the_executed_placement(gpu_exports):
    from workbench.bench.measure import estimate_artifact

    a = gpu_exports[("repvgg-tiny", "fp16")]
    est = estimate_artifact(a["path"], "pixel8-gpu")
    pl = est.basis["placement"]
    assert est.estimated and pl["fully_accelerated"] is True and pl["gpu_ops"] == a["gpu"]["total_ops"]
    assert pl["source"].startswith("executed on LiteRT's GPU accelerator")
