"""The CLI contract scripts rely on (keys, exit codes, one-line errors)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from workbench.cli import main
from workbench.registry import create_model

from .conftest import randomize_bn


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_info_json_contract(capsys):
    code, out, _ = run_cli(capsys, "info", "vgg16", "--num-classes", "10", "--json")
    info = json.loads(out)
    assert code == 0
    assert info["params"] == 134301514
    assert {"name", "params", "params_deploy", "macs", "macs_deploy", "input_size", "outputs"} <= set(info)
    assert info["outputs"] == [[1, 10]]
    _, out, _ = run_cli(capsys, "info", "vgg19", "--num-classes", "10", "--json")
    assert json.loads(out)["params"] == 139611210
    _, out, _ = run_cli(capsys, "info", "ssd300-vgg16", "--num-classes", "21", "--json")
    assert json.loads(out)["params"] == 26285486
    _, out, _ = run_cli(capsys, "info", "ssd512-vgg16", "--num-classes", "21", "--json")
    assert json.loads(out)["params"] == 27188676
    _, out, _ = run_cli(capsys, "info", "repvgg-a0", "--input-size", "224", "--json")
    assert 1.35e9 <= json.loads(out)["macs_deploy"] <= 1.37e9


def test_models_json_lists_zoo(capsys):
    code, out, _ = run_cli(capsys, "models", "repvgg-b1*", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["name"] for r in rows] == ["repvgg-b1", "repvgg-b1g2", "repvgg-b1g4"]
    assert {"name", "task", "params", "params_deploy", "macs"} <= set(rows[0])


def test_reparam_writes_deploy_weights(capsys, tmp_path):
    w = tmp_path / "train.pth"
    torch.save(randomize_bn(create_model("repvgg-tiny", num_classes=3)).state_dict(), w)
    out_file = tmp_path / "deploy.pth"
    code, out, _ = run_cli(capsys, "reparam", "repvgg-tiny", "--weights", str(w), "--out", str(out_file), "--json")
    r = json.loads(out)
    assert code == 0 and out_file.exists()
    assert r["max_abs_diff"] <= 1e-5 * r["max_abs_output"] and r["cosine"] >= 0.999999
    assert r["params_after"] < r["params_before"]
    sd = torch.load(out_file, weights_only=True)
    assert "stage0.rbr_reparam.weight" in sd and not any("rbr_dense" in k for k in sd)


@pytest.mark.parametrize("argv,needle", [
    (["info", "repvgg-ao"], "did you mean"),
    (["info", "ssd300-vgg16", "--input-size", "320"], "300x300"),
    (["reparam", "repvgg-tiny", "--weights", "/nonexistent.pth", "--out", "x.pth"], "does not exist"),
])
def test_errors_are_one_line_exit_2(capsys, argv, needle):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and needle in err


def test_console_script_and_debug_traceback(tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "workbench")
    p = subprocess.run([exe, "info", "nosuchmodel"], capture_output=True, text=True)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and "Traceback" not in p.stderr
    p = subprocess.run([exe, "info", "nosuchmodel"], capture_output=True, text=True,
                       env={**os.environ, "WORKBENCH_DEBUG": "1"})
    assert p.returncode == 2 and "Traceback" in p.stderr
