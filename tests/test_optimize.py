"""Structured pruning: really fewer channels, exact re-parameterization, files that load and export."""
from __future__ import annotations

import json

import pytest
import torch

from workbench.api import load_model, save_state_dict
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
    size = m.workbench_input_size
    r = compare_outputs(m, reparameterize_model(m), torch.randn(1, 3, size, size))
    assert r.relative_max_diff <= 1e-5 and r.cosine >= 0.999999


def test_pruned_file_round_trips_and_exports(tmp_path, capsys):
    w = tmp_path / "pruned.safetensors"
    assert main(["optimize", "repvgg-tiny", "--prune", "0.3", "--out", str(w), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["macs_reduction"] >= 0.25 and out["reparam_after_pruning"]["cosine"] >= 0.999999
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
