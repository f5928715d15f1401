"""VGG configurations A, A-LRN, B, C, D, E (Simonyan & Zisserman 2014, Table 1).

torchvision state-dict layout: ``features.N.*``, ``avgpool``, ``classifier.{0,3,6}.*``.
Config C's 1x1 convolutions sit at the same ``features.N`` indices as D's 3x3 ones.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..registry import register_model

# Entries: int = 3x3 conv with that many channels, ("1x1", c) = 1x1 conv, "M" = 2x2 max-pool,
# "LRN" = local response normalisation (config A-LRN).
CONFIGS: dict[str, list] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, ("1x1", 256), "M",
          512, 512, ("1x1", 512), "M", 512, 512, ("1x1", 512), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
          512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
    # test-sized: three stages, narrow classifier
    "tiny": [8, "M", 16, "M", 32, 32, "M"],
}


def make_features(cfg: list, batch_norm: bool, in_channels: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = []
    c_in = in_channels
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif v == "LRN":
            # AlexNet-style LRN as in the paper's config A-LRN
            layers.append(nn.LocalResponseNorm(size=5, alpha=1e-4, beta=0.75, k=2.0))
        else:
            k, c_out = (1, v[1]) if isinstance(v, tuple) else (3, v)
            layers.append(nn.Conv2d(c_in, c_out, kernel_size=k, padding=k // 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
            c_in = c_out
    return nn.Sequential(*layers)


class VGG(nn.Module):
    def __init__(self, features: nn.Sequential, num_classes: int, *, hidden: int = 4096,
                 pool_size: int = 7, dropout: float = 0.5, init_weights: bool = True):
        super().__init__()
        last_c = [m for m in features if isinstance(m, nn.Conv2d)][-1].out_channels
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
        self.classifier = nn.Sequential(
            nn.Linear(last_c * pool_size * pool_size, hidden),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, num_classes),
        )
        if init_weights:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0, 0.01)
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


_PAPER = "Simonyan & Zisserman 2014, Table 1; torchvision layout"


def _register(name: str, cfg: str, bn: bool, desc: str) -> None:
    @register_model(name, family="vgg", description=desc, reference=_PAPER)
    def _build(*, num_classes: int, input_size: int, dropout: float = 0.5) -> VGG:
        return VGG(make_features(CONFIGS[cfg], bn), num_classes, dropout=dropout)


for _cfg, _base, _desc in [
    ("A", "vgg11", "VGG config A, 11 weight layers"),
    ("A-LRN", "vgg11-lrn", "VGG config A with LRN after the first conv"),
    ("B", "vgg13", "VGG config B, 13 weight layers"),
    ("C", "vgg16-c", "VGG config C: 16 layers, three of them 1x1 convs"),
    ("D", "vgg16", "VGG config D, 16 weight layers"),
    ("E", "vgg19", "VGG config E, 19 weight layers"),
]:
    _register(_base, _cfg, False, _desc)
    _register(_base + "-bn", _cfg, True, _desc + ", BatchNorm after every conv")


def _tiny(bn: bool):
    def build(*, num_classes: int, input_size: int, dropout: float = 0.5) -> VGG:
        return VGG(make_features(CONFIGS["tiny"], bn), num_classes, hidden=64, pool_size=2,
                   dropout=dropout)
    return build


register_model("vgg-tiny", family="vgg", tiny=True, default_num_classes=10,
               default_input_size=64, min_input_size=8,
               description="test-sized VGG (3 stages, 64-wide classifier)")(_tiny(False))
register_model("vgg-tiny-bn", family="vgg", tiny=True, default_num_classes=10,
               default_input_size=64, min_input_size=8,
               description="test-sized VGG with BatchNorm")(_tiny(True))
