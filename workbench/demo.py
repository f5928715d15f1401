"""``workbench demo``: the main job on the embedded default.

Today it shows the zoo and proves re-parameterization on RepVGG-A0 (random weights, seeded);
export, evaluation, latency and reports join it as those stages land.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch


def run_demo(out: Path, model: str = "repvgg-a0", seed: int = 0) -> dict:
    from rich.console import Console

    from .api import model_summary, reparameterize, save_state_dict
    from .registry import create_model

    console = Console(width=140)
    out.mkdir(parents=True, exist_ok=True)
    info = model_summary(model)
    console.print(f"[bold]1. {model}[/]: {info['params']:,} params train-time -> "
                  f"{info['params_deploy']:,} deploy; {info['macs'] / 1e9:.3f} -> "
                  f"{info['macs_deploy'] / 1e9:.3f} GMACs at {info['input_size']}px "
                  "(counted from the architecture)")
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    train = create_model(model)
    result = reparameterize(train, seed=seed)
    path = save_state_dict(result.model, out / f"{model}-deploy.safetensors")
    r = result.report
    console.print(f"[bold]2. re-parameterized[/] in {time.perf_counter() - t0:.1f}s: "
                  f"{result.branches_before} multi-branch blocks -> {result.branches_after}, "
                  f"BatchNorm layers {result.bn_before} -> {result.bn_after}; deploy vs train on a "
                  f"seeded input: max abs diff {r.max_abs_diff:.2e} ({r.relative_max_diff:.1e} of "
                  f"max |output|), cosine {r.cosine:.9f} (random weights, seed {seed})")
    console.print(f"   deploy weights: {path}")
    return {"model": model, "deploy_weights": str(path), **result.to_dict()}
