"""Exporters: one module per format behind one contract (``exporters.base.Format``).

``FORMATS`` is the one table of formats; a new format is one module plus one line here. This
package is a leaf: it imports nothing from ``workbench`` (an import contract enforces it).
"""
from __future__ import annotations

from .base import PRECISIONS, Capability, Format
from .coreml_export import CoreMLFormat
from .onnx_export import OnnxFormat
from .records import Status
from .tensorrt_export import TensorRTFormat
from .tflite_export import TFLiteFormat

FORMATS: dict[str, Format] = {f.name: f for f in (OnnxFormat(), TFLiteFormat(), CoreMLFormat(), TensorRTFormat())}
CAPABILITIES: dict[str, Capability] = {name: f.capability for name, f in FORMATS.items()}


class UnknownFormat(ValueError):
    pass


def get_format(name: str) -> Format:
    try:
        return FORMATS[name]
    except KeyError:
        import difflib

        near = difflib.get_close_matches(str(name), FORMATS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise UnknownFormat(f"unknown format {name!r}{hint}; choose from {', '.join(FORMATS)}") from None


def format_for_path(path) -> Format | None:
    """The format of an artifact file by its suffix, or None."""
    from pathlib import Path

    name = Path(path).name
    # longest suffix first: a .trt.onnx file is TensorRT's, not plain ONNX's
    return next((f for f in sorted(FORMATS.values(), key=lambda f: -len(f.suffix)) if name.endswith(f.suffix)), None)


def supports(fmt: str, precision: str) -> tuple[bool, str]:
    if fmt not in FORMATS:
        return False, f"unknown format {fmt!r}"
    return FORMATS[fmt].supports(precision)


__all__ = ["FORMATS", "CAPABILITIES", "PRECISIONS", "Format", "Capability", "Status", "get_format",
           "format_for_path", "supports", "UnknownFormat"]
