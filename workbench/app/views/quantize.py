"""Quantization: why an INT8 model loses accuracy. The per-layer sensitivity table of the selected
model (each Conv/Linear quantized alone, simulated INT8) and the layers a run would keep in float."""
import streamlit as st

from workbench.app import widgets
from workbench.errors import WorkbenchError

st.title("INT8 sensitivity")
sel = widgets.selected()
if not sel:
    st.info("Pick a model on the Models page first (trained weights make the table meaningful).")
    st.stop()
if not sel.get("weights"):
    st.warning("Random weights: the table shows where INT8 error arises, but accuracy figures are noise.")
c1, c2, c3 = st.columns(3)
per_channel = c1.checkbox("Per-channel weights", value=True, key="qs-pc")
method = c2.selectbox("Activation ranges", ["minmax", "percentile"], key="qs-method")
n_eval = c3.number_input("Evaluation images", min_value=16, max_value=5000, value=200, key="qs-n")
if st.button("Compute sensitivity", type="primary", key="qs-go"):
    try:
        import time

        bar = st.progress(0.0, text="loading the model and the data, calibrating...")
        t0 = time.time()

        def tick(done: int, total: int, layer: str) -> None:
            left = (time.time() - t0) / done * (total - done)
            bar.progress(done / total, text=f"layer {done}/{total} ({layer}) quantized and scored; about {left:.0f} s left")

        from workbench.api import load_model
        from workbench.api import sensitivity_on_data

        model = load_model(sel["name"], weights=sel.get("weights"), num_classes=sel["num_classes"],
                           input_size=sel["input_size"])
        st.session_state["sens"] = {"model": sel["name"], **sensitivity_on_data(
            model, "builtin", eval_limit=int(n_eval), per_channel=per_channel, method=method,
            use_labels=bool(sel.get("weights")), progress=tick)}
        bar.progress(1.0, text=f"done in {time.time() - t0:.0f} s")
    except WorkbenchError as e:
        widgets.show_error(e)
s = st.session_state.get("sens")
if s and s["model"] == sel["name"]:
    a = s["all_layers"]
    c = st.columns(3)
    c[0].metric("All layers INT8: output SQNR", f"{a['sqnr_db']:.1f} dB")
    if "top1_agreement" in a:
        c[1].metric("Top-1 agreement with float", f"{a['top1_agreement']:.3f}")
    if "top1" in a and "top1" in s["float"]:
        c[2].metric("Top-1 (simulated INT8)", f"{a['top1']:.3f}", f"{100 * (a['top1'] - s['float']['top1']):+.1f} pp vs float")
    st.dataframe([{"layer": r["layer"], "SQNR (dB)": r["sqnr_db"], "top-1 agreement": r.get("top1_agreement"),
                   "weight max/std": r["weight_absmax_over_std"], "activation min": r["act_range"][0],
                   "activation max": r["act_range"][1]} for r in s["layers"]], hide_index=True, width="stretch")
    st.caption(f"Worst first. {'Per-channel' if s['per_channel'] else 'Per-tensor'} symmetric INT8 weights, 8-bit input "
               f"activations ({s['calib_method']} over {s['calib_images']} calibration images), compared with float on "
               f"{s['eval_images']} images. On the Run page, 'keep N most sensitive layers float' keeps the top rows "
               "of this table in float in the ONNX file; `workbench optimize MODEL --quant-study DIR` measures the "
               "fixes (QAT, QARepVGG) on the real files.")
