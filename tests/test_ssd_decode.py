"""SSD: each checkpoint decoded with the default boxes, box coder, NMS rules and preprocessing it
was trained with. Fixtures were made once by the source projects' own code
(tests/fixtures/ssd_decode/generate.py: torchvision 0.28.0, amdegroot/ssd.pytorch 5b0b77f)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.core import load_model, save_state_dict
from workbench.detection import default_boxes, postprocess
from workbench.models.ssd import SSD300_COCO, SSD300_VOC, ours, ssdpytorch, torchvision_ssd

FIX = Path(__file__).parent / "fixtures" / "ssd_decode"
ROOT = Path(__file__).parents[1]


def _sorted(boxes, scores, labels):
    o = np.lexsort((boxes[:, 0], scores, labels))
    return boxes[o], scores[o], labels[o]


@pytest.mark.parametrize("layout,config", [("torchvision", torchvision_ssd(SSD300_COCO)),
                                           ("ssd.pytorch-coco", ssdpytorch(SSD300_COCO, "ssd.pytorch-coco"))])
def test_decoding_matches_the_source_projects_own_postprocess(layout, config):
    z = np.load(FIX / f"{layout}.npz")
    size = int(z["image_size"])
    assert np.abs(default_boxes(config.priors)[:16] - z["priors_head"]).max() < 1e-6
    d = postprocess(z["loc"], z["conf"], config=config)
    ours_b, ours_s, ours_l = _sorted(d.boxes * size, d.scores, d.labels)
    ref_b, ref_s, ref_l = _sorted(z["boxes"], z["scores"], z["labels"])
    assert len(ours_s) == len(ref_s) > 50
    assert (ours_l == ref_l).all()
    assert np.abs(ours_s - ref_s).max() < 1e-5
    assert np.abs(ours_b - ref_b).max() <= 1e-4 * size
    # the same outputs decoded with our own rules give other detections: the configuration matters
    w = postprocess(z["loc"], z["conf"], config=ours(SSD300_VOC))
    assert len(w.scores) != len(ref_s) or np.abs(_sorted(w.boxes * size, w.scores, w.labels)[0] - ref_b).max() > 1


def test_torchvision_default_boxes_differ_from_the_voc_ones_by_what_the_issue_measured():
    tv = default_boxes(torchvision_ssd(SSD300_COCO).priors)
    voc = default_boxes(SSD300_VOC)
    assert tv.shape == voc.shape == (8732, 4)
    assert abs(np.abs(tv[:, 2:] - voc[:, 2:]).max() - 0.087) < 0.002  # widths/heights up to 0.087 apart
    assert np.isclose(tv[0, 2], 0.07) and np.isclose(voc[0, 2], 0.10)


def _ssd300_state_dict(num_classes: int) -> dict:
    torch.manual_seed(0)
    return load_model("ssd300-vgg16", num_classes=num_classes).state_dict()


def test_the_layout_of_a_file_decides_its_configuration(tmp_path):
    from tests.test_checkpoints import _torchvision_ssd300_state_dict

    cases = {"tv.pth": (_torchvision_ssd300_state_dict(91), "torchvision"),
             "voc.pth": (_ssd300_state_dict(21), "ssd.pytorch-voc"),
             "coco.pth": (_ssd300_state_dict(81), "ssd.pytorch-coco")}
    for name, (sd, layout) in cases.items():
        torch.save(sd, tmp_path / name)  # as the source project writes it: a plain state dict
        m = load_model("ssd300-vgg16", weights=tmp_path / name)
        assert m.decode_config.layout == layout, (name, m.decode_note)
    tv = load_model("ssd300-vgg16", weights=tmp_path / "tv.pth").decode_config
    assert tv.channel_order == "RGB" and tv.pixel_scale == 1.0 and np.allclose(tv.mean, (123, 117, 104), atol=0.01)
    voc = load_model("ssd300-vgg16", weights=tmp_path / "voc.pth").decode_config
    assert voc.channel_order == "BGR" and voc.mean == (104.0, 117.0, 123.0) and voc.priors == SSD300_VOC
    # SSD512: neither project ships one, so ours is kept, and the note says so
    torch.manual_seed(0)
    torch.save(load_model("ssd512-vgg16").state_dict(), tmp_path / "s512.pth")
    m = load_model("ssd512-vgg16", weights=tmp_path / "s512.pth")
    assert m.decode_config.layout == "ours" and "ours kept" in m.decode_note


def test_our_files_carry_their_configuration_in_their_metadata(tmp_path):
    from tests.test_checkpoints import _torchvision_ssd300_state_dict

    torch.save(_torchvision_ssd300_state_dict(91), tmp_path / "tv.pth")
    m = load_model("ssd300-vgg16", weights=tmp_path / "tv.pth")
    for suffix in (".safetensors", ".pth"):
        p = save_state_dict(m, tmp_path / f"ours{suffix}")
        again = load_model("ssd300-vgg16", weights=p)
        assert again.decode_config == m.decode_config and again.decode_note == "stored in the weights' metadata"
    sd = torch.load(tmp_path / "ours.pth", weights_only=True)  # still a plain state dict for other tools' loaders
    assert all(isinstance(v, torch.Tensor) for k, v in sd.items() if not k.startswith("_workbench"))


@pytest.fixture(scope="module")
def trained_ssd(tmp_path_factory):
    from workbench.train import TrainConfig, train

    out = tmp_path_factory.mktemp("ssd") / "ssd-tiny.safetensors"
    # a short run (CI time): its mAP is small but real; the note quotes a longer run's figures
    s = train("ssd-tiny", "builtin-det", out=out, config=TrainConfig(epochs=3, train_limit=128, eval_limit=100, lr=3e-3))
    return out, s


def test_trained_ssd_reloads_to_the_same_map_and_another_layout_gives_another(trained_ssd):
    from workbench.evaluate import evaluate_torch

    path, summary = trained_ssd
    from workbench.checkpoints import read_metadata

    stored = json.loads(read_metadata(path)["workbench_decode"])
    assert stored["layout"] == "ours"
    again = evaluate_torch(load_model("ssd-tiny", weights=path), "builtin-det", 100)
    assert again["decode"] == "ours" and again["map50"] == summary["eval"]["map50"] > 0
    forced = evaluate_torch(load_model("ssd-tiny", weights=path, decode="ssd.pytorch-voc"), "builtin-det", 100)
    assert forced["decode"] == "ssd.pytorch-voc" and forced["map50"] != again["map50"]
    print(f"ssd-tiny mAP@0.5: {again['map50']:.4f} with its stored configuration (ours), "
          f"{forced['map50']:.4f} forced to ssd.pytorch-voc")


def test_info_and_eval_show_which_configuration_is_in_use(trained_ssd):
    path, _ = trained_ssd
    env = {"PYTHONPATH": str(ROOT)}
    info = subprocess.run([sys.executable, "-m", "workbench.cli", "info", "ssd-tiny", "--weights", str(path)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert info.returncode == 0, info.stderr
    assert "decode_source   stored in the weights' metadata" in info.stdout and "decode          ours:" in info.stdout
    forced = subprocess.run([sys.executable, "-m", "workbench.cli", "info", "ssd-tiny", "--weights", str(path),
                             "--decode", "torchvision", "--json"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, **env})
    d = json.loads(forced.stdout)
    assert d["decode_config"]["layout"] == "torchvision" and "forced" in d["decode_source"]
    bad = subprocess.run([sys.executable, "-m", "workbench.cli", "info", "ssd-tiny", "--decode", "yolo"],
                         capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert bad.returncode != 0 and "unknown decode layout 'yolo'" in bad.stderr and "Traceback" not in bad.stderr


def test_dashboard_shows_the_decode_configuration(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "reports"))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "reports").mkdir()
    at = AppTest.from_file(str(ROOT / "workbench" / "app" / "main.py"), default_timeout=180)
    at.run()
    at.selectbox(key="zoo-model").set_value("ssd-tiny").run()
    at.button(key="zoo-use").click().run()
    assert not at.exception
    assert any("Decoding: ours: 1520 default boxes" in i.value for i in at.info), [i.value for i in at.info]
