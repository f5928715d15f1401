"""Every field of a sweep file, type- and range-checked before any work starts.

One table says what each number may be; ``check_fields`` raises one line naming the field, the
allowed values and, for names, a did-you-mean. The dashboard's form builds a sweep document and
goes through the same checks (``workbench.sweep.check_document``).
"""
from __future__ import annotations

import math
from pathlib import Path

from .errors import ConfigError

# (kind, lowest, highest); "int" takes whole numbers only, "number" any finite number
NUMBERS: dict[str, dict[str, tuple[str, float, float]]] = {
    "data": {"eval_limit": ("int", 1, 1_000_000), "calib_count": ("int", 1, 100_000)},
    "latency": {"warmup": ("int", 0, 1_000_000), "warmup_seconds": ("number", 0, 3600),
                "min_runs": ("int", 1, 10_000_000), "min_seconds": ("number", 0.001, 3600),
                "repeats": ("int", 1, 100)},
    "export": {"timeout_s": ("number", 1, 7 * 86400), "fidelity_count": ("int", 1, 100_000),
               "memory_limit_mb": ("int", 256, 1 << 22)},
    "models": {"num_classes": ("int", 1, 100_000), "input_size": ("int", 16, 2048)},
}
# images are held in memory as float32 NCHW: refuse a plan whose calibration or evaluation set
# alone would need more than this
MAX_IMAGE_BYTES = 8 << 30


def check_number(where: str, value, kind: str, lo: float, hi: float):
    what = "a whole number" if kind == "int" else "a number"
    ok = not isinstance(value, bool) and (isinstance(value, int) if kind == "int" else isinstance(value, (int, float)))
    if ok and isinstance(value, float) and not math.isfinite(value):
        ok = False
    if not ok or not lo <= value <= hi:
        raise ConfigError(f"{where} must be {what} from {lo:g} to {hi:g}, got {value!r}")
    return value


def check_string(where: str, value, *, allowed=None, max_len: int = 200) -> str:
    from .errors import did_you_mean

    if not isinstance(value, str) or not value.strip() or len(value) > max_len or "\x00" in value:
        raise ConfigError(f"{where} must be a non-empty string of at most {max_len} characters, got {value!r}")
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{where} is {value!r}{did_you_mean(value, allowed)}; allowed: {', '.join(allowed)}")
    return value


def check_data_source(where: str, value) -> str:
    check_string(where, value, max_len=4096)
    if value.startswith("builtin"):
        return value
    p = Path(value)
    if not p.is_dir():
        raise ConfigError(f"{where} is {value!r}: neither 'builtin' nor an existing folder; pass an image folder")
    probe_images(where, p)
    return value


def probe_images(where: str, folder: Path, look_at: int = 200) -> None:
    """Refuse, before any work, a data folder in which no image opens (the run would export every
    artifact and then fail on the data). Looks at up to ``look_at`` image files."""
    from PIL import Image

    from .data.preprocess import IMAGE_SUFFIXES

    seen = 0
    for f in folder.rglob("*"):
        if f.suffix.lower() not in IMAGE_SUFFIXES or not f.is_file():
            continue
        seen += 1
        try:
            with Image.open(f) as im:
                im.verify()
            return
        except Exception:  # noqa: BLE001 - any unreadable file: look at the next
            if seen >= look_at:
                break
    raise ConfigError(f"{where}: {folder} holds no readable images ({seen} image file(s) looked at, none opened); "
                      "pass a folder of images (ImageFolder: ROOT/CLASS/IMAGE.jpg)")


def check_fields(name: str, doc: dict) -> None:
    """The sections' numbers, the strings and the memory a plan would need (``name``: the file's name)."""
    if "name" in doc:
        check_string(f"{name}: name", doc["name"])
    for section, fields in NUMBERS.items():
        tables = doc.get(section) or ([] if section == "models" else {})
        for i, t in enumerate(tables if section == "models" else [tables]):
            if not isinstance(t, dict):
                continue
            label = f"models[{i}]" if section == "models" else section
            for k, (kind, lo, hi) in fields.items():
                if k in t:
                    check_number(f"{name}: {label}.{k}", t[k], kind, lo, hi)
    data, export = doc.get("data", {}), doc.get("export", {})
    for k in ("calibration", "evaluation"):
        if k in data:
            check_data_source(f"{name}: data.{k}", data[k])
    if "route" in export:
        from exporters.tflite_export import ROUTES

        check_string(f"{name}: export.route", export["route"], allowed=ROUTES)
    if "compat" in export:
        from exporters.tflite_compat import parse_target

        check_string(f"{name}: export.compat", export["compat"])
        try:
            parse_target(export["compat"])
        except ValueError as e:
            raise ConfigError(f"{name}: export.compat: {e}") from None
    biggest = max((m.get("input_size") or 224 for m in doc.get("models", []) if isinstance(m, dict)), default=224)
    for k, default in (("calib_count", 64), ("eval_limit", None)):
        n = data.get(k, default)
        if n and n * 3 * biggest * biggest * 4 > MAX_IMAGE_BYTES:
            raise ConfigError(f"{name}: data.{k} = {n} images at {biggest} px would need "
                              f"{n * 12 * biggest * biggest / 2**30:.0f} GiB in memory; lower data.{k} or the input size")
