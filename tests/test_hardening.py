"""Hardening: untrusted files, malformed configs (property-based), faults during runs, concurrency.
(Checkpoint, dataset and profile cases live beside their modules' tests; this file holds the rest.)"""
from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workbench.bench.profiles import parse_profile
from workbench.cli import main
from workbench.errors import ConfigError, WorkbenchError
from workbench.executor.run import _lock
from workbench.sweep import load_sweep, safe_name

# --- corrupted artifacts handed to bench and eval --------------------------------------------


@pytest.mark.parametrize("name,content", [("m.onnx", b"\x08\x07garbage"), ("m.tflite", b"TFL3" + b"\x00" * 50),
                                          ("empty.tflite", b"")])
def test_corrupted_artifacts_give_one_line_errors(tmp_path, capsys, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    for argv in (["bench", str(p), "--device", "host-1t", "--min-seconds", "0.1", "--repeats", "1"],
                 ["eval", str(p), "--data", "builtin", "--limit", "4"]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_corrupted_mlpackage(tmp_path, capsys):
    p = tmp_path / "m.mlpackage"
    p.mkdir()
    (p / "Manifest.json").write_text("{broken")
    assert main(["bench", str(p), "--device", "iphone15-coreml"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


# --- config parsers never crash: they parse or raise ConfigError -------------------------------

toml_scalars = st.one_of(st.integers(-5, 300), st.booleans(), st.text(max_size=12), st.floats(allow_nan=False, width=32),
                         st.lists(st.text(max_size=8), max_size=3))
keys = st.sampled_from(["name", "runner", "threads", "runtimes", "delegates", "notes", "threds", "description", "compute"])


def _toml(d: dict) -> str:
    lines = []
    for k, v in d.items():
        lines.append(f"{k} = {json.dumps(v)}" if not isinstance(v, bool) else f"{k} = {str(v).lower()}")
    return "\n".join(lines) + "\n"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(keys, toml_scalars, max_size=6))
def test_profile_parser_property(tmp_path, doc):
    p = tmp_path / "p.toml"
    p.write_text(_toml(doc))
    try:
        prof = parse_profile(p)
    except ConfigError as e:
        assert "\n" not in str(e) and str(e).startswith("p.toml")
    else:
        assert prof.runner in ("local", "ssh", "adb", "estimate") and prof.name


sweep_keys = st.sampled_from(["name", "formats", "precisions", "devices", "reparam", "fromats"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(sweep_keys, toml_scalars, max_size=5), st.sampled_from(["repvgg-tiny", "vgg-tiny", "nope", ""]))
def test_sweep_parser_property(tmp_path, doc, model):
    p = tmp_path / "s.toml"
    p.write_text(_toml(doc) + f'[[models]]\nname = "{model}"\n')
    try:
        s = load_sweep(p)
    except WorkbenchError as e:  # ConfigError, or UnknownModelError for a name not in the zoo
        assert "\n" not in str(e)
    else:
        assert s.models and all(isinstance(f, str) for f in s.formats)


def test_names_cannot_escape_the_reports_folder():
    for evil in ("../../etc", "/abs/path", "..", "a/../../b", ".hidden"):
        n = safe_name(evil)
        assert "/" not in n and not n.startswith(".") and n not in ("", "..")


# --- concurrency and faults while writing -------------------------------------------------------


def test_two_runs_cannot_write_the_same_folder(tmp_path):
    first = _lock(tmp_path)
    try:
        with pytest.raises(ConfigError, match="another run is writing"):
            _lock(tmp_path)
    finally:
        first.close()
    _lock(tmp_path).close()  # free again once the first run ended


def test_disk_full_while_writing_a_report_keeps_the_old_file(tmp_path):
    """A file-size quota (RLIMIT_FSIZE) stands in for a full disk: the write fails, the previous
    report stays whole, and no half-written file is left under the real name."""
    report = tmp_path / "report.md"
    report.write_text("previous complete report\n")
    code = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
from pathlib import Path
from workbench.fsutil import atomic_write_text
try:
    atomic_write_text(Path({str(report)!r}), "x" * 100000)
except OSError as e:
    print("OSError", e.errno)
    sys.exit(3)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 3 and "OSError 27" in r.stdout  # EFBIG
    assert report.read_text() == "previous complete report\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]  # no temporary file left behind


def test_measurement_process_killed_midway_is_a_clear_error(tmp_path):
    """The agent is killed at its timeout in the middle of timing: one-line error, nothing half-read."""
    from workbench.bench.measure import bench_artifact
    from workbench.bench.runners import Protocol, RunnerError
    from workbench.export import ExportOptions, export_model

    m = export_model("vgg-tiny", out_dir=tmp_path, options=ExportOptions(formats=("onnx",), precisions=("fp32",),
                     calib_count=2, fidelity_count=2))
    with pytest.raises(RunnerError, match="timed out after") as e:
        bench_artifact(m["artifacts"][0]["path"], "host-1t", Protocol(min_seconds=60, repeats=1, timeout_s=3))
    assert "\n" not in str(e.value)


def test_safetensors_with_mismatched_shapes_names_the_tensors(tmp_path):
    import torch
    from safetensors.torch import save_file

    from workbench.core import load_model
    from workbench.errors import CheckpointError
    from workbench.registry import create_model

    sd = {k: v.contiguous() for k, v in create_model("repvgg-tiny").state_dict().items()}
    sd["stage0.rbr_dense.conv.weight"] = torch.zeros(5, 3, 3, 3)
    p = tmp_path / "bad.safetensors"
    save_file(sd, str(p))
    with pytest.raises(CheckpointError, match=r"mis-shaped 1 \(stage0.rbr_dense.conv.weight: file \[5, 3, 3, 3\]"):
        load_model("repvgg-tiny", weights=str(p))


def test_safetensors_header_claiming_a_huge_tensor_is_refused_without_allocating(tmp_path):
    import struct

    from workbench.checkpoints import read_state_dict
    from workbench.errors import CheckpointError

    header = json.dumps({"w": {"dtype": "F32", "shape": [200000, 200000], "data_offsets": [0, 160000000000]}}).encode()
    p = tmp_path / "huge.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * 64)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match="not a readable .safetensors"):
        read_state_dict(p)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KB: nothing like 160 GB


def test_conversion_out_of_memory_is_recorded_and_the_export_goes_on(tmp_path, capsys):
    """A real memory cap (RLIMIT_AS on the conversion process): TensorFlow cannot even load under
    1.5 GB of address space, torch's ONNX export fits. The TFLite row (tf-direct: the auto route
    of repvgg fp32 is onnx2tf now, which needs no TensorFlow and fits) says out of memory; ONNX is ok."""
    from workbench.cli import main

    rc = main(["export", "repvgg-tiny", "--formats", "onnx,tflite", "--precisions", "fp32", "--calib-count", "2",
               "--route", "tf-direct", "--memory-limit", "1500", "--out", str(tmp_path / "e")])
    assert rc == 1  # a failed row makes the command fail, after finishing the others
    man = json.loads((tmp_path / "e" / "manifest.json").read_text())
    rows = {a["format"]: a for a in man["artifacts"]}
    assert rows["onnx"]["status"] == "ok" and Path(rows["onnx"]["path"]).exists()
    assert rows["tflite"]["status"] == "failed"
    assert rows["tflite"]["reason"].startswith("out of memory during the conversion (memory limit 1500 MB")
    assert "Traceback" not in capsys.readouterr().err
