"""Results of one run: per-artifact summary (with the executed GPU run and the oldest runtime),
sortable tables, interactive charts, fidelity and GPU placement per artifact, failures with
reasons, downloads."""
import io
import json
import zipfile
from pathlib import Path

import streamlit as st

from workbench.app import common, widgets

st.title("Results")
run_dir = widgets.run_picker("Run", "res-run", default=st.query_params.get("run"))
if run_dir is None:
    st.stop()
st.query_params["run"] = run_dir.name
run_path = run_dir / "run.json"
if not run_path.exists():
    from workbench.api import status

    s = status(run_dir)
    st.info(f"{run_dir.name} has no results yet (state: {s.get('state', 'unknown')}). "
            + ("Its progress is on the Run page." if s.get("state") in ("queued", "running") else s.get("error", "")))
    st.stop()
try:
    run = json.loads(run_path.read_text())
    from workbench.api import validate_run

    validate_run(run)
except Exception as e:  # a damaged run.json is shown, not a traceback
    st.error(f"{run_path} is not a valid run.json ({str(e).splitlines()[0][:200]}); re-run `workbench report` or the sweep")
    st.stop()

import altair as alt  # noqa: E402  (heavy: only this page needs it)
import pandas as pd  # noqa: E402

from workbench.api import gpu_text, pareto, report_cells as cells, runtime_text  # noqa: E402

rows = pd.DataFrame(cells(run))
# summary first: the best artifact per device, failures, noisy rows
best = []
ok_lat = rows[(rows["status"] == "ok") & rows["p50_ms"].notna()] if not rows.empty else rows
for dev, g in (ok_lat.groupby("device") if not ok_lat.empty else []):
    if not dev:
        continue
    acc_pts = g[g["top1"].notna()]
    front = set(pareto([(r.p50_ms, r.top1, i) for i, r in acc_pts.iterrows()])) if not acc_pts.empty else set()
    fastest = g.loc[g["p50_ms"].idxmin()]
    best.append({"device": dev, "fastest": f"{fastest['model']} {fastest['format']} {fastest['precision']}",
                 "p50 ms": round(float(fastest["p50_ms"]), 3), "kind": "estimate" if fastest["estimated"] else "measured",
                 "accuracy/latency front": ", ".join(f"{r['format']} {r['precision']} ({r['p50_ms']:.3g} ms, top-1 {r['top1']:.3f})"
                                                   for i, r in acc_pts.loc[sorted(front)].iterrows()) or "n/a (no accuracy rows)"})
if best:
    st.caption("**Best per device**: the fastest artifact, and the accuracy/latency Pareto front where accuracy was measured")
    st.dataframe(best, hide_index=True, width="stretch")
# one row per artifact, few columns: the GPU run and the oldest runtime are in view without scrolling
def _latency_text(a: dict) -> str:
    """Where this artifact was timed (est. marked), or why it was not, in one cell."""
    mine = [r for r in run["latency"] if (r["model"], r["format"], r["precision"], r.get("reparam", True)) ==
            (a["model"], a["format"], a["precision"], a.get("reparam", True))]
    parts = [f"{r['device']} {r['p50_ms']:.3g} ms{' est.' if r.get('estimated') else ''}" for r in mine
             if r.get("p50_ms") is not None]
    if parts:
        return "; ".join(parts)
    if a["status"] != "ok":
        return f"n/a: {a['status']}"
    if a.get("runnable_here") is False:
        return "n/a here: " + ((a.get("fidelity") or {}).get("status") or "not runnable on this host")
    why = next((r.get("reason") for r in mine if r.get("reason")), None)
    return f"n/a: {why}" if why else "n/a: no device profile in this run runs it"


per_art = [{"artifact": f"{a['model']} {a['format']} {a['precision']}{'' if a.get('reparam', True) else ' (train-time)'}",
            "status": a["status"], "GPU: delegated / fallback ops / GPU fidelity": gpu_text(a),
            "cos vs PyTorch": (a.get("fidelity") or {}).get("cosine"), "oldest runtime": runtime_text(a),
            "latency p50": _latency_text(a), "size MB": round((a.get("size_bytes") or 0) / 1e6, 2)}
           for a in run["artifacts"]]
st.dataframe(per_art, hide_index=True, width="stretch",
             column_config={"cos vs PyTorch": st.column_config.NumberColumn(format="%.6f"),
                            "GPU: delegated / fallback ops / GPU fidelity": st.column_config.TextColumn(
                                width="large", help="executed on LiteRT's GPU accelerator (WebGPU over Vulkan); "
                                "on llvmpipe (software Vulkan) placement and numerics are real, the time is not a device "
                                "latency. n/a: not a .tflite"),
                            "latency p50": st.column_config.TextColumn(
                                help="per device; est. = roofline estimate from the profile's figures; n/a says why"),
                            "oldest runtime": st.column_config.TextColumn(
                                help="the oldest TFLite runtime whose op versions cover the file; 2.14: loaded in "
                                "tflite-runtime 2.14 here")})


inc = run.get("incomplete")
if inc:
    st.warning(f"This run was **{inc['state']}** ({inc['reason']}). Shown: its exports and the cells finished before "
               "it stopped.")
random_models = sorted({m["model"] for m in run["models"] if not m.get("weights_sha256")})  # no weights file: random init
if random_models and run["accuracy"]:
    st.warning(f"Random weights ({', '.join(random_models)}): top-1 / mAP are noise (chance level) and the "
               "accuracy chart says nothing; fidelity and latency still hold. Pass trained weights on Models.",
               icon=":material/info:")

c = st.columns(4)
c[0].metric("Artifacts", len(run["artifacts"]))
c[1].metric("Latency rows", len(run["latency"]))
c[2].metric("Accuracy rows", len(run["accuracy"]))
c[3].metric("Failures", len(run["failures"]))
noisy = [r for r in run["latency"] if r.get("noisy")]
if noisy:
    st.warning(f"NOISY: {len(noisy)} latency row(s) were measured while the machine was busy and stayed noisy after "
               f"re-takes ({'; '.join((noisy[0].get('noise') or {}).get('reasons', []))}). Their figures are kept and "
               "flagged; do not compare them.")
st.caption(f"{run['name']} · started {run['created']} · finished {run.get('finished') or 'not yet'} · "
           f"host {(run['provenance'].get('host') or {}).get('cpu_model', '')}")

tab_table, tab_charts, tab_fid, tab_fail, tab_dl = st.tabs(["Table", "Charts", "Fidelity & GPU", "Failures",
                                                             "Downloads"])
with tab_table:
    # text and flag columns say "n/a" where a figure does not apply; numeric columns stay numeric (sortable)
    shown = rows.copy()
    for col in shown.columns:
        if shown[col].dtype == object:  # one type per column (Arrow): text, with "n/a" for a missing value
            shown[col] = shown[col].map(lambda v: "n/a" if v is None or v != v else
                                        ("yes" if v is True else "no" if v is False else str(v)))
    # numbers stay numbers (sorting works); a missing one is displayed "n/a" (the Styler's display value)
    numeric = [c for c in shown.columns if shown[c].dtype.kind in "fi"]
    st.dataframe(shown.style.format(na_rep="n/a", precision=3, subset=numeric), hide_index=True, width="stretch",
                 column_config={"p50_ms": st.column_config.NumberColumn("p50 (ms)", help="n/a: not measured (see status)"),
                                "top1": st.column_config.NumberColumn("top-1", help="n/a: no accuracy for this row"),
                                "estimated": st.column_config.CheckboxColumn("estimate"),
                                "noisy": st.column_config.TextColumn("noisy", help="measured on a busy machine; "
                                                                     "n/a: not a measurement (an estimate)")})
    st.caption("Click a column header to sort. Rows marked 'estimate' are roofline estimates from the device "
               "profile's figures, not measurements.")

with tab_charts:
    lat = rows[rows["p50_ms"].notna()].copy()
    if lat.empty:
        st.info("No latency rows in this run.")
    else:
        lat["artifact"] = lat["model"] + " " + lat["format"] + " " + lat["precision"] + \
            lat["reparam"].map({True: "", False: " (train-time)"})
        lat["kind"] = lat["estimated"].map({True: "estimate", False: "measured"})
        lat.loc[lat["noisy"].fillna(False).astype(bool), "kind"] = "measured, NOISY"
        st.markdown("**Latency per device (p50)**")
        # measured and estimated in clearly different colours; each device panel lists only its own rows
        kinds = alt.Scale(domain=["measured", "estimate", "measured, NOISY"], range=["#1f4e8c", "#f0a030", "#c0392b"])
        st.altair_chart(alt.Chart(lat).mark_bar().encode(
            x=alt.X("p50_ms:Q", title="p50 latency (ms)"), y=alt.Y("artifact:N", title=None, axis=alt.Axis(labelLimit=400)),
            color=alt.Color("kind:N", scale=kinds, title="figure"), row=alt.Row("device:N", title=None),
            tooltip=["artifact", "device", "p50_ms", "p90_ms", "runs", "kind"]).resolve_scale(y="independent")
            .interactive(), width="stretch")
        acc = lat[lat["top1"].notna()]
        if not acc.empty:
            st.markdown("**Accuracy vs latency** (line: Pareto front per device)")
            front = []
            for dev, g in acc.groupby("device"):
                keep = set(pareto([(r.p50_ms, r.top1, i) for i, r in g.iterrows()]))
                front.append(g[g.index.isin(keep)].sort_values("p50_ms"))
            sel = alt.selection_point(fields=["device"], bind="legend")  # click the legend to toggle a device
            pts = alt.Chart(acc).mark_point(filled=True, size=80).add_params(sel).encode(
                opacity=alt.condition(sel, alt.value(1.0), alt.value(0.15)),
                x=alt.X("p50_ms:Q", title="p50 latency (ms)"), y=alt.Y("top1:Q", title="top-1", scale=alt.Scale(zero=False)),
                color="device:N", shape="kind:N", tooltip=["artifact", "device", "p50_ms", "top1"])
            line = alt.Chart(pd.concat(front)).mark_line().encode(x="p50_ms:Q", y="top1:Q", color="device:N")
            st.altair_chart((pts + line).interactive(), width="stretch")
        if set(lat["reparam"]) == {True, False}:
            st.markdown("**Train-time vs deploy** (same artifact, same device)")
            st.altair_chart(alt.Chart(lat).mark_bar().encode(
                x=alt.X("p50_ms:Q", title="p50 latency (ms)"),
                y=alt.Y("reparam:N", title=None, axis=alt.Axis(labelExpr="datum.value ? 'deploy' : 'train-time'")),
                color="reparam:N", row=alt.Row("device:N"), column=alt.Column("format:N"),
                tooltip=["artifact", "device", "p50_ms"]))
    arts = pd.DataFrame([a for a in run["artifacts"] if a.get("size_bytes")])
    if not arts.empty:
        arts["size_mb"] = arts["size_bytes"] / 2**20
        arts["artifact"] = arts["model"] + " " + arts["format"] + " " + arts["precision"]
        st.markdown("**File size**")
        st.altair_chart(alt.Chart(arts).mark_bar().encode(
            x=alt.X("size_mb:Q", title="MB"), y=alt.Y("artifact:N", title=None, axis=alt.Axis(labelLimit=400)), color="format:N",
            tooltip=["artifact", "size_mb"]), width="stretch")

with tab_fid:
    fid = []
    for a in run["artifacts"]:
        f = a.get("fidelity") or {}
        g = a.get("gpu_delegate") or {}
        x = a.get("gpu") or {}
        fid.append({"model": a["model"], "deploy": a["reparam"], "format": a["format"], "precision": a["precision"],
                    "status": a["status"], "route": a.get("route"), "max |diff|": f.get("max_abs_diff"),
                    "cosine": f.get("cosine"), "PSNR (dB)": f.get("psnr_db"), "top-1 agreement": f.get("agreement"),
                    "gate": (a.get("gate") or {}).get("reason"),
                    "GPU run": x.get("status"), "GPU device": (x.get("device") or {}).get("name"),
                    "GPU: fully accelerated": x.get("fully_accelerated"),
                    "GPU ops": f"{x.get('gpu_ops')}/{x.get('total_ops')}" if x.get("total_ops") else None,
                    "GPU fallbacks": ", ".join(f"{k} x{v}" for k, v in (x.get("fallback_by_op") or {}).items()) or None,
                    "GPU cos": (x.get("fidelity") or {}).get("cosine"),
                    "GPU time (ms)": (x.get("time") or {}).get("p50_ms"), "GPU time is": (x.get("time") or {}).get("label"),
                    "rule table": (f"{g.get('delegated_ops')}/{g.get('total_ops')}" if g else None),
                    "rules agree": x.get("rules_agree"), "reason": a.get("reason") or x.get("reason")})
    st.dataframe(fid, hide_index=True, width="stretch")

with tab_fail:
    if run["failures"]:
        st.dataframe(run["failures"], hide_index=True, width="stretch")
    else:
        st.success("No failures in this run.")

with tab_dl:
    for fname, mime in (("run.json", "application/json"), ("results.csv", "text/csv"), ("report.html", "text/html"),
                        ("report.md", "text/markdown")):
        p = run_dir / fname
        if p.exists():
            st.download_button(f"Download {fname}", p.read_bytes(), file_name=f"{run_dir.name}-{fname}", mime=mime,
                               key=f"dl-{fname}")
    ok = [a for a in run["artifacts"] if a["status"] == "ok" and a.get("path") and Path(a["path"]).exists()]
    if ok:
        label = {i: f"{a['model']} {a['format']} {a['precision']}{'' if a['reparam'] else ' (train-time)'} "
                    f"({(a.get('size_bytes') or 0) / 2**20:.1f} MB)" for i, a in enumerate(ok)}
        i = st.selectbox("Artifact", list(label), format_func=label.get, key="dl-art")
        p = Path(ok[i]["path"])
        if (ok[i].get("size_bytes") or 0) > common.max_upload_bytes():
            st.info(f"{p.name} is large; copy it from {p}")
        elif p.is_dir():  # .mlpackage is a folder: zip it in memory
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
                for f in p.rglob("*"):
                    if f.is_file():
                        z.write(f, Path(p.name) / f.relative_to(p))
            st.download_button(f"Download {p.name}.zip", buf.getvalue(), file_name=f"{p.name}.zip", key="dl-art-btn")
        else:
            st.download_button(f"Download {p.name}", p.read_bytes(), file_name=p.name, key="dl-art-btn")
