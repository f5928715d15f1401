"""Built-in image data, generated deterministically from a seed (no download).

Coloured shapes on textured backgrounds. Splits are disjoint by construction: each split draws
from its own seed stream (``train``, ``calib``, ``eval``), so calibration never sees evaluation
images.
"""
from __future__ import annotations

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross", "ring")
SPLIT_SEEDS = {"train": 1000, "calib": 2000, "eval": 3000}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    base = rng.uniform(30, 220, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    fx, fy, ph = rng.uniform(2, 9), rng.uniform(2, 9), rng.uniform(0, 6.28)
    wave = np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)[..., None] * rng.uniform(10, 35)
    noise = rng.normal(0, 12, size=(size, size, 3))
    return np.clip(base + wave + noise, 0, 255)


def _mask(shape: str, size: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)
    if shape == "triangle":
        return (dy <= r * 0.8) & (dy >= -r) & (np.abs(dx) <= (dy + r) * 0.6)
    if shape == "cross":
        w = r * 0.3
        return ((np.abs(dx) <= w) & (np.abs(dy) <= r)) | ((np.abs(dy) <= w) & (np.abs(dx) <= r))
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    raise ValueError(shape)


def draw_shape(img: np.ndarray, rng: np.random.Generator, shape: str, box_frac=(0.18, 0.4)) -> tuple[float, float, float, float]:
    """Draw one shape in a random colour; returns its box (x1, y1, x2, y2) in pixels."""
    size = img.shape[0]
    r = rng.uniform(*box_frac) * size / 2
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    # a colour far from the local background, so every image is solvable
    bg = img[int(cy), int(cx)]
    colour = np.clip((bg + 128 + rng.uniform(-40, 40, size=3)) % 256, 0, 255)
    m = _mask(shape, size, cx, cy, r)
    img[m] = colour
    ys, xs = np.nonzero(m)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def classification_images(n: int, size: int, split: str = "eval", seed: int = 0,
                          num_classes: int = len(SHAPES)) -> tuple[np.ndarray, np.ndarray]:
    """(N, size, size, 3) uint8 images and (N,) labels: one shape per image, label = shape."""
    rng = np.random.default_rng([SPLIT_SEEDS[split], seed])
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty(n, np.int64)
    classes = SHAPES[: max(1, min(num_classes, len(SHAPES)))]
    for i in range(n):
        img = _background(rng, size)
        k = int(rng.integers(len(classes)))
        draw_shape(img, rng, classes[k], (0.35, 0.8))
        images[i], labels[i] = img.astype(np.uint8), k
    return images, labels


def detection_images(n: int, size: int, split: str = "eval", seed: int = 0, max_objects: int = 3,
                     num_classes: int = len(SHAPES)) -> tuple[np.ndarray, list[dict]]:
    """(N, size, size, 3) uint8 images with 1..max_objects shapes each, and per image
    ``{"boxes": (K, 4) float32 xyxy pixels, "labels": (K,) int64 in 1..C}`` (0 is background)."""
    rng = np.random.default_rng([SPLIT_SEEDS[split], seed, 7])
    classes = SHAPES[: max(1, min(num_classes, len(SHAPES)))]
    images = np.empty((n, size, size, 3), np.uint8)
    targets = []
    for i in range(n):
        img = _background(rng, size)
        boxes, labels = [], []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            k = int(rng.integers(len(classes)))
            boxes.append(draw_shape(img, rng, classes[k], (0.2, 0.5)))
            labels.append(k + 1)
        images[i] = img.astype(np.uint8)
        targets.append({"boxes": np.asarray(boxes, np.float32), "labels": np.asarray(labels, np.int64)})
    return images, targets
