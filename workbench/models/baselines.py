"""Baselines from the RepVGG paper's tables and the seeds' notes, in torchvision's state-dict
layout (written here: torchvision cannot be installed beside the local torch wheel)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..registry import register_model
from ..reparam import fuse_conv_bn


def _fuse_attr_pairs(module: nn.Module, pairs: list[tuple[str, str]]) -> None:
    for conv_name, bn_name in pairs:
        bn = getattr(module, bn_name)
        if isinstance(bn, nn.BatchNorm2d):
            setattr(module, conv_name, fuse_conv_bn(getattr(module, conv_name), bn))
            setattr(module, bn_name, nn.Identity())


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)

    def reparameterize(self) -> None:
        _fuse_attr_pairs(self, [("conv1", "bn1"), ("conv2", "bn2")])


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)

    def reparameterize(self) -> None:
        _fuse_attr_pairs(self, [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")])


class ResNet(nn.Module):
    def __init__(self, block, layers: list[int], num_classes: int, width: int = 64):
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], 2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], 2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def reparameterize(self) -> None:
        _fuse_attr_pairs(self, [("conv1", "bn1")])


class ConvBNReLU(nn.Sequential):
    """torchvision's Conv2dNormActivation with ReLU6: keys ``.0`` conv, ``.1`` bn."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(c_in * expand_ratio))
        self.use_res_connect = stride == 1 and c_in == c_out
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(c_in, hidden, 1))
        layers += [ConvBNReLU(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class MobileNetV2(nn.Module):
    SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
               [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]

    def __init__(self, num_classes: int, width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        c_in = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNReLU(3, c_in, stride=2)]
        for t, c, n, s in self.SETTING:
            c_out = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t))
                c_in = c_out
        features.append(ConvBNReLU(c_in, self.last_channel, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


_TV = "torchvision layout"


@register_model("resnet18", family="resnet", reference="He et al. 2016; " + _TV,
                description="ResNet-18 (RepVGG paper baseline, pairs with repvgg-a0)")
def resnet18(*, num_classes: int, input_size: int) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes)


@register_model("resnet50", family="resnet", reference="He et al. 2016; " + _TV,
                description="ResNet-50 (RepVGG paper baseline, pairs with repvgg-b1g2)")
def resnet50(*, num_classes: int, input_size: int) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes)


@register_model("mobilenet-v2", family="mobilenet", reference="Sandler et al. 2018; " + _TV,
                description="MobileNetV2 1.0 (depthwise baseline for phones)")
def mobilenet_v2(*, num_classes: int, input_size: int, dropout: float = 0.2) -> MobileNetV2:
    return MobileNetV2(num_classes, dropout=dropout)


@register_model("resnet-tiny", family="resnet", tiny=True, default_num_classes=10,
                default_input_size=64, description="test-sized ResNet (basic blocks, width 8)")
def resnet_tiny(*, num_classes: int, input_size: int) -> ResNet:
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes, width=8)
