"""Streamlit pieces shared by several pages (the pages stay thin; logic is in the library)."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from ..errors import WorkbenchError
from . import common


def show_error(e: Exception) -> None:
    """One line in place, never a traceback: the library's errors already name the problem and the fix."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    st.error(msg if isinstance(e, WorkbenchError) else f"{type(e).__name__}: {msg}", icon=":material/error:")


def weights_picker(key: str) -> str | None:
    """Upload a weights file or name one under the data folders. Returns a checked path or None."""
    mode = st.radio("Weights", ["random init (seeded)", "upload a file", "a file on this machine"], key=f"{key}-mode",
                    horizontal=True)
    if mode == "upload a file":
        up = st.file_uploader(f"Checkpoint (.pth, .pt, .safetensors; at most {common.max_upload_bytes() // 2**20} MB)",
                              type=["pth", "pt", "safetensors"], key=f"{key}-upload")
        if up is None:
            return None
        try:
            dest = common.save_upload(common.session_run_dir(st.session_state), up.name, up.getvalue())
        except WorkbenchError as e:
            show_error(e)
            return None
        st.caption(f"stored as `{dest.relative_to(common.data_root())}` (loaded with weights_only=True)")
        return str(dest)
    if mode == "a file on this machine":
        text = st.text_input("Path (under the data folders)", key=f"{key}-path",
                             placeholder="weights/repvgg-a0.pth")
        if not text:
            return None
        try:
            return str(common.checked_path(text, what="weights file"))
        except WorkbenchError as e:
            show_error(e)
            return None
    return None


def selected() -> dict | None:
    return st.session_state.get("selected")


def run_picker(label: str, key: str, default: str | None = None) -> Path | None:
    """Choose a run folder under the data root (by name only)."""
    from workbench.api import list_runs

    runs = list_runs(common.data_root())
    names = [r["name"] for r in runs]
    if not names:
        st.info(f"No runs under {common.data_root()} yet. Start one on the Run page, or `workbench run SWEEP.toml`.")
        return None
    idx = names.index(default) if default in names else 0
    labels = {r["name"]: f"{r['name']}  ·  {r['state']}  ·  {', '.join(r['models']) or 'no artifacts yet'}" for r in runs}
    name = st.selectbox(label, names, index=idx, key=key, format_func=lambda n: labels[n])
    return common.run_dir_by_name(name)
