#!/usr/bin/env python3
"""Latency agent: a standalone script (numpy + one runtime) that measures one model file.

It runs here in a fresh process for the ``local`` runner and is copied to a board for the
``ssh`` runner, so it imports nothing from the workbench. Usage: ``agent.py JOB.json``; it
prints one JSON object on the last line of stdout.

Protocol: load (init time), one first inference, at least ``warmup`` runs and
``warmup_seconds`` of warm-up, then timed runs until both
``min_runs`` and ``min_seconds`` are reached; the timed block is repeated ``repeats`` times.
What the timer covers is stated in ``timed_scope``.
"""
import json
import os
import platform
import sys
import time


def _pin(threads):
    if hasattr(os, "sched_setaffinity") and threads:
        cpus = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cpus[: max(1, min(threads, len(cpus)))])
        return sorted(os.sched_getaffinity(0))
    return None


def _vmhwm_mb():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except Exception:
        return None


def _litert(path, threads, nchw):
    import numpy as np

    try:
        from ai_edge_litert.interpreter import Interpreter
        rt = "ai_edge_litert"
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
            rt = "tflite_runtime"
        except ImportError:
            import tensorflow as tf
            Interpreter = tf.lite.Interpreter
            rt = "tensorflow.lite"
    it = Interpreter(model_path=path, num_threads=threads)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    x = np.random.default_rng(0).standard_normal(d["shape"]).astype(np.float32)
    if d["dtype"] != np.float32:
        x = np.clip(np.round(x * 20), -128, 127).astype(d["dtype"])
    it.set_tensor(d["index"], x)

    def step():
        it.invoke()

    return step, rt, "interpreter.invoke() only (input set once before timing; no pre/post-processing)"


def _onnx(path, threads, nchw):
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    i = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
    feed = {i.name: x}

    def step():
        sess.run(None, feed)

    return step, f"onnxruntime {ort.__version__}", "session.run() (includes input binding and output copy; no pre/post-processing)"


def _torch(path, threads, nchw):
    import torch

    torch.set_num_threads(threads)
    job = json.loads(open(path).read())  # a small spec: the workbench builds the model
    sys.path.insert(0, job["project_root"])
    from workbench.core import load_model

    m = load_model(job["model"], weights=job.get("weights"), num_classes=job.get("num_classes"),
                   input_size=job.get("input_size"))
    if job.get("deploy"):
        from workbench.reparam import reparameterize_model
        m = reparameterize_model(m, inplace=True)
    m.eval()
    s = m.model_info.input_size
    x = torch.randn(1, 3, s, s)

    def step():
        with torch.no_grad():
            m(x)

    return step, f"pytorch {torch.__version__} eager", "model(x) under no_grad (eager; no pre/post-processing)"


RUNTIMES = {".tflite": _litert, ".onnx": _onnx, ".torchjob": _torch}


# --- interference: what else ran on the measured cores while the timer ran ----------------------

def _cpu_busy(cpus):
    """Busy seconds so far of the given cores (from /proc/stat; None where it cannot be read)."""
    if not cpus:
        return None
    try:
        hz = os.sysconf("SC_CLK_TCK")
        busy = 0
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith("cpu") and line[3:4].isdigit():
                    name, *vals = line.split()
                    if int(name[3:]) in cpus:
                        v = [int(x) for x in vals]
                        busy += sum(v) - v[3] - (v[4] if len(v) > 4 else 0)  # all but idle and iowait
        return busy / hz
    except (OSError, ValueError):
        return None


def _self_cpu():
    t = os.times()
    return t.user + t.system


PROBE_N = 96


def probe_ms():
    """The same small kernel every time (pure Python, one core): its time shows CPU contention that
    the model's own timings cannot separate from the model. Median of 7 runs, milliseconds."""
    times = []
    for _ in range(7):
        t = time.perf_counter()
        acc = 0
        for i in range(PROBE_N * 1000):
            acc += i * i
        times.append((time.perf_counter() - t) * 1e3)
    return sorted(times)[3]


class Window:
    """One timed window: wall time, this process's CPU time and the pinned cores' busy time."""

    def __init__(self, cpus):
        self.cpus = cpus

    def __enter__(self):
        self.t0, self.self0, self.busy0 = time.perf_counter(), _self_cpu(), _cpu_busy(self.cpus)
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        own = _self_cpu() - self.self0
        busy1 = _cpu_busy(self.cpus)
        others = None if busy1 is None or self.busy0 is None else max(0.0, (busy1 - self.busy0) - own)
        self.figures = {"wall_s": wall, "self_cpu_s": own, "others_cpu_s": others,
                        "others_share": None if others is None or not self.cpus else others / (wall * len(self.cpus))}
        return False


def measure(job):
    path, threads = job["path"], int(job.get("threads", 1))
    cpus = _pin(threads)
    ext = os.path.splitext(path)[1]
    if ext not in RUNTIMES:
        raise SystemExit(f"unsupported model file {path}")
    t0 = time.perf_counter()
    step, runtime, scope = RUNTIMES[ext](path, threads, job.get("nchw", False))
    init_ms = (time.perf_counter() - t0) * 1e3
    t = time.perf_counter()
    step()
    first_ms = (time.perf_counter() - t) * 1e3
    warm_until = time.perf_counter() + float(job.get("warmup_seconds", 1.0))
    n = 0
    while n < int(job.get("warmup", 10)) or time.perf_counter() < warm_until:  # caches, clocks, thread pools
        step()
        n += 1
    repeats, windows = [], []
    min_runs, min_s = int(job.get("min_runs", 50)), float(job.get("min_seconds", 2.0))
    max_runs = int(job.get("max_runs", 100000))
    probe_before = probe_ms()
    for _ in range(int(job.get("repeats", 3))):
        times = []
        with Window(cpus) as w:
            start = time.perf_counter()
            while (len(times) < min_runs or time.perf_counter() - start < min_s) and len(times) < max_runs:
                t = time.perf_counter()
                step()
                times.append((time.perf_counter() - t) * 1e3)
        repeats.append(times)
        windows.append(w.figures)
    probe_after = probe_ms()
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {"runtime": runtime, "timed_scope": scope, "init_ms": init_ms, "first_ms": first_ms,
            "repeats": repeats, "threads": threads, "cpus": cpus, "peak_rss_mb": _vmhwm_mb(),
            "host": platform.node(), "machine": platform.machine(), "python": platform.python_version(),
            "interference": {"windows": windows, "loadavg": load, "pinned_cores": cpus,
                             "probe_ms": [probe_before, probe_after]}}


def main():
    job = json.loads(open(sys.argv[1]).read())
    print(json.dumps(measure(job)))


if __name__ == "__main__":
    main()
