"""Structured channel pruning with torch-pruning: channels are really removed (fewer params and
MACs), the dependency graph keeps RepVGG's three branches, residual adds and identity branches
consistent, and re-parameterization after pruning stays exact.

A pruned model no longer has its zoo shapes; its weights file (``.safetensors``) carries the
marker ``workbench_pruned`` in its metadata, and loading resizes the layers to the file's shapes.
Without the marker, a shape mismatch stays an error.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..stats import count_macs, count_params

PRUNED_MARKER = "workbench_pruned"


def _ignored(model: nn.Module) -> list[nn.Module]:
    """Layers whose output channels are the task's: classifier heads, SSD loc/conf heads."""
    out = [m for n, m in model.named_modules() if n in ("linear", "fc", "classifier.6", "classifier.1")]
    for n in ("loc", "conf", "stage1_aux", "stage2_aux", "stage3_first_aux"):
        if hasattr(model, n):
            out.append(getattr(model, n))
    lin = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return out + lin[-1:]


def prune_channels(model: nn.Module, ratio: float, *, norm: int = 1) -> tuple[nn.Module, dict]:
    """Remove ``ratio`` of the prunable channels by L1 (``norm=1``) or L2 magnitude, in place."""
    import torch_pruning as tp

    if not 0 < ratio < 1:
        raise ConfigError(f"--prune takes a ratio between 0 and 1 (0.3 = 30% of channels), got {ratio}")
    size = getattr(model, "workbench_input_size", 224)
    before = {"params": count_params(model), "macs": count_macs(model, size)}
    model.eval()
    x = torch.randn(1, 3, size, size)
    pruner = tp.pruner.MagnitudePruner(model, x, importance=tp.importance.MagnitudeImportance(p=norm),
                                       pruning_ratio=ratio, ignored_layers=_ignored(model))
    pruner.step()
    model.workbench_pruned = True
    after = {"params": count_params(model), "macs": count_macs(model, size)}
    return model, {"ratio": ratio, "norm": f"L{norm}", "params_before": before["params"], "params_after": after["params"],
                   "macs_before": before["macs"], "macs_after": after["macs"],
                   "macs_reduction": 1 - after["macs"] / before["macs"]}


@torch.no_grad()
def adapt_to_state_dict(model: nn.Module, sd: dict) -> None:
    """Resize Conv2d / BatchNorm2d / Linear layers to the shapes in ``sd`` (a pruned model's file)."""
    for name, m in list(model.named_modules()):
        w = sd.get(f"{name}.weight")
        if w is None:
            continue
        if isinstance(m, nn.Conv2d) and tuple(w.shape) != tuple(m.weight.shape):
            new = nn.Conv2d(w.shape[1] * m.groups, w.shape[0], m.kernel_size, m.stride, m.padding, m.dilation,
                            m.groups, bias=m.bias is not None, padding_mode=m.padding_mode)
        elif isinstance(m, nn.BatchNorm2d) and w.shape[0] != m.num_features:
            new = nn.BatchNorm2d(w.shape[0], m.eps, m.momentum, m.affine, m.track_running_stats)
        elif isinstance(m, nn.Linear) and tuple(w.shape) != tuple(m.weight.shape):
            new = nn.Linear(w.shape[1], w.shape[0], bias=m.bias is not None)
        elif isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.ndim == 1 and w.shape != m.weight.shape:
            m.weight = nn.Parameter(torch.empty(w.shape, dtype=m.weight.dtype))  # per-channel scales (SSD L2Norm)
            continue
        else:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        parent._modules[child] = new
    model.workbench_pruned = True
