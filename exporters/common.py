"""Shared helpers for converters (run inside worker processes)."""
from __future__ import annotations

import torch.nn as nn


class MainOutput(nn.Module):
    """Exported graphs carry the main output only (RepVGGplus train form returns a dict)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        y = self.model(x)
        return y["main"] if isinstance(y, dict) else y
