"""Optimization steps as one pipeline, shared by ``workbench optimize``, sweeps (``optimize = {...}``
on a ``[[models]]`` entry) and the dashboard, with the same option names everywhere:

- ``prune`` (ratio of channels, structured, torch-pruning), ``prune_stages`` ({submodule: ratio}),
  ``norm`` (1 or 2);
- ``finetune_epochs`` (after pruning, with ``data``; the ``workbench train`` loop), ``lr``;
- ``sparsity`` (unstructured magnitude pruning of the deploy form: zeros, same shapes);
- ``qat_epochs`` (quantization-aware fine-tuning of the deploy form, with ``data``).

Steps run in that order. The result is a weights file (``.safetensors``) plus a report of params,
MACs, file size (dense and gzip-compressed) before and after; ``workbench.studies.before_after`` adds
measured accuracy and host latency of the exported ONNX files.
"""
from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path

from ..errors import ConfigError, did_you_mean
from ..modelinfo import info_of

OPT_KEYS = {"prune", "prune_stages", "norm", "finetune_epochs", "sparsity", "qat_epochs", "data", "lr"}


def validate_optimize(d: dict | None, where: str = "optimize") -> dict:
    d = dict(d or {})
    for k in d:
        if k not in OPT_KEYS:
            raise ConfigError(f"{where}: unknown key '{k}'{did_you_mean(k, OPT_KEYS)}; allowed: {', '.join(sorted(OPT_KEYS))}")

    def num(k, lo, hi, integer=False):
        v = d.get(k)
        if v is None:
            return
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int)) or not lo <= v <= hi:
            raise ConfigError(f"{where}.{k} must be {'an integer' if integer else 'a number'} in [{lo}, {hi}], got {v!r}")
    num("prune", 0, 0.95)
    num("sparsity", 0, 0.99)
    num("finetune_epochs", 0, 1000, True)
    num("qat_epochs", 0, 1000, True)
    num("lr", 1e-8, 1.0)
    if d.get("norm", 1) not in (1, 2):
        raise ConfigError(f"{where}.norm must be 1 or 2")
    ps = d.get("prune_stages", {})
    if not isinstance(ps, dict):
        raise ConfigError(f"{where}.prune_stages must be a table of submodule = ratio")
    if (d.get("finetune_epochs") or d.get("qat_epochs")) and not d.get("data"):
        raise ConfigError(f"{where}: fine-tuning and QAT need data = \"builtin\" or an ImageFolder path")
    if d.get("finetune_epochs") and not (d.get("prune") or ps):
        raise ConfigError(f"{where}.finetune_epochs follows pruning; set prune (or use workbench train)")
    if not any(d.get(k) for k in ("prune", "prune_stages", "sparsity", "qat_epochs")):
        raise ConfigError(f"{where}: nothing to do; set prune, prune_stages, sparsity or qat_epochs")
    return d


def tag(d: dict) -> str:
    """A short label for an optimized variant: repvgg-a0+p0.3ft2."""
    parts = []
    if d.get("prune") or d.get("prune_stages"):
        parts.append(f"p{d.get('prune', 0):g}" + "".join(f"-{k}{v:g}" for k, v in sorted(d.get("prune_stages", {}).items())))
    if d.get("finetune_epochs"):
        parts.append(f"ft{d['finetune_epochs']}")
    if d.get("sparsity"):
        parts.append(f"s{d['sparsity']:g}")
    if d.get("qat_epochs"):
        parts.append(f"qat{d['qat_epochs']}")
    return "+" + "".join(parts)


def _figures(model, path: Path | None = None) -> dict:
    from ..stats import count_macs, count_params

    size = info_of(model).input_size
    out = {"params": count_params(model), "macs": count_macs(model, size)}
    if path is not None and path.exists():
        raw = path.read_bytes()
        out.update(file_bytes=len(raw), file_gzip_bytes=len(gzip.compress(raw, 6)))
    return out


def optimize_model(name: str, steps: dict, *, out: str | os.PathLike, weights: str | None = None,
                   num_classes: int | None = None, input_size: int | None = None, say=None) -> dict:
    """Apply ``steps`` to the model and write ``out`` (.safetensors). Returns the report."""
    import torch

    from ..core import load_model, reparameterize, save_state_dict
    from .prune import prune_channels, sparsify

    steps = validate_optimize(steps)
    say = say or (lambda msg: None)
    out = Path(out)
    if out.suffix.lower() != ".safetensors":
        raise ConfigError(f"optimized weights are written as .safetensors (pruned shapes travel in its metadata); "
                          f"use {out.with_suffix('.safetensors').name}")
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = load_model(name, weights=weights, num_classes=num_classes, input_size=input_size)
    size, n_classes = model.model_info.input_size, model.model_info.num_classes
    with tempfile.TemporaryDirectory(prefix="wb-opt-") as tmp:
        tmp = Path(tmp)
        deploy_before = reparameterize(model).model
        before_path = save_state_dict(deploy_before, tmp / "before.safetensors")
        report = {"model": name, "weights": weights, "steps": steps, "num_classes": n_classes, "input_size": size,
                  "before": _figures(deploy_before, before_path)}
        del deploy_before
        if steps.get("prune") or steps.get("prune_stages"):
            say(f"pruning {steps.get('prune', 0):.0%} of channels")
            model, pr = prune_channels(model, steps.get("prune", 0.0), norm=steps.get("norm", 1),
                                       stages=steps.get("prune_stages"))
            chk = reparameterize(model)
            pr["reparam_after_pruning"] = {"relative_max_diff": chk.report.relative_max_diff, "cosine": chk.report.cosine}
            report["prune"] = pr
            if steps.get("data") and info_of(model).task == "classification":
                from ..evaluate import evaluate_torch

                report["prune"]["eval_top1_before_finetune"] = evaluate_torch(model.eval(), steps["data"], 500).get("top1")
            if steps.get("finetune_epochs"):
                from ..train import TrainConfig, train

                say(f"fine-tuning {steps['finetune_epochs']} epochs on {steps['data']}")
                pruned = save_state_dict(model, tmp / "pruned.safetensors")
                ft = tmp / "finetuned.safetensors"
                res = train(name, steps["data"], out=ft, input_size=size, num_classes=n_classes, weights=str(pruned),
                            config=TrainConfig(epochs=steps["finetune_epochs"], lr=steps.get("lr", 5e-4)))
                report["finetune"] = {"epochs": steps["finetune_epochs"], "history": res["history"],
                                      "eval_top1": res["eval"].get("top1")}
                model = load_model(name, weights=str(ft), num_classes=n_classes, input_size=size)
        if steps.get("sparsity") or steps.get("qat_epochs"):
            model = reparameterize(model).model  # both act on the deploy form (fusion would undo sparsity)
        if steps.get("qat_epochs"):
            from .quant import qat_finetune

            say(f"quantization-aware training, {steps['qat_epochs']} epochs on {steps['data']}")
            model, q = qat_finetune(model, steps["data"], epochs=steps["qat_epochs"], lr=steps.get("lr", 2e-4))
            report["qat"] = q
        if steps.get("sparsity"):
            say(f"zeroing the smallest {steps['sparsity']:.0%} of weights")
            report["sparsity"] = sparsify(model, steps["sparsity"])
        path = save_state_dict(model, out)
        report["after"] = _figures(reparameterize(model).model, path)
        report["out"] = str(path)
        b, a = report["before"], report["after"]
        report["macs_reduction"] = 1 - a["macs"] / b["macs"]
        report["params_reduction"] = 1 - a["params"] / b["params"]
        if steps.get("sparsity"):
            report["note"] = ("unstructured sparsity keeps every shape: dense runtimes (XNNPACK, ORT CPU, the GPU "
                              "delegate) do the same work, so latency does not drop; only the compressed file does "
                              f"({b['file_gzip_bytes'] / 2**20:.2f} -> {a['file_gzip_bytes'] / 2**20:.2f} MB gzip)")
    from ..fsutil import atomic_write_json

    atomic_write_json(path.with_name(path.name + ".json"), report)
    return report
