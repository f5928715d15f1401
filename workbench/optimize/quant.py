"""Quantization in PyTorch: simulated INT8 (fake quantization) for the per-layer sensitivity table,
and quantization-aware training (QAT) of the deploy model.

Simulation: each Conv2d / Linear gets symmetric INT8 weights (per output channel or per tensor)
and asymmetric 8-bit input activations with ranges calibrated on calibration images (min/max, or
the 99.99th percentile). That is the arithmetic ONNX Runtime's static QDQ and TFLite's full-integer
converter apply, without their fusions, so the per-layer ranking is a guide to the real files,
which are measured separately (the study exports and evaluates them).

QAT: the same fake quantization, with straight-through gradients and ranges tracked by an EMA,
while fine-tuning the deploy model (one plain 3x3 conv per block) on the training split. The
result is a float model whose weights and activations sit well on the INT8 grid; it is exported
with the ordinary post-training INT8 path. (The RepVGG authors insert a BN after each fused conv
for QAT; fine-tuning the fused conv directly under fake quantization is the equivalent used here,
and the BN-free form exports without a fold step.)
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..modelinfo import info_of

QUANT_KEYS = {"per_channel", "calib_method", "keep_float", "keep_worst"}
CALIB_METHODS = ("minmax", "percentile", "entropy")


def validate_quant(q: dict | None, where: str = "quantization") -> dict:
    """Check a quantization options table (sweep ``[quantization]``, dashboard, CLI flags)."""
    from ..errors import did_you_mean

    q = dict(q or {})
    for k in q:
        if k not in QUANT_KEYS:
            raise ConfigError(f"{where}: unknown key '{k}'{did_you_mean(k, QUANT_KEYS)}; allowed: {', '.join(sorted(QUANT_KEYS))}")
    if "per_channel" in q and not isinstance(q["per_channel"], bool):
        raise ConfigError(f"{where}.per_channel must be true or false")
    if q.get("calib_method", "minmax") not in CALIB_METHODS:
        m = q["calib_method"]
        raise ConfigError(f"{where}.calib_method {m!r}{did_you_mean(str(m), CALIB_METHODS)}; choose {', '.join(CALIB_METHODS)}")
    kf = q.get("keep_float", [])
    if not isinstance(kf, list) or not all(isinstance(x, str) for x in kf):
        raise ConfigError(f"{where}.keep_float must be a list of layer names (or 'first', 'last')")
    kw = q.get("keep_worst", 0)
    if isinstance(kw, bool) or not isinstance(kw, int) or not 0 <= kw <= 10_000:
        raise ConfigError(f"{where}.keep_worst must be a whole number from 0 to 10000 (layers kept in float by "
                          f"sensitivity), got {kw!r}")
    return q


def quant_layers(model: nn.Module) -> list[str]:
    """Names of the layers INT8 quantizes (Conv2d and Linear), in module order."""
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return x + (q - x).detach()


def fq_weight(w: torch.Tensor, per_channel: bool = True, bits: int = 8) -> torch.Tensor:
    qmax = 2 ** (bits - 1) - 1
    amax = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True) if per_channel else w.abs().max()
    scale = amax.clamp_min(1e-12) / qmax
    return _ste(w, (w / scale).round().clamp(-qmax - 1, qmax) * scale)


def fq_act(x: torch.Tensor, lo: float, hi: float, bits: int = 8) -> torch.Tensor:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    levels = 2 ** bits - 1
    scale = max(hi - lo, 1e-12) / levels
    zp = round(-lo / scale)
    return _ste(x, ((x / scale).round() + zp).clamp(0, levels).sub(zp) * scale)


class QuantSim(nn.Module):
    """A Conv2d/Linear with switchable fake quantization of its weights and input activations."""

    def __init__(self, layer: nn.Module, per_channel: bool = True):
        super().__init__()
        self.layer = layer
        self.per_channel = per_channel
        self.quant_w = self.quant_a = False
        self.calibrating = False
        self.method = "minmax"
        self.lo = self.hi = None
        self.samples: list[torch.Tensor] = []
        self.ema = 0.0  # >0 during QAT: ranges follow the batches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.calibrating:
            flat = x.detach().flatten()
            if self.method == "percentile":
                self.samples.append(flat[torch.randperm(flat.numel())[:20000]])
            lo, hi = float(flat.min()), float(flat.max())
            self.lo = lo if self.lo is None else min(self.lo, lo)
            self.hi = hi if self.hi is None else max(self.hi, hi)
        elif self.ema and self.training:
            lo, hi = float(x.detach().min()), float(x.detach().max())
            self.lo = self.ema * self.lo + (1 - self.ema) * lo
            self.hi = self.ema * self.hi + (1 - self.ema) * hi
        if self.quant_a and self.lo is not None:
            x = fq_act(x, self.lo, self.hi)
        w = fq_weight(self.layer.weight, self.per_channel) if self.quant_w else self.layer.weight
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, w, self.layer.bias)
        return F.linear(x, w, self.layer.bias)

    def finish_calibration(self) -> None:
        if self.method == "percentile" and self.samples:
            s = torch.cat(self.samples)
            self.lo, self.hi = float(torch.quantile(s, 0.0001)), float(torch.quantile(s, 0.9999))
        self.samples = []
        self.calibrating = False


def attach(model: nn.Module, per_channel: bool = True) -> tuple[nn.Module, dict[str, QuantSim]]:
    """A copy of ``model`` whose Conv2d/Linear layers are QuantSim wrappers (all off)."""
    sim = copy.deepcopy(model)
    sims = {}
    for name in quant_layers(sim):
        parent_name, _, child = name.rpartition(".")
        parent = sim.get_submodule(parent_name) if parent_name else sim
        q = QuantSim(getattr(parent, child), per_channel)
        parent._modules[child] = q
        sims[name] = q
    return sim, sims


@torch.no_grad()
def calibrate(sim: nn.Module, sims: dict[str, QuantSim], x: torch.Tensor, method: str = "minmax", batch: int = 32) -> None:
    sim.eval()
    for q in sims.values():
        q.calibrating, q.method, q.lo, q.hi = True, "percentile" if method == "percentile" else "minmax", None, None
    for i in range(0, len(x), batch):
        sim(x[i:i + batch])
    for q in sims.values():
        q.finish_calibration()


def _logits(out) -> torch.Tensor:
    if isinstance(out, dict):
        return out["main"]
    if isinstance(out, (tuple, list)):
        return torch.cat([o.flatten(1) for o in out], 1)
    return out


@torch.no_grad()
def _run(model: nn.Module, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    return torch.cat([_logits(model(x[i:i + batch])) for i in range(0, len(x), batch)])


def _sqnr(ref: torch.Tensor, out: torch.Tensor) -> float:
    noise = float(((ref - out) ** 2).sum())
    return float("inf") if noise == 0 else 10 * math.log10(float((ref ** 2).sum()) / noise)


@torch.no_grad()
def sensitivity(model: nn.Module, calib_x: torch.Tensor, eval_x: torch.Tensor, labels: np.ndarray | None = None,
                *, per_channel: bool = True, method: str = "minmax", progress=None) -> dict:
    """Per-layer INT8 sensitivity: quantize one layer at a time (weights + input activations) and
    measure the model output against float. Rows come worst first (lowest SQNR). ``progress(done,
    total, layer)`` is called after each layer."""
    model = model.eval()
    sim, sims = attach(model, per_channel)
    calibrate(sim, sims, calib_x, method)
    ref = _run(model, eval_x)
    labels_t = torch.from_numpy(np.asarray(labels)) if labels is not None else None

    def measure(tag: str) -> dict:
        out = _run(sim, eval_x)
        row = {"layer": tag, "sqnr_db": _sqnr(ref, out), "max_abs_diff": float((ref - out).abs().max())}
        if ref.dim() == 2:
            row["top1_agreement"] = float((ref.argmax(1) == out.argmax(1)).float().mean())
            if labels_t is not None:
                row["top1"] = float((out.argmax(1) == labels_t).float().mean())
        return row

    rows = []
    names = list(sims)
    for i, name in enumerate(names):
        q = sims[name]
        q.quant_w = q.quant_a = True
        layer = q.layer
        row = measure(name)
        row.update(index=i, kind=type(layer).__name__, shape=list(layer.weight.shape),
                   act_range=[q.lo, q.hi], weight_absmax=float(layer.weight.abs().max()),
                   weight_absmax_over_std=float(layer.weight.abs().max() / layer.weight.std().clamp_min(1e-12)))
        rows.append(row)
        q.quant_w = q.quant_a = False
        if progress:
            progress(i + 1, len(names), name)
    for q in sims.values():
        q.quant_w = q.quant_a = True
    whole = measure("(all layers)")
    base = {"layer": "(float)", "sqnr_db": float("inf")}
    if labels_t is not None and ref.dim() == 2:
        base["top1"] = float((ref.argmax(1) == labels_t).float().mean())
    rows.sort(key=lambda r: r["sqnr_db"])
    return {"layers": rows, "all_layers": whole, "float": base, "per_channel": per_channel, "calib_method": method,
            "calib_images": int(len(calib_x)), "eval_images": int(len(eval_x)), "first": names[0], "last": names[-1]}


def sensitivity_on_data(model: nn.Module, data: str = "builtin", *, eval_limit: int | None = 500,
                        per_channel: bool = True, method: str = "minmax", use_labels: bool = True,
                        progress=None) -> dict:
    """``sensitivity`` of ``model``'s deploy form on a data set: calibration from its calib split
    (built-in) or its train split (a folder), scored on its eval split; labels are used when the
    class counts match (and ``use_labels``). The table records which data it saw."""
    from ..core import reparameterize
    from ..data.datasets import load_classification
    from ..data.preprocess import for_model

    size = info_of(model).input_size
    pre = for_model(model, size)
    builtin = data.startswith("builtin")
    calib = load_classification("builtin" if builtin else data, "calib" if builtin else "train", size, 64)
    ev = load_classification(data, "eval", size, eval_limit)
    labels = ev.labels if use_labels and info_of(model).num_classes == ev.num_classes else None
    res = sensitivity(reparameterize(model).model, torch.from_numpy(pre(calib.images)), torch.from_numpy(pre(ev.images)),
                      labels, per_channel=per_channel, method=method, progress=progress)
    res["data"] = ev.manifest()
    return res


def resolve_keep_float(model: nn.Module, keep: list[str], keep_worst: int = 0, sens: dict | None = None) -> list[str]:
    """Layer names to keep in float: 'first'/'last' resolved, plus the ``keep_worst`` most sensitive."""
    names = quant_layers(model)
    out = []
    for k in keep:
        name = {"first": names[0], "last": names[-1]}.get(k, k)
        if name not in names:
            from ..errors import did_you_mean

            raise ConfigError(f"keep_float: no quantizable layer {k!r}{did_you_mean(k, names)}; "
                              "see `workbench optimize MODEL --sensitivity` for the names")
        out.append(name)
    if keep_worst:
        if sens is None:
            raise ConfigError("keep_worst needs the sensitivity table (calibration data)")
        out += [r["layer"] for r in sens["layers"][:keep_worst]]
    return list(dict.fromkeys(out))


def qat_finetune(model: nn.Module, data: str = "builtin", *, epochs: int = 2, lr: float = 2e-4, batch_size: int = 32,
                 per_channel: bool = True, train_limit: int | None = None, seed: int = 0, progress=None) -> tuple[nn.Module, dict]:
    """Quantization-aware fine-tuning of the deploy form of ``model``; returns the float model."""
    from ..data.datasets import load_classification
    from ..data.preprocess import Preprocess
    from ..reparam import is_deploy, reparameterize_model
    from ..train import _augment

    if epochs < 1:
        raise ConfigError(f"--qat takes a number of epochs >= 1, got {epochs}")
    if info_of(model).task != "classification":
        raise ConfigError("quantization-aware training is built for classification models; detection models use PTQ")
    deploy = model if is_deploy(model) else reparameterize_model(model, inplace=False)
    size = info_of(model).input_size
    ds = load_classification(data, "train", size, train_limit)
    x_all = torch.from_numpy(Preprocess(size)(ds.images))
    y_all = torch.from_numpy(ds.labels)
    calib = load_classification(data, "calib", size, 64) if data.startswith("builtin") else None
    calib_x = torch.from_numpy(Preprocess(size)(calib.images)) if calib is not None else x_all[:64]
    sim, sims = attach(deploy, per_channel)
    calibrate(sim, sims, calib_x)
    for q in sims.values():
        q.quant_w = q.quant_a = True
        q.ema = 0.9
    torch.manual_seed(seed)
    opt = torch.optim.AdamW([p for p in sim.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    steps = math.ceil(len(x_all) / batch_size)
    history = []
    for epoch in range(epochs):
        sim.train()
        for m in sim.modules():  # BN (none in deploy RepVGG; some baselines keep it) stays frozen
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = torch.randperm(len(x_all), generator=g)
        loss_sum = correct = 0.0
        for s in range(steps):
            idx = order[s * batch_size:(s + 1) * batch_size]
            out = _logits(sim(_augment(x_all[idx], g)))
            loss = F.cross_entropy(out, y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += float((out.argmax(1) == y_all[idx]).sum())
            if progress:
                progress({"epoch": epoch + 1, "epochs": epochs, "step": s + 1, "steps": steps})
        history.append({"epoch": epoch + 1, "loss": loss_sum / len(x_all), "train_top1_fakequant": correct / len(x_all)})
    # unwrap: the trained float layers go back into a plain deploy model
    result = copy.deepcopy(deploy)
    for name, q in sims.items():
        parent_name, _, child = name.rpartition(".")
        parent = result.get_submodule(parent_name) if parent_name else result
        parent._modules[child] = copy.deepcopy(q.layer)
    result.eval()
    result.model_info = info_of(deploy)
    return result, {"epochs": epochs, "lr": lr, "per_channel": per_channel, "history": history,
                    "train_images": int(len(x_all))}
