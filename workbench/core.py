"""The library API. The CLI and the dashboard are thin shells over these functions."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoints import (PRUNED_MARKER, adapt_to_state_dict, apply_state_dict, infer_num_classes, is_deploy_layout,
                          read_metadata, read_state_dict, to_native_layout)
from .errors import CheckpointError
from .registry import create_model, get_spec, list_models, resolve_input_size
from .reparam import EquivalenceReport, compare_outputs, is_deploy, reparameterize_model
from .stats import count_params, layer_stats
from .modelinfo import info_of, set_info


def load_model(name: str, *, weights: str | os.PathLike | None = None, num_classes: int | None = None,
               input_size: int | None = None, deploy: bool | None = None, decode: str | None = None) -> nn.Module:
    """Build ``name`` and load ``weights`` into it.

    The class count defaults to the file's (read from its head) and the form (train-time or
    deploy) to the file's layout, so official deploy files load without extra flags.
    """
    if weights is None:
        model = create_model(name, num_classes=num_classes, input_size=input_size, deploy=bool(deploy))
        if decode and hasattr(model, "decode_config"):
            from .models.ssd import forced

            model.decode_config, model.decode_note = forced(decode, model.cfg.priors), f"forced to {decode} (--decode)"
        return model
    raw_sd = read_state_dict(weights)
    sd = to_native_layout(raw_sd)

    pruned = read_metadata(weights).get(PRUNED_MARKER) == "1"
    file_classes = infer_num_classes(sd)
    n = num_classes if num_classes is not None else file_classes
    file_deploy = is_deploy_layout(sd)
    # a deploy file can only load into the deploy form; a train file loads as trained and is
    # fused afterwards when ``deploy`` asks for it
    model = create_model(name, num_classes=n, input_size=input_size, deploy=file_deploy)
    if pruned:  # channel-pruned: take the layer shapes from the file
        adapt_to_state_dict(model, sd)
    apply_state_dict(model, sd, source=Path(weights).name)
    if hasattr(model, "decode_config"):
        set_decode(model, weights, raw_sd, decode)
    if deploy and not is_deploy(model):
        model = reparameterize_model(model, inplace=True)
    set_info(model, weights=str(weights))
    return model


def set_decode(model, weights, sd: dict, force: str | None = None) -> None:
    """The SSD decode configuration of a weights file: the one stored in its metadata (written by
    us), else the one its layout pins (torchvision, ssd.pytorch VOC / COCO), else ours. ``force``
    applies a layout's rules instead. ``model.decode_note`` says which and why."""
    import json

    from .checkpoints import detect_layout, read_metadata
    from .models.ssd import DecodeConfig, decode_config_for, forced

    raw = read_metadata(weights).get("workbench_decode")
    info = model.model_info
    if force:
        cfg, note = forced(force, model.cfg.priors), f"forced to the {force} layout's rules (--decode {force})"
    elif raw:
        cfg, note = DecodeConfig.from_dict(json.loads(raw)), "stored in the weights' metadata"
    else:
        cfg, note = decode_config_for(info.name, model.cfg.priors, detect_layout(sd), info.num_classes)
    model.decode_config = cfg
    model.decode_note = note


def model_summary(name: str, *, num_classes: int | None = None, input_size: int | None = None) -> dict:
    """Params and MACs (train-time and deploy) and output shapes, counted on the meta device."""
    spec = get_spec(name)
    size = resolve_input_size(spec, input_size)
    with torch.device("meta"):
        train = create_model(name, num_classes=num_classes, input_size=size)
        deploy = create_model(name, num_classes=num_classes, input_size=size, deploy=True)
    rows, outputs = layer_stats(train, size)
    rows_d, outputs_d = layer_stats(deploy, size)
    return {
        "name": spec.name,
        "family": spec.family,
        "task": spec.task,
        "num_classes": train.model_info.num_classes,
        "input_size": size,
        "params": count_params(train),
        "params_deploy": count_params(deploy),
        "macs": sum(r.macs for r in rows),
        "macs_deploy": sum(r.macs for r in rows_d),
        "outputs": [list(s) for s in outputs_d],
        "outputs_train": [list(s) for s in outputs],
        "tiny": spec.tiny,
        "description": spec.description,
    }


def zoo_table(pattern: str = "*", *, include_tiny: bool = True) -> list[dict]:
    return [model_summary(n) for n in list_models(pattern, include_tiny=include_tiny)]


def zoo_cache_key() -> str:
    """Changes whenever the zoo's figures could: the package version and the source of the model
    builders, the registry and the counting code."""
    import hashlib

    import workbench

    here = Path(__file__).parent
    h = hashlib.sha256(workbench.__version__.encode())
    for f in sorted([*(here / "models").glob("*.py"), here / "registry.py", here / "stats.py", here / "core.py"]):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def zoo_table_cached(cache_dir: Path | None = None) -> tuple[list[dict], bool]:
    """The whole zoo's figures, computed once per code version and kept on disk (the dashboard's
    Models page opens in seconds after the first start). Returns (rows, came from the cache)."""
    import json
    import os

    d = Path(cache_dir or os.environ.get("WORKBENCH_ZOO_CACHE") or Path.home() / ".cache" / "edge-workbench")
    f = d / f"zoo-{zoo_cache_key()}.json"
    try:
        return json.loads(f.read_text()), True
    except (OSError, ValueError):
        pass
    rows = zoo_table()
    try:
        d.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(f".{os.getpid()}.part")
        tmp.write_text(json.dumps(rows))
        os.replace(tmp, f)
    except OSError:
        pass  # a read-only home: the page still works, it just counts again next start
    return rows, False


@dataclass
class ReparamResult:
    model: nn.Module
    report: EquivalenceReport
    params_before: int
    params_after: int
    bn_before: int
    bn_after: int
    branches_before: int  # RepVGG multi-branch blocks before fusion
    branches_after: int
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("model", "report", "extra")}
        d.update(self.report.to_dict())
        d.update(self.extra)
        return d


def _count(model: nn.Module, kind) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def _multi_branch_blocks(model: nn.Module) -> int:
    return sum(hasattr(m, "rbr_dense") for m in model.modules())


def check_input(model: nn.Module, seed: int = 0, batch: int = 2) -> torch.Tensor:
    size = info_of(model).input_size
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=g)


def reparameterize(model: nn.Module, *, seed: int = 0) -> ReparamResult:
    """Re-parameterize (not in place) and measure the equivalence on a seeded check input."""
    deploy = reparameterize_model(model, inplace=False)
    report = compare_outputs(model, deploy, check_input(model, seed))
    return ReparamResult(
        model=deploy, report=report,
        params_before=count_params(model), params_after=count_params(deploy),
        bn_before=_count(model, nn.modules.batchnorm._BatchNorm), bn_after=_count(deploy, nn.modules.batchnorm._BatchNorm),
        branches_before=_multi_branch_blocks(model), branches_after=_multi_branch_blocks(deploy),
    )


def save_state_dict(model: nn.Module, path: str | os.PathLike) -> Path:
    """Write ``model.state_dict()`` atomically (.safetensors or torch format by suffix)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    pruned = bool(info_of(model).pruned)
    meta = {"workbench_pruned": "1"} if pruned else {}
    if hasattr(model, "decode_config"):  # an SSD is only right decoded the way it was trained: say how
        import json

        meta["workbench_decode"] = json.dumps(model.decode_config.to_dict())
    if pruned and p.suffix.lower() != ".safetensors":
        raise CheckpointError(f"a channel-pruned model is saved as .safetensors (its shapes travel in the metadata); "
                              f"use {p.with_suffix('.safetensors').name}")
    try:
        if p.suffix.lower() == ".safetensors":
            from safetensors.torch import save_file

            try:
                save_file(sd, str(tmp), metadata=meta or None)
            except Exception as e:  # safetensors words an OS error as its own exception: give it back as one
                import re

                m = re.search(r"os error (\d+)", str(e))
                if not m:
                    raise
                raise OSError(int(m.group(1)), os.strerror(int(m.group(1))), str(p)) from None
        elif p.suffix.lower() in (".pth", ".pt"):
            from .checkpoints import TORCH_METADATA_KEY

            torch.save({**sd, TORCH_METADATA_KEY: meta} if meta else sd, str(tmp))
        else:
            raise CheckpointError(f"cannot write weights to {p.name}: use a .pth, .pt or .safetensors name")
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def block_structure(model: nn.Module, limit: int | None = None) -> list[dict]:
    """The branch structure of each re-parameterizable block (RepVGG family) or conv+BN pair: what
    the dashboard and ``workbench reparam`` show before and after fusion."""
    rows = []
    for name, m in model.named_modules():
        if hasattr(m, "rbr_reparam"):
            c = m.rbr_reparam
            rows.append({"block": name, "branches": f"conv{c.kernel_size[0]}x{c.kernel_size[1]}+bias",
                         "channels": f"{c.in_channels}->{c.out_channels}", "groups": c.groups})
        elif hasattr(m, "rbr_dense"):
            conv = m.rbr_dense.conv
            parts = [f"conv{conv.kernel_size[0]}x{conv.kernel_size[1]}+BN"]
            one, ident = getattr(m, "rbr_1x1", None), getattr(m, "rbr_identity", None)
            if one is not None:
                parts.append("conv1x1" if isinstance(one, nn.Conv2d) else "conv1x1+BN")
            if ident is not None:
                parts.append("identity" if isinstance(ident, nn.Identity) else "identity BN")
            post = " -> post-BN" if isinstance(getattr(m, "bn", None), nn.BatchNorm2d) else ""
            rows.append({"block": name, "branches": " | ".join(parts) + post,
                         "channels": f"{conv.in_channels}->{conv.out_channels}", "groups": conv.groups})
        if limit and len(rows) >= limit:
            break
    return rows
