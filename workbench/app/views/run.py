"""Run: formats, precisions, data, devices and latency protocol -> a sweep file -> a background run.

The run is the same ``run_sweep`` the CLI calls, in its own process (workbench.jobs), so long work
never blocks the page and a browser refresh reattaches to it (the run folder is in the URL)."""
from pathlib import Path

import streamlit as st

from workbench.app import common, widgets
from workbench.errors import WorkbenchError

st.title("Export, evaluate and measure")

PRESETS = {
    "quick (5 warm-up, >=20 runs / 0.3 s, 3 repeats)": {"warmup": 5, "warmup_seconds": 0.2, "min_runs": 20,
                                                        "min_seconds": 0.3, "repeats": 3},
    "standard (10 warm-up, >=50 runs / 2 s, 3 repeats)": {},
    "careful (20 warm-up, >=200 runs / 5 s, 5 repeats)": {"warmup": 20, "warmup_seconds": 2.0, "min_runs": 200,
                                                          "min_seconds": 5.0, "repeats": 5},
}


@st.cache_data(ttl=30)
def _choices():
    from workbench.api import CAPABILITIES, PRECISIONS

    from workbench.api import load_profiles
    from workbench.api import list_models

    profiles, errors = load_profiles()
    return list(list_models("*")), list(CAPABILITIES), list(PRECISIONS), sorted(profiles), errors


def _status_panel(job_dir: Path) -> None:
    from workbench.api import status

    @st.fragment(run_every=1.5)
    def panel():
        s = status(job_dir)
        if not s:
            st.info(f"{job_dir.name}: nothing started yet")
            return
        p = s.get("progress", {})
        state = s.get("state")
        st.markdown(f"**Run `{job_dir.name}`**: {state}")
        if state in ("queued", "running"):
            if p.get("event") == "cell" and p.get("total"):
                frac = min(1.0, p["done"] / p["total"])
                eta = f", about {p['eta_s']:.0f} s left" if p.get("eta_s") is not None else ""
                st.progress(frac, text=f"{p['done']}/{p['total']} cells done, {p.get('failed', 0)} failed{eta}; now: "
                                       f"{p['kind']} {p['model']} {p['format']} {p['precision']} {p.get('device', '')}")
            elif p.get("event") == "export-step":
                st.progress(p["index"] / max(1, p["total"]),
                            text=f"exporting {p['model']} ({'deploy' if p['reparam'] else 'train-time'}): "
                                 f"{p['format']} {p['precision']} ({p['index'] + 1}/{p['total']})")
            elif p.get("event") == "optimize":
                st.progress(0.0, text=f"optimizing {p['model']}: {p.get('step') or p.get('steps')}")
            elif p.get("event") in ("export", "cached"):
                st.progress(0.0, text=f"{p['event']} {p['model']}: {p['combos']} artifacts")
            else:
                st.progress(0.0, text="starting (loading the toolchain)...")
        elif state == "done":
            st_ = s.get("stats") or p
            st.success(f"Finished: {st_.get('cells_done', 0)} cells measured, {st_.get('cells_reused', 0)} reused, "
                       f"{st_.get('cells_failed', 0)} failed; {st_.get('exported_now', 0)} artifacts exported.")
            if st.button("Open results", key="run-open-results", type="primary"):
                st.query_params["run"] = job_dir.name
                st.switch_page("views/results.py")
        else:
            st.error(f"{state}: {s.get('error', 'see log.txt')}")
        log = job_dir / "log.txt"
        if log.exists():
            with st.expander("Log"):
                st.code("\n".join(log.read_text(errors="replace").splitlines()[-30:]) or "(empty)")

    panel()


# reattach: the run folder travels in the URL, so a refresh (a new session) finds it again
attached = None
qp = st.query_params.get("run")
if qp:
    try:
        attached = common.run_dir_by_name(qp)
    except WorkbenchError as e:
        widgets.show_error(e)
elif st.session_state.get("job_dir"):
    attached = Path(st.session_state["job_dir"])
if attached is not None:
    _status_panel(attached)
    st.divider()

try:
    models, formats, precisions, devices, profile_errors = _choices()
except WorkbenchError as e:
    widgets.show_error(e)
    st.stop()
sel = widgets.selected() or {}
with st.form("run-form"):
    st.subheader("What to run")
    default_models = [sel["name"]] if sel.get("name") in models else []
    chosen = st.multiselect("Models", models, default=default_models, key="run-models",
                            help="The selected model keeps its weights, classes and input size; others use the same "
                                 "classes and size with random init.")
    c1, c2, c3 = st.columns(3)
    classes = c1.number_input("Classes", min_value=1, max_value=100000, value=int(sel.get("num_classes") or 5),
                              key="run-classes")
    size = c2.number_input("Input size (px)", min_value=16, max_value=2048, value=int(sel.get("input_size") or 64),
                           step=8, key="run-size")
    form = c3.radio("Form", ["deploy (re-parameterized)", "train-time", "both"], key="run-form-kind")
    c1, c2 = st.columns(2)
    fmts = c1.multiselect("Formats", formats, default=["onnx", "tflite"], key="run-formats")
    precs = c2.multiselect("Precisions", precisions, default=["fp32", "int8"], key="run-precisions")
    devs = st.multiselect("Device profiles", devices, default=["host"] if "host" in devices else [], key="run-devices",
                          help="Local profiles are measured; ssh/adb ones are measured when reachable, otherwise "
                               "estimated and labelled as such.")
    st.subheader("Data")
    c1, c2, c3 = st.columns(3)
    calib = c1.text_input("Calibration images", value="builtin", key="run-calib",
                          help="'builtin' (generated shapes) or an image folder under the data folders")
    calib_n = c1.number_input("Calibration count", min_value=1, max_value=10000, value=32, key="run-calib-n")
    evaluation = c2.text_input("Evaluation data", value="builtin", key="run-eval",
                               help="'builtin', 'none', or an ImageFolder / COCO / VOC path under the data folders")
    eval_n = c2.number_input("Evaluation images (0 = all)", min_value=0, max_value=1000000, value=100, key="run-eval-n")
    preset = c3.selectbox("Latency protocol", list(PRESETS), key="run-preset")
    with st.expander("Optimization and quantization (the same options as a sweep's optimize = {...} and [quantization])"):
        c1, c2, c3, c4 = st.columns(4)
        prune = c1.number_input("Prune channels (ratio, 0 = off)", min_value=0.0, max_value=0.9, value=0.0, step=0.05,
                                key="opt-prune")
        finetune = c2.number_input("Fine-tune after pruning (epochs)", min_value=0, max_value=100, value=0, key="opt-ft")
        sparsity = c3.number_input("Unstructured sparsity (0 = off)", min_value=0.0, max_value=0.95, value=0.0, step=0.05,
                                   key="opt-sparsity", help="zeros only: shrinks a compressed file, not dense latency")
        qat = c4.number_input("QAT (epochs, 0 = off)", min_value=0, max_value=100, value=0, key="opt-qat")
        keep_plain = st.checkbox("Also run the unoptimized model (before/after in one report)", value=True, key="opt-both")
        c1, c2, c3, c4 = st.columns(4)
        per_channel = c1.checkbox("Per-channel INT8 weights", value=True, key="q-per-channel")
        calib_method = c2.selectbox("Calibration method", ["minmax", "percentile", "entropy"], key="q-method")
        keep_ends = c3.checkbox("Keep first and last layers float", value=False, key="q-ends")
        keep_worst = c4.number_input("Keep N most sensitive layers float", min_value=0, max_value=50, value=0,
                                     key="q-worst")
    name = st.text_input("Run name", value="dashboard", key="run-name")
    submitted = st.form_submit_button("Start run", type="primary")

if profile_errors:
    with st.expander(f"{len(profile_errors)} device profile(s) could not be read"):
        for f, e in profile_errors.items():
            st.error(e)

if submitted:
    try:
        from workbench.errors import ConfigError
        from workbench.api import allocate, start
        from workbench.api import sweep_to_toml

        if not chosen:
            raise ConfigError("choose at least one model")
        if not fmts or not precs or not devs:
            raise ConfigError("choose at least one format, one precision and one device profile")

        def data_path(text: str, what: str) -> str:
            return "builtin" if text.strip() == "builtin" else str(common.checked_path(text, what=what))

        data = {"calibration": data_path(calib, "calibration folder"), "calib_count": int(calib_n)}
        if evaluation.strip().lower() != "none":
            data["evaluation"] = data_path(evaluation, "evaluation data")
            if eval_n:
                data["eval_limit"] = int(eval_n)
        optimize = {k: v for k, v in {"prune": float(prune), "finetune_epochs": int(finetune), "sparsity": float(sparsity),
                                      "qat_epochs": int(qat)}.items() if v}
        if optimize.get("finetune_epochs") or optimize.get("qat_epochs"):
            optimize["data"] = "builtin" if evaluation.strip() in ("builtin", "none") else data_path(evaluation, "training data")
        mlist = []
        for m in chosen:
            entry = {"name": m, "num_classes": int(classes), "input_size": int(size)}
            if m == sel.get("name") and sel.get("weights"):
                entry["weights"] = sel["weights"]
            if optimize:
                if keep_plain:
                    mlist.append(dict(entry))
                entry["optimize"] = optimize
            mlist.append(entry)
        reparam = {"deploy (re-parameterized)": [True], "train-time": [False], "both": [True, False]}[form]
        doc = {"name": name, "formats": fmts, "precisions": precs, "devices": devs, "reparam": reparam,
               "data": data, "latency": PRESETS[preset], "models": mlist}
        if not doc["latency"]:
            del doc["latency"]
        quant = {"per_channel": bool(per_channel), "calib_method": calib_method}
        if keep_ends:
            quant["keep_float"] = ["first", "last"]
        if keep_worst:
            quant["keep_worst"] = int(keep_worst)
        if quant != {"per_channel": True, "calib_method": "minmax"}:
            doc["quantization"] = quant
        # a fresh folder per run: uploads made in this session stay where they were stored
        out = allocate(common.data_root(), name)
        start(out, sweep_to_toml(doc))
        st.session_state["job_dir"] = str(out)
        st.query_params["run"] = out.name
        st.rerun()
    except WorkbenchError as e:
        widgets.show_error(e)
