"""The model registry: one decorator registers a builder, wildcards list them (timm style).

Builders take keyword-only options (``num_classes``, ``input_size`` and architecture specific
ones). Duplicate registration is an error (torchvision style).
"""
from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field

import torch.nn as nn

from .errors import ModelConfigError, UnknownModelError, did_you_mean
from .modelinfo import ModelInfo


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # vgg | repvgg | repvggplus | ssd | resnet | mobilenet
    task: str  # classification | detection
    builder: Callable[..., nn.Module]
    default_num_classes: int
    default_input_size: int
    min_input_size: int = 32
    fixed_input_size: bool = False  # SSD: the prior boxes fix the input size
    tiny: bool = False  # test-sized variant
    description: str = ""
    reference: str = ""  # where the architecture is defined
    tags: tuple[str, ...] = field(default_factory=tuple)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    family: str,
    task: str = "classification",
    default_num_classes: int = 1000,
    default_input_size: int = 224,
    min_input_size: int = 32,
    fixed_input_size: bool = False,
    tiny: bool = False,
    description: str = "",
    reference: str = "",
):
    """Decorator: register ``fn(**kwargs) -> nn.Module`` under ``name``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        if name != name.lower() or "_" in name:
            raise ValueError(f"model names are lower-case with dashes, got {name!r}")
        _REGISTRY[name] = ModelSpec(
            name=name,
            family=family,
            task=task,
            builder=fn,
            default_num_classes=default_num_classes,
            default_input_size=default_input_size,
            min_input_size=min_input_size,
            fixed_input_size=fixed_input_size,
            tiny=tiny,
            description=description,
            reference=reference,
        )
        return fn

    return wrap


def _ensure_loaded() -> None:
    from . import models  # noqa: F401  (importing registers every builder)


def list_models(pattern: str = "*", *, include_tiny: bool = True) -> list[str]:
    """Registered names matching a shell wildcard, e.g. ``list_models("repvgg-b*")``."""
    _ensure_loaded()
    return [
        n
        for n, s in _REGISTRY.items()
        if fnmatch.fnmatchcase(n, pattern) and (include_tiny or not s.tiny)
    ]


def get_spec(name: str) -> ModelSpec:
    _ensure_loaded()
    key = name.strip().lower().replace("_", "-")
    if key not in _REGISTRY:
        raise UnknownModelError(
            f"unknown model {name!r}{did_you_mean(key, _REGISTRY)}; "
            "run `workbench models` to list the zoo"
        )
    return _REGISTRY[key]


MAX_INPUT_SIZE = 2048


def resolve_input_size(spec: ModelSpec, input_size: int | None) -> int:
    if input_size is None:
        return spec.default_input_size
    if isinstance(input_size, bool) or not isinstance(input_size, int) and not (
            isinstance(input_size, float) and input_size.is_integer()):
        raise ModelConfigError(f"input size must be a whole number of pixels, got {input_size!r}")
    size = int(input_size)
    if size > MAX_INPUT_SIZE:
        raise ModelConfigError(f"{spec.name}: input {size}px is over the {MAX_INPUT_SIZE}px this tool builds "
                               f"(activations alone would need GBs); use a smaller --input-size")
    if spec.fixed_input_size and size != spec.default_input_size:
        raise ModelConfigError(
            f"{spec.name} takes only {spec.default_input_size}x{spec.default_input_size} input "
            f"(its default boxes are laid out for it), got {size}; drop --input-size"
        )
    if size < spec.min_input_size:
        raise ModelConfigError(
            f"{spec.name} needs an input of at least {spec.min_input_size}px, got {size}; "
            "use a larger --input-size"
        )
    return size


def create_model(
    name: str,
    *,
    num_classes: int | None = None,
    input_size: int | None = None,
    deploy: bool = False,
    **kwargs,
) -> nn.Module:
    """Build a registered model in eval mode.

    ``deploy=True`` returns the re-parameterized form (RepVGG blocks as one 3x3 conv, conv+BN
    fused), so deploy-format checkpoints load into it directly.
    """
    spec = get_spec(name)
    n = spec.default_num_classes if num_classes is None else int(num_classes)
    if n < 1:
        raise ModelConfigError(f"num_classes must be >= 1, got {n}; pass --num-classes N")
    size = resolve_input_size(spec, input_size)
    model = spec.builder(num_classes=n, input_size=size, **kwargs)
    model.model_info = ModelInfo(name=spec.name, task=spec.task, num_classes=n, input_size=size, family=spec.family)
    model.eval()
    if deploy:
        from .reparam import reparameterize_model

        model = reparameterize_model(model, inplace=True)
    return model
