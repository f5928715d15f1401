"""Contract tests over the whole registry: every model builds, runs and counts what REFERENCE says."""
from __future__ import annotations

import pytest
import torch

from workbench.core import model_summary
from workbench.errors import ModelConfigError, UnknownModelError
from workbench.registry import create_model, get_spec, list_models, register_model

# shared/REFERENCE.md section 1: (train 1000, deploy 1000, train 10, deploy 10)
REPVGG_PARAMS = {
    "repvgg-a0": (9108968, 8309384, 7840778, 7041194),
    "repvgg-a1": (14092264, 12789864, 12824074, 11521674),
    "repvgg-a2": (28210600, 25499944, 26815690, 24105034),
    "repvgg-b0": (15817960, 14339048, 14549770, 13070858),
    "repvgg-b1": (57415016, 51829480, 55386506, 49800970),
    "repvgg-b1g2": (45782376, 41360104, 43753866, 39331594),
    "repvgg-b1g4": (39966056, 36125416, 37937546, 34096906),
    "repvgg-b2": (89022376, 80315112, 86486986, 77779722),
    "repvgg-b2g2": (70846376, 63956712, 68310986, 61421322),
    "repvgg-b2g4": (61758376, 55777512, 59222986, 53242122),
    "repvgg-b3": (123085288, 110960872, 120549898, 108425482),
    "repvgg-b3g2": (96911848, 87404776, 94376458, 84869386),
    "repvgg-b3g4": (83825128, 75626728, 81289738, 73091338),
    "repvgg-d2se": (133334836, 120387572, 130799446, 117852182),
    "repvggplus-l2pse": (146062864, 127151960, 142415704, 124616570),
}
VGG_PARAMS = {  # (1000 classes, 10 classes)
    "vgg11": (132863336, 128807306), "vgg11-lrn": (132863336, 128807306),
    "vgg11-bn": (132868840, 128812810), "vgg13": (133047848, 128991818),
    "vgg16-c": (133638952, 129582922), "vgg16": (138357544, 134301514),
    "vgg16-bn": (138365992, 134309962), "vgg19": (143667240, 139611210),
    "vgg19-bn": (143678248, 139622218),
}
SSD_PARAMS = {  # classes -> params
    "ssd300-vgg16": {21: 26285486, 81: 34305206, 91: 35641826},
    "ssd512-vgg16": {21: 27188676, 81: 36038196, 91: 37513116},
}
BASELINE_PARAMS = {"resnet18": 11689512, "resnet50": 25557032, "mobilenet-v2": 3504872}

USER_NAMED = (["vgg11", "vgg11-lrn", "vgg13", "vgg16-c", "vgg16", "vgg19"]
              + [f"{v}-bn" for v in ["vgg11", "vgg11-lrn", "vgg13", "vgg16-c", "vgg16", "vgg19"]]
              + list(REPVGG_PARAMS) + ["ssd300-vgg16", "ssd512-vgg16", "resnet18", "resnet50",
                                       "mobilenet-v2", "repvgg-tiny", "vgg-tiny", "ssd-tiny"])


def test_zoo_has_every_named_variant():
    names = set(list_models())
    missing = [n for n in USER_NAMED if n not in names]
    assert not missing


def test_wildcards_and_tiny_filter():
    assert set(list_models("repvgg-b1*")) == {"repvgg-b1", "repvgg-b1g2", "repvgg-b1g4"}
    assert "repvgg-tiny" not in list_models("repvgg-*", include_tiny=False)


@pytest.mark.parametrize("name", sorted(REPVGG_PARAMS))
def test_repvgg_params_exact(name):
    s1000, s10 = model_summary(name), model_summary(name, num_classes=10)
    assert (s1000["params"], s1000["params_deploy"], s10["params"], s10["params_deploy"]) == REPVGG_PARAMS[name]


@pytest.mark.parametrize("name", sorted(VGG_PARAMS))
def test_vgg_params_exact(name):
    assert model_summary(name)["params"] == VGG_PARAMS[name][0]
    assert model_summary(name, num_classes=10)["params"] == VGG_PARAMS[name][1]


@pytest.mark.parametrize("name", sorted(SSD_PARAMS))
def test_ssd_params_exact(name):
    for classes, want in SSD_PARAMS[name].items():
        assert model_summary(name, num_classes=classes)["params"] == want


@pytest.mark.parametrize("name", sorted(BASELINE_PARAMS))
def test_baseline_params_exact(name):
    assert model_summary(name)["params"] == BASELINE_PARAMS[name]


def test_macs_against_paper():
    a0 = model_summary("repvgg-a0")
    assert 1.35e9 <= a0["macs_deploy"] <= 1.37e9  # paper: 1.4 G
    # the paper's MACs column (G, deploy, 224): within rounding
    for name, paper in {"repvgg-a1": 2.4, "repvgg-b0": 3.1, "repvgg-b1": 11.8, "repvgg-b1g4": 7.3,
                        "repvgg-b2": 18.4, "repvgg-b3": 26.2, "repvgg-b3g4": 16.1}.items():
        assert abs(model_summary(name)["macs_deploy"] / 1e9 - paper) < 0.1, name


def test_ssd_outputs_and_priors():
    s300 = model_summary("ssd300-vgg16")
    assert s300["outputs"] == [[1, 8732, 4], [1, 8732, 21]]
    s512 = model_summary("ssd512-vgg16")
    assert s512["outputs"] == [[1, 24564, 4], [1, 24564, 21]]


@pytest.mark.parametrize("name", list_models(include_tiny=True))
def test_every_model_builds_and_runs_small(name):
    spec = get_spec(name)
    size = spec.default_input_size if spec.fixed_input_size else max(spec.min_input_size, 32)
    if not spec.tiny and spec.fixed_input_size:  # full SSD: count shapes on meta, run only tiny
        with torch.device("meta"):
            m = create_model(name, input_size=size)
            loc, conf = m(torch.zeros(1, 3, size, size))
        assert loc.shape[1] == m.priors.num_priors and conf.shape[-1] == 21
        return
    m = create_model(name, num_classes=7, input_size=size)
    with torch.no_grad():
        y = m(torch.randn(1, 3, size, size))
    if spec.task == "detection":
        loc, conf = y
        assert loc.shape == (1, m.priors.num_priors, 4) and conf.shape == (1, m.priors.num_priors, 7)
    else:
        main = y["main"] if isinstance(y, dict) else y
        assert main.shape == (1, 7) and torch.isfinite(main).all()


def test_other_square_input_sizes():
    m = create_model("repvgg-tiny", input_size=96)
    assert m(torch.randn(1, 3, 96, 96)).shape == (1, 10)
    assert model_summary("vgg16", input_size=320)["input_size"] == 320


def test_bad_names_and_sizes_are_one_line_errors():
    with pytest.raises(UnknownModelError, match=r"did you mean:.*repvgg-a0"):
        create_model("repvgg-ao")
    with pytest.raises(ModelConfigError, match="300x300"):
        create_model("ssd300-vgg16", input_size=320)
    with pytest.raises(ModelConfigError, match="at least 32"):
        create_model("vgg16", input_size=16)
    with pytest.raises(ModelConfigError, match="num_classes"):
        create_model("vgg-tiny", num_classes=0)


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        register_model("vgg16", family="vgg")(lambda **kw: None)


def test_repvggplus_train_returns_aux_and_deploy_main_only():
    m = create_model("repvggplus-tiny")
    y = m(torch.randn(2, 3, 64, 64))
    assert set(y) == {"main", "stage1_aux", "stage2_aux", "stage3_first_aux"}
    d = create_model("repvggplus-tiny", deploy=True)
    out = d(torch.randn(2, 3, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    assert not any("aux" in k for k in d.state_dict())


def test_official_state_dict_keys():
    keys = set(create_model("repvgg-a0").state_dict())
    for k in ["stage0.rbr_dense.conv.weight", "stage0.rbr_dense.bn.running_var",
              "stage0.rbr_1x1.conv.weight", "stage1.1.rbr_identity.weight", "linear.weight"]:
        assert k in keys
    with torch.device("meta"):
        dk = set(create_model("repvgg-a0", deploy=True).state_dict())
        se = set(create_model("repvgg-d2se").state_dict())
        plus = set(create_model("repvggplus-l2pse").state_dict())
    assert "stage4.0.rbr_reparam.bias" in dk and not any("rbr_dense" in k for k in dk)
    assert "stage1.0.se.down.weight" in se and "stage1.0.se.up.bias" in se
    for k in ["stage1.blocks.0.rbr_dense.conv.weight", "stage3_first.blocks.0.post_se.down.weight",
              "stage3_second.blocks.0.rbr_identity.running_mean", "stage1_aux.0.conv.weight",
              "stage1_aux.0.bn.weight", "stage1_aux.3.weight", "stage3_first_aux.3.bias"]:
        assert k in plus, k
    vgg = set(create_model("vgg-tiny").state_dict())
    assert {"features.0.weight", "classifier.0.weight", "classifier.6.bias"} <= vgg


def test_vgg16c_uses_1x1_at_d_indices():
    with torch.device("meta"):
        c, d = create_model("vgg16-c").state_dict(), create_model("vgg16").state_dict()
    assert c.keys() == d.keys()
    assert c["features.14.weight"].shape[-1] == 1 and d["features.14.weight"].shape[-1] == 3
