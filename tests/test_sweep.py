"""Sweeps: matrix, content cache, SIGKILL + --resume, failures recorded, config errors."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench.errors import ConfigError
from workbench.report.build import validate_run
from workbench.sweep import load_sweep, run_sweep

SWEEP = """
name = "t"
formats = ["onnx"]
precisions = ["fp32", "int8"]
devices = ["host", "rpi5"]
[data]
evaluation = "builtin"
eval_limit = 40
calib_count = 8
[latency]
warmup = 2
warmup_seconds = 0.1
min_runs = 10
min_seconds = {secs}
repeats = 2
[[models]]
name = "repvgg-tiny"
"""


def _rows(run: dict) -> list[tuple]:
    return sorted((r["model"], r["format"], r["precision"], r["device"]) for r in run["latency"])


def test_sweep_runs_caches_and_reports(tmp_path):
    sw = tmp_path / "s.toml"
    sw.write_text(SWEEP.format(secs=0.1))
    cache = tmp_path / "cache"
    first = run_sweep(str(sw), tmp_path / "a", cache=str(cache))
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    validate_run(run)
    assert first["stats"]["exported_now"] == 2
    assert _rows(run) == sorted(("repvgg-tiny", "onnx", p, d) for p in ("fp32", "int8") for d in ("host", "rpi5"))
    est = [r for r in run["latency"] if r["device"] == "rpi5"]
    assert all(r["estimated"] and "estimated" in " ".join(r["warnings"]) for r in est)  # no phone here
    assert (tmp_path / "a" / "report.html").exists() and (tmp_path / "a" / "devices" / "host.md").exists()
    assert run["provenance"]["sweep"]["text"] == sw.read_text()
    export_time = sum(a["export_seconds"] or 0 for a in run["artifacts"])
    t = time.perf_counter()
    second = run_sweep(str(sw), tmp_path / "b", cache=str(cache))
    assert second["stats"]["exported_now"] == 0  # unchanged sweep: nothing re-exported
    assert _rows(second["run"]) == _rows(run)
    assert export_time > 0 and time.perf_counter() - t > 0
    assert second["stats"]["export_seconds"] < 0.1 * first["stats"]["export_seconds"]


def test_sigkill_then_resume_loses_and_duplicates_nothing(tmp_path):
    sw = tmp_path / "s.toml"
    sw.write_text(SWEEP.format(secs=1.0))
    cache = tmp_path / "cache"
    env = {**os.environ, "WORKBENCH_CACHE": str(cache)}
    exe = os.path.join(os.path.dirname(sys.executable), "workbench")
    out = tmp_path / "run"
    p = subprocess.Popen([exe, "run", str(sw), "--out", str(out)], env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((out / "cells").glob("*.json"))) < 2:
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    done_before = {f.name: f.read_text() for f in (out / "cells").glob("*.json")}
    assert 2 <= len(done_before) < 6 and not (out / "run.json").exists()
    r = subprocess.run([exe, "run", str(sw), "--out", str(out), "--resume"], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-500:]
    run = json.loads((out / "run.json").read_text())
    validate_run(run)
    assert f"{len(done_before)} reused" in r.stdout
    for name, text in done_before.items():  # finished cells were kept as they were
        assert (out / "cells" / name).read_text() == text
    full = run_sweep(str(sw), tmp_path / "full", cache=str(cache))
    assert _rows(run) == _rows(full["run"]) and len(set(_rows(run))) == len(_rows(run))


@pytest.mark.parametrize("text,match", [
    ('formats=["onnx"]\n[[models]]\nname="repvgg-tiny"\nnum_clases=3\n', "unknown key 'num_clases' \\(did you mean: num_classes"),
    ('formats=["onx"]\n[[models]]\nname="repvgg-tiny"\n', "'formats' has 'onx' \\(did you mean: onnx"),
    ('devices=["pixel9"]\n[[models]]\nname="repvgg-tiny"\n', "unknown device profile 'pixel9'"),
    ('[[models]]\nname="repvgg-tiny"\ninput_size=-3\n', "input_size must be a whole number from 16 to 2048"),
    ('[latency]\nrepeats=-1\n[[models]]\nname="repvgg-tiny"\n', "latency.repeats must be a whole number from 1 to 100"),
    ('name="x"\n', "at least one \\[\\[models\\]\\]"),
])
def test_bad_sweeps_are_one_line_errors(tmp_path, text, match):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_sweep(p)


def test_compare_flags_only_changes_beyond_noise(tmp_path):
    from workbench.report.compare import compare_runs

    base = {"schema": "edge-workbench/run", "version": 1, "accuracy": [], "failures": []}

    def lat(p50, reps):
        return {"model": "m", "format": "tflite", "precision": "fp32", "device": "host", "p50_ms": p50,
                "repeat_p50_ms": reps, "estimated": False}

    for name, rows in (("a", [lat(10.0, [9.9, 10.0, 10.1])]), ("b", [lat(10.1, [10.0, 10.1, 10.2])]),
                       ("c", [lat(13.0, [12.9, 13.0, 13.1])])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "run.json").write_text(json.dumps({**base, "latency": rows}))
    same = compare_runs(str(tmp_path / "a"), str(tmp_path / "b"))["latency"][0]
    moved = compare_runs(str(tmp_path / "a"), str(tmp_path / "c"))["latency"][0]
    assert not same["changed"] and moved["changed"] and moved["delta_rel"] == pytest.approx(0.3)


@pytest.mark.parametrize("path", sorted(Path(__file__).resolve().parents[1].glob("sweeps/*.toml")), ids=lambda p: p.name)
def test_example_sweeps_parse(path):
    try:
        s = load_sweep(path)
        assert s.models and s.formats and s.devices
    except ConfigError as e:  # the demo sweep needs the demo's trained weights
        assert "weights" in str(e) and "does not exist" in str(e)


def test_ray_executor_gathers_artifacts_and_matches_local(tmp_path):
    pytest.importorskip("ray")
    sw = tmp_path / "s.toml"
    sw.write_text(SWEEP.format(secs=0.1))
    ray_run = run_sweep(str(sw), tmp_path / "ray", cache=str(tmp_path / "cache-ray"), executor="ray", jobs=2)
    local = run_sweep(str(sw), tmp_path / "local", cache=str(tmp_path / "cache-local"))
    assert _rows(ray_run["run"]) == _rows(local["run"])
    for a in ray_run["run"]["artifacts"]:  # artifacts were shipped back into this machine's cache
        assert a["path"].startswith(str(tmp_path / "cache-ray")) and Path(a["path"]).exists()
    assert {k for k in ray_run["run"]} == {k for k in local["run"]}


def test_failed_export_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch, capsys):
    from workbench.cli import main

    monkeypatch.setenv("WORKBENCH_FAULT", "crash:onnx:int8")
    sw = tmp_path / "s.toml"
    sw.write_text(SWEEP.format(secs=0.1))
    code = main(["run", str(sw), "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")])
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert code == 1
    assert [f["stage"] for f in run["failures"]] == ["export"] and "SIGABRT" in run["failures"][0]["reason"]
    assert {(r["precision"], r["device"]) for r in run["latency"]} == {("fp32", "host"), ("fp32", "rpi5")}
    assert "SIGABRT" in (tmp_path / "out" / "report.md").read_text()
    rows = (tmp_path / "out" / "results.csv").read_text()
    assert "failed" in rows


def test_a_run_that_fails_mid_way_keeps_what_it_measured(tmp_path, monkeypatch):
    """A failure among the cells (here: the evaluation raising) writes run.json marked incomplete, with
    the exports and the cells finished before it, then re-raises."""
    import json as _json

    import workbench.evaluate as ev
    from workbench.executor import Plan, execute

    def boom(*a, **k):
        raise RuntimeError("the evaluation data vanished")

    monkeypatch.setattr(ev, "evaluate_target", boom)
    plan = Plan(name="fails", models=[{"name": "repvgg-tiny", "num_classes": 5, "input_size": 32}], formats=["onnx"],
                precisions=["fp32"], devices=["host"], data={"evaluation": "builtin", "calib_count": 8},
                latency={"warmup": 1, "warmup_seconds": 0.05, "min_runs": 5, "min_seconds": 0.05, "repeats": 1})
    with pytest.raises(RuntimeError, match="vanished"):
        execute(plan, tmp_path / "out", cache=tmp_path / "cache")
    run = _json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["incomplete"] == {"state": "failed", "reason": "the evaluation data vanished"}
    assert [a["status"] for a in run["artifacts"]] == ["ok"] and (tmp_path / "out" / "report.html").exists()
