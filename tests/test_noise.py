"""A latency taken on a busy machine is never reported as a clean one (workbench.bench.noise)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.bench.noise import OTHERS_SHARE_MAX, RETAKES
from workbench.export import ExportOptions, export_model

QUICK = dict(warmup=2, warmup_seconds=0.05, min_runs=20, min_seconds=0.4, repeats=2)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("noise-export")
    m = export_model("repvgg-tiny", out_dir=out, num_classes=5, input_size=32,
                     options=ExportOptions(formats=("onnx",), precisions=("fp32",), calib_count=4, fidelity_count=2))
    return m["artifacts"][0]["path"]


@pytest.fixture(autouse=True)
def own_probe_record(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_PROBE_RECORD", str(tmp_path / "probe.json"))


def _hogs(core: int, n: int = 2) -> list[subprocess.Popen]:
    """Busy loops pinned to ``core``; bounded (they stop themselves after 120 s)."""
    code = "import os, time\nos.sched_setaffinity(0, {%d})\nt = time.time() + 120\nwhile time.time() < t: pass\n" % core
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]


def test_a_cpu_hog_on_the_measured_core_flags_the_row_after_retakes_and_a_quiet_run_is_clean(tiny_onnx):
    from workbench.bench.measure import bench_artifact
    from workbench.bench.runners import Protocol

    core = sorted(os.sched_getaffinity(0))[0]  # host-1t pins the first core it may use
    hogs = _hogs(core)
    try:
        busy = bench_artifact(tiny_onnx, "host-1t", Protocol(**QUICK))
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    n = busy.noise
    assert busy.noisy is True and busy.retakes == RETAKES
    assert n["others_share_max"] > OTHERS_SHARE_MAX and n["pinned_cores"] == [core]
    assert any("other processes used" in r for r in n["reasons"])
    assert any(w.startswith("noisy:") for w in busy.warnings) and any("re-takes" in w for w in busy.warnings)
    assert len(n["others_share"]) == QUICK["repeats"] and len(n["probe_ms"]) == 2 and n["loadavg"]

    quiet = bench_artifact(tiny_onnx, "host-1t", Protocol(**QUICK))
    assert quiet.noisy is False, quiet.noise["reasons"]
    assert quiet.noise["others_share_max"] <= OTHERS_SHARE_MAX


def _run(tmp_path: Path, name: str) -> Path:
    from workbench.sweep import run_sweep

    sweep = tmp_path / f"{name}.toml"
    sweep.write_text('name = "n"\nformats = ["onnx"]\nprecisions = ["fp32"]\ndevices = ["host-1t"]\n\n[latency]\n'
                     'warmup = 2\nwarmup_seconds = 0.05\nmin_runs = 10\nmin_seconds = 0.1\nrepeats = 2\n\n'
                     '[[models]]\nname = "repvgg-tiny"\nnum_classes = 5\ninput_size = 32\n')
    run_sweep(str(sweep), tmp_path / name, cache=str(tmp_path / "cache"))
    return tmp_path / name


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Run A as measured; run B: the same run, one row flagged noisy with half the p50, its sweep's
    min_runs and a toolchain version changed (the flagged row is what compare must not call a change)."""
    tmp = tmp_path_factory.mktemp("noise-runs")
    for attempt in range(3):  # run A must be a clean measurement; on a shared machine one may not be
        a = _run(tmp, f"a{attempt}")
        if not json.loads((a / "run.json").read_text())["latency"][0]["noisy"]:
            break
    else:
        pytest.fail("three runs of the tiny sweep were all flagged noisy: the machine is too busy for this test")
    b = tmp / "b"
    shutil.copytree(a, b)
    run = json.loads((b / "run.json").read_text())
    row = run["latency"][0]
    row.update(p50_ms=row["p50_ms"] / 2, noisy=True, retakes=RETAKES,
               noise={**row["noise"], "noisy": True, "others_share_max": 0.61,
                      "reasons": ["other processes used 61% of the pinned cores [0]"]})
    sw = run["provenance"]["sweep"]
    sw["text"] = sw["text"].replace("min_runs = 10", "min_runs = 30")
    run["provenance"]["toolchain"]["onnxruntime"] = "0.0-other"
    (b / "run.json").write_text(json.dumps(run))
    return a, b


def test_compare_calls_a_flagged_row_inconclusive_and_lists_what_differed(two_runs):
    from workbench.report.compare import compare_runs

    a, b = two_runs
    res = compare_runs(str(a), str(b))
    (row,) = res["latency"]
    assert row["changed"] is False and row["inconclusive"] == "machine busy in run B"
    assert abs(row["delta_rel"] + 0.5) < 1e-9  # the -50% is there, and not called a change
    diffs = {(d["where"], d["setting"]): (d["a"], d["b"]) for d in res["settings"]}
    assert diffs[("sweep", "latency.min_runs")] == (10, 30)
    assert diffs[("toolchain", "onnxruntime")][1] == "0.0-other"
    out = subprocess.run([sys.executable, "-m", "workbench.cli", "compare", str(a), str(b)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert "INCONCLUSIVE (machine busy in run B)" in out.stdout and "0 of 1 cells changed" in out.stdout
    assert "sweep: latency.min_runs: 10 -> 30" in out.stdout


def test_reports_show_the_flag_and_the_figures(two_runs):
    from workbench.report.render import write_reports

    _, b = two_runs
    run = json.loads((b / "run.json").read_text())
    reports = write_reports(run, b)
    md = Path(reports["md"]).read_text()
    assert "NOISY: other processes used 61%" in md and "1 latency row(s) are NOISY" in md
    assert "NOISY" in Path(reports["html"]).read_text()
    dev = (b / "devices" / "host-1t.md").read_text()
    assert "NOISY" in dev and "do not compare them" in dev
    import csv

    rows = list(csv.DictReader((b / "results.csv").open()))
    assert [r["noisy"] for r in rows] == ["True"] and float(rows[0]["others_cpu_share"]) == 0.61


def test_dashboard_results_and_history_show_the_flag(two_runs, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    a, b = two_runs
    data = tmp_path / "reports"
    data.mkdir()
    shutil.copytree(a, data / "run-a")
    shutil.copytree(b, data / "run-b")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORKBENCH_DATA", str(data))
    main = str(Path(__file__).resolve().parents[1] / "workbench" / "app" / "main.py")
    at = AppTest.from_file(main, default_timeout=120)
    at.query_params["run"] = "run-b"
    at.run()
    at.switch_page("views/results.py").run()
    assert not at.exception
    assert any("NOISY: 1 latency row(s)" in w.value for w in at.warning)
    table = next(d.value for d in at.dataframe if "p50_ms" in d.value.columns)
    assert table["noisy"].iloc[0] in (True, "yes")
    at.switch_page("views/history.py").run()
    assert not at.exception
    hist = at.dataframe[0].value
    assert dict(zip(hist["name"], hist["noisy_rows"])) == {"run-a": 0, "run-b": 1}
    at.selectbox(key="hist-a").set_value("run-a").run()
    at.selectbox(key="hist-b").set_value("run-b").run()
    at.button(key="hist-cmp").click().run()
    assert not at.exception
    assert any("inconclusive: machine busy in run B" in w.value for w in at.warning)
    assert any("latency.min_runs" in str(df.value) for df in at.dataframe)


def test_repeats_that_disagree_make_a_row_noisy_and_agreeing_ones_do_not(tmp_path, monkeypatch):
    """The fourth clause of the rule, on figures (no timing): a load that came and went inside one
    measurement shows as repeats whose medians disagree, even when no other process was seen."""
    from workbench.bench.noise import REPEAT_SPREAD_MAX
    from workbench.bench.stats import summarize

    monkeypatch.setenv("WORKBENCH_PROBE_RECORD", str(tmp_path / "probe.json"))
    inter = {"windows": [{"others_share": 0.0}] * 5, "probe_ms": [], "pinned_cores": [0], "loadavg": [0.1]}
    calm = [[10.0, 10.1, 9.9, 10.0, 10.2]] * 5
    burst = [[10.0, 10.1, 9.9, 10.0, 10.2]] * 2 + [[21.0, 21.2, 20.9, 21.1, 21.0]] + [[10.1, 10.0, 9.9, 10.2, 10.0]] * 2
    rows = {name: summarize({"repeats": reps, "interference": inter, "host": "h", "machine": "m"},
                            device="host", runner="local", artifact="a.onnx") for name, reps in
            (("calm", calm), ("burst", burst))}
    assert rows["calm"].noisy is False and rows["calm"].noise["repeat_spread"] == 0.0
    b = rows["burst"]
    assert b.noisy is True and b.noise["repeat_spread"] > REPEAT_SPREAD_MAX
    assert b.noise["others_share_max"] == 0.0 and b.noise["cv"] <= 0.5  # only the repeats' rule saw it
    assert any("repeats' p50s differ by 110%" in r for r in b.noise["reasons"]), b.noise["reasons"]
