"""Hardening, round two: trust no cached file, no path, no profile option, no number.

One test per class of failure (not per instance); each names what a hostile or careless input
did before and asserts what happens now. README's "Errors and bad input" table points here.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from exporters import get_format
from exporters.provenance import sha256_path
from workbench.bench.profiles import parse_profile
from workbench.errors import CheckpointError, ConfigError

ROOT = Path(__file__).resolve().parents[1]
WB = [sys.executable, "-m", "workbench.cli"]

SWEEP = """name = "trust"
formats = ["onnx", "tflite"]
precisions = ["fp32"]
devices = ["host-1t"]
reparam = [true]

[data]
evaluation = "builtin"
eval_limit = 20
calib_count = 8

[export]
fidelity_count = 4

[latency]
warmup = 2
warmup_seconds = 0.05
min_runs = 5
min_seconds = 0.05
repeats = 1

[[models]]
name = "repvgg-tiny"
num_classes = 5
input_size = 32
"""


def _env(**extra) -> dict:
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT), **extra}


def _wb(args: list[str], *, prefix: list[str] = (), timeout: float = 600, **env) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *WB, *args], capture_output=True, text=True, timeout=timeout, env=_env(**env),
                          cwd=ROOT)


def _one_line_error(r: subprocess.CompletedProcess) -> str:
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], err[-2000:])
    assert "Traceback" not in err
    line = err.splitlines()[-1]
    assert line.startswith("error: "), err
    return line


# --- 1. the export cache trusts no file ---------------------------------------------------------

def test_tampered_and_truncated_cached_artifacts_are_reexported_and_the_hash_is_the_file_used(tmp_path):
    sweep = tmp_path / "s.toml"
    sweep.write_text(SWEEP)
    cache, out = tmp_path / "cache", tmp_path / "run"
    r = _wb(["run", str(sweep), "--out", str(out), "--cache", str(cache)])
    assert r.returncode == 0, r.stderr[-3000:]
    first = json.loads((out / "run.json").read_text())
    paths = {a["format"]: a["path"] for a in first["artifacts"]}
    onnx_bytes = bytearray(Path(paths["onnx"]).read_bytes())
    onnx_bytes[len(onnx_bytes) // 2] ^= 0x5A  # altered weights: same size, other contents
    Path(paths["onnx"]).write_bytes(bytes(onnx_bytes))
    tfl = Path(paths["tflite"])
    tfl.write_bytes(tfl.read_bytes()[: tfl.stat().st_size // 3])  # truncated: once crashed the run with SIGBUS

    r = _wb(["run", str(sweep), "--out", str(out), "--cache", str(cache)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("sha256 mismatch") == 2 and "re-exporting" in r.stderr
    run = json.loads((out / "run.json").read_text())
    for a in run["artifacts"]:
        assert a["status"] == "ok" and "re-exported" in a["cache"]
        assert a["sha256"] == sha256_path(a["path"])  # the hash recorded is the file that was measured
    assert {r_["format"] for r_ in run["accuracy"] if r_["runtime"] != "pytorch"} == {"onnx", "tflite"}
    shas = {a["sha256"] for a in run["artifacts"]}
    cells = [json.loads(c.read_text()) for c in (out / "cells").glob("*.json")]
    assert cells and all(c["sha256"] in shas for c in cells)  # every cell measured the re-exported file
    assert run["failures"] == []


def test_a_runtime_crash_during_evaluation_is_a_failed_row(tmp_path):
    from workbench.evaluate import evaluate_target
    from workbench.export import ExportOptions, export_model

    m = export_model("repvgg-tiny", out_dir=tmp_path, num_classes=5, input_size=32,
                     options=ExportOptions(formats=("tflite",), precisions=("fp32",), calib_count=4, fidelity_count=2))
    p = Path(m["artifacts"][0]["path"])
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])
    res = evaluate_target(str(tmp_path), "builtin", limit=8)["results"]
    row = next(r for r in res if r.get("format") == "tflite")
    assert row["status"] == "failed" and p.name in row["reason"]
    assert any(r.get("runtime") == "pytorch" for r in res)  # the rest of the evaluation went on


# --- 2. ONNX external data never leaves the model's folder ----------------------------------------

def _onnx_with_external(folder: Path, location: str) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros(4, np.float32), "W")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        e = w.external_data.add()
        e.key, e.value = k, v
    g = helper.make_graph([helper.make_node("Add", ["x", "W"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(p))
    return p


@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink"])
def test_onnx_external_data_outside_the_folder_is_refused_before_loading(tmp_path, where):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\x00" * 16)
    folder = tmp_path / "models" / "m"
    if where == "absolute":
        loc = str(secret)
    elif where == "dotdot":
        loc = "../../secret.bin"
    else:
        folder.mkdir(parents=True)
        (folder / "weights.bin").symlink_to(secret)
        loc = "weights.bin"
    p = _onnx_with_external(folder, loc)
    with pytest.raises(ValueError, match="outside the model's folder"):
        get_format("onnx").load(p)
    r = _wb(["bench", str(p), "--device", "host-1t", "--min-seconds", "0.05", "--repeats", "1"])
    assert "outside the model's folder" in _one_line_error(r)


def test_onnx_external_data_beside_the_model_loads(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    np.arange(4, dtype=np.float32).tofile(folder / "weights.bin")
    run = get_format("onnx").load(_onnx_with_external(folder, "weights.bin"))
    np.testing.assert_allclose(run(np.ones((1, 4), np.float32))[0], [[1, 2, 3, 4]])


# --- 3. a device profile cannot run a local command ---------------------------------------------

def _profile(tmp_path: Path, connection: str, runner: str = "ssh") -> Path:
    p = tmp_path / "dev.toml"
    extra = 'benchmark_model = "/nonexistent/benchmark_model"\n' if runner == "adb" else ""
    p.write_text(f'name = "dev"\nrunner = "{runner}"\nthreads = 1\nruntimes = ["tflite"]\n\n'
                 f"[connection]\n{connection}\n{extra}")
    return p


@pytest.mark.parametrize("connection", [
    'host = "127.0.0.1"\noptions = ["ProxyCommand=touch {marker}"]',
    'host = "127.0.0.1"\noptions = ["LocalCommand=touch {marker}", "PermitLocalCommand=yes"]',
    'host = "127.0.0.1"\noptions = ["KnownHostsCommand=/bin/touch {marker}"]',
    'host = "127.0.0.1"\noptions = ["Match exec \\"touch {marker}\\""]',
    'host = "127.0.0.1"\noptions = ["proxycommand touch {marker}"]',
    'host = "127.0.0.1"\noptions = ["PKCS11Provider={marker}.so"]',
    'host = "-oProxyCommand=touch {marker}"',
    'host = "127.0.0.1"\nuser = "-oProxyCommand=touch {marker}"',
    'host = "127.0.0.1"\nport = "22 -oProxyCommand=touch {marker}"',
    'host = "127.0.0.1"\npython = "python3; touch {marker}"',
    'host = "127.0.0.1"\nworkdir = "/tmp/x; touch {marker}"',
])
def test_ssh_settings_that_could_run_commands_are_refused_and_nothing_runs(tmp_path, connection):
    marker = tmp_path / "marker"
    prof = _profile(tmp_path, connection.format(marker=marker))
    with pytest.raises(ConfigError) as e:
        parse_profile(prof)
    assert "\n" not in str(e.value) and "connection." in str(e.value)
    # and straight at the runner, past the parser: it checks again before building a command
    from workbench.bench.profiles import DeviceProfile
    from workbench.bench.runners import Protocol, run_ssh

    import tomllib

    conn = tomllib.loads(prof.read_text())["connection"]
    dev = DeviceProfile(name="dev", description="", runner="ssh", threads=1, runtimes=("tflite",), delegates=(),
                        connection=conn, compute={}, sources={}, notes="", path=str(prof), estimate_only=False)
    art = tmp_path / "m.tflite"
    art.write_bytes(b"x")
    with pytest.raises(ConfigError):
        run_ssh(str(art), dev, Protocol(timeout_s=10), 1)
    assert not marker.exists() and not Path(f"{marker}.so").exists()


@pytest.mark.parametrize("connection", ['serial = "-s other"', 'workdir = "/data/x; reboot"',
                                        'extra_flags = ["--graph=x; reboot"]', 'adb = "--help"'])
def test_adb_settings_that_reach_a_command_line_are_checked(tmp_path, connection):
    with pytest.raises(ConfigError, match="connection"):
        parse_profile(_profile(tmp_path, connection, runner="adb"))


def test_a_missing_adb_binary_is_one_line(tmp_path):
    from workbench.bench.profiles import DeviceProfile
    from workbench.bench.runners import Protocol, RunnerError, run_adb

    bm = tmp_path / "benchmark_model"
    bm.write_bytes(b"")
    dev = DeviceProfile(name="phone", description="", runner="adb", threads=1, runtimes=("tflite",), delegates=(),
                        connection={"adb": str(tmp_path / "no-adb-here"), "benchmark_model": str(bm)}, compute={},
                        sources={}, notes="", path="", estimate_only=False)
    art = tmp_path / "m.tflite"
    art.write_bytes(b"x")
    with pytest.raises(RunnerError, match="not found; install Android platform-tools"):
        run_adb(str(art), dev, Protocol(timeout_s=10), 1)


# --- 4. non-finite or wrong-typed weights -----------------------------------------------------------

@pytest.mark.parametrize("damage", ["nan_weight", "inf_running_var", "int64_weight"])
def test_weights_that_cannot_be_weights_are_refused_naming_the_key(tmp_path, damage):
    from safetensors.torch import save_file

    from workbench.core import load_model
    from workbench.registry import create_model

    sd = {k: v.clone() for k, v in create_model("repvgg-tiny", num_classes=5).state_dict().items()}
    conv = next(k for k in sd if k.endswith("weight") and sd[k].ndim == 4)
    if damage == "nan_weight":
        sd[conv][0, 0, 0, 0] = float("nan")
        key, word = conv, "NaN"
    elif damage == "inf_running_var":
        key = next(k for k in sd if k.endswith("running_var"))
        sd[key][0] = float("inf")
        word = "Inf"
    else:
        sd[conv] = sd[conv].to(torch.int64)
        key, word = conv, "int64"
    path = tmp_path / "w.safetensors"
    save_file(sd, str(path))
    with pytest.raises(CheckpointError) as e:
        load_model("repvgg-tiny", weights=str(path))
    assert key in str(e.value) and word in str(e.value) and "\n" not in str(e.value)
    r = _wb(["reparam", "repvgg-tiny", "--weights", str(path), "--out", str(tmp_path / "d.pth")])
    assert key in _one_line_error(r)
    assert not (tmp_path / "d.pth").exists()


def test_json_stays_valid_with_non_finite_figures(tmp_path):
    from workbench.fsutil import atomic_write_json

    p = atomic_write_json(tmp_path / "x.json", {"cos": float("nan"), "snr": [1.0, float("inf")], "ok": 1.5})
    text = p.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"cos": None, "snr": [1.0, None], "ok": 1.5}


def test_a_nan_fidelity_figure_fails_the_gate():
    from workbench.fidelity import DEFAULT_GATES, apply_gate

    fid = {"cosine": math.nan, "max_abs_diff": math.nan, "max_abs_ref": 1.0, "top1_agreement": math.nan}
    assert apply_gate("fp32", fid, DEFAULT_GATES, True).passed is False


# --- 5. every sweep field is checked before any work --------------------------------------------------

FIELDS = {  # field -> values that are valid for it among the battery below
    "name": {"x"}, "formats": set(), "precisions": set(), "devices": set(), "reparam": set(),
    "data.eval_limit": set(), "data.calib_count": set(), "data.calibration": set(), "data.evaluation": set(),
    "latency.warmup": {0}, "latency.warmup_seconds": {0}, "latency.min_runs": set(), "latency.min_seconds": set(),
    "latency.repeats": set(), "latency.remote": set(), "export.timeout_s": set(), "export.route": set(),
    "export.fidelity_count": set(), "export.memory_limit_mb": set(), "models.num_classes": set(),
    "models.input_size": set(), "models.weights": set(), "models.label": {"x"}, "models.name": set(),
    "models.optimize": set(), "quantization.keep_worst": {0}, "quantization.per_channel": set(),
    "quantization.calib_method": set(), "quantization.keep_float": set(),
}
BATTERY = {"wrong type": "x", "negative": -1, "zero": 0, "nan": math.nan, "inf": math.inf, "huge": 10 ** 12}


def _toml(v) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return json.dumps(v)


def _sweep_with(field: str, value) -> str:
    import re

    base = SWEEP + '\n[quantization]\nper_channel = true\n'
    section, _, key = field.rpartition(".")
    line = f"{key} = {_toml(value)}"
    if not section:
        return re.sub(rf"^{key} = .*$", line, base, flags=re.M) if re.search(rf"^{key} = ", base, re.M) \
            else line + "\n" + base
    header = "[[models]]" if section == "models" else f"[{section}]"
    body = re.sub(rf"^{key} = .*\n", "", base, flags=re.M)
    return body.replace(header + "\n", header + "\n" + line + "\n", 1) if header in body else body + f"\n{header}\n{line}\n"


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_every_sweep_field_refuses_bad_values_in_one_line_before_any_export(tmp_path, field):
    from workbench.sweep import run_sweep

    key = field.rpartition(".")[2]
    for label, value in BATTERY.items():
        if value in FIELDS[field] or (isinstance(value, str) and value in FIELDS[field]):
            continue
        p = tmp_path / f"{label}.toml"
        p.write_text(_sweep_with(field, value))
        cache = tmp_path / f"cache-{label}"
        with pytest.raises(ConfigError) as e:
            run_sweep(str(p), tmp_path / f"out-{label}", cache=str(cache))
        msg = str(e.value)
        assert "\n" not in msg and (key in msg or field.split(".")[0] in msg or field == "models.name"), (field, label, msg)
        assert not cache.exists(), (field, label)  # nothing was exported


def test_empty_and_duplicate_lists_are_refused(tmp_path):
    from workbench.sweep import load_sweep

    for text, word in ((SWEEP.replace('devices = ["host-1t"]', "devices = []"), "non-empty"),
                       (SWEEP.replace('devices = ["host-1t"]', 'devices = ["host-1t", "host-1t"]'), "twice")):
        p = tmp_path / "s.toml"
        p.write_text(text)
        with pytest.raises(ConfigError, match=word):
            load_sweep(p)


def test_a_binary_file_given_as_a_sweep_is_one_line(tmp_path):
    p = tmp_path / "s.toml"
    p.write_bytes(bytes(range(256)) * 4)
    assert "not a text file" in _one_line_error(_wb(["run", str(p)]))


# --- 6. operating-system errors -------------------------------------------------------------------

def _can_mount() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m none /mnt"],
                          capture_output=True).returncode == 0


needs_mount = pytest.mark.skipif(not _can_mount(), reason="needs unshare -m with mount rights (root in CI)")


def _in_tmpfs(folder: Path, opts: str) -> list[str]:
    """A command prefix that runs the rest with ``folder`` mounted as a fresh tmpfs (private mount namespace)."""
    folder.mkdir(parents=True, exist_ok=True)
    return ["unshare", "-m", "sh", "-c", f'mount -t tmpfs -o {opts} none "{folder}" && exec "$0" "$@"']


@needs_mount
@pytest.mark.parametrize("which", ["--out", "--cache"])
def test_a_read_only_output_or_cache_folder_is_one_line_before_any_work(tmp_path, which):
    sweep = tmp_path / "s.toml"
    sweep.write_text(SWEEP)
    ro = tmp_path / "ro"
    args = {"--out": tmp_path / "run", "--cache": tmp_path / "cache"}
    args[which] = ro / "sub"
    r = _wb(["run", str(sweep), "--out", str(args["--out"]), "--cache", str(args["--cache"])],
            prefix=_in_tmpfs(ro, "ro,size=1m"))
    line = _one_line_error(r)
    assert "cannot write" in line and "Read-only file system" in line and f"choose another {which}" in line
    assert "exporting" not in r.stderr and not any((tmp_path / "cache").glob("*/part-*"))


@pytest.mark.parametrize("kind", ["a file", "under a file"])
def test_an_output_folder_that_is_a_file_is_one_line(tmp_path, kind):
    sweep = tmp_path / "s.toml"
    sweep.write_text(SWEEP)
    f = tmp_path / "f"
    f.write_text("x")
    out = f if kind == "a file" else f / "run"
    line = _one_line_error(_wb(["run", str(sweep), "--out", str(out), "--cache", str(tmp_path / "cache")]))
    assert "cannot write the run folder" in line and "--out" in line


@needs_mount
def test_a_full_output_folder_is_one_line_and_keeps_the_measured_cells(tmp_path):
    sweep = tmp_path / "s.toml"
    sweep.write_text(SWEEP.replace('devices = ["host-1t"]', 'devices = ["host-1t", "host"]'))
    cache = tmp_path / "cache"
    warm = _wb(["run", str(sweep), "--out", str(tmp_path / "warm"), "--cache", str(cache)])  # exports cached
    assert warm.returncode == 0, warm.stderr[-2000:]
    full = tmp_path / "full"
    # room for a few cells, not for every cell, run.json and the reports
    script = (f'mount -t tmpfs -o size=24k none "{full}" && "$0" "$@"; rc=$?; '
              f'mkdir -p "{tmp_path}/kept" && cp -r "{full}/run/cells" "{tmp_path}/kept/" 2>/dev/null; exit $rc')
    full.mkdir()
    r = subprocess.run(["unshare", "-m", "sh", "-c", script, *WB, "run", str(sweep), "--out", str(full / "run"),
                        "--cache", str(cache)], capture_output=True, text=True, timeout=600, env=_env(), cwd=ROOT)
    line = _one_line_error(r)
    assert "No space left on device" in line and "cells already measured are kept" in line
    kept = list((tmp_path / "kept" / "cells").glob("*.json"))
    assert kept, r.stderr[-2000:]
    for c in kept:  # every cell on disk is whole (atomic writes): none half-written
        json.loads(c.read_text())


@needs_mount
def test_a_full_cache_folder_is_one_line_and_keeps_the_measured_cells(tmp_path):
    sweep = tmp_path / "s.toml"
    sweep.write_text(SWEEP)
    out = tmp_path / "run"
    first = _wb(["run", str(sweep), "--out", str(out), "--cache", str(tmp_path / "cache")])
    assert first.returncode == 0, first.stderr[-2000:]
    before = {c.name: c.read_bytes() for c in (out / "cells").glob("*.json")}
    full = tmp_path / "full"
    r = _wb(["run", str(sweep), "--out", str(out), "--cache", str(full / "c"), "--resume"],
            prefix=_in_tmpfs(full, "size=48k"))  # an empty cache with no room for the export
    line = _one_line_error(r)
    assert "No space left on device" in line
    assert {c.name: c.read_bytes() for c in (out / "cells").glob("*.json")} == before


# --- weak: interrupts stop at once and leave nothing behind -----------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_mid_export_stops_within_5_s_with_no_process_left(tmp_path, sig):
    import psutil

    sweep = tmp_path / "s.toml"
    sweep.write_text(SWEEP)
    p = subprocess.Popen([*WB, "run", str(sweep), "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                         env=_env(WORKBENCH_FAULT="hang:onnx"))  # the conversion hangs: we are mid-export for sure

    def ours():
        return [q for q in psutil.process_iter(["cmdline"]) if str(tmp_path) in " ".join(q.info["cmdline"] or [])
                and q.pid != p.pid]
    deadline = time.time() + 180
    while not any("exporters.worker" in " ".join(q.info["cmdline"]) for q in ours()):
        assert time.time() < deadline and p.poll() is None, "no conversion started"
        time.sleep(0.2)
    t0 = time.time()
    p.send_signal(sig)
    _, err = p.communicate(timeout=30)
    took = time.time() - t0
    assert took < 5, took
    assert p.returncode == 130 and "interrupted; re-run with --resume" in err and "Traceback" not in err
    time.sleep(0.3)
    assert ours() == []


def test_a_large_plan_states_its_size_and_needs_yes(tmp_path):
    models = "".join(f'\n[[models]]\nname = "repvgg-tiny"\nlabel = "m{i}"\n' for i in range(10))
    p = tmp_path / "big.toml"
    p.write_text('name = "big"\nformats = ["onnx", "tflite", "coreml"]\n'
                 'precisions = ["fp32", "fp16", "int8", "int8-dynamic", "int16x8"]\nreparam = [true, false]\n'
                 'devices = ["host", "host-1t", "pixel8-cpu", "pixel8-gpu", "iphone15-coreml", "rpi5", "jetson-orin-nano"]\n'
                 + models)
    r = _wb(["run", str(p), "--out", str(tmp_path / "run"), "--cache", str(tmp_path / "cache")])
    line = _one_line_error(r)
    assert "300 exports" in r.stderr and "2100 measured cells" in line and "--yes" in line
    assert not any((tmp_path / "cache").glob("*/part-*"))


def test_files_that_are_not_checkpoints_are_named_for_what_they_are(tmp_path):
    import os as _os

    from workbench.checkpoints import read_state_dict

    ts = tmp_path / "ts.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(ts))
    with pytest.raises(CheckpointError, match="TorchScript archive"):
        read_state_dict(ts)
    (tmp_path / "notes.txt").write_text("hello")
    _os.symlink(tmp_path / "notes.txt", tmp_path / "link.pth")
    with pytest.raises(CheckpointError, match=r"link\.pth \(a link to .*notes\.txt\) is not a PyTorch checkpoint"):
        read_state_dict(tmp_path / "link.pth")

    class Evil:
        def __reduce__(self):
            return (_os.system, ("true",))
    torch.save({"w": Evil()}, str(tmp_path / "evil.pth"))
    with pytest.raises(CheckpointError, match=r"it asks for posix\.system"):
        read_state_dict(tmp_path / "evil.pth")
