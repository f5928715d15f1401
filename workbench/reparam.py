"""Structural re-parameterization: one entry point, ``reparameterize_model``.

- RepVGG / RepVGGplus blocks fold their 3x3+BN, 1x1+BN and identity-BN branches into one 3x3
  conv with bias (Ding et al. 2021); the blocks implement ``reparameterize()`` themselves.
- Every ``Conv2d`` directly followed by a ``BatchNorm2d`` inside an ``nn.Sequential`` (or the
  ordered ``nn.ModuleList`` of SSD's VGG layers) (VGG-BN,
  MobileNetV2, ResNet downsample, SSD-BN) is fused; the BN becomes ``nn.Identity`` so the
  state-dict indices stay those of the source layout. Modules whose conv/BN pairs are not
  sequential (ResNet blocks and stem) implement ``reparameterize()``.
- RepVGGplus drops its auxiliary classifiers (training only).

The function is idempotent and pure by default (``inplace=False`` deep-copies).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from .modelinfo import set_info


def fuse_bn_tensor(kernel: torch.Tensor, bn: nn.BatchNorm2d, conv_bias: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold BN into a conv: W' = W * gamma/std, b' = beta + (b - mean) * gamma/std (float32)."""
    std = (bn.running_var.float() + bn.eps).sqrt()
    gamma = bn.weight.float() if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias.float() if bn.bias is not None else torch.zeros_like(std)
    t = gamma / std
    b0 = conv_bias.float() if conv_bias is not None else torch.zeros_like(std)
    return kernel.float() * t.reshape(-1, 1, 1, 1), beta + (b0 - bn.running_mean.float()) * t


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a new Conv2d with bias equal to ``bn(conv(x))`` in eval mode."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True,
                      padding_mode=conv.padding_mode)
    w, b = fuse_bn_tensor(conv.weight.detach(), bn, None if conv.bias is None else conv.bias.detach())
    dtype = conv.weight.dtype
    fused.weight.data.copy_(w.to(dtype))
    fused.bias.data.copy_(b.to(dtype))
    return fused.to(conv.weight.device)


def identity_kernel(channels: int, groups: int, kernel_size: int = 3,
                    dtype=torch.float32, device=None) -> torch.Tensor:
    """A grouped conv kernel that copies its input: 1 at the centre of channel i % (C // g)."""
    per_group = channels // groups
    k = torch.zeros(channels, per_group, kernel_size, kernel_size, dtype=dtype, device=device)
    c = kernel_size // 2
    for i in range(channels):
        k[i, i % per_group, c, c] = 1.0
    return k


def _fuse_sequentials(module: nn.Module) -> None:
    for child in module.children():
        _fuse_sequentials(child)
    # SSD keeps its VGG layers in a ModuleList that it runs in order, like a Sequential
    if isinstance(module, (nn.Sequential, nn.ModuleList)):
        names = list(module._modules.keys())
        for a, b in zip(names, names[1:]):
            conv, bn = module._modules[a], module._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                module._modules[a] = fuse_conv_bn(conv, bn)
                module._modules[b] = nn.Identity()


@torch.no_grad()
def reparameterize_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return the deploy form of ``model`` (see module docstring). Idempotent."""
    if not inplace:
        model = copy.deepcopy(model)
    was_training = model.training
    model.eval()
    # children first, so a block sees its own (not yet fused) submodules
    for m in reversed(list(model.modules())):
        fn = getattr(m, "reparameterize", None)
        if callable(fn):
            fn()
    _fuse_sequentials(model)
    set_info(model, deploy=True)
    model.train(was_training)
    return model


def is_deploy(model: nn.Module) -> bool:
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@dataclass(frozen=True)
class EquivalenceReport:
    max_abs_diff: float
    max_abs_output: float
    relative_max_diff: float  # max_abs_diff / max |reference output|
    cosine: float
    sum_sq_diff: float  # the official RepVGG check: ((a - b) ** 2).sum()

    def to_dict(self) -> dict:
        return asdict(self)


def _flat_outputs(y) -> torch.Tensor:
    if isinstance(y, dict):
        y = y["main"] if "main" in y else list(y.values())
    if isinstance(y, (list, tuple)):
        return torch.cat([t.reshape(-1).double() for t in y])
    return y.reshape(-1).double()


@torch.no_grad()
def compare_outputs(reference: nn.Module, candidate: nn.Module, x: torch.Tensor) -> EquivalenceReport:
    """Run both models in eval mode on ``x`` and compare their (main) outputs."""
    modes = reference.training, candidate.training
    reference.eval()
    candidate.eval()
    try:
        a = _flat_outputs(reference(x))
        b = _flat_outputs(candidate(x))
    finally:
        reference.train(modes[0])
        candidate.train(modes[1])
    diff = (a - b).abs()
    max_out = float(a.abs().max())
    cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    return EquivalenceReport(
        max_abs_diff=float(diff.max()),
        max_abs_output=max_out,
        relative_max_diff=float(diff.max()) / max(max_out, 1e-30),
        cosine=cos,
        sum_sq_diff=float((diff ** 2).sum()),
    )
