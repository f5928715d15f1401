"""Edge Workbench: re-parameterize, export, verify and measure VGG / RepVGG / SSD models.

The public API is loaded lazily so ``workbench --help`` and the dashboard start fast.
"""
from __future__ import annotations

__version__ = "0.1.0"

_EXPORTS = {
    "create_model": "registry", "list_models": "registry", "get_spec": "registry",
    "register_model": "registry", "reparameterize_model": "reparam", "fuse_conv_bn": "reparam",
    "load_model": "core", "model_summary": "core", "reparameterize": "core",
    "read_state_dict": "checkpoints", "WorkbenchError": "errors",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


__all__ = sorted(_EXPORTS)
