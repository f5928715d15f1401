"""The dashboard end to end: the real app (``workbench app``) in headless Chromium driven by
Playwright (the system Chromium, /usr/bin/chromium; Playwright's own browser download is never
used). A person can look at the screenshots it saves under reports/e2e/.

Flow (the dashboard issue's acceptance): select repvgg-tiny, re-parameterize, export ONNX and TFLite
fp32 + int8, measure on the host profile, see the results table and a chart. Along the way: a
browser refresh mid-run reattaches to the run, a second tab keeps its own selection and run folder,
and the run.json the dashboard wrote equals a headless ``workbench run`` of the same sweep file
except for timestamps and timings.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import re
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

REPO = Path(__file__).resolve().parents[1]
SHOTS = Path(os.environ.get("WORKBENCH_E2E_SHOTS", REPO / "reports" / "e2e"))
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (.ci/run installs it)")
    pytest.importorskip("playwright")
    port = _free_port()
    env = {**os.environ, "WORKBENCH_CACHE": str(tmp_path / "cache")}
    log = open(tmp_path / "app.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "workbench"), "app", "--port", str(port), "--data-dir",
                             str(tmp_path / "reports")], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        raise AssertionError((tmp_path / "app.log").read_text())
    yield {"url": f"http://127.0.0.1:{port}/", "port": port, "data": tmp_path / "reports", "env": env, "tmp": tmp_path}
    os.killpg(proc.pid, 15)
    proc.wait(10)


def _listening_addresses(port: int) -> set[str]:
    import psutil

    return {c.laddr.ip for c in psutil.net_connections("inet") if c.status == "LISTEN" and c.laddr.port == port}


def _pick(page, label: str, value: str) -> None:
    box = page.locator('[data-testid="stSelectbox"]').filter(has=page.get_by_text(label, exact=True)).first
    box.click()
    page.keyboard.type(value)
    page.keyboard.press("Enter")


def _strip_timings(run: dict) -> dict:
    """run.json without what legitimately differs between two runs of one sweep: timestamps,
    measured timings, and the run's own bookkeeping (how long stages took, what the export cache
    already held)."""
    run = json.loads(json.dumps(run))
    for k in ("created", "finished", "sweep_stats"):
        run.pop(k, None)
    # a latency row is a measurement: keep what identifies it; its numbers, the drift/warning flags
    # computed from them and the host's probed peak figures (also timed) differ run to run
    ident = ("artifact", "device", "estimated", "format", "model", "precision", "reason", "reparam", "runner",
             "runtime", "status", "threads", "timed_scope")
    run["latency"] = [{k: r.get(k) for k in ident} for r in run["latency"]]
    timing = {"p50_ms", "mean_ms", "std_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "runs", "init_ms", "first_ms",
              "repeat_p50_ms", "repeat_spread", "cv", "peak_rss_mb", "estimate_error", "seconds"}

    def walk(x):
        if isinstance(x, dict):
            return {k: walk(v) for k, v in x.items() if k not in timing}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x
    return walk(run)


def _no_error_on(page, where: str) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, where
    assert page.get_by_text("Traceback").count() == 0, where


def test_dashboard_end_to_end_in_chromium(server):
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    assert _listening_addresses(server["port"]) == {"127.0.0.1"}  # bound to this machine only
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        outside: list[str] = []  # every request to a host other than this machine (none allowed)
        page.on("request", lambda r: outside.append(r.url) if urlparse(r.url).hostname != "127.0.0.1" else None)
        page.goto(server["url"], wait_until="domcontentloaded")
        page.get_by_text("Use a model").wait_for(timeout=90_000)
        # Models: choose repvgg-tiny, 5 classes, 64 px
        _pick(page, "Model", "repvgg-tiny")
        page.wait_for_timeout(1000)
        page.get_by_label("Classes (0 = the model's default or the checkpoint's)").fill("5")
        page.keyboard.press("Enter")
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Use this model").click()
        page.get_by_text("repvgg-tiny selected").wait_for(timeout=60_000)
        # Re-parameterize: the proof appears
        page.get_by_role("link", name="Re-parameterize").click()
        page.get_by_role("button", name="Re-parameterize").click()
        page.get_by_text("Equivalent:").wait_for(timeout=60_000)
        page.get_by_text("After (deploy)").wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(SHOTS / "dashboard-reparam.png"), full_page=True)
        # every other page opens without an error
        for name, marker in (("Model view", "PyTorch: before and after"), ("INT8 sensitivity", "Compute sensitivity"),
                             ("History", "History"), ("Devices", "Device profiles")):
            page.get_by_role("link", name=name).click()
            page.get_by_text(marker).first.wait_for(timeout=60_000)
            page.wait_for_timeout(1500)
            _no_error_on(page, name)
        page.get_by_role("link", name="Model view").click()
        page.locator('[data-testid="stGraphVizChart"]').first.wait_for(timeout=60_000)
        page.screenshot(path=str(SHOTS / "dashboard-model-view.png"), full_page=True)
        # Run: bad input is refused in place before anything starts
        page.get_by_role("link", name="Run").click()
        empty = server["data"] / "empty-images" / "cat"
        empty.mkdir(parents=True)
        (empty / "broken.jpg").write_bytes(b"not an image")
        size_box = page.get_by_role("textbox", name="Input size (px, 16-2048)")
        size_box.wait_for(timeout=60_000)
        size_shown = size_box.input_value()
        size_box.fill("7")
        page.get_by_role("textbox", name="Evaluation data").fill(str(empty.parent))
        page.get_by_role("button", name="Start run").click()
        page.get_by_text("Input size must be a whole number from 16 to 2048, got 7").wait_for(timeout=30_000)
        page.get_by_text("holds no readable images").first.wait_for(timeout=30_000)
        assert size_box.input_value() == "7"
        assert not [d for d in server["data"].iterdir() if (d / "job.json").exists() or (d / "sweep.toml").exists()]
        page.screenshot(path=str(SHOTS / "dashboard-run-refused.png"), full_page=True)
        size_box.fill(size_shown)
        page.get_by_role("textbox", name="Evaluation data").fill("builtin")
        # defaults are ONNX + TFLite, fp32 + int8, host, built-in data, quick protocol
        page.get_by_role("button", name="Start run").click()
        page.wait_for_url("**run=*", timeout=30_000)
        run_name = page.url.split("run=")[1].split("&")[0]
        page.reload()  # a refresh is a new session; the page reattaches to the background run
        page.get_by_text(run_name).first.wait_for(timeout=60_000)
        page.get_by_text("Finished:").wait_for(timeout=420_000)
        # Results: table and charts
        page.get_by_role("button", name="Open results").click()
        page.get_by_role("tab", name="Table").wait_for(timeout=60_000)
        page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=30_000)
        page.wait_for_timeout(2000)
        page.screenshot(path=str(SHOTS / "dashboard-results-table.png"))  # the first viewport, 1400x1000
        # the GPU column is in the first viewport: the grid lists only the columns it draws, and the table's
        # bottom edge is above the fold
        grid = page.locator('[data-testid="stDataFrame"]').filter(
            has=page.locator('[role="columnheader"]', has_text="GPU: delegated / fallback ops / GPU fidelity"))
        assert grid.count() == 1
        box = grid.bounding_box()
        assert box["y"] + box["height"] <= 1000 and box["x"] + box["width"] <= 1400, box
        _no_error_on(page, "Results")
        page.get_by_role("tab", name="Charts").click()
        page.get_by_text("Latency per device (p50)").wait_for(timeout=30_000)
        chart = page.locator('[data-testid="stVegaLiteChart"]').first
        chart.wait_for(timeout=30_000)
        page.wait_for_timeout(1500)
        assert chart.locator("canvas, svg").count() > 0
        page.screenshot(path=str(SHOTS / "dashboard-results-charts.png"), full_page=True)
        # a run with a row measured on a busy machine: the flag is on the page, with its figures
        import shutil

        busy = server["data"] / "busy-run"
        shutil.copytree(server["data"] / run_name, busy)
        (busy / "job.json").unlink(missing_ok=True)
        rj = json.loads((busy / "run.json").read_text())
        rj["latency"][0].update(noisy=True, noise={"noisy": True, "others_share_max": 0.61,
                                                   "reasons": ["other processes used 61% of the pinned cores [0]"]})
        (busy / "run.json").write_text(json.dumps(rj))
        flagged = sum(bool(r.get("noisy")) for r in rj["latency"])  # the run itself may have met a busy machine
        page.goto(server["url"] + "results?run=busy-run", wait_until="domcontentloaded")
        page.get_by_text(f"NOISY: {flagged} latency row(s)").wait_for(timeout=60_000)
        page.screenshot(path=str(SHOTS / "dashboard-results-noisy.png"), full_page=True)

        # cancel: a slow protocol, the first finished cell, then Cancel; the form comes back after a reload
        page.goto(server["url"] + "run", wait_until="domcontentloaded")
        page.get_by_role("textbox", name="Run name (empty: model and formats)").wait_for(timeout=60_000)
        page.get_by_role("textbox", name="Run name (empty: model and formats)").fill("cancel-me")
        models = page.locator('[data-testid="stMultiSelect"]').filter(has=page.get_by_text("Models", exact=True)).first
        models.click()  # a new page load is a new session: choose the model again
        page.keyboard.type("repvgg-tiny")  # the list is virtual: filter it, then pick the exact entry
        page.get_by_role("option", name="repvgg-tiny", exact=True).click()
        page.keyboard.press("Escape")
        _pick(page, "Latency protocol", "careful")
        page.wait_for_timeout(500)
        page.get_by_role("button", name="Start run").click()
        page.wait_for_url("**run=cancel-me*", timeout=30_000)
        cancel_name = page.url.split("run=")[1].split("&")[0]
        page.reload()
        page.get_by_text(re.compile(r"[1-9][0-9]*/[0-9]+ cells done")).wait_for(timeout=300_000)
        assert page.get_by_role("textbox", name="Run name (empty: model and formats)").input_value() == "cancel-me"  # restored
        proto = page.locator('[data-testid="stSelectbox"]').filter(has=page.get_by_text("Latency protocol", exact=True)).first
        shown = proto.inner_text() + " ".join(i.input_value() for i in proto.locator("input").all())
        assert "careful" in shown, shown  # the protocol too
        assert page.get_by_role("button", name="Start run").is_disabled()  # this tab's run is going
        page.get_by_role("button", name="Cancel run").click()
        page.get_by_text("Cancelled.").wait_for(timeout=60_000)
        page.screenshot(path=str(SHOTS / "dashboard-run-cancelled.png"), full_page=True)
        page.get_by_role("button", name="Open results").click()
        page.get_by_text("This run was cancelled").wait_for(timeout=60_000)
        cancelled = json.loads((server["data"] / cancel_name / "run.json").read_text())
        assert cancelled["incomplete"]["state"] == "cancelled" and len(cancelled["accuracy"]) + len(cancelled["latency"]) >= 1

        # a second tab: its own session, selection and run folder
        tab2 = browser.new_page(viewport={"width": 1400, "height": 1000})
        tab2.on("request", lambda r: outside.append(r.url) if urlparse(r.url).hostname != "127.0.0.1" else None)
        tab2.goto(server["url"] + "run", wait_until="domcontentloaded")
        tab2.get_by_role("button", name="Start run").wait_for(timeout=60_000)
        assert tab2.get_by_text("Selected model:").count() == 0
        tab2.get_by_role("button", name="Start run").click()
        tab2.get_by_text("choose at least one model").wait_for(timeout=30_000)  # nothing carried over from tab 1
        browser.close()
    assert outside == [], outside  # no request left the machine (fonts, icons, telemetry)
    log = (server["tmp"] / "app.log").read_text()
    assert "Traceback" not in log and not re.search(r"\b5\d\d\b.*(GET|POST)|(GET|POST).*\b5\d\d\b", log), log[-2000:]

    run_dir = server["data"] / run_name
    dash = json.loads((run_dir / "run.json").read_text())
    assert {a["model"] for a in dash["artifacts"]} == {"repvgg-tiny"}
    assert {(a["format"], a["precision"], a["status"]) for a in dash["artifacts"]} == {
        ("onnx", "fp32", "ok"), ("onnx", "int8", "ok"), ("tflite", "fp32", "ok"), ("tflite", "int8", "ok")}
    assert {r["device"] for r in dash["latency"]} == {"host"} and all(r["p50_ms"] > 0 for r in dash["latency"])
    assert all((d / "job.json").exists() is False or d.name in (run_name, cancel_name)
               for d in server["data"].iterdir() if d.is_dir())
    assert json.loads((server["data"] / "busy-run" / "run.json").read_text())["latency"][0]["noisy"] is True

    # the same sweep, headless: run.json equal but for timestamps and timings
    headless = server["tmp"] / "headless"
    subprocess.run([str(Path(sys.executable).parent / "workbench"), "run", str(run_dir / "sweep.toml"), "--out",
                    str(headless)], check=True, env=server["env"], cwd=server["tmp"], capture_output=True, timeout=600)
    cli = json.loads((headless / "run.json").read_text())
    assert _strip_timings(dash) == _strip_timings(cli)
    assert dash["created"] != cli["created"]  # two different runs, really
