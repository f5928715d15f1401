"""Load the weights files users hold, safely, whatever project wrote them.

- ``.pth``/``.pt``/``.bin``/``.ckpt`` through ``torch.load(..., weights_only=True)``: a pickle
  that would run code or build arbitrary objects is refused without running it.
- ``.safetensors`` through safetensors (no code path at all).
- Wrappers (``state_dict``, ``model``, ``model_state_dict``, ``net``, ``ema``) and ``module.``
  prefixes (DataParallel) are stripped.
- Layouts are decided from the keys, never the file name: official RepVGG / RepVGGplus
  train-time or deploy-time, torchvision VGG / ResNet / MobileNetV2, ssd.pytorch and
  torchvision SSD (converted one to one onto our ssd.pytorch layout).
"""
from __future__ import annotations

import os
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from .errors import CheckpointError, UnsafeCheckpointError
from .modelinfo import info_of, set_info

TORCH_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt", ".tar"}
SAFE_SUFFIXES = {".safetensors"}
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "ema", "module")


TORCH_METADATA_KEY = "_workbench_metadata"  # a .pth we write: {str: str} beside the tensors


def read_metadata(path: str | os.PathLike) -> dict:
    """The string metadata of a weights file: a .safetensors header's, or the ``_workbench_metadata``
    entry of a .pth we wrote ({} when there is none or the file is unreadable)."""
    p = Path(path)
    if p.suffix.lower() in TORCH_SUFFIXES:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
        except Exception:
            return {}
        meta = obj.get(TORCH_METADATA_KEY) if isinstance(obj, dict) else None
        return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
    if p.suffix.lower() not in SAFE_SUFFIXES:
        return {}
    try:
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:
        return {}


def read_state_dict(path: str | os.PathLike) -> "OrderedDict[str, torch.Tensor]":
    """Read a weights file into a flat ``{key: tensor}`` dict without running any code."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"weights file {p} does not exist; check the --weights path")
    if p.is_dir():
        raise CheckpointError(f"{p} is a folder; --weights takes a .pth, .pt or .safetensors file")
    if p.stat().st_size == 0:
        raise CheckpointError(f"weights file {p} is empty (0 bytes); re-download or re-save it")
    suffix = p.suffix.lower()
    if suffix in SAFE_SUFFIXES:
        obj = _read_safetensors(p)
    elif suffix in TORCH_SUFFIXES:
        obj = _read_torch(p)
    else:
        raise CheckpointError(
            f"{p.name}: unsupported weights format {suffix or '(no suffix)'}; "
            "use .pth, .pt or .safetensors")
    return unwrap_state_dict(obj, p)


def _read_safetensors(p: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{p.name} is not a readable .safetensors file ({_short(e)}); "
                              "the file may be truncated or of another format") from e


def _sniff(p: Path) -> None:
    """Name what a file is when it is not a checkpoint, before torch.load says something obscure."""
    link = f" (a link to {os.readlink(p)})" if p.is_symlink() else ""
    with open(p, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK\x03\x04"):
        try:
            names = zipfile.ZipFile(p).namelist()
        except zipfile.BadZipFile:
            names = []
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            raise CheckpointError(f"{p.name}{link} is a TorchScript archive (torch.jit.save), not a state dict; save its "
                                  "weights with torch.save(torch.jit.load(path).state_dict(), 'weights.pth')")
        return
    import tarfile

    if not head.startswith(b"\x80") and not tarfile.is_tarfile(p):  # not a zip, a pickle or a legacy tar
        shown = head.decode("ascii", "replace").strip() or head.hex()
        raise CheckpointError(f"{p.name}{link} is not a PyTorch checkpoint: it starts with {shown!r} (a .pth file is "
                              "a zip archive or a pickle); pass the weights file itself")


def _read_torch(p: Path) -> object:
    import warnings

    _sniff(p)
    try:
        with warnings.catch_warnings():  # torch's own warnings about the file: our one line says it better
            warnings.simplefilter("ignore")
            return torch.load(str(p), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" in msg or "Unsupported global" in msg or "GLOBAL" in msg:
            culprit = _culprit(msg)
            raise UnsafeCheckpointError(
                f"refusing to load {p.name}: it holds Python objects beyond tensors{culprit}, "
                "and unpickling it could run code; re-save only its state_dict "
                "(torch.save(model.state_dict(), ...)) or convert it to .safetensors") from e
        raise CheckpointError(f"{p.name} is not a readable PyTorch file ({_short(e)}); "
                              "the file may be truncated or of another format") from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError,
            AttributeError, IndexError, TypeError) as e:
        raise CheckpointError(f"{p.name} is not a readable PyTorch file ({_short(e)}); "
                              "the file may be truncated or of another format") from e


def _culprit(msg: str) -> str:
    """The pickle global that was refused, named (torch words it differently across versions)."""
    import re

    m = re.search(r"GLOBAL ([A-Za-z_][\w.]*)", msg)
    return f" (it asks for {m.group(1)})" if m else ""


def _short(e: BaseException, limit: int = 160) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def unwrap_state_dict(obj: object, source: Path | str = "checkpoint") -> "OrderedDict[str, torch.Tensor]":
    """Strip training wrappers and ``module.`` prefixes; keep tensors only."""
    for _ in range(4):
        if isinstance(obj, dict) and not _is_tensor_dict(obj):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        name = getattr(source, "name", source)
        raise CheckpointError(f"{name} holds no state dict (no tensors found at the top level or "
                              f"under {', '.join(WRAPPER_KEYS)}); save model.state_dict()")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            while k.startswith("module."):
                k = k[len("module."):]
            out[k] = v
    return out


def _is_tensor_dict(d: dict) -> bool:
    return bool(d) and sum(isinstance(v, torch.Tensor) for v in d.values()) >= max(1, len(d) // 2)


# --- layouts --------------------------------------------------------------------------------

def detect_layout(sd: dict) -> str:
    keys = set(sd)
    if "backbone.scale_weight" in keys or any(k.startswith("head.classification_head.") for k in keys):
        return "ssd-torchvision"
    if "L2Norm.weight" in keys or any(k.startswith("conf.") for k in keys):
        return "ssd-pytorch"
    deploy = any(".rbr_reparam." in k or k.startswith("stage0.rbr_reparam") for k in keys)
    train = any(".rbr_dense." in k for k in keys)
    if "stage3_first.blocks.0.rbr_reparam.weight" in keys or "stage3_first.blocks.0.rbr_dense.conv.weight" in keys:
        return "repvggplus-deploy" if deploy else "repvggplus-train"
    if deploy or train:
        return "repvgg-deploy" if deploy else "repvgg-train"
    if "fc.weight" in keys and "conv1.weight" in keys:
        return "torchvision-resnet"
    if "classifier.1.weight" in keys and "features.0.0.weight" in keys:
        return "torchvision-mobilenet-v2"
    if "classifier.6.weight" in keys:
        return "torchvision-vgg"
    return "unknown"


def is_deploy_layout(sd: dict) -> bool:
    """True for re-parameterized files: RepVGG ``rbr_reparam`` keys, or no BN statistics left."""
    layout = detect_layout(sd)
    if layout.startswith("repvgg"):
        return layout.endswith("deploy")
    return not any(k.endswith("running_var") for k in sd)


def torchvision_ssd_to_ssdpytorch(sd: dict) -> "OrderedDict[str, torch.Tensor]":
    """Map torchvision ``ssd300_vgg16`` keys onto ssd.pytorch's (one to one)."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    extra0 = {"1": "24", "3": "26", "5": "28"}  # conv5_1..5_3 after maxpool4
    fc = {"1": "31", "3": "33"}  # conv6 (dilated), conv7
    for k, v in sd.items():
        parts = k.split(".")
        new = None
        if k == "backbone.scale_weight":
            new = "L2Norm.weight"
        elif parts[:2] == ["backbone", "features"]:
            new = ".".join(["vgg"] + parts[2:])
        elif parts[:3] == ["backbone", "extra", "0"]:
            if parts[3] == "7":
                new = ".".join(["vgg", fc[parts[4]]] + parts[5:])
            else:
                new = ".".join(["vgg", extra0[parts[3]]] + parts[4:])
        elif parts[:2] == ["backbone", "extra"]:
            idx = 2 * (int(parts[2]) - 1) + (0 if parts[3] == "0" else 1)
            new = ".".join(["extras", str(idx)] + parts[4:])
        elif parts[:3] == ["head", "classification_head", "module_list"]:
            new = ".".join(["conf"] + parts[3:])
        elif parts[:3] == ["head", "regression_head", "module_list"]:
            new = ".".join(["loc"] + parts[3:])
        if new is None:
            raise CheckpointError(f"unexpected key {k!r} in a torchvision SSD file; "
                                  "only backbone.* and head.* keys map onto ssd300-vgg16")
        out[new] = v
    return out


def to_native_layout(sd: dict) -> "OrderedDict[str, torch.Tensor]":
    if detect_layout(sd) == "ssd-torchvision":
        return torchvision_ssd_to_ssdpytorch(sd)
    return OrderedDict(sd)


HEAD_KEYS = (("linear.weight", 0, 1), ("classifier.6.weight", 0, 1), ("fc.weight", 0, 1),
             ("classifier.1.weight", 0, 1), ("conf.0.weight", 0, 4))


def infer_num_classes(sd: dict) -> int | None:
    """Class count from the head's weight shape (SSD: conf.0 has 4 boxes x classes outputs)."""
    for key, dim, per in HEAD_KEYS:
        if key in sd and sd[key].ndim >= 1:
            return int(sd[key].shape[dim]) // per
    return None


# --- fitting a state dict to a model --------------------------------------------------------

@dataclass(frozen=True)
class Mismatch:
    missing: list[str]
    unexpected: list[str]
    misshaped: list[tuple[str, tuple, tuple]]  # key, file shape, model shape

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.misshaped)

    def describe(self, n: int = 3) -> str:
        parts = []
        if self.missing:
            parts.append(f"missing {len(self.missing)} keys ({_few(self.missing, n)})")
        if self.unexpected:
            parts.append(f"unexpected {len(self.unexpected)} keys ({_few(self.unexpected, n)})")
        if self.misshaped:
            items = [f"{k}: file {list(a)} vs model {list(b)}" for k, a, b in self.misshaped[:n]]
            more = f", +{len(self.misshaped) - n} more" if len(self.misshaped) > n else ""
            parts.append(f"mis-shaped {len(self.misshaped)} ({'; '.join(items)}{more})")
        return ", ".join(parts)


def _few(keys: list[str], n: int) -> str:
    return ", ".join(keys[:n]) + (f", +{len(keys) - n} more" if len(keys) > n else "")


def compare_state_dict(model: nn.Module, sd: dict) -> Mismatch:
    want = model.state_dict()
    missing = [k for k in want if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in want]
    misshaped = [(k, tuple(sd[k].shape), tuple(want[k].shape)) for k in want
                 if k in sd and tuple(sd[k].shape) != tuple(want[k].shape)]
    return Mismatch(missing, unexpected, misshaped)


def apply_state_dict(model: nn.Module, sd: dict, source: str = "weights") -> None:
    """Load ``sd`` into ``model`` strictly, or raise one line naming what does not fit."""
    sd = to_native_layout(sd)
    mm = compare_state_dict(model, sd)
    if not mm.ok:
        name = info_of(model).name
        n = info_of(model).num_classes
        target = f"{name}" + (f" ({n} classes)" if n else "")
        fits = suggest_models(sd)
        hint = (f"; it fits {', '.join(fits)}" if fits else "; no model in the zoo fits it")
        raise CheckpointError(f"{source} does not fit {target}: {mm.describe()}{hint}")
    check_values(model, sd, source)
    full = dict(sd)
    for k, v in model.state_dict().items():  # BN counters some files omit
        if k.endswith("num_batches_tracked") and k not in full:
            full[k] = v
    model.load_state_dict(full, strict=True)


def check_values(model: nn.Module, sd: dict, source: str = "weights") -> None:
    """Refuse a tensor whose type or values cannot be weights: a non-floating tensor where the model
    holds floats (int64 weights would load as garbage), or NaN / Inf anywhere (they propagate into
    every figure). Names the first offending key."""
    want = model.state_dict()
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            continue
        ref = want.get(k)
        if ref is not None and ref.is_floating_point() and not v.is_floating_point():
            raise CheckpointError(f"{source}: {k} holds {str(v.dtype).removeprefix('torch.')} values where the model "
                                  f"expects floating-point weights; re-save the weights as float32")
        if v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all()):
            bad = int((~torch.isfinite(v)).sum())
            kind = "NaN" if bool(torch.isnan(v).any()) else "Inf"
            raise CheckpointError(f"{source}: {k} has {bad} non-finite value(s) ({kind}); the weights are damaged "
                                  "(a diverged training run?): use an earlier checkpoint")


def suggest_models(sd: dict, limit: int = 3) -> list[str]:
    """Zoo models (with class count and form) whose keys and shapes match ``sd`` exactly."""
    from .registry import create_model, get_spec, list_models

    sd = to_native_layout(sd)
    n = infer_num_classes(sd)
    deploy = is_deploy_layout(sd)
    hits: list[str] = []
    for name in list_models():
        spec = get_spec(name)
        for dep in ((True, False) if deploy else (False,)):
            try:
                with torch.device("meta"):
                    m = create_model(name, num_classes=n or spec.default_num_classes, deploy=dep)
            except Exception:  # a builder that rejects the class count is simply not a fit
                continue
            if compare_state_dict(m, sd).ok:
                label = name + (f" --num-classes {n}" if n and n != spec.default_num_classes else "")
                hits.append(label + (" (deploy form)" if dep and not name.startswith("ssd") else ""))
                break
        if len(hits) >= limit:
            break
    return hits


# A channel-pruned file records this marker in its safetensors metadata; loading it resizes the
# layers to the file's shapes first (the pruning itself is workbench.optimize.prune).
PRUNED_MARKER = "workbench_pruned"


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
    set_info(model, pruned=True)
