"""``workbench train``: a short CPU training loop so a demo (or a user without weights) gets a
model whose accuracy means something. Resumable: the checkpoint ``OUT.ckpt`` is written
atomically after every epoch and picked up by the next call.

Classification: SGD with momentum, cosine schedule, flip + shift augmentation; RepVGGplus adds
its three auxiliary losses (weight 0.1 each). Detection (SSD): MultiBox loss (IoU 0.5
matching, smooth-L1 + cross-entropy with 3:1 hard negative mining).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 5
    batch_size: int = 32
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 2e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9  # sgd only
    train_limit: int | None = None  # images from the train split (default: the whole split)
    eval_limit: int | None = None  # images from the eval split for the final evaluation
    seed: int = 0
    aux_weight: float = 0.1  # RepVGGplus auxiliary heads


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    flip = torch.rand(x.shape[0], generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    pad = max(1, x.shape[-1] // 16)
    dx, dy = (int(v) for v in torch.randint(-pad, pad + 1, (2,), generator=g))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


def _classification_loss(model: nn.Module, out, y: torch.Tensor, aux_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(out, dict):
        loss = F.cross_entropy(out["main"], y)
        loss = loss + aux_weight * sum(F.cross_entropy(v, y) for k, v in out.items() if k != "main")
        return loss, out["main"]
    return F.cross_entropy(out, y), out


def _match(priors_xyxy: torch.Tensor, priors: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
           threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets for one image: encoded loc (P, 4) and class (P,) (0 = background)."""
    if len(boxes) == 0:
        return torch.zeros_like(priors), torch.zeros(len(priors), dtype=torch.long)
    lt = torch.max(boxes[:, None, :2], priors_xyxy[None, :, :2])
    rb = torch.min(boxes[:, None, 2:], priors_xyxy[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(2)
    area = lambda b: (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)  # noqa: E731
    iou = inter / (area(boxes)[:, None] + area(priors_xyxy)[None] - inter)
    best_truth_iou, best_truth = iou.max(0)
    best_prior = iou.argmax(1)
    best_truth_iou[best_prior] = 2.0  # every ground truth keeps its best prior
    best_truth[best_prior] = torch.arange(len(boxes))
    matched = boxes[best_truth]
    conf = labels[best_truth].clone()
    conf[best_truth_iou < threshold] = 0
    cxcy = ((matched[:, :2] + matched[:, 2:]) / 2 - priors[:, :2]) / (0.1 * priors[:, 2:])
    wh = torch.log(((matched[:, 2:] - matched[:, :2]).clamp(min=1e-6)) / priors[:, 2:]) / 0.2
    return torch.cat([cxcy, wh], 1), conf


def multibox_loss(loc: torch.Tensor, conf: torch.Tensor, loc_t: torch.Tensor, conf_t: torch.Tensor) -> torch.Tensor:
    pos = conf_t > 0
    n_pos = pos.sum().clamp(min=1)
    loss_l = F.smooth_l1_loss(loc[pos], loc_t[pos], reduction="sum")
    ce = F.cross_entropy(conf.reshape(-1, conf.shape[-1]), conf_t.reshape(-1), reduction="none").view_as(conf_t)
    neg_ce = ce.clone()
    neg_ce[pos] = 0
    n_neg = (3 * pos.sum(1, keepdim=True)).clamp(max=conf_t.shape[1] - 1)
    rank = neg_ce.argsort(1, descending=True).argsort(1)
    neg = rank < n_neg
    loss_c = ce[pos | neg].sum()
    return (loss_l + loss_c) / n_pos


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(name: str, data: str, *, out: str | os.PathLike, input_size: int | None = None,
          num_classes: int | None = None, weights: str | None = None, config: TrainConfig = TrainConfig(),
          progress: Callable[[dict], None] | None = None) -> dict:
    """Train ``name`` on ``data`` (see ``workbench.data.datasets``); returns a summary dict."""
    from .core import load_model, save_state_dict
    from .data.datasets import is_detection_spec, load_classification, load_detection
    from .data.preprocess import for_model
    from .evaluate import evaluate_torch
    from .registry import get_spec, resolve_input_size

    spec = get_spec(name)
    size = resolve_input_size(spec, input_size)
    detection = spec.task == "detection"
    if detection != is_detection_spec(data):
        raise ConfigError(f"{name} is a {spec.task} model but {data!r} is "
                          f"{'detection' if is_detection_spec(data) else 'classification'} data; "
                          f"use {'builtin-det' if detection else 'builtin'} or matching files")
    ds = (load_detection if detection else load_classification)(data, "train", size, config.train_limit)
    n_classes = num_classes or ds.num_classes
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt_path = out.with_name(out.name + ".ckpt")
    torch.manual_seed(config.seed)
    model = load_model(name, weights=weights, num_classes=n_classes, input_size=size)
    if model.model_info.num_classes != n_classes:
        raise ConfigError(f"weights have {model.model_info.num_classes} classes but the data has {n_classes}")
    if config.optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                              weight_decay=config.weight_decay)
    elif config.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    else:
        raise ConfigError(f"unknown optimizer {config.optimizer!r}; choose adamw or sgd")
    pre = for_model(model, size)  # fine-tuning another project's SSD keeps its preprocessing
    x_all = torch.from_numpy(pre(ds.images))
    steps_per_epoch = math.ceil(len(x_all) / config.batch_size)
    total = steps_per_epoch * config.epochs
    start_epoch, history = 0, []
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if ck.get("model_name") == spec.name and ck.get("num_classes") == n_classes and ck.get("epochs") == config.epochs:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            start_epoch, history = int(ck["epoch"]), json.loads(ck["history"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, steps_per_epoch // 2)) * 0.5 * (1 + math.cos(math.pi * s / max(1, total))))
    if start_epoch:
        import warnings

        with warnings.catch_warnings():  # fast-forward the schedule of a resumed run
            warnings.simplefilter("ignore")
            for _ in range(start_epoch * steps_per_epoch):
                sched.step()
    if detection:
        from .detection import default_boxes

        pri = torch.from_numpy(default_boxes(model.priors))
        pri_xyxy = torch.cat([pri[:, :2] - pri[:, 2:] / 2, pri[:, :2] + pri[:, 2:] / 2], 1)
        targets = [_match(pri_xyxy, pri, torch.from_numpy(t["boxes"]), torch.from_numpy(t["labels"]))
                   for t in ds.targets]
        loc_t_all = torch.stack([t[0] for t in targets])
        conf_t_all = torch.stack([t[1] for t in targets])
    else:
        y_all = torch.from_numpy(ds.labels)
    t0 = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        model.train()
        g = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        order = torch.randperm(len(x_all), generator=g)
        seen = correct = 0
        loss_sum = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * config.batch_size:(step + 1) * config.batch_size]
            x = x_all[idx]
            if detection:
                loc, conf = model(x)  # no augmentation: targets are matched once, up front
                loss = multibox_loss(loc, conf, loc_t_all[idx], conf_t_all[idx])
            else:
                x = _augment(x, g)
                out_ = model(x)
                loss, logits = _classification_loss(model, out_, y_all[idx], config.aux_weight)
                correct += int((logits.argmax(1) == y_all[idx]).sum())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(idx)
            loss_sum += float(loss.detach()) * len(idx)
            if progress:
                progress({"epoch": epoch + 1, "epochs": config.epochs, "step": step + 1,
                          "steps": steps_per_epoch, "loss": loss_sum / seen})
        row = {"epoch": epoch + 1, "loss": loss_sum / seen, "seconds": round(time.perf_counter() - t0, 1)}
        if not detection:
            row["train_top1"] = correct / seen
        history.append(row)
        model.eval()
        _save_atomic({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch + 1,
                      "epochs": config.epochs, "model_name": spec.name, "num_classes": n_classes,
                      "history": json.dumps(history)}, ckpt_path)
    model.eval()
    save_state_dict(model, out)
    ev = evaluate_torch(model, data, config.eval_limit)
    summary = {"model": spec.name, "data": ds.manifest(), "input_size": size, "num_classes": n_classes,
               "class_names": ds.class_names, "epochs": config.epochs, "history": history,
               "weights": str(out), "checkpoint": str(ckpt_path), "eval": ev,
               "config": config.__dict__, "preprocess": pre.to_dict()}
    from .fsutil import atomic_write_json

    atomic_write_json(out.with_name(out.name + ".json"), summary)
    return summary
