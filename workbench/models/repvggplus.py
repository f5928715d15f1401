"""RepVGGplus-L2pse (official ``repvggplus.py``): post-SE blocks, stage 3 split in two, and
three auxiliary classifiers used only in training.

Train-time forward returns ``{"main", "stage1_aux", "stage2_aux", "stage3_first_aux"}``; after
re-parameterization the aux heads are deleted and forward returns the main logits only (the
official HEAD code calls the deleted heads in deploy mode and crashes; this one does not).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..registry import register_model
from .repvgg import RepVGGBlock, SEBlock, conv_bn


class RepVGGplusBlock(RepVGGBlock):
    """RepVGG block with SE after the ReLU, under the official key ``post_se``."""

    def _init_se(self, channels: int, reduction: int) -> None:
        self.post_se = SEBlock(channels, channels // reduction) if reduction else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post_se(self.nonlinearity(self._pre_activation(x)))


class RepVGGplusStage(nn.Module):
    def __init__(self, in_planes: int, planes: int, num_blocks: int, stride: int, se: int):
        super().__init__()
        blocks = []
        for j in range(num_blocks):
            blocks.append(RepVGGplusBlock(in_planes, planes, stride if j == 0 else 1, se_reduction=se))
            in_planes = planes
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


def conv_bn_relu(channels: int) -> nn.Sequential:
    result = conv_bn(channels, channels, 3, 2, 1)
    result.add_module("relu", nn.ReLU())
    return result


class RepVGGplus(nn.Module):
    def __init__(self, num_blocks: list[int], width_multiplier: list[float], num_classes: int,
                 use_post_se: bool = True):
        super().__init__()
        se = 4 if use_post_se else 0
        c0 = min(64, int(64 * width_multiplier[0]))
        ch = [int(b * w) for b, w in zip((64, 128, 256, 512), width_multiplier)]
        self.stage0 = RepVGGplusBlock(3, c0, stride=2, se_reduction=se)
        self.stage1 = RepVGGplusStage(c0, ch[0], num_blocks[0], 2, se)
        self.stage2 = RepVGGplusStage(ch[0], ch[1], num_blocks[1], 2, se)
        self.stage3_first = RepVGGplusStage(ch[1], ch[2], num_blocks[2] // 2, 2, se)
        self.stage3_second = RepVGGplusStage(ch[2], ch[2], num_blocks[2] - num_blocks[2] // 2, 1, se)
        self.stage4 = RepVGGplusStage(ch[2], ch[3], num_blocks[3], 2, se)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(ch[3], num_classes)
        self.stage1_aux = self._aux(ch[0], num_classes)
        self.stage2_aux = self._aux(ch[1], num_classes)
        self.stage3_first_aux = self._aux(ch[2], num_classes)

    @staticmethod
    def _aux(channels: int, num_classes: int) -> nn.Sequential:
        return nn.Sequential(conv_bn_relu(channels), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(channels, num_classes))

    @property
    def has_aux(self) -> bool:
        return hasattr(self, "stage1_aux")

    def forward(self, x: torch.Tensor):
        out = self.stage1(self.stage0(x))
        aux = {}
        if self.has_aux:
            aux["stage1_aux"] = self.stage1_aux(out)
        out = self.stage2(out)
        if self.has_aux:
            aux["stage2_aux"] = self.stage2_aux(out)
        out = self.stage3_first(out)
        if self.has_aux:
            aux["stage3_first_aux"] = self.stage3_first_aux(out)
        out = self.stage4(self.stage3_second(out))
        y = self.linear(self.flatten(self.gap(out)))
        return {"main": y, **aux} if self.has_aux else y

    def reparameterize(self) -> None:
        """Drop the auxiliary heads (blocks fuse themselves)."""
        for name in ("stage1_aux", "stage2_aux", "stage3_first_aux"):
            if hasattr(self, name):
                delattr(self, name)


@register_model("repvggplus-l2pse", family="repvggplus",
                reference="Ding et al., github.com/DingXiaoH/RepVGG repvggplus.py",
                description="blocks [8,14,24,1], widths [2.5,2.5,2.5,5], post-SE, 3 aux heads")
def _l2pse(*, num_classes: int, input_size: int) -> RepVGGplus:
    return RepVGGplus([8, 14, 24, 1], [2.5, 2.5, 2.5, 5], num_classes, use_post_se=True)


@register_model("repvggplus-tiny", family="repvggplus", tiny=True, default_num_classes=10,
                default_input_size=64, description="test-sized RepVGGplus with aux heads and post-SE")
def _tiny(*, num_classes: int, input_size: int) -> RepVGGplus:
    return RepVGGplus([1, 1, 2, 1], [0.125, 0.125, 0.125, 0.25], num_classes, use_post_se=True)
