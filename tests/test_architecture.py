"""The architecture, enforced: import contracts (import-linter, configured in pyproject.toml), no
format switches outside exporters/, small modules. See docs/architecture.md."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(config: Path) -> subprocess.CompletedProcess:
    if not LINT.exists():
        pytest.fail(f"{LINT} is missing: import-linter is in the dev extra; run make setup")
    return subprocess.run([str(LINT), str(config), "--no-cache"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_import_contracts_hold():
    r = _lint(ROOT / "pyproject.toml")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"Contracts: (\d+) kept, 0 broken", r.stdout), r.stdout
    assert int(re.search(r"Contracts: (\d+) kept", r.stdout).group(1)) >= 4


def _config_without(tmp_path: Path, contract_id: str, *, drop_ignores: bool = False) -> Path:
    """pyproject's contracts with one exception removed (written back as TOML for lint-imports)."""
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    lines = ["[tool.importlinter]", f"root_packages = {json.dumps(doc['root_packages'])}"]
    for c in doc["contracts"]:
        c = dict(c)
        if c["id"] == contract_id and drop_ignores:
            c.pop("ignore_imports", None)
        lines += ["", "[[tool.importlinter.contracts]]"]
        for k, v in c.items():
            lines.append(f"{k} = {json.dumps(v)}")  # JSON strings, lists and booleans are valid TOML
    p = tmp_path / "contracts.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_removing_the_modelinfo_exception_breaks_a_contract(tmp_path):
    """The contracts can fail: without its one stated exception the models contract is broken."""
    r = _lint(_config_without(tmp_path, "models-below-pipeline", drop_ignores=True))
    assert r.returncode != 0
    assert "workbench.modelinfo -> exporters.records" in r.stdout
    assert "3 kept, 1 broken" in r.stdout


def test_no_format_name_compared_outside_exporters():
    pattern = re.compile(r"""== ?['"](onnx|tflite|coreml)['"]|['"](onnx|tflite|coreml)['"] ?==""")
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "workbench").rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []


def test_modules_stay_small():
    """No module over ~400 lines (read in one sitting)."""
    big = {str(p.relative_to(ROOT)): n for p in [*(ROOT / "workbench").rglob("*.py"), *(ROOT / "exporters").rglob("*.py")]
           if (n := len(p.read_text().splitlines())) > 420}
    assert big == {}


def test_every_format_is_one_registered_class():
    from exporters import FORMATS, format_for_path, get_format
    from exporters.base import Format

    assert set(FORMATS) == {"onnx", "tflite", "coreml", "tensorrt"}
    for name, fmt in FORMATS.items():
        assert isinstance(fmt, Format) and fmt.name == name
        assert format_for_path(f"x{fmt.suffix}") is fmt
        assert fmt.runs_here == (fmt.capability.runtime is not None)
    with pytest.raises(ValueError, match="did you mean 'tflite'"):
        get_format("tflit")
