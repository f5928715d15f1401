"""Dashboard pages through Streamlit's AppTest (the real app script, in process): each page's main
path and its error paths. The end-to-end browser test is tests/test_app_e2e.py."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from workbench import jobs  # noqa: E402
from workbench.app import common  # noqa: E402

MAIN = str(Path(__file__).resolve().parents[1] / "workbench" / "app" / "main.py")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORKBENCH_DATA", str(tmp_path / "reports"))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "reports").mkdir()
    (tmp_path / "weights").mkdir()
    return tmp_path


def app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=180)
    at.run()
    if page:
        at.switch_page(page).run()
    return at


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def assert_clean(at: AppTest) -> None:
    assert not at.exception, texts(at.exception)


def select_model(at: AppTest, name: str = "repvgg-tiny", classes: int = 5, size: int = 48,
                 weights_mode: str | None = None) -> AppTest:
    at.selectbox(key="zoo-model").set_value(name).run()
    at.number_input(key="zoo-classes").set_value(classes)
    at.number_input(key=f"zoo-size-{name}").set_value(size)
    if weights_mode:
        at.radio(key="zoo-weights-mode").set_value(weights_mode)
    return at.run()


# --- Models -------------------------------------------------------------------------------------

def test_models_page_lists_zoo_and_selects_a_model(env):
    at = app()
    assert_clean(at)
    table = at.dataframe[0].value
    assert {"repvgg-a0", "vgg16", "ssd300-vgg16", "repvgg-tiny"} <= set(table["model"])
    a0 = table[table["model"] == "repvgg-a0"].iloc[0]
    assert a0["params (train)"] == 9108968 and a0["params (deploy)"] == 8309384  # REFERENCE figures at 1000 classes
    at.multiselect(key="zoo-family").set_value(["ssd"]).run()
    assert set(at.dataframe[0].value["family"]) == {"ssd"}
    at.multiselect(key="zoo-family").set_value([]).run()
    select_model(at)
    at.button(key="zoo-use").click().run()
    assert_clean(at)
    assert any("repvgg-tiny selected" in s for s in texts(at.success))
    assert at.session_state["selected"] == {"name": "repvgg-tiny", "weights": None, "num_classes": 5, "input_size": 48}


def test_models_page_weights_path_outside_data_folders_is_refused(env, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere") / "w.pth"
    torch.save({}, outside)
    at = select_model(app(), weights_mode="a file on this machine")
    for bad, why in ((str(outside), "outside the data folders"), ("weights/../../etc/passwd", "outside the data folders"),
                     ("weights/missing.pth", "does not exist")):
        at.text_input(key="zoo-weights-path").set_value(bad).run()
        assert any(why in e for e in texts(at.error)), (bad, texts(at.error))
        assert_clean(at)
    at.button(key="zoo-use").click().run()  # falls back to no weights, never loads the refused file
    assert at.session_state["selected"]["weights"] is None


def test_models_page_checkpoint_errors_shown_in_place(env):
    from workbench.registry import create_model

    wrong = create_model("vgg-tiny", num_classes=5)
    torch.save(wrong.state_dict(), env / "weights" / "vgg.pth")
    at = select_model(app(), weights_mode="a file on this machine")
    at.text_input(key="zoo-weights-path").set_value("weights/vgg.pth").run()
    at.button(key="zoo-use").click().run()
    assert_clean(at)
    err = " ".join(texts(at.error))
    assert "vgg.pth" in err and "vgg-tiny" in err  # names the file and the zoo model it fits
    assert "selected" not in at.session_state or at.session_state["selected"] is None


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['EVIL_MARKER']}",))


def test_models_page_upload_runs_no_code_and_is_stored_sanitized(env, monkeypatch):
    marker = env / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    evil = pickle.dumps({"state_dict": _Evil()})
    at = select_model(app(), weights_mode="upload a file")
    at.file_uploader(key="zoo-weights-upload").set_value(("../../x y;rm -rf.pth", evil, "application/octet-stream")).run()
    at.button(key="zoo-use").click().run()
    assert_clean(at)
    assert not marker.exists()
    assert any("weights_only" in e or "refus" in e.lower() or "unsafe" in e.lower() for e in texts(at.error)), texts(at.error)
    stored = list((env / "reports").rglob("uploads/*"))
    assert [p.name for p in stored] == ["x_y_rm_-rf.pth"]
    assert all(p.resolve().is_relative_to((env / "reports").resolve()) for p in stored)


def test_models_page_upload_over_the_limit_is_refused(env, monkeypatch):
    monkeypatch.setenv("WORKBENCH_MAX_UPLOAD_MB", "0.001")  # about 1 KB
    at = select_model(app(), weights_mode="upload a file")
    at.file_uploader(key="zoo-weights-upload").set_value(("big.pth", b"\0" * 5000, "application/octet-stream")).run()
    assert any("upload limit" in e for e in texts(at.error))
    assert not list((env / "reports").rglob("uploads/*"))


def test_upload_of_a_trained_checkpoint_loads(env):
    from workbench.registry import create_model

    m = create_model("repvgg-tiny", num_classes=3, input_size=48)
    buf = env / "t.pth"
    torch.save(m.state_dict(), buf)
    at = select_model(app(), classes=0, weights_mode="upload a file")
    at.file_uploader(key="zoo-weights-upload").set_value(("trained.pth", buf.read_bytes(), "application/octet-stream")).run()
    at.button(key="zoo-use").click().run()
    assert_clean(at)
    sel = at.session_state["selected"]
    assert sel["num_classes"] == 3 and Path(sel["weights"]).name == "trained.pth"  # class count read from the file


# --- Re-parameterize ----------------------------------------------------------------------------

def test_model_view_draws_the_branches_before_and_one_conv_after(env):
    at = select_model(app())
    at.button(key="zoo-use").click().run()
    at.switch_page("views/model_view.py").run()
    assert_clean(at)
    before, after = [c.proto.spec for c in at.get("graphviz_chart")[:2]]
    assert "rbr_1x1: conv 1x1" in before and "rbr_dense: conv 3x3" in before and ": add" in before
    assert "rbr_1x1" not in after and "rbr_reparam: Conv2d 3x3" in after
    assert any("multi-branch blocks" in c for c in texts(at.caption))


def test_reparam_page_needs_a_model(env):
    at = app("views/reparam.py")
    assert_clean(at)
    assert any("Pick a model" in i for i in texts(at.info))


def test_reparam_page_shows_structure_and_proof(env):
    at = select_model(app())
    at.button(key="zoo-use").click().run()
    at.switch_page("views/reparam.py").run()
    at.button(key="rp-go").click().run()
    assert_clean(at)
    ok = texts(at.success)
    assert ok and ok[0].startswith("Equivalent")
    r = at.session_state["reparam_result"]
    assert r["relative_max_diff"] <= 1e-5 and r["cosine"] >= 0.999999
    assert r["branches_before"] > 0 and r["branches_after"] == 0 and r["bn_after"] == 0
    before, after = at.dataframe[0].value, at.dataframe[1].value
    assert any("conv1x1+BN" in b for b in before["branches"])
    assert set(after["branches"]) == {"conv3x3+bias"}
    assert [m.value for m in at.metric][1] == "0"  # no BatchNorm left


# --- Run, Results, History ----------------------------------------------------------------------

def _wait(job_dir: Path, timeout: float = 300) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        s = jobs.status(job_dir)
        if s.get("state") in ("done", "failed", "died", "cancelled"):
            return s
        time.sleep(1)
    raise AssertionError(f"run in {job_dir} did not finish: {jobs.status(job_dir)}")


def _start_from_page(at: AppTest, *, model="repvgg-tiny", precisions=("fp32",), evaluation="builtin", eval_n=20):
    at.multiselect(key="run-models").set_value([model])
    at.text_input(key="run-size").set_value("48")
    at.multiselect(key="run-formats").set_value(["onnx"])
    at.multiselect(key="run-precisions").set_value(list(precisions))
    at.text_input(key="run-eval").set_value(evaluation)
    at.text_input(key="run-eval-n").set_value(str(eval_n))
    at.text_input(key="run-calib-n").set_value("8")
    return _click(at, "Start run")


def _click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click()
    return at.run()


def test_run_page_errors_in_place(env, tmp_path_factory):
    at = app("views/run.py")
    assert_clean(at)
    at.multiselect(key="run-models").set_value([])
    _click(at, "Start run")
    assert any("choose at least one model" in e for e in texts(at.error))
    outside = tmp_path_factory.mktemp("imgs")
    _start_from_page(at, evaluation=str(outside))
    assert any("outside the data folders" in e for e in texts(at.error))
    assert not [d for d in (env / "reports").iterdir() if (d / "job.json").exists()]  # nothing started


def test_run_page_refuses_bad_input_before_any_work_and_lists_every_problem(env):
    at = app("views/run.py")
    empty = env / "data" / "empty"
    (empty / "cat").mkdir(parents=True)
    (empty / "cat" / "broken.jpg").write_bytes(b"not an image")
    at.multiselect(key="run-models").set_value(["repvgg-tiny"])
    at.text_input(key="run-size").set_value("7")
    at.text_input(key="run-classes").set_value("abc")
    at.text_input(key="run-eval").set_value(str(empty))
    _click(at, "Start run")
    errs = texts(at.error)
    assert any("Input size must be a whole number from 16 to 2048, got 7" in e for e in errs), errs
    assert any("Classes must be a whole number" in e for e in errs), errs
    assert any("holds no readable images" in e for e in errs), errs
    assert at.text_input(key="run-size").value == "7"  # the field keeps what was typed; nothing ran with another value
    assert not [d for d in (env / "reports").iterdir() if d.is_dir()]  # no folder, no export started
    # fixed, "Check plan" shows the plan and its time estimate, and still starts nothing
    at.text_input(key="run-size").set_value("48")
    at.text_input(key="run-classes").set_value("5")
    at.text_input(key="run-eval").set_value("builtin")
    at.multiselect(key="run-formats").set_value(["onnx", "coreml"])
    at.multiselect(key="run-precisions").set_value(["fp32", "int8-dynamic"])
    _click(at, "Check plan")
    assert not at.error, texts(at.error)
    plan = " ".join(texts(at.info))
    assert "= **4 exports**" in plan and "Estimated time: **about" in plan and "coreml int8-dynamic" in plan, plan
    assert not [d for d in (env / "reports").iterdir() if d.is_dir()]


def test_cancel_keeps_finished_cells_and_results_say_cancelled(env):
    from workbench.api import cancel, start, sweep_to_toml

    doc = {"name": "slow", "formats": ["onnx"], "precisions": ["fp32", "int8"], "devices": ["host"],
           "latency": {"warmup": 1, "warmup_seconds": 0.1, "min_runs": 5, "min_seconds": 4.0, "repeats": 2},
           "data": {"calib_count": 8}, "models": [{"name": "repvgg-tiny", "num_classes": 5, "input_size": 32}]}
    job = jobs.allocate(env / "reports", "slow")
    start(job, sweep_to_toml(doc))
    t0 = time.time()
    while not list((job / "cells").glob("lat-*.json")) and time.time() - t0 < 240:
        time.sleep(0.5)
    assert list((job / "cells").glob("lat-*.json")), jobs.status(job)
    s = cancel(job)
    assert s["state"] == "cancelled"
    assert not jobs._alive(s.get("pid"), s.get("create_time"))
    run = json.loads((job / "run.json").read_text())
    assert run["incomplete"]["state"] == "cancelled" and len(run["latency"]) == 1  # the finished cell is kept
    # the lock went with the process: the same folder can be resumed
    import fcntl

    with open(job / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params["run"] = job.name
    at.run()
    at.switch_page("views/run.py").run()
    assert any(w.startswith("Cancelled.") for w in texts(at.warning)), texts(at.markdown)
    # the form shows the run's own settings after a refresh (a new session)
    assert at.text_input(key="run-size").value == "32" and at.multiselect(key="run-formats").value == ["onnx"]
    assert at.text_input(key="run-name").value == "slow"
    at.switch_page("views/results.py").run()
    assert_clean(at)
    assert any("This run was **cancelled**" in w for w in texts(at.warning))


def test_run_page_starts_a_background_run_then_results_and_history(env):
    at = app("views/run.py")
    _start_from_page(at)
    assert_clean(at)
    job_dir = Path(at.session_state["job_dir"])
    assert job_dir.parent == env / "reports" and (job_dir / "sweep.toml").exists()
    assert at.query_params["run"] in (job_dir.name, [job_dir.name])  # a list before Streamlit 1.6x
    s = _wait(job_dir)
    assert s["state"] == "done", s
    # a new session (a browser refresh) reattaches through the URL
    at2 = AppTest.from_file(MAIN, default_timeout=60)
    at2.query_params["run"] = job_dir.name
    at2.run()
    at2.switch_page("views/run.py").run()
    assert any("Finished" in x for x in texts(at2.success)), texts(at2.markdown)
    # results
    at2.switch_page("views/results.py").run()
    assert_clean(at2)
    frames = [d.value for d in at2.dataframe]
    best = next(f for f in frames if "fastest" in f.columns)  # the summary comes first
    assert list(best["device"]) == ["host"] and best["fastest"][0].startswith("repvgg-tiny onnx")
    assert [m.value for m in at2.metric][:2] == ["1", "1"]
    assert any("Random weights (repvgg-tiny)" in w for w in texts(at2.warning))
    summary = next(f for f in frames if "artifact" in f.columns)  # one row per artifact: GPU run, oldest runtime
    assert list(summary.columns) == ["artifact", "status", "GPU: delegated / fallback ops / GPU fidelity",
                                     "cos vs PyTorch", "oldest runtime", "latency p50", "size MB"]
    assert list(summary["artifact"]) == ["repvgg-tiny onnx fp32"] and summary["latency p50"][0].startswith("host ")
    assert list(summary["GPU: delegated / fallback ops / GPU fidelity"]) == ["n/a"]  # an .onnx has no GPU run
    table = next(f for f in frames if "p50_ms" in f.columns)
    assert list(table["model"].unique()) == ["repvgg-tiny"] and (table["device"] == "host").all()
    assert table["p50_ms"].notna().all() and table["top1"].notna().all()
    # the model view: the exported file's graph and ONNX Runtime's per-op profile
    at2.switch_page("views/model_view.py").run()
    assert_clean(at2)
    charts = at2.get("graphviz_chart")
    assert charts and "digraph" in charts[-1].proto.spec and "Conv" in charts[-1].proto.spec
    at2.button(key="mv-prof").click().run()
    assert_clean(at2)
    prof = next(d.value for d in at2.dataframe if "mean (us)" in d.value.columns)
    assert "Conv" in set(prof["op"]) and (prof["mean (us)"] > 0).all()
    # a second run, then history compares the two
    at3 = app("views/run.py")
    _start_from_page(at3, evaluation="none")
    second = Path(at3.session_state["job_dir"])
    assert second != job_dir
    assert _wait(second)["state"] == "done"
    at3.switch_page("views/history.py").run()
    assert_clean(at3)
    assert set(at3.dataframe[0].value["name"]) == {job_dir.name, second.name}
    at3.button(key="hist-cmp").click().run()
    assert_clean(at3)
    assert any("latency rows in both runs" in m for m in texts(at3.markdown))
    # settings of a run, then delete it (confirmed)
    at3.selectbox(key="hist-open").set_value(second.name).run()
    assert any('name = "' in c for c in texts(at3.code))
    assert at3.button(key="hist-del").disabled
    at3.checkbox(key="hist-del-sure").check().run()
    at3.button(key="hist-del").click().run()
    assert_clean(at3)
    assert not second.exists() and job_dir.exists()


def test_results_page_damaged_run_and_bad_names(env):
    d = env / "reports" / "broken"
    d.mkdir()
    (d / "run.json").write_text('{"schema": "edge-workbench/run", "artifacts": [')
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params["run"] = "broken"
    at.run()
    at.switch_page("views/results.py").run()
    assert_clean(at)
    assert any("not a valid run.json" in e for e in texts(at.error))
    for bad in ("../../etc", "/etc", ".."):
        with pytest.raises(Exception, match="not a run folder name|no run folder"):
            common.run_dir_by_name(bad)
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.query_params["run"] = "../../etc"
    at.run()
    at.switch_page("views/run.py").run()
    assert_clean(at)
    assert any("not a run folder name" in e for e in texts(at.error))


def test_history_with_no_runs(env):
    at = app("views/history.py")
    assert_clean(at)
    assert any("No runs" in i for i in texts(at.info))


# --- Devices ------------------------------------------------------------------------------------

def test_devices_page_lists_profiles_and_shows_a_malformed_one(env, monkeypatch):
    d = env / "profiles"
    d.mkdir()
    for name in ("host", "pixel8-cpu"):
        shutil.copy(REPO / "device_profiles" / f"{name}.toml", d)
    (d / "broken.toml").write_text('name = "broken"\nrunner = "teleport"\n')
    monkeypatch.setenv("WORKBENCH_PROFILES", str(d))
    at = app("views/devices.py")
    assert_clean(at)
    assert set(at.dataframe[0].value["name"]) == {"host", "pixel8-cpu"}
    err = " ".join(texts(at.error))
    assert "broken.toml" in err and "runner" in err


# --- the library side of the background run -----------------------------------------------------

def test_job_status_reports_a_vanished_process(env):
    d = env / "reports" / "ghost"
    d.mkdir()
    (d / "job.json").write_text(json.dumps({"state": "running", "pid": 2**22 + 12345, "create_time": 1.0}))
    s = jobs.status(d)
    assert s["state"] == "died" and "resume" in s["error"]


def test_bad_sweep_from_a_form_leaves_no_folder(env):
    out = jobs.allocate(env / "reports", "x")
    with pytest.raises(Exception, match="unknown model|did you mean"):
        jobs.start(out, 'name = "x"\n[[models]]\nname = "repvgg-tinny"\n')
    assert not out.exists()


def test_app_command_binds_localhost_by_default():
    from workbench.cli import app_command, build_parser

    cmd, env = app_command(build_parser().parse_args(["app"]))
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "8501"
    cmd, env = app_command(build_parser().parse_args(["app", "--port", "9000", "--address", "0.0.0.0",
                                                      "--max-upload-mb", "50"]))
    assert cmd[cmd.index("--server.address") + 1] == "0.0.0.0" and cmd[cmd.index("--server.maxUploadSize") + 1] == "50"
    assert env["WORKBENCH_MAX_UPLOAD_MB"] == "50.0"


def test_run_page_optimization_options_reach_the_sweep(env):
    import tomllib

    at = app("views/run.py")
    at.number_input(key="opt-prune").set_value(0.3)
    at.checkbox(key="q-ends").check()
    at.selectbox(key="q-method").set_value("percentile")
    _start_from_page(at, evaluation="none")
    assert_clean(at)
    job_dir = Path(at.session_state["job_dir"])
    doc = tomllib.loads((job_dir / "sweep.toml").read_text())
    assert [m.get("optimize") for m in doc["models"]] == [None, {"prune": 0.3}]
    assert doc["quantization"] == {"per_channel": True, "calib_method": "percentile", "keep_float": ["first", "last"]}
    assert _wait(job_dir)["state"] == "done"
    run = json.loads((job_dir / "run.json").read_text())
    assert [m["model"] for m in run["models"]] == ["repvgg-tiny", "repvgg-tiny+p0.3"]


def test_sensitivity_page(env):
    at = app("views/quantize.py")
    assert_clean(at)
    assert any("Pick a model" in i for i in texts(at.info))
    at = select_model(app(), size=32)
    at.button(key="zoo-use").click().run()
    at.switch_page("views/quantize.py").run()
    assert any("Random weights" in w for w in texts(at.warning))
    at.number_input(key="qs-n").set_value(32)
    at.button(key="qs-go").click().run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert len(table) == 7 and "stage0.rbr_reparam" in set(table["layer"])
    assert list(table["SQNR (dB)"]) == sorted(table["SQNR (dB)"])  # worst first
