"""History: earlier runs under the data root; open one, compare two."""
import streamlit as st

from workbench.app import common, widgets
from workbench.errors import WorkbenchError

st.title("History")
from workbench.api import list_runs  # noqa: E402

runs = list_runs(common.data_root())
if not runs:
    st.info(f"No runs under {common.data_root()} yet.")
    st.stop()
st.dataframe([{k: r[k] for k in ("name", "state", "started", "models", "artifacts", "latency_rows", "noisy_rows")}
              for r in runs], hide_index=True, width="stretch",
             column_config={"noisy_rows": st.column_config.NumberColumn(
                 "noisy rows", help="latency rows measured on a busy machine (flagged; never compared)")})
if any(r["noisy_rows"] for r in runs):
    st.caption("NOISY: " + ", ".join(f"{r['name']} ({r['noisy_rows']} rows)" for r in runs if r["noisy_rows"])
               + " were measured while the machine was busy.")
names = [r["name"] for r in runs]
c1, c2 = st.columns([3, 1])
open_name = c1.selectbox("Open a run", names, key="hist-open")
if c2.button("Open", key="hist-open-btn"):
    st.query_params["run"] = open_name
    st.switch_page("views/results.py")
try:
    open_dir = common.run_dir_by_name(open_name)
except WorkbenchError as e:
    widgets.show_error(e)
    st.stop()
with st.expander(f"Settings of {open_name} (its sweep.toml)"):
    sweep_file = open_dir / "sweep.toml"
    st.code(sweep_file.read_text() if sweep_file.exists() else "(no sweep.toml: run from the command line)",
            language="toml")
with st.expander(f"Delete {open_name}"):
    st.caption("Removes the run folder (results, reports, measured cells). Exported files stay in the export cache.")
    sure = st.checkbox(f"Yes, delete {open_name}", key="hist-del-sure")
    if st.button("Delete run", key="hist-del", disabled=not sure, type="primary"):
        try:
            from workbench.api import delete_run

            delete_run(open_dir)
            st.session_state.pop("hist-del-sure", None)
            st.success(f"Deleted {open_name}")
            st.rerun()
        except WorkbenchError as e:
            widgets.show_error(e)

st.subheader("Compare two runs")
done = [r["name"] for r in runs if r["state"] == "done"]
if len(done) < 2:
    st.info("Comparing needs two finished runs.")
    st.stop()
c1, c2 = st.columns(2)
a = c1.selectbox("Run A (before)", done, index=1, key="hist-a")
b = c2.selectbox("Run B (after)", done, index=0, key="hist-b")
if st.button("Compare", type="primary", key="hist-cmp"):
    try:
        from workbench.api import compare_runs

        res = compare_runs(str(common.run_dir_by_name(a)), str(common.run_dir_by_name(b)))
    except (WorkbenchError, OSError, ValueError, KeyError) as e:
        widgets.show_error(e)
        st.stop()
    st.markdown("**Settings that differ**")
    if res["settings"]:
        st.dataframe([{**d, "a": str(d["a"]), "b": str(d["b"])} for d in res["settings"]], hide_index=True,
                     width="stretch")
    else:
        st.caption("same sweep settings, toolchain, host and device profiles")
    changed = [r for r in res["latency"] if r["changed"]]
    busy = [r for r in res["latency"] if r.get("inconclusive")]
    if busy:
        st.warning(f"{len(busy)} latency row(s) inconclusive: {busy[0]['inconclusive']} (noisy measurement; "
                   "never counted as a change)")
    st.write(f"{len(res['latency'])} latency rows in both runs, {len(changed)} changed beyond the repeat spread; "
             f"{sum(r['changed'] for r in res['accuracy'])} of {len(res['accuracy'])} accuracy rows changed beyond "
             "their 95% intervals.")
    if res["latency"]:
        st.markdown("**Latency (p50)**")
        st.dataframe(res["latency"], hide_index=True, width="stretch")
    if res["accuracy"]:
        st.markdown("**Accuracy**")
        st.dataframe(res["accuracy"], hide_index=True, width="stretch")
    if res["only_in_a"] or res["only_in_b"]:
        st.caption(f"only in A: {len(res['only_in_a'])} rows; only in B: {len(res['only_in_b'])} rows")
