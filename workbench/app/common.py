"""What every dashboard page shares: where data lives, which paths a form may name, uploads, and
the run folder of this browser session. Plain Python (no Streamlit), so it is tested directly.

Rules (issue: dashboard + hardening):
- data lives under the data root (``--data-dir``, default ``./reports``); a path typed into a form
  must resolve inside the data root or one of the allowed folders (``./weights``, ``./data`` and
  ``WORKBENCH_ALLOWED_PATHS``), after following symlinks and ``..``;
- an upload is size-limited, stored under this session's run folder in ``uploads/`` with a
  sanitized name, and never executed: checkpoints load with ``weights_only=True`` (checkpoints.py);
- each browser session gets its own run folder, so two tabs never write into the same one.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ConfigError

DEFAULT_MAX_UPLOAD_MB = 600  # a VGG16 checkpoint is 528 MB
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors")


def data_root() -> Path:
    return Path(os.environ.get("WORKBENCH_DATA", "reports")).resolve()


def allowed_roots() -> list[Path]:
    roots = [data_root(), Path("weights").resolve(), Path("data").resolve()]
    extra = os.environ.get("WORKBENCH_ALLOWED_PATHS", "")
    roots += [Path(p).resolve() for p in extra.split(os.pathsep) if p.strip()]
    return roots


def max_upload_bytes() -> int:
    return int(float(os.environ.get("WORKBENCH_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB)) * 1024 * 1024)


def safe_filename(name: str) -> str:
    """A file name that cannot climb or hide: the last path part, unusual characters replaced."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip(".") or "upload"
    return base[-120:]


def checked_path(text: str, *, what: str = "path", must_exist: bool = True) -> Path:
    """A path typed into a form, accepted only inside the data folders."""
    text = (text or "").strip()
    if not text:
        raise ConfigError(f"no {what} given")
    p = Path(text).expanduser()
    resolved = p.resolve() if p.is_absolute() else Path.cwd().joinpath(p).resolve()
    roots = allowed_roots()
    if not any(resolved == r or resolved.is_relative_to(r) for r in roots):
        raise ConfigError(f"{what} {text} is outside the data folders; put it under "
                          f"{' or '.join(str(r) for r in roots[:3])} (or add its folder to WORKBENCH_ALLOWED_PATHS)")
    if must_exist and not resolved.exists():
        raise ConfigError(f"{what} {text} does not exist")
    return resolved


def run_dir_by_name(name: str) -> Path:
    """A run folder chosen by name (a query parameter or a select box): a plain child of the data root."""
    if not name or name != Path(name).name or name.startswith(".") or name in ("..", "."):
        raise ConfigError(f"{name!r} is not a run folder name")
    d = data_root() / name
    if not d.is_dir():
        raise ConfigError(f"no run folder named {name!r} under {data_root()}")
    return d


def save_upload(run_dir: Path, name: str, data: bytes) -> Path:
    """Store an uploaded weights file under ``run_dir/uploads/`` after checking size and type."""
    limit = max_upload_bytes()
    if len(data) > limit:
        raise ConfigError(f"{name} is {len(data) / 2**20:.0f} MB, over the {limit / 2**20:.0f} MB upload limit; "
                          "put the file under ./weights and type its path instead")
    clean = safe_filename(name)
    if not clean.lower().endswith(WEIGHT_SUFFIXES):
        raise ConfigError(f"{clean}: weights must be {', '.join(WEIGHT_SUFFIXES)}")
    if not data:
        raise ConfigError(f"{clean} is empty")
    d = run_dir / "uploads"
    d.mkdir(parents=True, exist_ok=True)
    dest = d / clean
    tmp = d / f".{clean}.part"
    tmp.write_bytes(data)
    os.replace(tmp, dest)
    return dest


def session_run_dir(state: dict, name: str = "dashboard") -> Path:
    """This browser session's run folder (allocated once per session; two tabs, two folders)."""
    from workbench.api import allocate

    d = state.get("run_dir")
    if d and Path(d).is_dir():
        return Path(d)
    d = allocate(data_root(), name)
    state["run_dir"] = str(d)
    return d
