from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics and affine terms (fusion must use them all)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


@pytest.fixture
def rand_bn():
    return randomize_bn
