"""``ModelInfo``: what a model is (name, task, classes, input size, weights, deploy, pruned),
carried by the model as ``model.model_info``. The record itself lives in the leaf package
(``exporters.records``) because conversions need it too."""
from __future__ import annotations

import torch.nn as nn

from exporters.records import ModelInfo


def info_of(model: nn.Module) -> ModelInfo:
    """The model's ``ModelInfo``; a module built outside the registry gets a default one."""
    info = getattr(model, "model_info", None)
    return info if isinstance(info, ModelInfo) else ModelInfo(name=type(model).__name__)


def set_info(model: nn.Module, **changes) -> nn.Module:
    model.model_info = info_of(model).with_(**changes)
    return model


__all__ = ["ModelInfo", "info_of", "set_info"]
