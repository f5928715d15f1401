"""Re-parameterize the selected model and show the proof: branch structure before and after,
parameter and BN counts, and the equivalence figures on a seeded input."""
import streamlit as st

from workbench.app import widgets
from workbench.errors import WorkbenchError

st.title("Structural re-parameterization")
sel = widgets.selected()
if not sel:
    st.info("Pick a model on the Models page first (it can be random-init).")
    st.page_link("views/models.py", label="Go to Models", icon=":material/view_list:")
    st.stop()
st.write(f"Model **{sel['name']}**, {sel['num_classes']} classes, {sel['input_size']} px, "
         + (f"weights `{sel['weights']}`" if sel.get("weights") else "random init (seed 0, BN statistics randomized so "
            "the check is not trivial)"))
seed = st.number_input("Check input seed", min_value=0, max_value=2**31 - 1, value=0, key="rp-seed")
if st.button("Re-parameterize", type="primary", key="rp-go"):
    try:
        with st.spinner("Fusing branches and comparing outputs..."):
            import torch

            from workbench.api import block_structure, load_model, reparameterize

            model = load_model(sel["name"], weights=sel.get("weights"), num_classes=sel["num_classes"],
                               input_size=sel["input_size"])
            if not sel.get("weights"):  # random BN statistics: a fusion bug cannot hide behind identity BN
                g = torch.Generator().manual_seed(int(seed))
                for m in model.modules():
                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                        m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                        m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            model.eval()
            res = reparameterize(model, seed=int(seed))
            st.session_state["reparam_result"] = {"model": sel["name"], **res.to_dict(),
                                                  "before": block_structure(model), "after": block_structure(res.model)}
    except WorkbenchError as e:
        widgets.show_error(e)

r = st.session_state.get("reparam_result")
if r and r["model"] == sel["name"]:
    ok = r["relative_max_diff"] <= 1e-5 and r["cosine"] >= 0.999999
    (st.success if ok else st.error)(
        f"{'Equivalent' if ok else 'NOT equivalent'}: max |diff| {r['max_abs_diff']:.3g} "
        f"({r['relative_max_diff']:.3g} of max |output| {r['max_abs_output']:.3g}), cosine {r['cosine']:.9f} "
        "(gate: relative <= 1e-5, cosine >= 0.999999)")
    c = st.columns(3)
    # fewer is better here: a reduction is shown green ("inverse")
    c[0].metric("Parameters", f"{r['params_after']:,}", f"{r['params_after'] - r['params_before']:+,}", delta_color="inverse",
                help=f"before: {r['params_before']:,}")
    c[1].metric("BatchNorm layers", r["bn_after"], r["bn_after"] - r["bn_before"], delta_color="inverse",
                help=f"before: {r['bn_before']}")
    c[2].metric("Multi-branch blocks", r["branches_after"], r["branches_after"] - r["branches_before"],
                delta_color="inverse", help=f"before: {r['branches_before']}")
    left, right = st.columns(2)
    left.markdown("**Before (train-time)**")
    left.dataframe(r["before"], hide_index=True, width="stretch")
    right.markdown("**After (deploy)**")
    right.dataframe(r["after"], hide_index=True, width="stretch")
    if not r["before"]:
        st.caption("This family has no multi-branch blocks; re-parameterization here is conv+BN fusion.")
