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
    clip: bool = True  # clamp to [0, 1]: widths and heights, and centres too when clip_centers
    clip_centers: bool = True  # ssd.pytorch clamps the whole (cx, cy, w, h); torchvision only (w, h)

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


# --- how outputs are decoded and inputs prepared: per checkpoint layout ---------------------------

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DecodeConfig:
    """Everything between pixels and detections that is not in the weights: the default boxes,
    the box coder, the score / NMS / top-k rules and the input preprocessing. A checkpoint is only
    right when decoded the way it was trained; the layout that wrote it decides this (``LAYOUTS``).

    Preprocessing: ``x = pixels[channel_order] * pixel_scale; (x - mean) / std`` per channel."""

    layout: str
    priors: PriorConfig
    variances: tuple[float, float] = (0.1, 0.2)  # torchvision's BoxCoder weights (10, 10, 5, 5) are these
    wh_clip: float | None = None  # clamp of the scaled log-size offset before exp (torchvision: log(1000/16))
    score_threshold: float = 0.01
    nms_iou: float = 0.45
    candidates_per_class: int = 2000  # top scores per class that enter NMS
    keep_per_class: int | None = 200  # boxes NMS may keep per class (None: all)
    max_detections: int | None = 200  # per image, best first (None: no cap)
    clip_boxes: bool = False  # clip decoded boxes to the image
    pixel_scale: float = 1 / 255
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: str = "RGB"
    source: str = ""

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DecodeConfig":
        pri = d["priors"]
        pri = PriorConfig(**{**pri, **{k: tuple(tuple(a) if isinstance(a, list) else a for a in pri[k])
                                       for k in ("feature_maps", "steps", "min_sizes", "max_sizes", "aspect_ratios")},
                             "variances": tuple(pri.get("variances", (0.1, 0.2)))})
        tup = {k: tuple(d[k]) for k in ("variances", "mean", "std") if k in d}
        return cls(**{**d, **tup, "priors": pri})

    def summary(self) -> str:
        p = self.priors
        return (f"{self.layout}: {p.num_priors} default boxes (min sizes {', '.join(f'{v:g}' for v in p.min_sizes)} "
                f"at {p.image_size}px), variances {self.variances[0]:g}/{self.variances[1]:g}, score > "
                f"{self.score_threshold:g}, NMS IoU {self.nms_iou:g}, {self.candidates_per_class} candidates per class, "
                f"{'no cap' if self.max_detections is None else f'top {self.max_detections}'} per image; input "
                f"{self.channel_order} x {self.pixel_scale:.6g} - mean {tuple(round(m, 3) for m in self.mean)} / std "
                f"{tuple(round(v, 3) for v in self.std)}")


# The COCO default boxes: ssd.pytorch's `coco` config; torchvision's ssd300_vgg16 scales
# (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05) x 300 are the same boxes.
SSD300_COCO = PriorConfig(
    image_size=300, feature_maps=(38, 19, 10, 5, 3, 1), steps=(8, 16, 32, 64, 100, 300),
    min_sizes=(21, 45, 99, 153, 207, 261), max_sizes=(45, 99, 153, 207, 261, 315),
    aspect_ratios=((2,), (2, 3), (2, 3), (2, 3), (2,), (2,)))


def ours(priors: PriorConfig) -> DecodeConfig:
    return DecodeConfig("ours", priors, source="edge-workbench: the model's own default boxes, ImageNet "
                        "normalization of RGB pixels in 0..1")


def ssdpytorch(priors: PriorConfig, name: str) -> DecodeConfig:
    """amdegroot/ssd.pytorch: data/config.py (voc / coco), layers/functions/detection.py (Detect: score
    0.01, NMS 0.45, top 200 candidates per class, no per-image cap), utils/augmentations.py
    (BaseTransform: BGR pixels 0..255 minus MEANS (104, 117, 123))."""
    return DecodeConfig(name, priors, candidates_per_class=200, keep_per_class=None, max_detections=None,
                        pixel_scale=1.0, mean=(104.0, 117.0, 123.0), std=(1.0, 1.0, 1.0), channel_order="BGR",
                        source="amdegroot/ssd.pytorch (data/config.py, layers/functions/detection.py, BaseTransform)")


def torchvision_ssd(priors: PriorConfig) -> DecodeConfig:
    """torchvision.models.detection.ssd300_vgg16: DefaultBoxGenerator scales 0.07..1.05, BoxCoder
    weights (10, 10, 5, 5) with its log(1000/16) clamp, score 0.01, NMS 0.45, 400 candidates per
    class, 200 per image, boxes clipped to the image; GeneralizedRCNNTransform with image_mean
    (0.48235, 0.45882, 0.40784) and image_std 1/255 on RGB 0..1, i.e. pixels minus (123, 117, 104)."""
    import dataclasses
    import math

    priors = dataclasses.replace(priors, clip_centers=False)  # DefaultBoxGenerator clamps only (w, h)
    return DecodeConfig("torchvision", priors, wh_clip=math.log(1000.0 / 16), candidates_per_class=400,
                        keep_per_class=None, max_detections=200, clip_boxes=True, pixel_scale=1.0,
                        mean=(0.48235 * 255, 0.45882 * 255, 0.40784 * 255), std=(1.0, 1.0, 1.0), channel_order="RGB",
                        source="torchvision 0.28 (models/detection/ssd.py, anchor_utils.DefaultBoxGenerator, _utils.BoxCoder)")


def decode_config_for(model_name: str, own_priors: PriorConfig, layout: str, num_classes: int) -> tuple[DecodeConfig, str]:
    """The configuration a checkpoint of ``layout`` was trained with, and a note saying which
    was used. Only SSD300 has published layouts (ssd.pytorch and torchvision ship no SSD512);
    anything else keeps ours and says so."""
    if layout == "ssd-torchvision":
        if own_priors.num_priors == SSD300_COCO.num_priors and own_priors.image_size == 300:
            return torchvision_ssd(SSD300_COCO), "torchvision layout: torchvision's default boxes, coder and preprocessing"
        return ours(own_priors), f"torchvision layout, but torchvision has no {model_name}: ours kept"
    if layout == "ssd-pytorch":
        if own_priors.image_size != 300:
            return ours(own_priors), f"ssd.pytorch layout, but ssd.pytorch has no {model_name} configuration: ours kept"
        if num_classes == 21:
            return ssdpytorch(own_priors, "ssd.pytorch-voc"), "ssd.pytorch layout, 21 classes: its VOC configuration"
        return ssdpytorch(SSD300_COCO, "ssd.pytorch-coco"), (f"ssd.pytorch layout, {num_classes} classes (not the VOC "
                                                              "model): its COCO configuration")
    return ours(own_priors), "no layout pins the decoding: ours"


LAYOUTS = ("ours", "ssd.pytorch-voc", "ssd.pytorch-coco", "torchvision")


def forced(layout: str, own_priors: PriorConfig) -> DecodeConfig:
    """A layout's rules applied to this model's geometry (for ``--decode LAYOUT``): its coder,
    thresholds and preprocessing; its default boxes where they fit the model (SSD300), else ours."""
    if layout not in LAYOUTS:
        from ..errors import ConfigError

        raise ConfigError(f"unknown decode layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    fits300 = own_priors.image_size == 300 and own_priors.num_priors == SSD300_COCO.num_priors
    if layout == "ours":
        return ours(own_priors)
    if layout == "torchvision":
        return torchvision_ssd(SSD300_COCO if fits300 else own_priors)
    return ssdpytorch(SSD300_COCO if (fits300 and layout.endswith("coco")) else own_priors, layout)


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
        """The default boxes outputs are decoded against (the decode configuration's)."""
        return self.decode_config.priors

    @property
    def decode_config(self) -> DecodeConfig:
        return getattr(self, "_decode", None) or ours(self.cfg.priors)

    @decode_config.setter
    def decode_config(self, cfg: DecodeConfig) -> None:
        if cfg.priors.num_priors != self.cfg.priors.num_priors:
            raise ValueError(f"decode configuration {cfg.layout} has {cfg.priors.num_priors} default boxes, the "
                             f"model's heads emit {self.cfg.priors.num_priors}")
        self._decode = cfg

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
