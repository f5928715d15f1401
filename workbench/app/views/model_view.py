"""Model view: a graph of the selected model before and after re-parameterization, the graph of an
exported .onnx / .tflite with the ops LiteRT's GPU accelerator refused in red (executed placement),
and per-op latency from ONNX Runtime's own profiler."""
import json
from pathlib import Path

import streamlit as st

from workbench.app import common, widgets
from workbench.errors import WorkbenchError

st.title("Model view")
tab_torch, tab_file = st.tabs(["PyTorch: before and after re-parameterization", "Exported file: ops, GPU placement, per-op time"])

with tab_torch:
    sel = widgets.selected()
    if not sel:
        st.info("Pick a model on the Models page first.")
    else:
        try:
            from workbench.api import load_model, reparameterize, torch_graph

            model = load_model(sel["name"], weights=sel.get("weights"), num_classes=sel["num_classes"],
                               input_size=sel["input_size"])
            before = torch_graph(model, f"{sel['name']}: train-time form")
            after = torch_graph(reparameterize(model).model, f"{sel['name']}: deploy form")
        except WorkbenchError as e:
            widgets.show_error(e)
            st.stop()
        st.caption(f"Train-time: {before['nodes']} layers, {before['branch_blocks']} multi-branch blocks (3x3 + 1x1 + "
                   f"identity, joined by an add). Deploy: {after['nodes']} layers, {after['branch_blocks']} multi-branch "
                   "blocks: each became one 3x3 conv.")
        c1, c2 = st.columns(2)
        c1.graphviz_chart(before["dot"], width="stretch")
        c2.graphviz_chart(after["dot"], width="stretch")

with tab_file:
    from workbench.api import list_runs

    arts = []
    for r in list_runs(common.data_root()):
        try:
            run = json.loads((Path(r["dir"]) / "run.json").read_text())
        except (OSError, ValueError):
            continue
        for a in run.get("artifacts", []):
            if a.get("status") == "ok" and a.get("path") and Path(a["path"]).suffix in (".onnx", ".tflite") \
                    and Path(a["path"]).exists():
                arts.append((r["name"], a, run))
    if not arts:
        st.info("No exported .onnx or .tflite files yet: start a run on the Run page.")
        st.stop()
    labels = [f"{name}: {a['model']} {a['format']} {a['precision']}" for name, a, _ in arts]
    i = st.selectbox("Artifact", range(len(arts)), format_func=lambda k: labels[k], key="mv-art")
    _, a, run = arts[i]
    try:
        from workbench.api import artifact_graph

        g = artifact_graph(a["path"], a.get("gpu"))
    except (WorkbenchError, ValueError, OSError) as e:
        widgets.show_error(e)
        st.stop()
    st.caption(f"{g['ops']} ops ({', '.join(f'{k} x{v}' for k, v in list(g['by_type'].items())[:8])}). "
               f"{g['placement']}." + (" Drawn by op type (too many ops to lay out one by one)." if g["summarized"] else ""))
    if g["refused_types"]:
        st.warning("Refused by the GPU accelerator (run on the CPU): " + ", ".join(
            f"{t} ({(a.get('gpu') or {}).get('fallback_reasons', {}).get(t, '')})" for t in g["refused_types"]))
    st.graphviz_chart(g["dot"], width="stretch")
    st.subheader("Per-op latency")
    if Path(a["path"]).suffix == ".onnx":
        if st.button("Profile with ONNX Runtime (20 runs)", key="mv-prof"):
            from workbench.api import onnx_op_profile

            size = next((m.get("input_size") for m in run["models"] if m["model"] == a["model"]), 224) or 224
            with st.spinner("Profiling..."):
                st.session_state["mv-prof-rows"] = (a["path"], onnx_op_profile(a["path"], size))
        got = st.session_state.get("mv-prof-rows")
        if got and got[0] == a["path"]:
            st.dataframe([{"node": r["node"], "op": r["op"], "mean (us)": round(r["mean_us"], 1),
                           "share": f"{100 * r['share']:.1f}%"} for r in got[1]], hide_index=True, width="stretch")
            st.caption("ONNX Runtime's own profiler (SessionOptions.enable_profiling), CPU provider, 2 threads, this host; "
                       "the first two runs are warm-up.")
    else:
        t = (a.get("gpu") or {}).get("time")
        st.info("LiteRT's Python API has no per-op profiler: a phone's per-op times come from Android's "
                "benchmark_model --enable_op_profiling=true (the adb runner reads that output). "
                + (f"Whole-file time on the GPU accelerator here: {t['p50_ms']} ms ({t['label']})." if t else ""))
