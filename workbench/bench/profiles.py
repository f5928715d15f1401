"""Device profiles: ``device_profiles/*.toml``, one target each. Users add a device by adding a
file. The schema (every field, its type and what is allowed) is in ``device_profiles/README.md``
and enforced here: a malformed file gets one line naming the file, the field and what is allowed.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError, did_you_mean

PROFILE_DIR = Path(__file__).resolve().parents[2] / "device_profiles"
RUNNERS = ("local", "ssh", "adb", "estimate")
RUNTIMES = ("tflite", "onnx", "pytorch", "coreml", "tensorrt")
DELEGATES = ("xnnpack", "gpu", "nnapi", "hexagon", "coreml-ane", "coreml-gpu", "cpu", "cuda")
TOP_FIELDS = {"name": str, "description": str, "runner": str, "threads": (int, str), "runtimes": list,
              "delegates": list, "runtime": str, "connection": dict, "compute": dict, "sources": dict, "notes": str}
COMPUTE_FIELDS = ("fp32_gflops", "fp16_gflops", "int8_gops", "memory_bandwidth_gbs")
CONNECTION_FIELDS = {
    "local": set(),
    "ssh": {"host", "port", "user", "key", "python", "workdir", "options", "trtexec"},
    "adb": {"serial", "benchmark_model", "adb", "workdir", "use_gpu", "use_xnnpack", "extra_flags"},
    "estimate": set(),
}


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    runner: str
    threads: int | str  # int, or "all"
    runtimes: tuple[str, ...]
    delegates: tuple[str, ...]
    connection: dict
    compute: dict  # figures or "probe" (measured on this host when needed)
    sources: dict
    notes: str
    path: str = ""
    estimate_only: bool = False
    extra: dict = field(default_factory=dict)
    runtime: str = ""  # the TFLite runtime installed on the device, e.g. "tflite-runtime==2.14"

    def resolved_threads(self) -> int:
        import os

        if self.threads == "all":
            return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return int(self.threads)


def _err(path: Path, fieldname: str, problem: str) -> ConfigError:
    return ConfigError(f"{path.name}: field '{fieldname}' {problem}")


def parse_profile(path: Path) -> DeviceProfile:
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path.name}: not valid TOML ({e}); fix the syntax") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path.name}: not a text file; device profiles are TOML") from e
    for k in doc:
        if k not in TOP_FIELDS:
            raise _err(path, k, f"is unknown{did_you_mean(k, TOP_FIELDS)}; allowed: {', '.join(TOP_FIELDS)}")
    for k in ("name", "runner", "threads"):
        if k not in doc:
            raise _err(path, k, "is missing (required: name, runner, threads)")
    for k, v in doc.items():
        want = TOP_FIELDS[k]
        if not isinstance(v, want) or isinstance(v, bool):
            kind = getattr(want, "__name__", 'an integer or "all"')
            raise _err(path, k, f"must be {kind}, got {type(v).__name__}")
    if doc["runner"] not in RUNNERS:
        raise _err(path, "runner", f"is {doc['runner']!r}{did_you_mean(doc['runner'], RUNNERS)}; allowed: {', '.join(RUNNERS)}")
    th = doc["threads"]
    if isinstance(th, str) and th != "all" or isinstance(th, int) and not 1 <= th <= 256:
        raise _err(path, "threads", f"is {th!r}; allowed: an integer 1..256 or \"all\"")
    for k, allowed in (("runtimes", RUNTIMES), ("delegates", DELEGATES)):
        for v in doc.get(k, []):
            if v not in allowed:
                raise _err(path, k, f"has {v!r}{did_you_mean(str(v), allowed)}; allowed: {', '.join(allowed)}")
    conn = doc.get("connection", {})
    for k in conn:
        if k not in CONNECTION_FIELDS[doc["runner"]]:
            allowed = ", ".join(sorted(CONNECTION_FIELDS[doc["runner"]])) or "none"
            raise _err(path, f"connection.{k}", f"is not a {doc['runner']} setting{did_you_mean(k, CONNECTION_FIELDS[doc['runner']])}; allowed: {allowed}")
    from .runners import check_connection

    try:
        check_connection(doc["runner"], conn, f"{path.name}: connection")
    except ConfigError as e:
        raise ConfigError(f"{e}; fix the profile") from None
    if doc["runner"] == "ssh" and "host" not in conn:
        raise _err(path, "connection.host", "is missing (the ssh runner needs a host)")
    if doc["runner"] == "adb" and "benchmark_model" not in conn:
        raise _err(path, "connection.benchmark_model", "is missing (path to Android's benchmark_model binary)")
    if "runtime" in doc:
        from exporters.tflite_compat import parse_target

        try:
            parse_target(doc["runtime"])
        except ValueError as e:
            raise _err(path, "runtime", f"{e}") from None
    comp = doc.get("compute", {})
    for k, v in comp.items():
        if k not in COMPUTE_FIELDS:
            raise _err(path, f"compute.{k}", f"is unknown{did_you_mean(k, COMPUTE_FIELDS)}; allowed: {', '.join(COMPUTE_FIELDS)}")
        if v != "probe" and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
            raise _err(path, f"compute.{k}", f"is {v!r}; allowed: a positive number or \"probe\"")
        if v != "probe" and k not in doc.get("sources", {}):
            raise _err(path, f"sources.{k}", "is missing: every figure in [compute] needs a source")
    return DeviceProfile(name=doc["name"], description=doc.get("description", ""), runner=doc["runner"],
                         threads=th, runtimes=tuple(doc.get("runtimes", [])), delegates=tuple(doc.get("delegates", [])),
                         connection=conn, compute=comp, sources=doc.get("sources", {}), notes=doc.get("notes", ""),
                         path=str(path), estimate_only=doc["runner"] == "estimate", runtime=doc.get("runtime", ""))


def load_profiles(directory: Path | None = None) -> tuple[dict[str, DeviceProfile], dict[str, str]]:
    """(profiles by name, errors by file name): one bad file does not hide the others."""
    import os

    d = directory or Path(os.environ.get("WORKBENCH_PROFILES") or PROFILE_DIR)
    profiles, errors = {}, {}
    for p in sorted(d.glob("*.toml")):
        try:
            prof = parse_profile(p)
        except ConfigError as e:
            errors[p.name] = str(e)
            continue
        if prof.name in profiles:
            errors[p.name] = f"{p.name}: field 'name' repeats {prof.name!r} from {Path(profiles[prof.name].path).name}"
            continue
        profiles[prof.name] = prof
    return profiles, errors


def get_profile(name: str, directory: Path | None = None) -> DeviceProfile:
    p = Path(name)
    if p.suffix == ".toml" and p.exists():
        return parse_profile(p)
    profiles, errors = load_profiles(directory)
    if name in profiles:
        return profiles[name]
    bad = [e for f, e in errors.items() if Path(f).stem == name]
    if bad:
        raise ConfigError(bad[0])
    raise ConfigError(f"unknown device profile {name!r}{did_you_mean(name, profiles)}; "
                      "run `workbench devices` to list them")
