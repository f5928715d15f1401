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


def _elapsed(s: dict) -> str:
    import time

    started = s.get("started") or s.get("queued")
    if not started:
        return ""
    try:
        t0 = time.mktime(time.strptime(started[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return ""
    end = s.get("finished")
    t1 = time.mktime(time.strptime(end[:19], "%Y-%m-%dT%H:%M:%S")) if end else time.time()
    m, sec = divmod(max(0, int(t1 - t0)), 60)
    return f"{m} min {sec:02d} s"


def _readable_log(text: str, last: int = 20) -> str:
    """The job's log as sentences: its JSON progress events turned into words, other lines as they are."""
    import json

    out = []
    for line in text.splitlines():
        if line.startswith("[") and "] {" in line:
            ev, _, rest = line[1:].partition("] ")
            try:
                i = json.loads(rest)
            except ValueError:
                out.append(line)
                continue
            what = " ".join(str(i[k]) for k in ("kind", "model", "format", "precision", "device") if i.get(k) not in (None, ""))
            if ev == "cell":
                out.append(f"measuring {what} ({i.get('done')}/{i.get('total')} done)")
            elif ev == "export-step":
                out.append(f"exporting {what}")
            elif ev in ("export", "cached"):
                out.append(f"{'exporting' if ev == 'export' else 'reusing cached'} {i.get('model')}: {i.get('combos')} artifacts")
            elif ev == "plan":
                out.append(f"plan: {i.get('exports')} exports, up to {i.get('cells')} cells")
            elif ev == "done":
                out.append(f"done: {i.get('cells_done', 0)} cells measured, {i.get('cells_failed', 0)} failed")
            else:
                out.append(f"{ev}: {what or rest[:120]}")
        elif line.strip():
            out.append(line)
    return "\n".join(out[-last:])


def _running(job_dir: Path | None) -> bool:
    from workbench.api import status

    return bool(job_dir) and status(job_dir).get("state") in ("queued", "running")


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
        c1, c2 = st.columns([4, 1])
        c1.markdown(f"**Run `{job_dir.name}`**: {state} · elapsed {_elapsed(s) or '-'}")
        if state in ("queued", "running"):
            if c2.button("Cancel run", key="run-cancel", help="stops the run; cells already measured are kept"):
                from workbench.api import cancel

                with st.spinner("Cancelling (running conversions are stopped)..."):
                    cancel(job_dir)
                st.rerun()
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
        elif state == "cancelled":
            st.warning(f"Cancelled. {s.get('error', '')}")
        else:
            st.error(f"{state}: {s.get('error', 'see the log')}")
        if state not in ("queued", "running") and (job_dir / "run.json").exists():
            if st.button("Open results", key="run-open-results", type="primary"):
                st.query_params["run"] = job_dir.name
                st.switch_page("views/results.py")
        log = job_dir / "log.txt"
        if log.exists():
            with st.expander("Log"):
                st.code(_readable_log(log.read_text(errors="replace")) or "(empty)", language=None)

    panel()


def _restore_form(job_dir: Path) -> None:
    """After a refresh (a new session), the form shows the settings of the run in the URL, read
    from the run's own sweep.toml; a widget the user already changed in this session is left alone."""
    import tomllib

    f = job_dir / "sweep.toml"
    if st.session_state.get("run-form-restored") == job_dir.name or not f.exists():
        return
    try:
        doc = tomllib.loads(f.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return
    m = (doc.get("models") or [{}])[0]
    vals = {"run-models": list(dict.fromkeys(x["name"] for x in doc.get("models", []) if "name" in x)),
            "run-classes": str(m.get("num_classes", "")), "run-size": str(m.get("input_size", "")),
            "run-formats": doc.get("formats"), "run-precisions": doc.get("precisions"), "run-devices": doc.get("devices"),
            "run-calib": (doc.get("data") or {}).get("calibration", "builtin"),
            "run-calib-n": str((doc.get("data") or {}).get("calib_count", 32)),
            "run-eval": (doc.get("data") or {}).get("evaluation", "none"),
            "run-eval-n": str((doc.get("data") or {}).get("eval_limit", 0)), "run-name": doc.get("name", "")}
    preset = next((k for k, v in PRESETS.items() if v == (doc.get("latency") or {})), None)
    if preset:
        vals["run-preset"] = preset
    rp = doc.get("reparam", [True])
    vals["run-form-kind"] = {(True,): "deploy (re-parameterized)", (False,): "train-time"}.get(tuple(rp), "both")
    for k, v in vals.items():
        if v not in (None, "") and k not in st.session_state:
            st.session_state[k] = v
    st.session_state["run-form-restored"] = job_dir.name


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
    _restore_form(attached)
    st.divider()
busy = _running(attached)

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
    # text fields checked by the library on Start: the value shown is the value run, never a clamped one
    classes = c1.text_input("Classes (1-100000)", value=str(sel.get("num_classes") or 5), key="run-classes")
    size = c2.text_input("Input size (px, 16-2048)", value=str(sel.get("input_size") or 64), key="run-size")
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
    calib_n = c1.text_input("Calibration count", value="32", key="run-calib-n")
    evaluation = c2.text_input("Evaluation data", value="builtin", key="run-eval",
                               help="'builtin', 'none', or an ImageFolder / COCO / VOC path under the data folders")
    eval_n = c2.text_input("Evaluation images (0 = all)", value="100", key="run-eval-n")
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
    name = st.text_input("Run name (empty: model and formats)", value="", key="run-name")
    b1, b2 = st.columns([1, 1])
    checked = b1.form_submit_button("Check plan", help="validate every field and show the plan; nothing starts")
    submitted = b2.form_submit_button("Start run", type="primary", disabled=busy,
                                      help="disabled while this tab's run is going" if busy else None)

if profile_errors:
    with st.expander(f"{len(profile_errors)} device profile(s) could not be read"):
        for f, e in profile_errors.items():
            st.error(e)



def _int(text: str, where: str, lo: int, hi: int, problems: list[str]) -> int | None:
    from workbench.api import check_number
    from workbench.errors import ConfigError

    try:
        v = int(str(text).strip())
    except ValueError:
        problems.append(f"{where} must be a whole number from {lo} to {hi}, got {text!r}")
        return None
    try:
        return check_number(where, v, "int", lo, hi)
    except ConfigError as e:
        problems.append(str(e))
        return None


def _build_doc() -> tuple[dict | None, list[str]]:
    """The sweep document the form describes, and every problem found (all of them, not the first)."""
    from workbench.errors import ConfigError

    problems: list[str] = []
    if not chosen:
        problems.append("Models: choose at least one model")
    if not fmts:
        problems.append("Formats: choose at least one")
    if not precs:
        problems.append("Precisions: choose at least one")
    if not devs:
        problems.append("Device profiles: choose at least one")
    n_cls = _int(classes, "Classes", 1, 100000, problems)
    n_size = _int(size, "Input size", 16, 2048, problems)
    n_calib = _int(calib_n, "Calibration count", 1, 100000, problems)
    n_eval = _int(eval_n, "Evaluation images", 0, 1000000, problems)

    def data_path(text: str, what: str) -> str | None:
        if text.strip().startswith("builtin"):
            return text.strip()
        try:
            p = common.checked_path(text, what=what)
            from workbench.api import check_data_source

            check_data_source(what, str(p))
            return str(p)
        except ConfigError as e:
            problems.append(str(e))
            return None

    data = {"calibration": data_path(calib, "Calibration images")}
    if n_calib:
        data["calib_count"] = n_calib
    if evaluation.strip().lower() != "none":
        data["evaluation"] = data_path(evaluation, "Evaluation data")
        if n_eval:
            data["eval_limit"] = n_eval
    optimize = {k: v for k, v in {"prune": float(prune), "finetune_epochs": int(finetune), "sparsity": float(sparsity),
                                  "qat_epochs": int(qat)}.items() if v}
    if optimize.get("finetune_epochs") or optimize.get("qat_epochs"):
        optimize["data"] = "builtin" if evaluation.strip() in ("builtin", "none") else data.get("evaluation")
    if problems:
        return None, problems
    mlist = []
    for m in chosen:
        entry = {"name": m, "num_classes": n_cls, "input_size": n_size}
        if m == sel.get("name") and sel.get("weights"):
            entry["weights"] = sel["weights"]
        if optimize:
            if keep_plain:
                mlist.append(dict(entry))
            entry["optimize"] = optimize
        mlist.append(entry)
    reparam = {"deploy (re-parameterized)": [True], "train-time": [False], "both": [True, False]}[form]
    run_name = name.strip() or "-".join([*chosen[:2], *fmts])[:60]
    doc = {"name": run_name, "formats": fmts, "precisions": precs, "devices": devs, "reparam": reparam,
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
    try:
        from workbench.api import check_document

        check_document(doc)  # the same checks as a sweep file: sizes, models, formats, devices, data
    except ConfigError as e:
        problems.append(str(e).removeprefix("sweep.toml: "))
    return (None if problems else doc), problems


def _show_plan(doc: dict) -> None:
    from workbench.api import check_document, estimate_seconds, unsupported_combinations

    plan = check_document(doc)
    est = estimate_seconds(plan, common.data_root())
    skipped = unsupported_combinations(plan)
    st.info(f"**Plan**: {len(plan.models)} model(s) x {len(plan.reparam)} form(s) x {len(plan.formats)} format(s) x "
            f"{len(plan.precisions)} precision(s) = **{plan.exports} exports**, up to **{plan.cells} cells** on "
            f"{len(plan.devices)} device(s). Estimated time: **about {est['total_s'] / 60:.1f} min** "
            f"(exports {est['export_s']:.0f} s, latency {est['latency_s']:.0f} s; {est['basis']})."
            + (f" Not offered, recorded as skipped: {', '.join(skipped)}." if skipped else ""))


if submitted or checked:
    from workbench.errors import ConfigError

    doc, problems = _build_doc()
    if problems:
        for p in problems:
            st.error(p)
        st.caption("Nothing was started: fix the fields above.")
    else:
        try:
            _show_plan(doc)
            if submitted:
                from workbench.api import allocate, start, sweep_to_toml

                if _running(attached):
                    raise ConfigError("a run of this tab is still going; wait for it or cancel it")
                # a fresh folder per run: uploads made in this session stay where they were stored
                out = allocate(common.data_root(), doc["name"])
                start(out, sweep_to_toml(doc))
                st.session_state["job_dir"] = str(out)
                st.session_state["run-form-restored"] = out.name
                st.query_params["run"] = out.name
                st.rerun()
        except WorkbenchError as e:
            widgets.show_error(e)
