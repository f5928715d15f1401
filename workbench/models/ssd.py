"""SSD on a VGG16 backbone (Liu et al. 2016), ssd.pytorch state-dict layout.

Keys: ``vgg.N`` (conv1_1 .. conv7 with pool3 ceil-mode, pool5 3x3 s1 p1, conv6 dilation 6),
``L2Norm.weight`` (conv4_3 rescaling, init 20), ``extras.N``, ``loc.N``, ``conf.N``. The
torchvision layout converts one to one (see ``workbench.checkpoints``).

``forward`` ends at the raw tensors: ``loc`` (N, P, 4) box offsets and ``conf`` (N, P, C) class
logits. Default boxes, decoding and per-class NMS are plain post-processing in
``workbench.detection`` so exported graphs carry no NMS (the GPU delegate has none).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import register_model


@dataclass(frozen=True)
class PriorConfig:
    image_size: int
    feature_maps: tuple[int, ...]
    steps: tuple[int, ...]
    min_sizes: tuple[float, ...]
    max_sizes: tuple[float, ...]
    aspect_ratios: tuple[tuple[int, ...], ...]
    variances: tuple[float, float] = (0.1, 0.2)
    clip: bool = True

    @property
    def boxes_per_location(self) -> tuple[int, ...]:
        return tuple(2 + 2 * len(a) for a in self.aspect_ratios)

    @property
    def num_priors(self) -> int:
        return sum(f * f * b for f, b in zip(self.feature_maps, self.boxes_per_location))


@dataclass(frozen=True)
class SSDConfig:
    base: tuple  # VGG cfg: int = 3x3 conv, "M" = max-pool, "C" = ceil-mode max-pool
    l2norm_after_conv: int  # index (1-based) of the conv whose ReLU output feeds L2Norm
    fc_channels: int  # conv6 / conv7 width
    extras: tuple[tuple[int, int, int, int, int], ...]  # (mid, out, kernel, stride, padding)
    priors: PriorConfig


SSD300_VOC = PriorConfig(
    image_size=300, feature_maps=(38, 19, 10, 5, 3, 1), steps=(8, 16, 32, 64, 100, 300),
    min_sizes=(30, 60, 111, 162, 213, 264), max_sizes=(60, 111, 162, 213, 264, 315),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)))
# The paper's SSD512 layout (original Caffe VOC512 prototxt)
SSD512_VOC = PriorConfig(
    image_size=512, feature_maps=(64, 32, 16, 8, 4, 2, 1), steps=(8, 16, 32, 64, 128, 256, 512),
    min_sizes=(35.84, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8),
    max_sizes=(76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2, 3), (2,), (2,)))

VGG16_BASE = (64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512)
SSD300 = SSDConfig(VGG16_BASE, 10, 1024,
                   ((256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 1, 0), (128, 256, 3, 1, 0)),
                   SSD300_VOC)
SSD512 = SSDConfig(VGG16_BASE, 10, 1024,
                   ((256, 512, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 2, 1), (128, 256, 3, 2, 1),
                    (128, 256, 4, 1, 1)),
                   SSD512_VOC)
SSD_TINY = SSDConfig(
    (8, 8, "M", 16, 16, "M", 32, 32, 32, "C", 64, 64, 64, "M", 64, 64, 64), 10, 128,
    ((32, 64, 3, 2, 1), (16, 32, 3, 2, 1)),
    PriorConfig(image_size=128, feature_maps=(16, 8, 4, 2), steps=(8, 16, 32, 64),
                min_sizes=(13, 26, 48, 70), max_sizes=(26, 48, 70, 93),
                aspect_ratios=((2,), (2, 3), (2, 3), (2,))))


class L2Norm(nn.Module):
    def __init__(self, channels: int, scale: float = 20.0, eps: float = 1e-10):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return x / norm * self.weight.view(1, -1, 1, 1)

    # the tf-direct exporter's custom-module protocol (exporters import no model code)
    def tf_params(self) -> dict:
        return {"w": self.weight.detach().cpu().float().numpy()}

    def tf_call(self, tf, x_nhwc, params: dict):
        norm = tf.sqrt(tf.reduce_sum(tf.square(x_nhwc), axis=3, keepdims=True)) + self.eps
        return x_nhwc / norm * params["w"]


def _vgg_layers(cfg: SSDConfig, batch_norm: bool) -> tuple[nn.ModuleList, int]:
    layers: list[nn.Module] = []
    c_in, n_conv, split = 3, 0, -1
    for v in cfg.base:
        if v in ("M", "C"):
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=v == "C"))
            continue
        layers.append(nn.Conv2d(c_in, v, 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        c_in, n_conv = v, n_conv + 1
        if n_conv == cfg.l2norm_after_conv:
            split = len(layers)
    fc = cfg.fc_channels
    layers += [nn.MaxPool2d(3, 1, 1),
               nn.Conv2d(c_in, fc, 3, padding=6, dilation=6), nn.ReLU(inplace=True),
               nn.Conv2d(fc, fc, 1), nn.ReLU(inplace=True)]
    return nn.ModuleList(layers), split


class SSD(nn.Module):
    def __init__(self, cfg: SSDConfig, num_classes: int, batch_norm: bool = False):
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.vgg, self._split = _vgg_layers(cfg, batch_norm)
        c4 = [v for v in cfg.base if isinstance(v, int)][cfg.l2norm_after_conv - 1]
        self.L2Norm = L2Norm(c4)
        extras: list[nn.Module] = []
        c_in = cfg.fc_channels
        source_channels = [c4, cfg.fc_channels]
        for mid, out, k, s, p in cfg.extras:
            extras += [nn.Conv2d(c_in, mid, 1), nn.Conv2d(mid, out, k, s, p)]
            c_in = out
            source_channels.append(out)
        self.extras = nn.ModuleList(extras)
        mbox = cfg.priors.boxes_per_location
        if len(mbox) != len(source_channels):
            raise ValueError("prior config and feature sources disagree")
        self.loc = nn.ModuleList(nn.Conv2d(c, b * 4, 3, padding=1) for c, b in zip(source_channels, mbox))
        self.conf = nn.ModuleList(nn.Conv2d(c, b * num_classes, 3, padding=1)
                                  for c, b in zip(source_channels, mbox))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def priors(self) -> PriorConfig:
        return self.cfg.priors

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sources = []
        for layer in self.vgg[: self._split]:
            x = layer(x)
        sources.append(self.L2Norm(x))
        for layer in self.vgg[self._split:]:
            x = layer(x)
        sources.append(x)
        for k, layer in enumerate(self.extras):
            x = F.relu(layer(x), inplace=True)
            if k % 2 == 1:
                sources.append(x)
        n = x.shape[0]
        loc = torch.cat([l(s).permute(0, 2, 3, 1).reshape(n, -1, 4) for s, l in zip(sources, self.loc)], 1)
        conf = torch.cat([c(s).permute(0, 2, 3, 1).reshape(n, -1, self.num_classes)
                          for s, c in zip(sources, self.conf)], 1)
        return loc, conf


_REF = "Liu et al. 2016; ssd.pytorch layout (torchvision layout loads too)"


@register_model("ssd300-vgg16", family="ssd", task="detection", default_num_classes=21,
                default_input_size=300, fixed_input_size=True, reference=_REF,
                description="SSD300 on VGG16, 8732 default boxes (VOC layout)")
def ssd300_vgg16(*, num_classes: int, input_size: int, batch_norm: bool = False) -> SSD:
    return SSD(SSD300, num_classes, batch_norm)


@register_model("ssd512-vgg16", family="ssd", task="detection", default_num_classes=21,
                default_input_size=512, fixed_input_size=True, reference=_REF,
                description="SSD512 on VGG16, 24564 default boxes (paper layout)")
def ssd512_vgg16(*, num_classes: int, input_size: int, batch_norm: bool = False) -> SSD:
    return SSD(SSD512, num_classes, batch_norm)


@register_model("ssd-tiny", family="ssd", task="detection", default_num_classes=4,
                default_input_size=128, fixed_input_size=True, tiny=True,
                description="test-sized SSD (VGG16 topology at 1/8 width, 4 feature maps, 128px)")
def ssd_tiny(*, num_classes: int, input_size: int, batch_norm: bool = False) -> SSD:
    return SSD(SSD_TINY, num_classes, batch_norm)
