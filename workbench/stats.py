"""Parameter and multiply-add counts, computed from the model (conv and linear layers).

Counting runs the forward pass with hooks; on a model whose weights live on the ``meta``
device nothing is computed or allocated, so even VGG19 counts in milliseconds.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class LayerStats:
    name: str
    kind: str
    macs: int
    params: int
    input_elements: int
    output_elements: int
    output_shape: tuple[int, ...]


def count_params(model: nn.Module) -> int:
    """Trainable and frozen parameters, buffers (BN running statistics) excluded."""
    return sum(p.numel() for p in model.parameters())


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _shapes(y) -> list[tuple[int, ...]]:
    if isinstance(y, torch.Tensor):
        return [tuple(y.shape)]
    if isinstance(y, dict):
        return [s for v in y.values() for s in _shapes(v)]
    if isinstance(y, (list, tuple)):
        return [s for v in y for s in _shapes(v)]
    return []


@torch.no_grad()
def layer_stats(model: nn.Module, input_size: int, batch: int = 1) -> tuple[list[LayerStats], list[tuple[int, ...]]]:
    """Per-layer MACs for one forward pass at ``input_size`` and the output shapes."""
    rows: list[LayerStats] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = []

    def hook(m: nn.Module, inputs, output) -> None:
        x = inputs[0]
        if isinstance(m, nn.Conv2d):
            per_out = (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
            macs = output.numel() // x.shape[0] * per_out
        else:  # Linear
            macs = m.in_features * m.out_features * (output.numel() // x.shape[0] // m.out_features)
        rows.append(LayerStats(names[m], type(m).__name__, int(macs),
                               sum(p.numel() for p in m.parameters(recurse=False)),
                               x.numel() // x.shape[0], output.numel() // x.shape[0],
                               tuple(output.shape[1:])))

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(batch, 3, input_size, input_size, device=_device_of(model))
        outputs = _shapes(model(x))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return rows, outputs


def count_macs(model: nn.Module, input_size: int) -> int:
    rows, _ = layer_stats(model, input_size)
    return sum(r.macs for r in rows)
