"""run.json (schema-valid) and the reports rebuilt from it alone."""
from __future__ import annotations

import csv
import json

import pytest

from workbench.core import model_summary
from workbench.bench.measure import bench_artifact, estimate_artifact
from workbench.bench.runners import Protocol
from workbench.cli import main
from workbench.evaluate import evaluate_target
from workbench.export import ExportOptions, export_model
from workbench.report.build import add_accuracy, add_export, add_latency, new_run, now, validate_run, write_run
from workbench.report.render import cells, pareto, write_reports


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    m = export_model("repvgg-tiny", out_dir=out / "export", options=ExportOptions(
        formats=("onnx", "tflite", "coreml"), precisions=("fp32", "int8"), calib_count=8, fidelity_count=4))
    run = new_run("test")
    add_export(run, m, model_summary("repvgg-tiny"))
    add_accuracy(run, "repvgg-tiny", evaluate_target(str(out / "export"), "builtin", limit=40)["results"])
    proto = Protocol(warmup=2, warmup_seconds=0.1, min_runs=10, min_seconds=0.1, repeats=2)
    for a in m["artifacts"]:
        if a["status"] != "ok":
            continue
        if a["runnable_here"]:
            add_latency(run, "repvgg-tiny", a["format"], a["precision"], bench_artifact(a["path"], "host", proto).to_dict())
        for dev in ("pixel8-cpu", "iphone15-coreml"):
            st = estimate_artifact(a["path"], dev)
            if st.p50_ms is not None:
                add_latency(run, "repvgg-tiny", a["format"], a["precision"], st.to_dict())
    run["finished"] = now()
    write_run(run, out)
    write_reports(run, out)
    return out, run


def test_run_json_validates_and_has_provenance(run_dir):
    out, run = run_dir
    on_disk = json.loads((out / "run.json").read_text())
    validate_run(on_disk)
    prov = on_disk["provenance"]
    assert prov["host"]["cores"] >= 1 and prov["toolchain"]["onnx2tf"] == "2.6.9"
    assert all(len(a["sha256"]) == 64 for a in on_disk["artifacts"] if a["status"] == "ok")
    assert on_disk["datasets"][0]["sha256"] and on_disk["models"][0]["params"] == 33594
    assert on_disk["version"] == 3
    bad = dict(on_disk, version=4)
    with pytest.raises(Exception):
        validate_run(bad)


def test_csv_has_one_row_per_cell(run_dir):
    out, run = run_dir
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == len(cells(run)) == len(run["latency"])
    keys = {(r["model"], r["format"], r["precision"], r["device"]) for r in rows}
    assert len(keys) == len(rows)
    est = [r for r in rows if r["estimated"] == "True"]
    assert est and all(r["device"] in ("pixel8-cpu", "iphone15-coreml") for r in est)
    assert {r["device"] for r in rows if r["format"] == "coreml"} == {"iphone15-coreml"}


def test_reports_mark_estimates_and_carry_charts(run_dir):
    out, _ = run_dir
    md = (out / "report.md").read_text()
    assert "## Latency on host" in md and "| est. |" in md and "measured" in md
    html = (out / "report.html").read_text()
    assert html.count("<svg") >= 3 and "Pareto front" in html
    assert "src=" not in html and "<link" not in html and "@import" not in html  # self-contained, opens offline
    dev = (out / "devices" / "host.md").read_text()
    assert "| 1 |" in dev and ("invoke" in dev or "session.run" in dev)


def test_report_command_rebuilds_from_run_json(run_dir, capsys):
    out, _ = run_dir
    (out / "report.md").unlink()
    assert main(["report", str(out), "--format", "md"]) == 0
    assert (out / "report.md").exists()
    (out.parent / "broken").mkdir(exist_ok=True)
    (out.parent / "broken" / "run.json").write_text("{not json")
    assert main(["report", str(out.parent / "broken")]) == 2
    assert "not a valid run record" in capsys.readouterr().err


def test_pareto_front():
    pts = [(1.0, 0.9, "a"), (2.0, 0.95, "b"), (3.0, 0.9, "c"), (0.5, 0.5, "d")]
    assert set(pareto(pts)) == {"a", "b", "d"}


def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    import shutil
    import subprocess

    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    out, _ = run_dir
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([exe, *flags, "--dump-dom", f"file://{out / 'report.html'}"], capture_output=True, text=True,
                         timeout=120).stdout
    assert dom.count("<svg") >= 3 and "<circle" in dom and "Latency on host" in dom
    subprocess.run([exe, *flags, "--window-size=1200,3000", f"--screenshot={shot}", f"file://{out / 'report.html'}"],
                   capture_output=True, timeout=120)
    from PIL import Image

    im = Image.open(shot).convert("L")
    assert im.size == (1200, 3000) and len(set(im.getdata())) > 20  # drew text and charts, not a blank page
