"""Models: the zoo, filtered by family, with params and MACs before and after re-parameterization;
choose one (weights, classes, input size) for the other pages."""
import streamlit as st

from workbench.app import widgets
from workbench.errors import WorkbenchError

st.title("Model zoo")


@st.cache_data(show_spinner="Counting params and MACs of the zoo (meta device; once per version, then from disk)...")
def _zoo() -> list[dict]:
    from workbench.api import zoo_table_cached

    return zoo_table_cached()[0]


rows = _zoo()
families = sorted({r["family"] for r in rows})
c1, c2 = st.columns([3, 1])
pick = c1.multiselect("Family", families, default=[], placeholder="all families", key="zoo-family")
tiny = c2.toggle("Include test-sized models", value=True, key="zoo-tiny")
shown = [r for r in rows if (not pick or r["family"] in pick) and (tiny or not r["tiny"])]
st.dataframe(
    [{"model": r["name"], "family": r["family"], "task": r["task"], "input": r["input_size"], "classes": r["num_classes"],
      "params (train)": r["params"], "params (deploy)": r["params_deploy"], "GMACs (train)": r["macs"] / 1e9,
      "GMACs (deploy)": r["macs_deploy"] / 1e9, "description": r["description"]} for r in shown],
    hide_index=True, width="stretch",
    column_config={"GMACs (train)": st.column_config.NumberColumn(format="%.3f"),
                   "GMACs (deploy)": st.column_config.NumberColumn(format="%.3f"),
                   "params (train)": st.column_config.NumberColumn(format="localized"),
                   "params (deploy)": st.column_config.NumberColumn(format="localized")})
st.caption(f"{len(shown)} of {len(rows)} models. Params and MACs are counted from the model (meta device), "
           "at the default input size and class count.")

st.subheader("Use a model")
names = [r["name"] for r in shown] or [r["name"] for r in rows]
sel = widgets.selected() or {}
name = st.selectbox("Model", names, index=names.index(sel["name"]) if sel.get("name") in names else 0, key="zoo-model")
spec = next(r for r in rows if r["name"] == name)
c1, c2 = st.columns(2)
classes = c1.number_input("Classes (0 = the model's default or the checkpoint's)", min_value=0, max_value=100000,
                          value=0, step=1, key="zoo-classes")
size = c2.number_input("Input size (px)", min_value=16, max_value=2048, value=int(spec["input_size"]), step=8,
                       key=f"zoo-size-{name}")
weights = widgets.weights_picker("zoo-weights")
if st.button("Use this model", type="primary", key="zoo-use"):
    try:
        with st.spinner(f"Loading {name}..."):
            from workbench.api import load_model, model_summary

            model = load_model(name, weights=weights, num_classes=int(classes) or None, input_size=int(size))
            summary = model_summary(name, num_classes=model.model_info.num_classes, input_size=int(size))
        st.session_state["selected"] = {"name": name, "weights": weights, "num_classes": model.model_info.num_classes,
                                        "input_size": int(size)}
        st.success(f"{name} selected: {summary['params']:,} params ({summary['params_deploy']:,} deploy), "
                   f"{summary['macs'] / 1e9:.3f} GMACs; {model.model_info.num_classes} classes"
                   + (f"; weights {weights}" if weights else "; random init"))
        if hasattr(model, "decode_config"):  # an SSD: how its outputs are decoded and its inputs prepared
            st.info(f"Decoding: {model.decode_config.summary()} ({getattr(model, 'decode_note', 'ours: no weights given')})")
    except WorkbenchError as e:
        widgets.show_error(e)
