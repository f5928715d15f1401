"""Re-parameterization: deploy form equals train form (eval mode, randomized BN statistics)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from workbench.core import reparameterize
from workbench.registry import create_model, list_models
from workbench.reparam import compare_outputs, identity_kernel, is_deploy, reparameterize_model
from workbench.stats import count_params

from .conftest import randomize_bn

REPVGG_ZOO = [n for n in list_models("repvgg*") if not n.endswith("tiny")]
FUSION = ["vgg11-bn", "vgg11-lrn-bn", "vgg13-bn", "vgg16-c-bn", "vgg16-bn", "vgg19-bn",
          "resnet18", "resnet50", "mobilenet-v2"]


def _assert_equivalent(train: nn.Module, size: int, seed: int = 0) -> nn.Module:
    deploy = reparameterize_model(train)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    rep = compare_outputs(train, deploy, x)
    assert rep.max_abs_diff <= 1e-5 * rep.max_abs_output, rep
    assert rep.cosine >= 0.999999, rep
    assert is_deploy(deploy)
    return deploy


@pytest.mark.parametrize("name", REPVGG_ZOO)
def test_repvgg_zoo_deploy_matches_train_at_224(name):
    torch.manual_seed(0)
    train = randomize_bn(create_model(name))
    deploy = _assert_equivalent(train, 224)
    assert count_params(deploy) == count_params(create_model(name, deploy=True))
    # the deploy checkpoint loads into the directly built deploy form
    direct = create_model(name, deploy=True)
    direct.load_state_dict(deploy.state_dict(), strict=True)


@pytest.mark.parametrize("name", FUSION)
def test_conv_bn_fusion_matches_at_224(name):
    torch.manual_seed(1)
    deploy = _assert_equivalent(randomize_bn(create_model(name)), 224)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deploy.modules())


@pytest.mark.parametrize("name", ["ssd300-vgg16", "ssd-tiny"])
def test_ssd_fusion(name):
    torch.manual_seed(2)
    size = create_model("ssd-tiny").model_info.input_size if name == "ssd-tiny" else 300
    for bn in (False, True):
        m = randomize_bn(create_model(name, batch_norm=bn))
        _assert_equivalent(m, size)


def test_repvgg_a0_deploy_has_one_conv_per_block_and_no_bn():
    deploy = reparameterize_model(randomize_bn(create_model("repvgg-a0")))
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in deploy.modules())
    blocks = [m for m in deploy.modules() if hasattr(m, "rbr_reparam")]
    assert len(blocks) == 1 + 2 + 4 + 14 + 1
    for b in blocks:
        convs = [m for m in b.modules() if isinstance(m, nn.Conv2d)]
        assert convs == [b.rbr_reparam] and b.rbr_reparam.kernel_size == (3, 3)


def test_grouped_identity_kernel():
    k = identity_kernel(8, 4)
    x = torch.randn(1, 8, 5, 5)
    y = nn.functional.conv2d(x, k, padding=1, groups=4)
    assert torch.allclose(x, y)


def test_idempotent_and_pure():
    m = randomize_bn(create_model("repvgg-tiny"))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    once = reparameterize_model(m)
    twice = reparameterize_model(once)
    assert m.state_dict().keys() == before.keys()  # the input was not touched
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(once(x), twice(x))
    assert once.state_dict().keys() == twice.state_dict().keys()
    same = reparameterize_model(once, inplace=True)
    assert same is once


def test_repvggplus_drops_aux_and_matches():
    m = randomize_bn(create_model("repvggplus-tiny"))
    r = reparameterize(m)
    assert r.report.cosine >= 0.999999 and r.report.relative_max_diff <= 1e-5
    assert r.branches_after == 0 and r.bn_after == 0 and r.bn_before > 0
    assert isinstance(r.model(torch.randn(1, 3, 64, 64)), torch.Tensor)


def test_training_mode_is_kept():
    m = create_model("repvgg-tiny").train()
    d = reparameterize_model(m)
    assert d.training and m.training
