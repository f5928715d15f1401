"""Per-model preprocessing is data: resize, channel order, then (x * pixel_scale - mean) / std,
NCHW float32. Ours: RGB, (x/255 - ImageNet mean) / ImageNet std; an SSD checkpoint from another
project brings its own (its decode configuration, ``workbench.models.ssd.DecodeConfig``)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True)
class Preprocess:
    size: int
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    resize: str = "bilinear, direct to size x size"
    pixel_scale: float = 1 / 255
    channel_order: str = "RGB"

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, images_uint8: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) RGB uint8 already at ``size`` -> (N, 3, size, size) float32 normalized."""
        x = images_uint8.astype(np.float32)
        if self.channel_order == "BGR":
            x = x[..., ::-1]
        x = x * np.float32(self.pixel_scale)
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def for_model(model, size: int) -> Preprocess:
    """The preprocessing ``model`` expects: its decode configuration's (SSD) or ours."""
    cfg = getattr(model, "decode_config", None)
    if cfg is None:
        return Preprocess(size)
    return Preprocess(size, mean=tuple(cfg.mean), std=tuple(cfg.std), pixel_scale=cfg.pixel_scale,
                      channel_order=cfg.channel_order)


def load_image(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), dtype=np.uint8)


def image_folder_arrays(folder: str | Path, size: int, limit: int | None = None) -> tuple[np.ndarray, list[str], list[str]]:
    """Every readable image under ``folder`` (sorted, recursive); unreadable ones are listed."""
    from ..errors import ConfigError

    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"image folder {root} does not exist; pass a folder of .jpg/.png images")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    images, used, skipped = [], [], []
    for p in files:
        if limit is not None and len(images) >= limit:
            break
        try:
            images.append(load_image(p, size))
            used.append(str(p))
        except Exception as e:  # unreadable or zero-byte: counted, not fatal
            skipped.append(f"{p}: {type(e).__name__}")
    if not images:
        raise ConfigError(f"no readable images in {root} ({len(skipped)} unreadable); "
                          "add .jpg/.png files")
    return np.stack(images), used, skipped
