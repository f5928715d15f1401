"""``ExportDir``: the one reader and writer of an export folder.

Layout: ``manifest.json`` (schema ``edge-workbench/export-manifest``), the artifacts beside it,
and ``.work/`` (``source.safetensors``: the exact weights that were converted; calibration and
fidelity inputs; per-stage job, result and log files; shared intermediates keyed by the source).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from exporters.fsutil import atomic_write_json

from .errors import ConfigError

MANIFEST_SCHEMA = "edge-workbench/export-manifest"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class ExportDir:
    root: Path

    @classmethod
    def of(cls, path: str | os.PathLike) -> "ExportDir":
        return cls(Path(path))

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def work(self) -> Path:
        return self.root / ".work"

    @property
    def source_weights(self) -> Path:
        return self.work / "source.safetensors"

    def exists(self) -> bool:
        return self.manifest_path.exists()

    def read(self) -> dict:
        if not self.manifest_path.exists():
            raise ConfigError(f"{self.root} has no manifest.json; pass an export folder, an artifact file or a model name")
        try:
            return json.loads(self.manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{self.manifest_path} is not valid JSON ({e}); re-export into a fresh folder") from e

    def write(self, manifest: dict) -> Path:
        return atomic_write_json(self.manifest_path, manifest)

    def artifacts(self, status: str | None = "ok") -> list[dict]:
        rows = self.read().get("artifacts", [])
        return [a for a in rows if status is None or a.get("status") == status]

    def row_for(self, artifact: str | os.PathLike) -> tuple[dict, dict] | None:
        """(manifest row, manifest) of an artifact kept in this folder, or None."""
        if not self.exists():
            return None
        p = Path(artifact).resolve()
        manifest = self.read()
        for a in manifest.get("artifacts", []):
            if a.get("path") and Path(a["path"]).resolve() == p:
                return a, manifest
        return None

    def artifact_path(self, model: str, precision: str, suffix: str) -> Path:
        return self.root / f"{model}_{precision}{suffix}"
