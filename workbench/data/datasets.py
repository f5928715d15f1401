"""Labelled data for training and evaluation.

Specs: ``builtin`` (classification: coloured shapes, 5 classes), ``builtin-det`` (detection:
1-3 shapes per image with boxes), a folder in ImageFolder layout (one subfolder per class;
``train/`` and ``val/`` subfolders are used as splits when present), a COCO ``.json`` file, or
a Pascal VOC folder (``Annotations/*.xml`` + ``JPEGImages/``). Unreadable images and boxes
outside their image are skipped and counted, never fatal.
"""
from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from .preprocess import IMAGE_SUFFIXES, load_image
from .synthetic import SHAPES, classification_images, detection_images

BUILTIN_SIZES = {"train": 1500, "calib": 64, "eval": 500}


@dataclass
class ClassificationData:
    images: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,)
    class_names: list[str]
    source: str
    split: str
    skipped: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def manifest(self) -> dict:
        h = hashlib.sha256(self.images.tobytes())
        h.update(self.labels.tobytes())
        return {"source": self.source, "split": self.split, "images": int(len(self.labels)),
                "classes": self.class_names, "skipped": len(self.skipped), "sha256": h.hexdigest()}


@dataclass
class DetectionData:
    images: np.ndarray
    targets: list[dict]  # boxes (K, 4) xyxy in [0, 1], labels (K,) in 1..C
    class_names: list[str]  # without background
    source: str
    split: str
    skipped: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:  # including background
        return len(self.class_names) + 1

    def manifest(self) -> dict:
        h = hashlib.sha256(self.images.tobytes())
        for t in self.targets:
            h.update(t["boxes"].tobytes())
            h.update(t["labels"].tobytes())
        return {"source": self.source, "split": self.split, "images": len(self.targets),
                "classes": self.class_names, "skipped": len(self.skipped), "sha256": h.hexdigest()}


def is_detection_spec(spec: str) -> bool:
    p = Path(spec)
    return spec == "builtin-det" or p.suffix.lower() == ".json" or (p / "Annotations").is_dir()


def load_classification(spec: str, split: str, size: int, limit: int | None = None) -> ClassificationData:
    if spec in ("builtin", "builtin:shapes"):
        n = limit or BUILTIN_SIZES[split]
        images, labels = classification_images(n, size, split=split)
        return ClassificationData(images, labels, list(SHAPES), "builtin (generated shapes)", split)
    root = Path(spec)
    if not root.is_dir():
        raise ConfigError(f"data {spec!r} is neither 'builtin' nor a folder; pass an ImageFolder "
                          "directory (one subfolder per class)")
    sub = {"train": "train", "calib": "train", "eval": "val"}[split]
    if (root / sub).is_dir():
        root = root / sub
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise ConfigError(f"{root} has no class subfolders; ImageFolder layout is ROOT/CLASS/IMAGE.jpg")
    images, labels, skipped = [], [], []
    for k, c in enumerate(classes):
        for p in sorted((root / c).rglob("*")):
            if p.suffix.lower() not in IMAGE_SUFFIXES or not p.is_file():
                continue
            if limit is not None and len(images) >= limit:
                break
            try:
                images.append(load_image(p, size))
                labels.append(k)
            except Exception as e:
                skipped.append(f"{p}: {type(e).__name__}")
    if not images:
        raise ConfigError(f"no readable images under {root} ({len(skipped)} unreadable)")
    return ClassificationData(np.stack(images), np.asarray(labels, np.int64), classes, str(root), split, skipped)


def load_detection(spec: str, split: str, size: int, limit: int | None = None) -> DetectionData:
    if spec in ("builtin-det", "builtin:shapes-det"):
        n = limit or BUILTIN_SIZES[split]
        images, targets = detection_images(n, size, split=split)
        for t in targets:
            t["boxes"] = t["boxes"] / size
        return DetectionData(images, targets, list(SHAPES), "builtin (generated shapes with boxes)", split)
    p = Path(spec)
    if p.suffix.lower() == ".json":
        return _coco(p, size, limit, split)
    if (p / "Annotations").is_dir():
        return _voc(p, size, limit, split)
    raise ConfigError(f"detection data {spec!r}: pass 'builtin-det', a COCO .json file or a VOC folder "
                      "(Annotations/ + JPEGImages/)")


def _clip_boxes(boxes: np.ndarray, w: float, h: float, where: str, skipped: list[str]) -> tuple[np.ndarray, list[int]]:
    """Pixel xyxy -> [0, 1] xyxy clipped to the image; empty or outside boxes are skipped."""
    keep, idx = [], []
    for i, b in enumerate(boxes):
        x1, y1, x2, y2 = b
        if x2 <= x1 or y2 <= y1 or x1 >= w or y1 >= h or x2 <= 0 or y2 <= 0:
            skipped.append(f"{where}: box {[round(float(v), 1) for v in b]} lies outside the {w:.0f}x{h:.0f} image")
            continue
        keep.append([max(0, x1) / w, max(0, y1) / h, min(w, x2) / w, min(h, y2) / h])
        idx.append(i)
    return np.asarray(keep, np.float32).reshape(-1, 4), idx


def _coco(path: Path, size: int, limit, split) -> DetectionData:
    from PIL import Image

    try:
        doc = json.loads(path.read_text())
        cats = sorted(doc["categories"], key=lambda c: c["id"])
        images_meta = doc["images"]
        anns = doc.get("annotations", [])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"{path.name} is not a COCO detection file ({type(e).__name__}: {e}); "
                          "it needs images, annotations and categories") from e
    cat_index = {c["id"]: i + 1 for i, c in enumerate(cats)}
    by_image: dict = {}
    for a in anns:
        by_image.setdefault(a["image_id"], []).append(a)
    base = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
    images, targets, skipped = [], [], []
    for im in images_meta:
        if limit is not None and len(images) >= limit:
            break
        f = base / im["file_name"]
        try:
            with Image.open(f) as pil:
                w, h = pil.size
            arr = load_image(f, size)
        except Exception as e:
            skipped.append(f"{f}: {type(e).__name__}")
            continue
        boxes = np.asarray([[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]]
                            for a in by_image.get(im["id"], [])], np.float32).reshape(-1, 4)
        labels = [cat_index.get(a["category_id"], 0) for a in by_image.get(im["id"], [])]
        clipped, idx = _clip_boxes(boxes, w, h, str(f.name), skipped)
        images.append(arr)
        targets.append({"boxes": clipped, "labels": np.asarray([labels[i] for i in idx], np.int64)})
    if not images:
        raise ConfigError(f"no readable images for {path.name} under {base}")
    return DetectionData(np.stack(images), targets, [c["name"] for c in cats], str(path), split, skipped)


def _voc(root: Path, size: int, limit, split) -> DetectionData:
    files = sorted((root / "Annotations").glob("*.xml"))
    names: list[str] = []
    records = []
    skipped: list[str] = []
    for x in files:
        try:
            tree = ET.parse(x).getroot()
            fname = tree.findtext("filename")
            w = float(tree.find("size").findtext("width"))
            h = float(tree.find("size").findtext("height"))
            objs = [(o.findtext("name"), [float(o.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
                    for o in tree.iter("object")]
        except Exception as e:
            skipped.append(f"{x.name}: {type(e).__name__}")
            continue
        for n, _ in objs:
            if n not in names:
                names.append(n)
        records.append((fname, w, h, objs))
    names.sort()
    images, targets = [], []
    for fname, w, h, objs in records:
        if limit is not None and len(images) >= limit:
            break
        f = root / "JPEGImages" / fname
        try:
            arr = load_image(f, size)
        except Exception as e:
            skipped.append(f"{f}: {type(e).__name__}")
            continue
        boxes, idx = _clip_boxes(np.asarray([b for _, b in objs], np.float32).reshape(-1, 4), w, h, fname, skipped)
        images.append(arr)
        targets.append({"boxes": boxes, "labels": np.asarray([names.index(objs[i][0]) + 1 for i in idx], np.int64)})
    if not images:
        raise ConfigError(f"no readable VOC images under {root}")
    return DetectionData(np.stack(images), targets, names, str(root), split, skipped)
