"""SSD post-processing outside the network: default boxes, box decoding, per-class NMS.

Plain numpy so it runs the same on PyTorch, ONNX Runtime and LiteRT outputs (exported graphs end
at the raw ``loc`` / ``conf`` tensors; the GPU delegate has no NMS).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from math import sqrt

import numpy as np

from .models.ssd import DecodeConfig, PriorConfig, ours


def default_boxes(cfg: PriorConfig) -> np.ndarray:
    """Prior boxes (P, 4) as (cx, cy, w, h) in [0, 1], in the order the heads emit them."""
    out: list[list[float]] = []
    for k, f in enumerate(cfg.feature_maps):
        scale = cfg.image_size / cfg.steps[k]
        s_k = cfg.min_sizes[k] / cfg.image_size
        s_k2 = sqrt(s_k * (cfg.max_sizes[k] / cfg.image_size))
        for i, j in product(range(f), repeat=2):
            cx, cy = (j + 0.5) / scale, (i + 0.5) / scale
            out.append([cx, cy, s_k, s_k])
            out.append([cx, cy, s_k2, s_k2])
            for ar in cfg.aspect_ratios[k]:
                r = sqrt(ar)
                out.append([cx, cy, s_k * r, s_k / r])
                out.append([cx, cy, s_k / r, s_k * r])
    boxes = np.asarray(out, dtype=np.float32)
    if cfg.clip and getattr(cfg, "clip_centers", True):
        return np.clip(boxes, 0.0, 1.0)
    if cfg.clip:
        boxes[:, 2:] = np.clip(boxes[:, 2:], 0.0, 1.0)
    return boxes


def decode(loc: np.ndarray, priors: np.ndarray, variances=(0.1, 0.2), wh_clip: float | None = None) -> np.ndarray:
    """Offsets (P, 4) -> boxes (P, 4) as (x1, y1, x2, y2) in [0, 1] image coordinates. ``wh_clip``:
    the upper clamp of the scaled log-size offset (torchvision's BoxCoder clamps at log(1000/16))."""
    cxcy = priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:]
    dwh = loc[:, 2:] * variances[1]
    wh = priors[:, 2:] * np.exp(np.minimum(dwh, wh_clip) if wh_clip is not None else np.clip(dwh, -20, 20))
    return np.concatenate([cxcy - wh / 2, cxcy + wh / 2], axis=1)


def encode(boxes: np.ndarray, priors: np.ndarray, variances=(0.1, 0.2)) -> np.ndarray:
    """Inverse of ``decode`` (training targets)."""
    cxcy = (boxes[:, :2] + boxes[:, 2:]) / 2
    wh = np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-6)
    return np.concatenate([(cxcy - priors[:, :2]) / (variances[0] * priors[:, 2:]),
                           np.log(wh / priors[:, 2:]) / variances[1]], axis=1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) and (M, 4) xyxy boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-12)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, top_k: int | None,
        candidates: int | None = None) -> np.ndarray:
    """Greedy NMS over the ``candidates`` best scores (default 10 x top_k); indices of kept boxes,
    best first, at most ``top_k`` (None: no cap). A box is suppressed when its IoU with a kept one
    is above ``iou_threshold``."""
    n = candidates if candidates is not None else (top_k * 10 if top_k else None)
    order = np.argsort(-scores, kind="stable")[:n]
    keep: list[int] = []
    while order.size and (top_k is None or len(keep) < top_k):
        i = order[0]
        keep.append(int(i))
        if order.size == 1:
            break
        rest = order[1:]
        order = rest[iou(boxes[i : i + 1], boxes[rest])[0] <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # (K, 4) xyxy in [0, 1]
    scores: np.ndarray  # (K,)
    labels: np.ndarray  # (K,) class index, 1..C-1 (0 is background)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def postprocess(loc: np.ndarray, conf: np.ndarray, priors: np.ndarray | None = None, *,
                config: DecodeConfig | None = None, score_threshold: float | None = None) -> Detections:
    """One image: raw ``loc`` (P, 4) and ``conf`` logits (P, C) -> detections, by the model's decode
    configuration (per-class NMS; candidates, caps, clipping and the coder as its layout does).
    ``priors`` defaults to the configuration's default boxes; ``score_threshold`` overrides its own."""
    if isinstance(priors, DecodeConfig):  # callers that carry "priors" around may carry the config instead
        config, priors = priors, None
    cfg = config or ours(_priors_config_of(priors))
    if priors is None:
        priors = default_boxes_cached(cfg.priors)
    thr = cfg.score_threshold if score_threshold is None else score_threshold
    boxes = decode(np.asarray(loc, np.float32), priors, cfg.variances, cfg.wh_clip)
    if cfg.clip_boxes:
        boxes = np.clip(boxes, 0.0, 1.0)
    probs = softmax(np.asarray(conf, np.float32))
    all_b, all_s, all_l = [], [], []
    for c in range(1, probs.shape[1]):
        m = probs[:, c] > thr
        if not m.any():
            continue
        b, s = boxes[m], probs[m, c]
        k = nms(b, s, cfg.nms_iou, cfg.keep_per_class, cfg.candidates_per_class)
        all_b.append(b[k]), all_s.append(s[k]), all_l.append(np.full(len(k), c))
    if not all_b:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    b, s, lab = np.concatenate(all_b), np.concatenate(all_s), np.concatenate(all_l)
    order = np.argsort(-s, kind="stable")[:cfg.max_detections]
    return Detections(b[order], s[order], lab[order])


_PRIORS: dict = {}


def default_boxes_cached(cfg: PriorConfig) -> np.ndarray:
    if cfg not in _PRIORS:
        _PRIORS[cfg] = default_boxes(cfg)
    return _PRIORS[cfg]


def _priors_config_of(priors) -> PriorConfig:
    """A stand-in PriorConfig for callers that pass only a priors array (ours: the config's rules)."""
    if priors is None:
        raise ValueError("postprocess needs priors or a decode config")
    return PriorConfig(image_size=1, feature_maps=(), steps=(), min_sizes=(), max_sizes=(), aspect_ratios=())
