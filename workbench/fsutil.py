"""Atomic file writes; the code lives in the leaf package (``exporters.fsutil``) both sides use."""
from exporters.fsutil import atomic_write_json, atomic_write_text

__all__ = ["atomic_write_json", "atomic_write_text"]
