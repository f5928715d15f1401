"""Structured pruning: really fewer channels, exact re-parameterization, files that load and export."""
from __future__ import annotations

import json

import pytest
import torch

from workbench.core import load_model, save_state_dict
from workbench.cli import main
from workbench.errors import CheckpointError, ConfigError
from workbench.optimize.prune import prune_channels
from workbench.registry import create_model
from workbench.reparam import compare_outputs, reparameterize_model

from .conftest import randomize_bn


@pytest.mark.parametrize("name", ["repvgg-a0", "repvgg-tiny", "vgg-tiny-bn", "ssd-tiny"])
def test_pruning_30_percent_removes_macs_and_stays_exact(name):
    torch.manual_seed(0)
    m = randomize_bn(create_model(name))
    m, rep = prune_channels(m, 0.3)
    assert rep["macs_reduction"] >= 0.25 and rep["params_after"] < rep["params_before"]
    size = m.model_info.input_size
    r = compare_outputs(m, reparameterize_model(m), torch.randn(1, 3, size, size))
    assert r.relative_max_diff <= 1e-5 and r.cosine >= 0.999999


def test_pruned_file_round_trips_and_exports(tmp_path, capsys):
    w = tmp_path / "pruned.safetensors"
    assert main(["optimize", "repvgg-tiny", "--prune", "0.3", "--out", str(w), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["macs_reduction"] >= 0.25 and out["prune"]["reparam_after_pruning"]["cosine"] >= 0.999999
    m = load_model("repvgg-tiny", weights=str(w))
    assert m.stage1[0].rbr_dense.conv.out_channels < 8
    from workbench.export import ExportOptions, export_model

    man = export_model("repvgg-tiny", out_dir=tmp_path / "x", weights=str(w),
                       options=ExportOptions(formats=("tflite",), precisions=("fp32",), calib_count=2, fidelity_count=2))
    assert man["artifacts"][0]["status"] == "ok" and man["artifacts"][0]["fidelity"]["cosine"] >= 0.99999


def test_pruned_ssd_round_trips(tmp_path):
    torch.manual_seed(0)
    m, _ = prune_channels(randomize_bn(create_model("ssd-tiny")), 0.3)
    p = save_state_dict(m, tmp_path / "ssd.safetensors")
    back = load_model("ssd-tiny", weights=str(p))
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert all(torch.allclose(a, b) for a, b in zip(m(x), back(x)))


def test_pruned_model_needs_safetensors_and_sane_ratio(tmp_path):
    m, _ = prune_channels(create_model("repvgg-tiny"), 0.2)
    with pytest.raises(CheckpointError, match="safetensors"):
        save_state_dict(m, tmp_path / "p.pth")
    with pytest.raises(ConfigError, match="between 0 and 1"):
        prune_channels(create_model("repvgg-tiny"), 1.5)


# --- per-stage ratios, channel rounding, unstructured sparsity ---------------------------------

def test_per_stage_ratio_prunes_only_that_stage():
    m = create_model("repvgg-a0", input_size=64)
    before = {n: c.out_channels for n, c in m.named_modules() if isinstance(c, torch.nn.Conv2d)}
    m, rep = prune_channels(m, 0.0, stages={"stage3": 0.5})
    after = {n: c.out_channels for n, c in m.named_modules() if isinstance(c, torch.nn.Conv2d)}
    changed = {n.split(".")[0] for n in before if before[n] != after[n]}
    assert changed == {"stage3"}, changed
    assert all(c % 8 == 0 for c in after.values())  # rounded to 8 (A0's convs all have >= 32 channels)
    with pytest.raises(ConfigError, match="no submodule 'stage9'"):
        prune_channels(create_model("repvgg-tiny"), 0.1, stages={"stage9": 0.5})


def test_unstructured_sparsity_zeros_weights_keeps_shapes_and_only_compressed_size_shrinks(tmp_path):
    from workbench.optimize.pipeline import optimize_model

    rep = optimize_model("repvgg-tiny", {"sparsity": 0.6}, out=tmp_path / "s.safetensors", input_size=48)
    assert abs(rep["sparsity"]["sparsity"] - 0.6) < 0.01
    assert rep["after"]["params"] == rep["before"]["params"] and rep["macs_reduction"] == 0
    assert rep["after"]["file_gzip_bytes"] < 0.8 * rep["before"]["file_gzip_bytes"]
    assert rep["after"]["file_bytes"] >= 0.95 * rep["before"]["file_bytes"]
    assert "latency does not drop" in rep["note"]
    m = load_model("repvgg-tiny", weights=rep["out"], input_size=48)
    w = torch.cat([p.flatten() for n, p in m.named_parameters() if p.dim() > 1])
    assert float((w == 0).float().mean()) >= 0.59


def test_optimize_pipeline_errors():
    from workbench.optimize.pipeline import validate_optimize

    for bad, msg in (({"prunee": 0.3}, "did you mean: prune"), ({"prune": 1.5}, r"\[0, 0.95\]"),
                     ({"prune": 0.3, "finetune_epochs": 2}, "need data"), ({"qat_epochs": 1}, "need data"),
                     ({}, "nothing to do"), ({"finetune_epochs": 1, "data": "builtin"}, "follows pruning")):
        with pytest.raises(ConfigError, match=msg):
            validate_optimize(bad)


# --- QARepVGG ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["qarepvgg-tiny", "qarepvgg-a0", "qarepvgg-b1g4"])
def test_qarepvgg_reparameterizes_exactly_into_the_repvgg_deploy_shape(name):
    from workbench.core import model_summary

    torch.manual_seed(0)
    m = randomize_bn(create_model(name))
    size = m.model_info.input_size
    d = reparameterize_model(m)
    r = compare_outputs(m, d, torch.randn(2, 3, size, size))
    assert r.relative_max_diff <= 1e-5 and r.cosine >= 0.999999
    assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in d.modules())
    qa, plain = model_summary(name), model_summary(name[2:])
    assert qa["params_deploy"] == plain["params_deploy"] and qa["macs_deploy"] == plain["macs_deploy"]
    assert qa["params"] < plain["params"]  # fewer BNs in the train-time form


# --- quantization: sensitivity, ONNX/TFLite options, QAT ---------------------------------------

def test_sensitivity_ranks_an_outlier_layer_worst():
    from workbench.optimize.quant import sensitivity

    torch.manual_seed(0)
    m = reparameterize_model(randomize_bn(create_model("repvgg-tiny", input_size=32)))
    with torch.no_grad():  # one weight 60x the rest: per-channel INT8 of that channel loses its small weights
        m.stage2[0].rbr_reparam.weight[3].mul_(0.01)
        m.stage2[0].rbr_reparam.weight[3, 0, 1, 1] = 5.0
    x = torch.randn(48, 3, 32, 32)
    s = sensitivity(m, x[:16], x[16:], per_channel=False)
    assert s["layers"][0]["layer"] == "stage2.0.rbr_reparam"
    assert s["layers"][0]["sqnr_db"] < s["layers"][-1]["sqnr_db"]
    assert {r["layer"] for r in s["layers"]} == {n for n, mm in m.named_modules()
                                                  if isinstance(mm, (torch.nn.Conv2d, torch.nn.Linear))}


def test_onnx_int8_options_per_tensor_and_keep_float(tmp_path):
    import onnx
    from onnx import numpy_helper

    from workbench.export import ExportOptions, export_model

    man = export_model("repvgg-tiny", out_dir=tmp_path / "e", input_size=32,
                       options=ExportOptions(formats=("onnx",), precisions=("int8",), calib_count=8, fidelity_count=4,
                                             quant={"per_channel": False, "calib_method": "percentile",
                                                    "keep_float": ["first", "last"]}))
    a = man["artifacts"][0]
    assert a["status"] == "ok", a
    assert man["quantization"]["keep_float"] == ["stage0.rbr_reparam", "linear"]
    g = onnx.load(a["path"]).graph
    producers = {o: n for n in g.node for o in n.output}
    convs = [n for n in g.node if n.op_type in ("Conv", "Gemm")]
    first, last = convs[0], convs[-1]
    for n in (first, last):  # float: weight straight from an initializer, no DequantizeLinear
        assert n.input[1] not in producers or producers[n.input[1]].op_type != "DequantizeLinear", n.name
    mid = convs[1]
    dq = producers[mid.input[1]]
    assert dq.op_type == "DequantizeLinear"
    scale = {i.name: numpy_helper.to_array(i) for i in g.initializer}[dq.input[1]]
    assert scale.size == 1  # per-tensor


def test_keep_float_unknown_layer_is_one_line():
    from workbench.export import ExportOptions

    with pytest.raises(ConfigError, match="calib_method 'minmx'.*did you mean: minmax"):
        ExportOptions(quant={"calib_method": "minmx"}).validate()
    with pytest.raises(ConfigError, match="unknown key 'keep_flaot'"):
        ExportOptions(quant={"keep_flaot": []}).validate()
    from workbench.optimize.quant import resolve_keep_float

    with pytest.raises(ConfigError, match="no quantizable layer 'stage7'"):
        resolve_keep_float(create_model("repvgg-tiny"), ["stage7"])


def test_tflite_int16x8_variant_is_made_and_flagged(tmp_path):
    from exporters import get_format

    tflite_traps = get_format("tflite").latency_warnings
    from workbench.export import ExportOptions, export_model

    man = export_model("repvgg-tiny", out_dir=tmp_path / "e", input_size=32,
                       options=ExportOptions(formats=("tflite",), precisions=("int8", "int16x8"), calib_count=8,
                                             fidelity_count=8))
    i8, a = man["artifacts"]
    assert a["status"] == "ok" and i8["status"] == "ok", a
    assert a["fidelity"]["cosine"] > 0.99 and "16-bit activations" in " ".join(a["notes"])
    assert any("int16" in t for t in tflite_traps(a["path"]))
    assert not any("int16" in t for t in tflite_traps(i8["path"]))


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory):
    from workbench.train import TrainConfig, train

    d = tmp_path_factory.mktemp("trained")
    out = d / "repvgg-tiny.pth"
    res = train("repvgg-tiny", "builtin", out=out, input_size=48, config=TrainConfig(epochs=20, lr=3e-3, eval_limit=200))
    assert res["eval"]["top1"] > 0.5  # it learned something (5 classes, chance 0.2)
    return out


def test_qat_returns_a_plain_deploy_model_that_quantizes_well(trained_tiny, tmp_path):
    from workbench.optimize.pipeline import optimize_model
    from workbench.optimize.quant import QuantSim

    rep = optimize_model("repvgg-tiny", {"qat_epochs": 1, "data": "builtin"}, out=tmp_path / "q.safetensors",
                         weights=str(trained_tiny), input_size=48)
    assert rep["qat"]["epochs"] == 1 and len(rep["qat"]["history"]) == 1
    m = load_model("repvgg-tiny", weights=rep["out"], input_size=48)
    assert not any(isinstance(x, (QuantSim, torch.nn.BatchNorm2d)) for x in m.modules())
    assert rep["after"]["params"] == rep["before"]["params"]
    assert rep["qat"]["history"][0]["train_top1_fakequant"] > 0.5


def test_quant_study_report(trained_tiny, tmp_path):
    from workbench.studies.int8_study import quant_study

    st = quant_study("repvgg-tiny", str(trained_tiny), tmp_path / "study", input_size=48, eval_limit=200, keep_worst=1,
                     qat_epochs=1, qa_model="qarepvgg-tiny", qa_epochs=3, formats=("onnx",))
    md = (tmp_path / "study" / "study.md").read_text()
    labels = [v["variant"] for v in st["variants"]]
    assert labels[0].startswith("PTQ") and any("QAT" in v for v in labels) and any("qarepvgg-tiny" in v for v in labels)
    int8 = [r for v in st["variants"] for r in v["rows"] if r.get("precision") == "int8" and "top1" in r]
    assert len(int8) == 4 and all(0 <= r["top1"] <= 1 and r["top1_ci95"][0] <= r["top1"] <= r["top1_ci95"][1] for r in int8)
    assert all("gap_pp" in r and isinstance(r["within_1pp"], bool) for r in int8)
    assert "within 1 pp" in st["verdict"] or "did not" in st["verdict"] or "no fix" in st["verdict"]
    assert "## Per-layer sensitivity" in md and "stage0.rbr_reparam" in md and "(all layers)" in md
    assert len(st["sensitivity"]["layers"]) == 7


# --- optimization inside sweeps -----------------------------------------------------------------

def test_sweep_optimize_key_errors(tmp_path):
    from workbench.sweep import load_sweep

    p = tmp_path / "s.toml"
    p.write_text('[[models]]\nname = "repvgg-tiny"\noptimize = {prune = 0.3, finetune_epochs = 1}\n')
    with pytest.raises(ConfigError, match=r"models\[0\].optimize: fine-tuning and QAT need data"):
        load_sweep(p)
    p.write_text('[[models]]\nname = "repvgg-tiny"\noptimize = {prun = 0.3}\n')
    with pytest.raises(ConfigError, match="did you mean: prune"):
        load_sweep(p)
    p.write_text('[quantization]\ncalib_method = "kl"\n[[models]]\nname = "repvgg-tiny"\n')
    with pytest.raises(ConfigError, match=r"\[quantization\]\.calib_method"):
        load_sweep(p)
    p.write_text('[[models]]\nname = "repvgg-tiny"\n[[models]]\nname = "repvgg-tiny"\n')
    with pytest.raises(ConfigError, match="different label"):
        load_sweep(p)


def test_sweep_with_optimized_variant(tmp_path, monkeypatch):
    from workbench.sweep import run_sweep

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache" / "exports"))
    p = tmp_path / "s.toml"
    p.write_text("""name = "opt"
formats = ["onnx"]
precisions = ["fp32"]
devices = ["host"]
[data]
calib_count = 4
[export]
fidelity_count = 2
[latency]
warmup = 2
min_runs = 5
min_seconds = 0.05
repeats = 2
[[models]]
name = "repvgg-a0"
input_size = 32
[[models]]
name = "repvgg-a0"
input_size = 32
optimize = {prune = 0.3}
""")
    res = run_sweep(str(p), tmp_path / "out")
    run = res["run"]
    assert [m["model"] for m in run["models"]] == ["repvgg-a0", "repvgg-a0+p0.3"]
    opt = run["models"][1]["optimize"]
    assert opt["macs_reduction"] >= 0.25 and run["models"][1]["macs_deploy"] < run["models"][0]["macs_deploy"]
    assert {r["model"] for r in run["latency"]} == {"repvgg-a0", "repvgg-a0+p0.3"}
    assert "## Optimization" in (tmp_path / "out" / "report.md").read_text()
    again = run_sweep(str(p), tmp_path / "out2")
    assert again["stats"]["exported_now"] == 0  # optimized weights and their exports come from the cache


def test_tflite_int8_keep_float_layers_stay_float(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from workbench.export import ExportOptions, export_model

    man = export_model("repvgg-tiny", out_dir=tmp_path / "e", input_size=32,
                       options=ExportOptions(formats=("tflite",), precisions=("int8",), calib_count=8, fidelity_count=4,
                                             quant={"keep_float": ["first", "last"]}))
    a = man["artifacts"][0]
    assert a["status"] == "ok", a
    assert any("kept in float: stage0.rbr_reparam, linear" in n for n in a["notes"])
    it = Interpreter(model_path=a["path"])
    dtype = {t["index"]: t["dtype"].__name__ for t in it.get_tensor_details()}
    ops = [(o["op_name"], dtype[o["outputs"][0]]) for o in it._get_ops_details()
           if o["op_name"] in ("CONV_2D", "FULLY_CONNECTED")]
    assert ops[0] == ("CONV_2D", "float32") and ops[-1] == ("FULLY_CONNECTED", "float32")
    assert all(d == "int8" for _, d in ops[1:-1]), ops


def test_cli_sensitivity_table(capsys):
    assert main(["optimize", "repvgg-tiny", "--input-size", "32", "--sensitivity", "--eval-limit", "40", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    sqnr = [r["sqnr_db"] for r in s["layers"]]
    assert len(sqnr) == 7 and sqnr == sorted(sqnr)
    assert s["data"]["split"] == "eval" and s["data"]["images"] == 40 and s["calib_images"] == 64
    assert "top1" not in s["all_layers"]  # random weights with 10 classes vs 5 built-in classes: no labels used
