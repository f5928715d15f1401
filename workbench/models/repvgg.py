"""RepVGG (Ding et al., CVPR 2021), state-dict layout of the official code.

Train-time block: ``rbr_dense`` (conv3x3 + BN) + ``rbr_1x1`` (conv1x1 + BN) + ``rbr_identity``
(BN, only when in == out and stride 1), optional SE (D2se), then ReLU. Deploy block: one
``rbr_reparam`` conv3x3 with bias.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import register_model
from ..reparam import fuse_bn_tensor, identity_kernel


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int,
            groups: int = 1) -> nn.Sequential:
    result = nn.Sequential()
    result.add_module("conv", nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                        groups=groups, bias=False))
    result.add_module("bn", nn.BatchNorm2d(out_channels))
    return result


class SEBlock(nn.Module):
    """Squeeze-excitation as in the official code (``down``/``up`` 1x1 convs).

    Pools globally with ``adaptive_avg_pool2d`` (the official code pools with kernel_size = W,
    which is wrong for non-square inputs).
    """

    def __init__(self, channels: int, internal: int):
        super().__init__()
        self.down = nn.Conv2d(channels, internal, 1, 1, bias=True)
        self.up = nn.Conv2d(internal, channels, 1, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = torch.sigmoid(self.up(F.relu(self.down(s))))
        return x * s


class RepVGGBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, groups: int = 1,
                 *, se_reduction: int = 0):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.groups = stride, groups
        self._init_se(out_channels, se_reduction)
        self.nonlinearity = nn.ReLU()
        self.rbr_identity = nn.BatchNorm2d(in_channels) if in_channels == out_channels and stride == 1 else None
        self.rbr_dense = conv_bn(in_channels, out_channels, 3, stride, 1, groups)
        self.rbr_1x1 = conv_bn(in_channels, out_channels, 1, stride, 0, groups)

    def _init_se(self, channels: int, reduction: int) -> None:
        # RepVGG-D2se: SE before the ReLU, key ``se``
        self.se = SEBlock(channels, channels // reduction) if reduction else nn.Identity()

    @property
    def deployed(self) -> bool:
        return hasattr(self, "rbr_reparam")

    def _pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        if self.deployed:
            return self.rbr_reparam(x)
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinearity(self.se(self._pre_activation(x)))

    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single 3x3 kernel and bias equal to the three branches (computed in float32)."""
        k3, b3 = fuse_bn_tensor(self.rbr_dense.conv.weight, self.rbr_dense.bn)
        k1, b1 = fuse_bn_tensor(self.rbr_1x1.conv.weight, self.rbr_1x1.bn)
        kernel = k3 + F.pad(k1, [1, 1, 1, 1])
        bias = b3 + b1
        if self.rbr_identity is not None:
            conv = self.rbr_dense.conv  # read shapes from the layers: channel pruning changes them
            kid = identity_kernel(conv.in_channels, conv.groups, 3, device=k3.device)
            ki, bi = fuse_bn_tensor(kid, self.rbr_identity)
            kernel, bias = kernel + ki, bias + bi
        return kernel, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.deployed:
            return
        kernel, bias = self.equivalent_kernel_bias()
        conv = self.rbr_dense.conv
        dtype = conv.weight.dtype
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.rbr_reparam = nn.Conv2d(conv.in_channels, conv.out_channels, 3, conv.stride, 1,
                                     groups=conv.groups, bias=True).to(conv.weight.device)
        self.rbr_reparam.weight.data.copy_(kernel.to(dtype))
        self.rbr_reparam.bias.data.copy_(bias.to(dtype))
        del self.rbr_dense, self.rbr_1x1, self.rbr_identity


class QARepVGGBlock(RepVGGBlock):
    """The quantization-friendly block of QARepVGG (Chu et al. 2022, "Make RepVGG Greater Again"):
    no BN on the 1x1 and identity branches, one BN after the sum. Plain RepVGG's identity-branch BN
    and per-branch BNs give the fused kernel a wide, outlier-heavy weight and activation range that
    INT8 cannot hold; this form keeps both narrow. Re-parameterizes exactly like RepVGG: the three
    branches fuse into one 3x3 kernel and the post-BN folds into it."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, groups: int = 1, *, se_reduction: int = 0):
        super().__init__(in_channels, out_channels, stride, groups, se_reduction=se_reduction)
        self.rbr_identity = nn.Identity() if in_channels == out_channels and stride == 1 else None
        self.rbr_1x1 = nn.Conv2d(in_channels, out_channels, 1, stride, 0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def _pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        if self.deployed:
            return self.rbr_reparam(x)
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + x
        return self.bn(out)

    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        k3, b3 = fuse_bn_tensor(self.rbr_dense.conv.weight, self.rbr_dense.bn)
        kernel = k3 + F.pad(self.rbr_1x1.weight.float(), [1, 1, 1, 1])
        if self.rbr_identity is not None:
            conv = self.rbr_dense.conv
            kernel = kernel + identity_kernel(conv.in_channels, conv.groups, 3, device=k3.device)
        # the post-BN: y = (k*x + b3 - mean) * gamma / std + beta
        return fuse_bn_tensor(kernel, self.bn, conv_bias=b3)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.deployed:
            return
        super().reparameterize()
        del self.bn


class RepVGG(nn.Module):
    def __init__(self, num_blocks: list[int], width_multiplier: list[float], num_classes: int,
                 override_groups_map: dict[int, int] | None = None, use_se: bool = False,
                 block: type[RepVGGBlock] = RepVGGBlock):
        super().__init__()
        RepVGGBlock = block  # noqa: N806 (the official layout's name for the block class)
        groups_map = override_groups_map or {}
        se = 16 if use_se else 0
        self.in_planes = min(64, int(64 * width_multiplier[0]))
        self.stage0 = RepVGGBlock(3, self.in_planes, stride=2, se_reduction=se)
        self.cur_layer_idx = 1
        stages = []
        for i, (base, n) in enumerate(zip((64, 128, 256, 512), num_blocks)):
            planes = int(base * width_multiplier[i])
            blocks = []
            for j in range(n):
                g = groups_map.get(self.cur_layer_idx, 1)
                blocks.append(RepVGGBlock(self.in_planes, planes, 2 if j == 0 else 1, g, se_reduction=se))
                self.in_planes = planes
                self.cur_layer_idx += 1
            stages.append(nn.ModuleList(blocks))
        self.stage1, self.stage2, self.stage3, self.stage4 = stages
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(int(512 * width_multiplier[3]), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stage0(x)
        for stage in (self.stage1, self.stage2, self.stage3, self.stage4):
            for block in stage:
                out = block(out)
        out = torch.flatten(self.gap(out), 1)
        return self.linear(out)


OPTIONAL_GROUPWISE_LAYERS = list(range(2, 27, 2))
G2 = {layer: 2 for layer in OPTIONAL_GROUPWISE_LAYERS}
G4 = {layer: 4 for layer in OPTIONAL_GROUPWISE_LAYERS}

A_BLOCKS, B_BLOCKS, D_BLOCKS = [2, 4, 14, 1], [4, 6, 16, 1], [8, 14, 24, 1]
ZOO: dict[str, tuple[list[int], list[float], dict[int, int] | None, bool]] = {
    "repvgg-a0": (A_BLOCKS, [0.75, 0.75, 0.75, 2.5], None, False),
    "repvgg-a1": (A_BLOCKS, [1, 1, 1, 2.5], None, False),
    "repvgg-a2": (A_BLOCKS, [1.5, 1.5, 1.5, 2.75], None, False),
    "repvgg-b0": (B_BLOCKS, [1, 1, 1, 2.5], None, False),
    "repvgg-b1": (B_BLOCKS, [2, 2, 2, 4], None, False),
    "repvgg-b1g2": (B_BLOCKS, [2, 2, 2, 4], G2, False),
    "repvgg-b1g4": (B_BLOCKS, [2, 2, 2, 4], G4, False),
    "repvgg-b2": (B_BLOCKS, [2.5, 2.5, 2.5, 5], None, False),
    "repvgg-b2g2": (B_BLOCKS, [2.5, 2.5, 2.5, 5], G2, False),
    "repvgg-b2g4": (B_BLOCKS, [2.5, 2.5, 2.5, 5], G4, False),
    "repvgg-b3": (B_BLOCKS, [3, 3, 3, 5], None, False),
    "repvgg-b3g2": (B_BLOCKS, [3, 3, 3, 5], G2, False),
    "repvgg-b3g4": (B_BLOCKS, [3, 3, 3, 5], G4, False),
    "repvgg-d2se": (D_BLOCKS, [2.5, 2.5, 2.5, 5], None, True),
    # test-sized: one block per stage plus a second stride-1 block in stage 3 (so it has an
    # identity branch) and grouped layers (so the g2/g4 identity kernel is exercised)
    "repvgg-tiny": ([1, 1, 2, 1], [0.125, 0.125, 0.125, 0.125], {2: 2, 4: 2}, False),
}

_REF = "Ding et al. 2021, github.com/DingXiaoH/RepVGG repvgg.py"


def _register(name: str, blocks, widths, groups, se) -> None:
    tiny = name.endswith("tiny")

    @register_model(name, family="repvgg", tiny=tiny, reference=_REF,
                    default_num_classes=10 if tiny else 1000,
                    default_input_size=64 if tiny else 224,
                    description=f"blocks {blocks}, widths {widths}"
                    + (", grouped" if groups else "") + (", SE" if se else ""))
    def _build(*, num_classes: int, input_size: int) -> RepVGG:
        return RepVGG(blocks, widths, num_classes, groups, se)


for _name, (_b, _w, _g, _se) in ZOO.items():
    _register(_name, _b, _w, _g, _se)


def _register_qa(name: str, blocks, widths, groups) -> None:
    tiny = name.endswith("tiny")

    @register_model(name, family="qarepvgg", tiny=tiny,
                    reference="Chu et al. 2022, Make RepVGG Greater Again: A Quantization-aware Approach (arXiv:2212.01593)",
                    default_num_classes=10 if tiny else 1000, default_input_size=64 if tiny else 224,
                    description=f"QARepVGG block (post-BN, no BN on 1x1/identity), blocks {blocks}, widths {widths}"
                    + (", grouped" if groups else ""))
    def _build(*, num_classes: int, input_size: int) -> RepVGG:
        return RepVGG(blocks, widths, num_classes, groups, False, block=QARepVGGBlock)


for _name, (_b, _w, _g, _se) in ZOO.items():
    if not _se:
        _register_qa("qa" + _name, _b, _w, _g)
