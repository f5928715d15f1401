"""Latency measurement: runners (local, ssh against a real sshd, adb with a stand-in), stats,
device profiles and the labelled estimate."""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workbench.bench.measure import bench_artifact
from workbench.bench.profiles import get_profile, load_profiles, parse_profile
from workbench.bench.runners import Protocol, parse_benchmark_model
from workbench.errors import ConfigError
from workbench.export import ExportOptions, export_model

FIX = Path(__file__).parent / "fixtures" / "benchmark_model"
KEYS = {"device", "runner", "threads", "init_ms", "first_ms", "mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms",
        "p99_ms", "max_ms", "cv", "runs", "peak_rss_mb", "timed_scope", "estimated"}
QUICK = Protocol(warmup=3, min_runs=20, min_seconds=0.3, repeats=3)


@pytest.fixture(scope="module")
def tiny_artifacts(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-export")
    m = export_model("repvgg-tiny", out_dir=out, options=ExportOptions(formats=("tflite", "onnx", "coreml"),
                     precisions=("fp32",), calib_count=4, fidelity_count=2))
    return {a["format"]: a["path"] for a in m["artifacts"]}


def test_host_bench_has_every_key(tiny_artifacts):
    for fmt in ("tflite", "onnx"):
        r = bench_artifact(tiny_artifacts[fmt], "host", QUICK).to_dict()
        assert KEYS <= set(r)
        assert r["estimated"] is False and r["runner"] == "local" and r["runs"] >= 60
        assert 0 < r["min_ms"] <= r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["init_ms"] > 0 and r["first_ms"] > 0 and r["peak_rss_mb"] > 10
        assert r["threads"] == len(os.sched_getaffinity(0))
        assert "invoke" in r["timed_scope"] or "session.run" in r["timed_scope"]
        assert len(r["repeat_p50_ms"]) == 3 and r["basis"]["estimate_ms"] > 0


@pytest.fixture(scope="module")
def a0_tflite(tmp_path_factory):
    out = tmp_path_factory.mktemp("a0")
    m = export_model("repvgg-a0", out_dir=out, options=ExportOptions(formats=("tflite",), precisions=("fp32",),
                     calib_count=4, fidelity_count=2))
    return m["artifacts"][0]["path"]


@pytest.mark.slow  # a full-size model (repvgg-a0 at 224 px): make test-slow; CI time goes to the tiny ones
def test_repvgg_a0_bench_keys_and_repeated_calls_agree_within_spread(a0_tflite):
    """Repeated calls agree within their spread. On a shared CI machine one call in three can land on
    a neighbour's burst (seen in CI: 27.9 ms against 14.1 ms, no visible cause inside this VM), so the
    claim tested is that the two closest of three calls agree within their spread (three calls all
    apart fails). Spotting the odd call is the noise rule's job, tested in test_noise.py."""
    rs = sorted((bench_artifact(a0_tflite, "host", QUICK) for _ in range(3)), key=lambda r: r.p50_ms)
    assert KEYS <= set(rs[0].to_dict()) and rs[0].runs >= 60
    a, b = min(zip(rs, rs[1:]), key=lambda p: p[1].p50_ms - p[0].p50_ms)
    assert b.p50_ms - a.p50_ms <= max(a.std_ms, b.std_ms, 0.03 * b.p50_ms), [r.p50_ms for r in rs]


def test_pytorch_eager_runner():
    from workbench.bench.measure import bench_target

    r = bench_target("repvgg-tiny", "host-1t", QUICK)[0]
    assert r["runtime"].startswith("pytorch") and r["p50_ms"] > 0 and "deploy" in r["artifact"]


def test_int16_activation_trap_is_flagged(tmp_path):
    import numpy as np
    import tensorflow as tf

    from exporters import get_format

    tflite_traps = get_format("tflite").latency_warnings

    w = tf.constant(np.random.default_rng(0).standard_normal((3, 3, 3, 8)).astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32)])
    def f(x):
        return tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME"))

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([np.random.rand(1, 16, 16, 3).astype(np.float32)] for _ in range(4))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    p = tmp_path / "a16w8.tflite"
    p.write_bytes(conv.convert())
    assert any("TRAP: int16 activations" in w for w in tflite_traps(str(p)))


def test_coreml_is_not_measured_here_and_estimate_is_labelled(tiny_artifacts):
    r = bench_artifact(tiny_artifacts["coreml"], "host", QUICK)
    assert r.status == "not measured" and r.p50_ms is None
    e = bench_artifact(tiny_artifacts["coreml"], "iphone15-coreml", QUICK)
    assert e.estimated is True and e.p50_ms > 0 and e.timed_scope.startswith("estimate")
    assert "roofline" in e.basis["method"] and e.basis["sources"]["fp32_gflops"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path):
    sshd_bin = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd_bin).exists():
        pytest.skip("openssh-server is not installed (.ci/run installs it)")
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "host_key")], check=True)
    (tmp_path / "authorized_keys").write_text((tmp_path / "id_ed25519.pub").read_text())
    os.chmod(tmp_path / "authorized_keys", 0o600)
    port = _free_port()
    cfg = tmp_path / "sshd_config"
    cfg.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp_path / 'host_key'}\n"
                   f"AuthorizedKeysFile {tmp_path / 'authorized_keys'}\nPasswordAuthentication no\n"
                   "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
                   f"StrictModes no\nUsePAM no\nPidFile {tmp_path / 'sshd.pid'}\n"
                   "Subsystem sftp internal-sftp\n")
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen([sshd_bin, "-D", "-e", "-f", str(cfg)], stderr=subprocess.PIPE)
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield {"port": port, "key": key, "dir": tmp_path}
    proc.terminate()
    proc.wait(timeout=10)


def test_ssh_runner_end_to_end(sshd, tiny_artifacts, tmp_path):
    prof = tmp_path / "board.toml"
    prof.write_text(f'''name = "loopback-board"
runner = "ssh"
threads = 1
runtimes = ["tflite", "onnx"]
[connection]
host = "127.0.0.1"
port = {sshd['port']}
user = "{getpass.getuser()}"
key = "{sshd['key']}"
python = "{sys.executable}"
workdir = "{tmp_path / 'remote'}"
options = ["UserKnownHostsFile={tmp_path / 'known_hosts'}", "StrictHostKeyChecking=no"]
''')
    r = bench_artifact(tiny_artifacts["tflite"], str(prof), QUICK).to_dict()
    assert r["runner"] == "ssh" and r["device"] == "loopback-board" and r["threads"] == 1
    assert r["p50_ms"] > 0 and r["runs"] >= 60 and KEYS <= set(r)
    assert (tmp_path / "remote" / "agent.py").exists()  # the agent was copied over ssh
    assert (tmp_path / "remote" / Path(tiny_artifacts["tflite"]).name).exists()


def test_reach_device_over_real_sshd_and_a_closed_port(sshd, tmp_path):
    from workbench.bench.profiles import parse_profile
    from workbench.bench.runners import reach_device

    def prof(port: int):
        p = tmp_path / f"b{port}.toml"
        p.write_text(f'''name = "loopback-board"
runner = "ssh"
threads = 1
[connection]
host = "127.0.0.1"
port = {port}
user = "{getpass.getuser()}"
key = "{sshd['key']}"
python = "{sys.executable}"
options = ["UserKnownHostsFile={tmp_path / 'known_hosts'}", "StrictHostKeyChecking=no"]
''')
        return parse_profile(p)

    ok = reach_device(prof(sshd["port"]), timeout_s=20)
    assert ok["ok"] is True and ok["message"].startswith("reached ") and sys.version.split()[0] in ok["message"]
    bad = reach_device(prof(_free_port()), timeout_s=5)
    assert bad["ok"] is False and "ssh to" in bad["message"] and "refused" in bad["message"].lower()
    assert bad["seconds"] < 10


@pytest.mark.parametrize("name,expect", [
    ("mobilenet_v1_op_profiling.txt", {"runs": 50, "mean_ms": 2950.34, "init_ms": 17.187, "first_ms": 3512.391, "peak_rss_mb": 46.0859}),
    ("yolov5s_android_cpu.txt", {"runs": 50, "mean_ms": 249.684, "std_ms": 1.442, "min_ms": 247.067, "peak_rss_mb": 138.809}),
    ("ssd_mobilenet_v2_percentiles.txt", {"runs": 50, "p50_ms": 1239.807, "p95_ms": 1247.415, "mean_ms": 1240.27}),
    ("logcat_gpu_delegate.txt", {"runs": 25, "delegated_nodes": 31, "total_nodes": 31, "p50_ms": 141.253}),
])
def test_benchmark_model_parser_on_recorded_outputs(name, expect):
    got = parse_benchmark_model((FIX / name).read_text())
    for k, v in expect.items():
        assert got[k] == pytest.approx(v, rel=1e-4), k


def test_adb_runner_with_stand_in_adb(tmp_path, tiny_artifacts):
    """No phone exists here: a stand-in `adb` script records its calls and prints a recorded
    benchmark_model output, so the command building and parsing are tested for real."""
    log = tmp_path / "adb.log"
    fake = tmp_path / "adb"
    fake.write_text(f"""#!/bin/sh
echo "$@" >> {log}
case "$*" in *benchmark_model\\ --graph*) cat {FIX / 'logcat_gpu_delegate.txt'};; esac
exit 0
""")
    fake.chmod(0o755)
    bm = tmp_path / "benchmark_model"
    bm.write_bytes(b"\\x7fELF stand-in")
    prof = tmp_path / "phone.toml"
    prof.write_text(f'''name = "phone"
runner = "adb"
threads = 4
runtimes = ["tflite"]
delegates = ["gpu"]
[connection]
adb = "{fake}"
serial = "emulator-5554"
benchmark_model = "{bm}"
use_gpu = true
''')
    r = bench_artifact(tiny_artifacts["tflite"], str(prof), QUICK)
    calls = log.read_text()
    assert "-s emulator-5554 push" in calls and "--use_gpu=true" in calls and "--num_threads=4" in calls
    assert r.runner == "adb" and r.mean_ms == pytest.approx(145.528) and r.basis["delegated_nodes"] == 31


def test_shipped_profiles_load():
    profiles, errors = load_profiles()
    assert not errors
    assert {"host", "host-1t", "rpi5", "pixel8-cpu", "pixel8-gpu", "iphone15-coreml", "jetson-orin-nano"} <= set(profiles)
    assert profiles["pixel8-gpu"].connection["use_gpu"] is True


@pytest.mark.parametrize("text,match", [
    ('name="x"\nrunner="local"\nthreads=2\nthreds=3\n', r"x\.toml: field 'threds' is unknown \(did you mean: threads"),
    ('name="x"\nrunner="local"\nthreads=-1\n', r"field 'threads' is -1; allowed: an integer 1\.\.256"),
    ('name="x"\nrunner="lokal"\nthreads=1\n', r"field 'runner' is 'lokal' \(did you mean: local\?\)"),
    ('name="x"\nrunner="local"\nthreads="2"\n', r"field 'threads' is '2'"),
    ('name="x"\nrunner="local"\n', r"field 'threads' is missing"),
    ('name="x"\nrunner="local"\nthreads=1\n[compute]\nfp32_gflops=10\n', r"field 'sources.fp32_gflops' is missing"),
    ('name="x"\nrunner="ssh"\nthreads=1\n', r"connection.host' is missing"),
    ('name = "x\n', r"x\.toml: not valid TOML"),
])
def test_malformed_profiles_name_file_and_field(tmp_path, text, match):
    p = tmp_path / "x.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        parse_profile(p)
    profiles, errors = load_profiles(tmp_path)
    assert "x.toml" in errors and not profiles


def test_unknown_profile_suggests():
    with pytest.raises(ConfigError, match="did you mean: pixel8-cpu"):
        get_profile("pixel8-cpo")
