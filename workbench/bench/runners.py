"""Runners, chosen by the device profile: local, ssh, adb and estimate."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, WorkbenchError
from .stats import LatencyStats, summarize

AGENT = Path(__file__).with_name("agent.py")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Protocol:
    warmup: int = 10
    warmup_seconds: float = 1.0
    min_runs: int = 50
    min_seconds: float = 2.0
    repeats: int = 3
    timeout_s: float = 600.0

    def __post_init__(self):  # the same ranges as a sweep's [latency] table, checked before anything runs
        from ..sweep_fields import NUMBERS, check_number

        for k, (kind, lo, hi) in NUMBERS["latency"].items():
            check_number(f"latency {k.replace('_', ' ')}", getattr(self, k), kind, lo, hi)
        check_number("latency timeout", self.timeout_s, "number", 1, 7 * 86400)

    def job(self) -> dict:
        return {"warmup": self.warmup, "warmup_seconds": self.warmup_seconds, "min_runs": self.min_runs, "min_seconds": self.min_seconds,
                "repeats": self.repeats}


class RunnerError(WorkbenchError):
    pass


def _last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise RunnerError("the agent printed no result")


def not_runnable(artifact: str, profile, runner: str, reason: str) -> LatencyStats:
    return LatencyStats(device=profile.name, runner=runner, threads=None, init_ms=None, first_ms=None, mean_ms=None,
                        std_ms=None, min_ms=None, p50_ms=None, p90_ms=None, p99_ms=None, max_ms=None, cv=None,
                        runs=0, peak_rss_mb=None, timed_scope="", estimated=False, artifact=artifact,
                        status="not measured", reason=reason)


def run_local(artifact: str, profile, protocol: Protocol, threads: int) -> LatencyStats:
    from ..proc import run_isolated

    with tempfile.TemporaryDirectory(prefix="wb-bench-") as d:
        job = {"path": str(Path(artifact).resolve()), "threads": threads, **protocol.job()}
        jp = Path(d) / "job.json"
        jp.write_text(json.dumps(job))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TF_CPP_MIN_LOG_LEVEL": "3"}
        pr = run_isolated([sys.executable, str(AGENT), str(jp)], timeout=protocol.timeout_s,
                          log_path=Path(d) / "agent.log", env=env)
        if pr.timed_out or pr.returncode != 0:
            raise RunnerError(f"measurement of {Path(artifact).name} failed: {pr.describe_failure()}; "
                              f"{pr.log_tail.strip().splitlines()[-1] if pr.log_tail.strip() else ''}")
        raw = _last_json((Path(d) / "agent.log").read_text(errors="replace"))
    return summarize(raw, device=profile.name, runner="local", artifact=str(artifact))


# --- what may reach a command line ----------------------------------------------------------

# ssh options a profile may set (-o KEY=VALUE). Anything else is refused: several ssh options run
# a local command or load a local library (ProxyCommand, LocalCommand, KnownHostsCommand,
# PKCS11Provider, Match exec ...), forward ports or read other config files.
SSH_OPTIONS = frozenset(k.lower() for k in (
    "AddressFamily", "BatchMode", "CheckHostIP", "Ciphers", "Compression", "ConnectionAttempts", "ConnectTimeout",
    "GSSAPIAuthentication", "HashKnownHosts", "HostKeyAlgorithms", "HostKeyAlias", "IdentitiesOnly", "IdentityFile",
    "IPQoS", "KbdInteractiveAuthentication", "KexAlgorithms", "LogLevel", "MACs", "NumberOfPasswordPrompts",
    "PasswordAuthentication", "PreferredAuthentications", "PubkeyAcceptedAlgorithms", "PubkeyAcceptedKeyTypes",
    "PubkeyAuthentication", "RekeyLimit", "ServerAliveCountMax", "ServerAliveInterval", "StrictHostKeyChecking",
    "TCPKeepAlive", "UpdateHostKeys", "UserKnownHostsFile", "VerifyHostKeyDNS"))
_SAFE_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@%+-]*")  # a host, user, serial: never a leading '-'
_SAFE_PATH = re.compile(r"[A-Za-z0-9._/~+-]+")  # a remote path or program that goes into a shell line
_SAFE_FLAG = re.compile(r"--[A-Za-z0-9_]+=[A-Za-z0-9._/:,+-]*")


def check_connection(runner: str, conn: dict, where: str = "connection") -> None:
    """Refuse any connection setting that could run a local command or inject into a command line.
    Called when a profile is read and again right before a runner builds its command."""
    def bad(key: str, why: str) -> ConfigError:
        return ConfigError(f"{where}.{key} {why}")

    def word(key: str, pattern=_SAFE_WORD) -> None:
        v = conn.get(key)
        if v is not None and (not isinstance(v, str) or not pattern.fullmatch(v)):
            raise bad(key, f"is {v!r}: use letters, digits and . _ - (no leading '-', no spaces or shell characters)")

    if runner == "ssh":
        word("host")
        word("user")
        word("workdir", _SAFE_PATH)
        word("python", _SAFE_PATH)
        word("trtexec", _SAFE_PATH)
        port = conn.get("port", 22)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise bad("port", f"is {port!r}: use an integer 1-65535")
        if conn.get("key") is not None and (not isinstance(conn["key"], str) or conn["key"].startswith("-")):
            raise bad("key", f"is {conn['key']!r}: use the path of a private key file")
        opts = conn.get("options", [])
        if not isinstance(opts, list):
            raise bad("options", "must be a list of \"Key=value\" strings")
        for o in opts:
            key = re.split(r"[=\s]", o.strip(), maxsplit=1)[0] if isinstance(o, str) else ""
            if not isinstance(o, str) or "\n" in o or key.lower() not in SSH_OPTIONS:
                raise bad("options", f"has {o!r}: ssh option {key or '?'} is not allowed (it can run local commands or "
                          f"widen access); allowed: {', '.join(sorted(SSH_OPTIONS))}")
    elif runner == "adb":
        word("serial")
        word("workdir", _SAFE_PATH)
        for key in ("adb", "benchmark_model"):
            v = conn.get(key)
            if v is not None and (not isinstance(v, str) or v.startswith("-") or "\n" in v):
                raise bad(key, f"is {v!r}: use a file path")
        flags = conn.get("extra_flags", [])
        if not isinstance(flags, list) or not all(isinstance(f, str) and _SAFE_FLAG.fullmatch(f) for f in flags):
            raise bad("extra_flags", f"is {flags!r}: use benchmark_model flags of the form --name=value")


def _run(cmd: list[str], timeout: float, hint: str) -> subprocess.CompletedProcess:
    """subprocess.run for a runner's tool: a missing program or a hang is one line, not a traceback."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise RunnerError(f"{cmd[0]} not found; {hint}") from None
    except subprocess.TimeoutExpired:
        raise RunnerError(f"{Path(cmd[0]).name} did not answer within {timeout:.0f} s; check the device") from None


def _ssh_opts(conn: dict, port_flag: str) -> list[str]:
    """The profile's own options come first: ssh keeps the first value it sees for an option."""
    cmd = [port_flag, str(conn.get("port", 22))]
    for o in conn.get("options", []):
        cmd += ["-o", o]
    cmd += ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new", "-o", "ConnectTimeout=15"]
    if conn.get("key"):
        cmd += ["-i", str(conn["key"])]
    return cmd


def _ssh_base(conn: dict) -> list[str]:
    return ["ssh"] + _ssh_opts(conn, "-p")


def run_ssh(artifact: str, profile, protocol: Protocol, threads: int) -> LatencyStats:
    conn = profile.connection
    check_connection("ssh", conn, f"{profile.name}: connection")  # again, right before a command is built
    target = f"{conn['user']}@{conn['host']}" if conn.get("user") else conn["host"]
    workdir = conn.get("workdir", "/tmp/edge-workbench")
    python = conn.get("python", "python3")
    name = Path(artifact).name
    job = {"path": f"{workdir}/{name}", "threads": threads, **protocol.job()}
    base = _ssh_base(conn)
    scp = ["scp", "-q"] + _ssh_opts(conn, "-P")
    with tempfile.TemporaryDirectory(prefix="wb-ssh-") as d:
        jp = Path(d) / "job.json"
        jp.write_text(json.dumps(job))
        steps = [
            base + [target, f"mkdir -p {shlex.quote(workdir)}"],
            scp + [str(AGENT), str(artifact), str(jp), f"{target}:{workdir}/"],
        ]
        for cmd in steps:
            r = _run(cmd, protocol.timeout_s, "install openssh-client")
            if r.returncode != 0:
                raise RunnerError(f"ssh to {target} failed ({r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}); "
                                  "check the profile's connection settings and that your key is authorized")
        r = _run(base + [target, f"cd {shlex.quote(workdir)} && {python} agent.py job.json"], protocol.timeout_s,
                 "install openssh-client")
        if r.returncode != 0:
            raise RunnerError(f"the agent failed on {target}: {(r.stderr.strip().splitlines() or ['?'])[-1]}; "
                              "it needs python3, numpy and ai-edge-litert / tflite-runtime or onnxruntime there")
    return summarize(_last_json(r.stdout), device=profile.name, runner="ssh", artifact=str(artifact))


# --- trtexec (TensorRT) over ssh ----------------------------------------------------------------

_TRT_STAT = re.compile(r"(min|max|mean|median|percentile\((\d+(?:\.\d+)?)%\))\s*=\s*([0-9.eE+-]+)\s*ms")
_TRT_LINES = {"Latency": "host_latency", "End-to-End Host Latency": "end_to_end", "Enqueue Time": "enqueue",
              "H2D Latency": "h2d", "GPU Compute Time": "gpu_compute", "D2H Latency": "d2h"}


def parse_trtexec(text: str) -> dict:
    """Parse trtexec's "=== Performance summary ===" (TensorRT 7 to 10) into milliseconds: for each
    of Latency (host: H2D + compute + D2H), End-to-End Host Latency, Enqueue Time, H2D Latency,
    GPU Compute Time and D2H Latency its min / max / mean / median and the percentiles it printed;
    throughput (qps) and the totals."""
    i = text.find("=== Performance summary ===")
    if i < 0:
        raise RunnerError("trtexec printed no performance summary (=== Performance summary ===); see its output")
    out: dict = {"metrics": {}}
    for line in text[i:].splitlines():
        body = re.sub(r"^\[[^]]*\]\s*\[\w\]\s*", "", line.strip())
        m = re.match(r"Throughput:\s*([0-9.eE+-]+)\s*qps", body)
        if m:
            out["throughput_qps"] = float(m.group(1))
            continue
        m = re.match(r"Total (Host Walltime|GPU Compute Time):\s*([0-9.eE+-]+)\s*s", body)
        if m:
            out["total_host_walltime_s" if m.group(1) == "Host Walltime" else "total_gpu_compute_s"] = float(m.group(2))
            continue
        name, _, rest = body.partition(":")
        key = _TRT_LINES.get(name.strip())
        if key and "=" in rest:
            stats = {}
            for label, pct, val in _TRT_STAT.findall(rest):
                stats[f"p{pct.rstrip('0').rstrip('.') if '.' in pct else pct}" if pct else label] = float(val)
            out["metrics"][key] = stats
        m = re.search(r"coefficient of variance = ([0-9.]+)%", body)
        if m:
            out["gpu_compute_cv_percent"] = float(m.group(1))
    if "host_latency" not in out["metrics"] and "gpu_compute" not in out["metrics"]:
        raise RunnerError("trtexec's performance summary has no Latency or GPU Compute Time line")
    return out


def trtexec_flags(precision: str, protocol: Protocol, onnx_name: str, int8_io: bool = False) -> list[str]:
    """trtexec's flags per precision: fp16 with --fp16; int8 from the explicitly quantized file as a
    strongly typed network (no --int8: the Q/DQ nodes decide, per TensorRT's guide); int8 I/O adds
    --inputIOFormats=int8:chw so the engine takes int8 input like the device app would feed it."""
    flags = [f"--onnx={onnx_name}", f"--warmUp={int(protocol.warmup_seconds * 1000)}",
             f"--duration={max(1, int(round(protocol.min_seconds)))}", f"--iterations={protocol.min_runs}",
             "--useSpinWait"]
    if precision == "fp16":
        flags.append("--fp16")
    elif precision == "int8":
        flags.append("--stronglyTyped")
        if int8_io:
            flags.append("--inputIOFormats=int8:chw")
    return flags


def trtexec_stats(parsed: dict, *, device: str, runner: str, artifact: str, runtime: str) -> LatencyStats:
    """A LatencyStats from parse_trtexec: the host latency (what an app waits for, H2D + compute +
    D2H) is the headline; GPU compute, H2D and D2H are kept beside it."""
    m = parsed["metrics"]
    lat = m.get("host_latency") or m.get("gpu_compute")
    runs = round(parsed["total_host_walltime_s"] * parsed["throughput_qps"]) if parsed.get("total_host_walltime_s") \
        and parsed.get("throughput_qps") else None
    return LatencyStats(device=device, runner=runner, threads=None, init_ms=None, first_ms=None,
                        mean_ms=lat.get("mean"), std_ms=None, min_ms=lat.get("min"), p50_ms=lat.get("median"),
                        p90_ms=lat.get("p90"), p99_ms=lat.get("p99"), max_ms=lat.get("max"), cv=None, runs=runs or 0,
                        peak_rss_mb=None, timed_scope="trtexec Latency: H2D + GPU compute + D2H per inference "
                        "(its own timer); GPU compute, H2D and D2H in basis", estimated=False, artifact=artifact,
                        runtime=runtime, basis={"trtexec": parsed},
                        warnings=[] if lat.get("p90") else ["trtexec printed no p90 (TensorRT < 10): p90 is null"])


def run_trtexec_ssh(artifact: str, profile, protocol: Protocol, precision: str, int8_io: bool = False) -> LatencyStats:
    """Copy the TensorRT-ready ONNX to the board over ssh, build and time the engine there with
    trtexec (the profile's connection.trtexec, default /usr/src/tensorrt/bin/trtexec on JetPack)."""
    conn = profile.connection
    check_connection("ssh", conn, f"{profile.name}: connection")
    trtexec = conn.get("trtexec", "/usr/src/tensorrt/bin/trtexec")
    if not isinstance(trtexec, str) or not _SAFE_PATH.fullmatch(trtexec):
        raise ConfigError(f"{profile.name}: connection.trtexec is {trtexec!r}: use a plain file path")
    target = f"{conn['user']}@{conn['host']}" if conn.get("user") else conn["host"]
    workdir = conn.get("workdir", "/tmp/edge-workbench")
    name = Path(artifact).name
    base = _ssh_base(conn)
    scp = ["scp", "-q"] + _ssh_opts(conn, "-P")
    for cmd in (base + [target, f"mkdir -p {shlex.quote(workdir)}"], scp + [str(artifact), f"{target}:{workdir}/"]):
        r = _run(cmd, protocol.timeout_s, "install openssh-client")
        if r.returncode != 0:
            raise RunnerError(f"ssh to {target} failed ({(r.stderr.strip().splitlines() or [str(r.returncode)])[-1]}); "
                              "check the profile's connection settings and that your key is authorized")
    flags = " ".join(shlex.quote(f) for f in trtexec_flags(precision, protocol, name, int8_io))
    r = _run(base + [target, f"cd {shlex.quote(workdir)} && {trtexec} {flags}"], protocol.timeout_s,
             "install openssh-client")
    if r.returncode != 0:
        raise RunnerError(f"trtexec failed on {target}: {(r.stdout + r.stderr).strip().splitlines()[-1:]} "
                          "(is TensorRT installed there? set connection.trtexec)")
    return trtexec_stats(parse_trtexec(r.stdout + "\n" + r.stderr), device=profile.name, runner="ssh+trtexec",
                         artifact=str(artifact), runtime=f"TensorRT trtexec ({precision})")


# --- adb + Android's benchmark_model -------------------------------------------------------

_NUM = r"([0-9.eE+-]+)"


def parse_benchmark_model(text: str) -> dict:
    """Parse TFLite benchmark_model output (times in microseconds) into milliseconds.

    Handles the formats seen in the wild: plain lines, ``INFO:`` prefixes, logcat ``I tflite :``
    prefixes, with or without the ``p5= median= p95=`` percentiles of newer versions, and the
    three memory lines different versions print."""
    out: dict = {}
    m = re.search(r"Replacing (\d+) out of (\d+) node\(s\) with delegate", text)
    if m:
        out["delegated_nodes"], out["total_nodes"] = int(m.group(1)), int(m.group(2))
    m = re.search(r"Initialized session in " + _NUM + r"\s*ms", text)
    if m:
        out["init_ms"] = float(m.group(1))
    blocks = []
    for line in text.splitlines():
        if "count=" not in line or "min=" not in line:
            continue  # the warm-up line of newer versions has no min/max
        fields = dict(re.findall(r"(\w+)=" + _NUM, line))
        if {"count", "min", "max", "avg", "std"} <= set(fields):
            blocks.append(fields)
    if blocks:
        f = blocks[-1]  # the last block is the timed one
        us = lambda k: float(f[k]) / 1e3  # noqa: E731
        out.update(runs=int(float(f["count"])), min_ms=us("min"), max_ms=us("max"), mean_ms=us("avg"), std_ms=us("std"))
        if "median" in f:
            out["p50_ms"] = us("median")
        if "p95" in f:
            out["p95_ms"] = us("p95")
    m = re.search(r"Inference timings in us: Init: " + _NUM + r", First inference: " + _NUM, text)
    if m:
        out["init_ms"] = float(m.group(1)) / 1e3
        out["first_ms"] = float(m.group(2)) / 1e3
    for pattern in (r"Overall peak memory footprint \(MB\) via periodic monitoring: " + _NUM,
                    r"Peak memory footprint \(MB\): init=" + _NUM + r" overall=" + _NUM,
                    r"Memory footprint delta from the start of the tool \(MB\): init=" + _NUM + r" overall=" + _NUM):
        m = re.search(pattern, text)
        if m:
            out["peak_rss_mb"] = float(m.groups()[-1])
            out["memory_line"] = m.group(0)
            break
    if "runs" not in out:
        raise RunnerError("benchmark_model printed no timing block (count=... avg=...); see its output")
    return out


ADB_SUFFIXES = (".tflite",)  # what benchmark_model loads


def run_adb(artifact: str, profile, protocol: Protocol, threads: int) -> LatencyStats:
    conn = profile.connection
    check_connection("adb", conn, f"{profile.name}: connection")
    adb = [conn.get("adb", "adb")] + (["-s", conn["serial"]] if conn.get("serial") else [])
    bm = Path(conn["benchmark_model"])
    if not bm.exists():
        raise ConfigError(f"{profile.name}: benchmark_model not found at {bm}; download Android's prebuilt "
                          "TFLite benchmark_model and set connection.benchmark_model")
    wd = conn.get("workdir", "/data/local/tmp/edge-workbench")
    name = Path(artifact).name
    flags = [f"--graph={wd}/{name}", f"--num_threads={threads}", f"--warmup_runs={protocol.warmup}",
             f"--num_runs={protocol.min_runs}", f"--min_secs={protocol.min_seconds}",
             f"--use_gpu={'true' if conn.get('use_gpu') else 'false'}",
             f"--use_xnnpack={'true' if conn.get('use_xnnpack', not conn.get('use_gpu')) else 'false'}"]
    flags += list(conn.get("extra_flags", []))
    steps = [adb + ["shell", f"mkdir -p {wd}"], adb + ["push", str(artifact), f"{wd}/{name}"],
             adb + ["push", str(bm), f"{wd}/benchmark_model"], adb + ["shell", f"chmod +x {wd}/benchmark_model"]]
    for cmd in steps:
        r = _run(cmd, protocol.timeout_s, "install Android platform-tools or set connection.adb in the profile")
        if r.returncode != 0:
            raise RunnerError(f"adb failed ({' '.join(cmd[:3])}...): {(r.stderr or r.stdout).strip()[-200:]}; "
                              "is the phone connected (adb devices) and authorized?")
    r = subprocess.run(adb + ["shell", " ".join([f"{wd}/benchmark_model"] + flags)], capture_output=True, text=True,
                       timeout=protocol.timeout_s)
    if r.returncode != 0:
        raise RunnerError(f"benchmark_model failed on the device: {(r.stderr or r.stdout).strip()[-300:]}")
    parsed = parse_benchmark_model(r.stdout + "\n" + r.stderr)
    mean = parsed.get("mean_ms")
    return LatencyStats(device=profile.name, runner="adb", threads=threads, init_ms=parsed.get("init_ms"),
                        first_ms=parsed.get("first_ms"), mean_ms=mean, std_ms=parsed.get("std_ms"),
                        min_ms=parsed.get("min_ms"), p50_ms=parsed.get("p50_ms"), p90_ms=parsed.get("p90_ms"),
                        p99_ms=parsed.get("p99_ms"), max_ms=parsed.get("max_ms"),
                        cv=(parsed["std_ms"] / mean) if mean and parsed.get("std_ms") is not None else None,
                        runs=parsed["runs"], peak_rss_mb=parsed.get("peak_rss_mb"),
                        timed_scope="benchmark_model: interpreter invoke per run (its own timer)", estimated=False,
                        artifact=str(artifact), runtime="TFLite benchmark_model" + (" + GPU delegate" if conn.get("use_gpu") else ""),
                        basis={k: parsed[k] for k in ("delegated_nodes", "total_nodes") if k in parsed} or None,
                        warnings=([] if parsed.get("p50_ms") else ["benchmark_model reports no percentiles: p50/p90/p99 are null"]))


def reach_device(profile, timeout_s: float = 15.0) -> dict:
    """Is this device reachable now? One bounded command over the profile's own connection: ssh runs
    ``echo`` (and the profile's python, which the agent needs); adb asks for the device's state.
    Never raises for an unreachable device: returns {"ok", "message", "seconds"}."""
    import time as _time

    t0 = _time.perf_counter()
    conn = profile.connection
    try:
        if profile.runner in ("local", "estimate"):
            msg = "this machine" if profile.runner == "local" else "estimate only: nothing to reach"
            return {"ok": True, "message": msg, "seconds": 0.0}
        check_connection(profile.runner, conn, f"{profile.name}: connection")
        if profile.runner == "ssh":
            target = f"{conn['user']}@{conn['host']}" if conn.get("user") else conn["host"]
            python = conn.get("python", "python3")
            opts = [x.replace("ConnectTimeout=15", f"ConnectTimeout={max(1, int(timeout_s))}") for x in _ssh_base(conn)]
            r = _run(opts + [target, f"{python} -c 'import sys; print(sys.version.split()[0])'"], timeout_s,
                     "install openssh-client")
            if r.returncode != 0:
                tail = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
                return {"ok": False, "message": f"ssh to {target} failed: {tail}", "seconds": _time.perf_counter() - t0}
            return {"ok": True, "message": f"reached {target}; {python} {r.stdout.strip()}",
                    "seconds": _time.perf_counter() - t0}
        adb = [conn.get("adb", "adb")] + (["-s", conn["serial"]] if conn.get("serial") else [])
        r = _run(adb + ["get-state"], timeout_s, "install Android platform-tools or set connection.adb in the profile")
        ok = r.returncode == 0 and r.stdout.strip() == "device"
        return {"ok": ok, "message": (f"adb: {r.stdout.strip()}" if ok else
                                      f"adb: {(r.stderr or r.stdout).strip()[-200:] or 'no device'}; is the phone connected and authorized?"),
                "seconds": _time.perf_counter() - t0}
    except (RunnerError, ConfigError) as e:
        return {"ok": False, "message": str(e), "seconds": _time.perf_counter() - t0}
