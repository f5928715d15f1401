"""Checkpoint loading: every layout users hold, wrong files, and code-carrying pickles."""
from __future__ import annotations

import os
import pickle
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import save_file

from workbench.core import load_model
from workbench.checkpoints import detect_layout, read_state_dict
from workbench.errors import CheckpointError, UnsafeCheckpointError
from workbench.registry import create_model
from workbench.reparam import reparameterize_model

from .conftest import randomize_bn


def _same_outputs(a, b, size):
    x = torch.randn(1, 3, size, size)
    ya, yb = a(x), b(x)
    if isinstance(ya, tuple):
        return all(torch.allclose(p, q, atol=1e-6) for p, q in zip(ya, yb))
    ya = ya["main"] if isinstance(ya, dict) else ya
    yb = yb["main"] if isinstance(yb, dict) else yb
    return torch.allclose(ya, yb, atol=1e-6)


def test_official_repvgg_train_file_with_wrappers(tmp_path):
    src = randomize_bn(create_model("repvgg-tiny", num_classes=5))
    wrapped = {"epoch": 3, "state_dict": OrderedDict(("module." + k, v) for k, v in src.state_dict().items())}
    p = tmp_path / "RepVGG-tiny-deploy.pth"  # a misleading name: the keys decide
    torch.save(wrapped, p)
    m = load_model("repvgg-tiny", weights=p)
    assert m.model_info.num_classes == 5 and hasattr(m.stage0, "rbr_dense")
    assert _same_outputs(src, m, 64)


def test_official_repvgg_deploy_file(tmp_path):
    src = reparameterize_model(randomize_bn(create_model("repvgg-tiny")))
    p = tmp_path / "train.pth"
    torch.save({"model": src.state_dict()}, p)
    assert detect_layout(read_state_dict(p)) == "repvgg-deploy"
    m = load_model("repvgg-tiny", weights=p)
    assert hasattr(m.stage0, "rbr_reparam")
    assert _same_outputs(src, m, 64)


def test_repvggplus_train_and_deploy(tmp_path):
    src = randomize_bn(create_model("repvggplus-tiny"))
    torch.save(src.state_dict(), tmp_path / "t.pth")
    assert detect_layout(read_state_dict(tmp_path / "t.pth")) == "repvggplus-train"
    assert _same_outputs(src, load_model("repvggplus-tiny", weights=tmp_path / "t.pth"), 64)
    dep = reparameterize_model(src)
    torch.save(dep.state_dict(), tmp_path / "d.pth")
    assert detect_layout(read_state_dict(tmp_path / "d.pth")) == "repvggplus-deploy"
    assert _same_outputs(dep, load_model("repvggplus-tiny", weights=tmp_path / "d.pth"), 64)


@pytest.mark.parametrize("name,layout", [("vgg-tiny-bn", "torchvision-vgg"),
                                         ("resnet-tiny", "torchvision-resnet"),
                                         ("mobilenet-v2", "torchvision-mobilenet-v2")])
def test_torchvision_classifiers_safetensors(tmp_path, name, layout):
    src = randomize_bn(create_model(name, num_classes=3))
    p = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(p))
    sd = read_state_dict(p)
    assert detect_layout(sd) == layout
    m = load_model(name, weights=p)
    assert _same_outputs(src, m, 32 if name != "mobilenet-v2" else 64)


def _torchvision_ssd300_state_dict(num_classes=21):
    """Build a state dict named exactly as torchvision's ssd300_vgg16 names it."""
    import torch.nn as nn

    sd = OrderedDict()

    def conv(prefix, cin, cout, k):
        c = nn.Conv2d(cin, cout, k)
        sd[prefix + ".weight"], sd[prefix + ".bias"] = c.weight.data, c.bias.data

    cfg = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256),
           (14, 256, 256), (17, 256, 512), (19, 512, 512), (21, 512, 512)]
    for i, cin, cout in cfg:
        conv(f"backbone.features.{i}", cin, cout, 3)
    sd["backbone.scale_weight"] = torch.rand(512) * 20
    for i in (1, 3, 5):
        conv(f"backbone.extra.0.{i}", 512, 512, 3)
    conv("backbone.extra.0.7.1", 512, 1024, 3)
    conv("backbone.extra.0.7.3", 1024, 1024, 1)
    for k, (cin, mid, out) in enumerate([(1024, 256, 512), (512, 128, 256), (256, 128, 256), (256, 128, 256)], 1):
        conv(f"backbone.extra.{k}.0", cin, mid, 1)
        conv(f"backbone.extra.{k}.2", mid, out, 3)
    for j, (c, b) in enumerate(zip([512, 1024, 512, 256, 256, 256], [4, 6, 6, 6, 4, 4])):
        conv(f"head.classification_head.module_list.{j}", c, b * num_classes, 3)
        conv(f"head.regression_head.module_list.{j}", c, b * 4, 3)
    return sd


def test_ssd300_torchvision_layout(tmp_path):
    sd = _torchvision_ssd300_state_dict(91)
    p = tmp_path / "ssd300_vgg16_coco.pth"
    torch.save(sd, p)
    assert detect_layout(read_state_dict(p)) == "ssd-torchvision"
    m = load_model("ssd300-vgg16", weights=p)
    assert m.model_info.num_classes == 91
    assert torch.equal(m.vgg[31].weight, sd["backbone.extra.0.7.1.weight"])  # dilated conv6
    assert torch.equal(m.L2Norm.weight, sd["backbone.scale_weight"])
    assert torch.equal(m.conf[5].bias, sd["head.classification_head.module_list.5.bias"])
    assert torch.equal(m.extras[7].weight, sd["backbone.extra.4.2.weight"])


def test_ssd300_ssdpytorch_layout(tmp_path):
    src = create_model("ssd300-vgg16")
    sd = src.state_dict()
    assert {"vgg.0.weight", "vgg.31.weight", "vgg.33.weight", "L2Norm.weight", "extras.7.bias",
            "loc.5.weight", "conf.0.weight"} <= set(sd)
    p = tmp_path / "ssd300_mAP_77.43_v2.pth"
    torch.save(sd, p)
    assert detect_layout(read_state_dict(p)) == "ssd-pytorch"
    m = load_model("ssd300-vgg16", weights=p)
    assert all(torch.equal(sd[k], v) for k, v in m.state_dict().items())


def test_wrong_file_names_keys_and_the_model_that_fits(tmp_path):
    p = tmp_path / "a0.pth"
    torch.save(create_model("repvgg-tiny", num_classes=4).state_dict(), p)
    with pytest.raises(CheckpointError) as e:
        load_model("vgg-tiny", weights=p)
    msg = str(e.value)
    assert "\n" not in msg
    assert "missing" in msg and "features.0.weight" in msg
    assert "unexpected" in msg and "stage0.rbr_dense.conv.weight" in msg
    assert "fits repvgg-tiny --num-classes 4" in msg


def test_misshaped_keys_are_named(tmp_path):
    p = tmp_path / "w.pth"
    torch.save(create_model("repvgg-tiny", num_classes=4).state_dict(), p)
    with pytest.raises(CheckpointError, match=r"mis-shaped 2 \(linear.weight: file \[4, 64\] vs model \[6, 64\]"):
        load_model("repvgg-tiny", weights=p, num_classes=6)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['EVIL_MARKER']}",))


def test_pickle_with_code_is_refused_without_running(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    p = tmp_path / "evil.pth"
    with open(p, "wb") as f:
        pickle.dump({"state_dict": {"w": _Evil()}}, f)
    torch.save({"w": torch.zeros(1), "x": _Evil()}, tmp_path / "evil2.pt")
    for path in (p, tmp_path / "evil2.pt"):
        with pytest.raises(UnsafeCheckpointError, match="refusing to load"):
            read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize("content,suffix,match", [
    (b"", ".pth", "empty"),
    (b"PK\x03\x04garbage", ".pth", "not a readable PyTorch file"),
    (b"\x00\x01\x02", ".safetensors", "not a readable .safetensors"),
    (b"abc", ".onnx", "unsupported weights format"),
])
def test_broken_files(tmp_path, content, suffix, match):
    p = tmp_path / ("w" + suffix)
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match=match):
        read_state_dict(p)


def test_truncated_file(tmp_path):
    p = tmp_path / "w.pth"
    torch.save(create_model("vgg-tiny").state_dict(), p)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_state_dict(p)


def test_missing_file_and_no_tensors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth")
    torch.save({"epoch": 1, "lr": 0.1}, tmp_path / "meta.pth")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        read_state_dict(tmp_path / "meta.pth")
