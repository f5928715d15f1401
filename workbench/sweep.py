"""``workbench run SWEEP.toml``: the sweep file parser. A sweep file is a declarative plan
(models x re-parameterization x formats x precisions x devices); ``load_sweep`` checks every field
before any work and returns a ``Plan``, and ``run_sweep`` hands it to the one executor
(``workbench.executor``: content-keyed export cache, atomic cells, ``--resume``).
"""
from __future__ import annotations

import json
import os
import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Callable

from exporters import FORMATS, PRECISIONS

from .errors import ConfigError, WorkbenchError, did_you_mean
from .executor import Plan, execute
from .sweep_fields import check_fields, check_string

TOP_KEYS = {"name", "formats", "precisions", "devices", "reparam", "data", "latency", "models", "export", "quantization"}
MODEL_KEYS = {"name", "weights", "num_classes", "input_size", "optimize", "label"}
DATA_KEYS = {"calibration", "evaluation", "eval_limit", "calib_count"}
LATENCY_KEYS = {"warmup", "warmup_seconds", "min_runs", "min_seconds", "repeats", "remote"}
REMOTE_MODES = ("try", "estimate")  # measure a remote device when reachable (else estimate), or only estimate
EXPORT_KEYS = {"timeout_s", "route", "fidelity_count", "memory_limit_mb", "compat"}


def _check_keys(where: str, got: dict, allowed: set) -> None:
    for k in got:
        if k not in allowed:
            raise ConfigError(f"{where}: unknown key '{k}'{did_you_mean(k, allowed)}; allowed: {', '.join(sorted(allowed))}")


def load_sweep(path: str | os.PathLike) -> Plan:
    from .bench.profiles import get_profile
    from .registry import get_spec

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"sweep file {p} does not exist" if not p.exists() else f"{p} is not a file; pass a sweep .toml")
    try:
        text = p.read_text()
        doc = tomllib.loads(text)
    except UnicodeDecodeError:
        raise ConfigError(f"{p.name}: not a text file; a sweep is a TOML file (see sweeps/tiny.toml)") from None
    except OSError as e:
        raise ConfigError(f"cannot read {p}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p.name}: not valid TOML ({e})") from e
    _check_keys(p.name, doc, TOP_KEYS)
    for key in ("data", "latency", "export", "quantization"):
        if not isinstance(doc.get(key, {}), dict):
            raise ConfigError(f"{p.name}: [{key}] must be a table")
    check_fields(p.name, doc)
    models = doc.get("models")
    if not isinstance(models, list) or not models:
        raise ConfigError(f"{p.name}: needs at least one [[models]] entry with a name")
    for i, m in enumerate(models):
        if not isinstance(m, dict) or "name" not in m:
            raise ConfigError(f"{p.name}: models[{i}] needs a name")
        _check_keys(f"{p.name} models[{i}]", m, MODEL_KEYS)
        try:
            spec = get_spec(check_string(f"{p.name}: models[{i}].name", m["name"]))
            if "input_size" in m:
                from .registry import resolve_input_size

                resolve_input_size(spec, m["input_size"])
        except WorkbenchError as e:
            raise ConfigError(f"{p.name}: models[{i}]: {e}") from None
        if "weights" in m:
            check_string(f"{p.name}: models[{i}].weights", m["weights"], max_len=4096)
            w = (p.parent / m["weights"]).resolve() if not Path(m["weights"]).is_absolute() else Path(m["weights"])
            if not w.exists():
                raise ConfigError(f"{p.name}: models[{i}].weights {m['weights']} does not exist")
            m["weights"] = str(w)
        if "optimize" in m:
            from .optimize.pipeline import tag, validate_optimize

            if not isinstance(m["optimize"], dict):
                raise ConfigError(f"{p.name}: models[{i}].optimize must be a table, e.g. {{prune = 0.3}}")
            m["optimize"] = validate_optimize(m["optimize"], f"{p.name} models[{i}].optimize")
            data = m["optimize"].get("data")
            if data and data not in ("builtin",) and not Path(data).is_absolute():
                m["optimize"]["data"] = str((p.parent / data).resolve())
            m.setdefault("label", m["name"] + tag(m["optimize"]))
        if "label" in m and (not isinstance(m["label"], str) or not m["label"].strip()):
            raise ConfigError(f"{p.name}: models[{i}].label must be a non-empty string")
    labels = [m.get("label", m["name"]) for m in models]
    dup = {x for x in labels if labels.count(x) > 1}
    if dup:
        raise ConfigError(f"{p.name}: two [[models]] entries are both {sorted(dup)[0]!r}; give one a different label")

    def str_list(key, default, allowed=None):
        v = doc.get(key, default)
        if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
            raise ConfigError(f"{p.name}: '{key}' must be a non-empty list of strings"
                              + (f" from {', '.join(allowed)}" if allowed else ""))
        dup = sorted({x for x in v if v.count(x) > 1})
        if dup:
            raise ConfigError(f"{p.name}: '{key}' lists {dup[0]!r} twice; each value once")
        for x in v:
            if allowed is not None and x not in allowed:
                raise ConfigError(f"{p.name}: '{key}' has {x!r}{did_you_mean(x, allowed)}; allowed: {', '.join(allowed)}")
        return v

    formats = str_list("formats", ["onnx", "tflite"], list(FORMATS))
    precisions = str_list("precisions", ["fp32"], list(PRECISIONS))
    devices = str_list("devices", ["host"])
    for d in devices:
        get_profile(d)
    reparam = doc.get("reparam", [True])
    if isinstance(reparam, bool):
        reparam = [reparam]
    if not isinstance(reparam, list) or not reparam or not all(isinstance(x, bool) for x in reparam) \
            or len(set(reparam)) != len(reparam):
        raise ConfigError(f"{p.name}: 'reparam' must be true, false or a list of them, each once")
    for key, allowed in (("data", DATA_KEYS), ("latency", LATENCY_KEYS), ("export", EXPORT_KEYS)):
        _check_keys(f"{p.name} [{key}]", doc.get(key, {}), allowed)
    if "remote" in doc.get("latency", {}):
        check_string(f"{p.name}: latency.remote", doc["latency"]["remote"], allowed=REMOTE_MODES)
    from .optimize.quant import validate_quant

    quant = validate_quant(doc.get("quantization", {}), f"{p.name} [quantization]")
    return Plan(name=doc.get("name", p.stem), models=models, formats=formats, precisions=precisions, devices=devices,
                 reparam=reparam, data=doc.get("data", {}), latency=doc.get("latency", {}), export=doc.get("export", {}),
                 quantization=quant, path=str(p), text=text)


ProgressFn = Callable[[str, dict], None]


def run_sweep(path: str, out: str | os.PathLike | None = None, *, resume: bool = False, cache: str | None = None,
              progress: ProgressFn | None = None, executor: str = "local", address: str | None = None,
              jobs: int = 1, max_cells: int | None = None) -> dict:
    plan = load_sweep(path)
    out = Path(out or Path("reports") / safe_name(plan.name))
    return execute(plan, out, resume=resume, cache=cache, progress=progress, executor=executor, address=address,
                   jobs=jobs, max_cells=max_cells)


def safe_name(name: str) -> str:
    """A folder name from a sweep's name: no separators, no '..', nothing hidden."""
    import re

    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "run"
    return cleaned[:80]


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise ConfigError(f"cannot write {type(v).__name__} into a sweep file")


def sweep_to_toml(doc: dict) -> str:
    """A sweep document (the dict ``load_sweep`` reads) as TOML text: what the dashboard writes, so a
    run started there can be re-run headless with ``workbench run``."""
    _check_keys("sweep", doc, TOP_KEYS)
    lines = ["# written by the Edge Workbench dashboard; run it headless with: workbench run sweep.toml"]
    tables = {k: v for k, v in doc.items() if isinstance(v, dict)}
    for k, v in doc.items():
        if k != "models" and not isinstance(v, dict):
            lines.append(f"{k} = {_toml_value(v)}")
    for k, v in tables.items():
        lines += ["", f"[{k}]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    for m in doc.get("models", []):
        lines += ["", "[[models]]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in m.items() if vv is not None]
    return "\n".join(lines) + "\n"



def check_document(doc: dict) -> Plan:
    """A sweep document (what the dashboard's form builds) checked exactly as a sweep file is,
    before anything is allocated or started; raises one line naming the field."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="wb-check-") as d:
        p = Path(d) / "sweep.toml"
        p.write_text(sweep_to_toml(doc))
        plan = load_sweep(p)
    return replace(plan, path="", text="")


def unsupported_combinations(plan: Plan) -> list[str]:
    """(format, precision) pairs of the plan that the format does not offer: they become skipped rows."""
    return [f"{f} {p}" for f in plan.formats for p in plan.precisions if not FORMATS[f].supports(p)[0]]


def estimate_seconds(plan: Plan, runs_root: str | os.PathLike | None) -> dict:
    """How long the plan should take here, from this host's recorded runs: the median export time of
    recorded artifacts of the same format (any model when none of the same), and each local latency
    cell's protocol time (warm-up + timed runs, repeated). Says what it is based on."""
    import json
    import statistics

    secs: dict[str, list[float]] = {}
    n_runs = 0
    root = Path(runs_root) if runs_root else None
    if root and root.is_dir():
        for f in root.glob("*/run.json"):
            try:
                run = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            n_runs += 1
            for a in run.get("artifacts", []):
                if a.get("export_seconds"):
                    secs.setdefault(a["format"], []).append(float(a["export_seconds"]))
    every = [s for v in secs.values() for s in v]
    per_fmt = {f: statistics.median(secs.get(f) or every or [20.0]) for f in plan.formats}
    n = len(plan.models) * len(plan.reparam) * len(plan.precisions)
    export_s = sum(per_fmt[f] * n for f in plan.formats)
    from .bench.profiles import get_profile
    from .bench.runners import Protocol

    proto = Protocol(**plan.protocol())
    lat = {"warmup_seconds": proto.warmup_seconds, "min_seconds": proto.min_seconds, "repeats": proto.repeats}
    local = sum(1 for d in plan.devices if get_profile(d).runner == "local")
    cell_s = (lat["warmup_seconds"] + lat["min_seconds"]) * lat["repeats"] + 2.0
    runnable = len(plan.models) * len(plan.reparam) * len(plan.precisions) * sum(FORMATS[f].runs_here for f in plan.formats)
    latency_s = runnable * local * cell_s
    basis = (f"median export time per format of {len(every)} recorded artifacts in {n_runs} runs on this host"
             if every else "no recorded runs on this host yet: 20 s per export assumed")
    return {"total_s": export_s + latency_s, "export_s": export_s, "latency_s": latency_s, "basis": basis,
            "per_export_s": per_fmt}
