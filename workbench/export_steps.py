"""One artifact's export: the format's worker stages, then a run here and the fidelity gate.

Every stage is a process of its own (``exporters.worker``): a crash, a hang or an out-of-memory
conversion becomes a failed row and the other formats go on.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from exporters.base import Format
from exporters.provenance import sha256_path, size_bytes
from exporters.records import ArtifactRecord, ConvertJob, ConvertResult, FailureKind, ModelRef, Status

from .artifact_run import ArtifactRunError, run_artifact
from .proc import ProcResult, run_isolated, worker_env


@dataclass
class ArtifactContext:
    """What every artifact of one model's export shares."""

    model: ModelRef
    producer_version: str
    out: Path
    work: Path
    cache: Path
    opts: object  # ExportOptions
    format_options: dict
    reference: list
    task: str
    priors: object
    gates: dict
    trained: bool


def _oom_reason(reason: str | None, memory_limit_mb: int | None) -> str:
    cap = f"memory limit {memory_limit_mb} MB; raise --memory-limit" if memory_limit_mb else "free memory"
    return f"out of memory during the conversion ({cap}): {reason}"[:500]


def _failed(rec: ArtifactRecord, res: ConvertResult | None, pr: ProcResult, ctx: ArtifactContext, prefix: str = "") -> ArtifactRecord:
    """A stage that failed, crashed, hung or ran out of memory, as the row's typed reason."""
    rec.status = Status.FAILED
    if res is None or pr.timed_out:
        rec.failure = FailureKind.TIMEOUT if pr.timed_out else (
            FailureKind.OUT_OF_MEMORY if pr.out_of_memory else FailureKind.CRASH)
        rec.reason = prefix + (pr.describe_failure() if (pr.timed_out or pr.crashed) else "worker wrote no result")
        return rec
    rec.failure = res.failure or FailureKind.ERROR
    # a stage that answered "failed" with its own words (no exception) keeps them as they are
    reason = (prefix if res.failure is not None else "") + (res.reason or "failed")
    rec.reason = _oom_reason(reason, ctx.opts.memory_limit_mb) if rec.failure == FailureKind.OUT_OF_MEMORY else reason
    return rec


def _stage(ctx: ArtifactContext, job: ConvertJob, tag: str, rec: ArtifactRecord) -> tuple[ProcResult, ConvertResult | None]:
    result_path = ctx.work / f"{tag}.{job.mode}.json"
    result_path.unlink(missing_ok=True)
    job = dataclasses.replace(job, result_path=str(result_path))
    job_file = ctx.work / f"{tag}.{job.mode}.job.json"
    job_file.write_text(json.dumps(job.to_dict()))
    pr = run_isolated([sys.executable, "-m", "exporters.worker", str(job_file)], timeout=ctx.opts.timeout_s,
                      log_path=ctx.work / f"{tag}.{job.mode}.log", env=worker_env(),
                      memory_limit_mb=ctx.opts.memory_limit_mb)
    rec.stages.append({"stage": job.mode, "seconds": round(pr.seconds, 2), "peak_rss_mb": round(pr.peak_rss_mb, 1)})
    rec.export_seconds = round(sum(s["seconds"] for s in rec.stages), 2)
    rec.peak_rss_mb = max(s["peak_rss_mb"] for s in rec.stages)
    return pr, _read_result(result_path)


def export_one(ctx: ArtifactContext, fmt: Format, rec: ArtifactRecord) -> ArtifactRecord:
    path = ctx.out / f"{rec.model}_{rec.precision}{fmt.suffix}"
    tag = f"{fmt.name}-{rec.precision}"
    job = ConvertJob(mode="convert", format=fmt.name, precision=rec.precision, out_path=str(path),
                     work_dir=str(ctx.cache), result_path="", model=ctx.model, producer_version=ctx.producer_version,
                     calib=str(ctx.work / "calib.npy"), threads=ctx.opts.threads, options=dict(ctx.format_options))
    options, chose = fmt.artifact_options(job.options, ctx.model.info, rec.precision)
    job = dataclasses.replace(job, options=options)
    if chose:
        rec.notes.append(chose)
    for mode in fmt.stages(job.options):
        pr, res = _stage(ctx, dataclasses.replace(job, mode=mode), tag, rec)
        if res is None or pr.timed_out or res.status == Status.FAILED:
            prefix = "building the TensorFlow graph failed: " if mode == "prepare" else ""
            return _failed(rec, res, pr, ctx, prefix)
        if res.status == Status.UNSUPPORTED and "fallback_options" in res.extra:  # the format's own fallback
            job = dataclasses.replace(job, options={**job.options, **res.extra["fallback_options"]})
            rec.notes.append(res.reason)
        elif res.status in (Status.SKIPPED, Status.UNSUPPORTED):
            rec.status, rec.reason = res.status, res.reason
            return rec
        if res.extra.get("cached"):
            rec.stages.pop()  # shared with an earlier precision; its cost is on that row
        if mode == "convert":
            rec.route, rec.notes = res.route, rec.notes + list(res.notes)
            rec.validation = res.extra.get("validation")
            rec.engine = res.extra.get("engine")
    rec.path, rec.sha256, rec.size_bytes = str(path), sha256_path(path), size_bytes(path)
    rec.status = Status.OK
    if not fmt.runs_here:
        why = f"not runnable on this host ({fmt.capability.not_runnable_reason})"
        rec.fidelity = {"status": why}
        rec.gate = {"passed": None, "checks": {}, "reason": f"{why}; validated by spec reload and weight SNR instead"}
        return rec
    return check_fidelity(ctx, fmt, rec, job, tag)


def check_fidelity(ctx: ArtifactContext, fmt: Format, rec: ArtifactRecord, job: ConvertJob, tag: str) -> ArtifactRecord:
    """Run the artifact here (its own process) on the fidelity inputs and gate it against PyTorch."""
    from .fidelity import apply_gate, compare

    try:
        got, extra = run_artifact(rec.path, fmt.name, np.load(ctx.work / "fidelity_inputs.npy"), options=job.options,
                                  threads=job.threads, timeout_s=ctx.opts.timeout_s, work=ctx.work, tag=tag)
    except ArtifactRunError as e:
        rec.status, rec.failure, rec.reason = Status.FAILED, e.kind, f"artifact could not run here: {e}"
        return rec
    rec.gpu_delegate = extra.get("gpu_delegate")
    rec.runtime_compat = extra.get("runtime_compat")
    try:
        rec.fidelity = compare(ctx.reference, got, ctx.task, ctx.priors)
    except ValueError as e:
        rec.status, rec.reason = Status.FAILED, f"outputs do not match PyTorch's layout: {e}"
        return rec
    gate = apply_gate(rec.precision, rec.fidelity, ctx.gates, ctx.trained)
    rec.gate = gate.to_dict()
    if gate.passed is False:
        rec.status, rec.reason = Status.FAILED, f"fidelity gate missed: {gate.reason}"
    if "gpu" in fmt.capability.accelerators:
        rec.gpu = check_gpu(ctx, fmt, rec, job, tag, got)
    return rec


def check_gpu(ctx: ArtifactContext, fmt: Format, rec: ArtifactRecord, job: ConvertJob, tag: str, cpu_out: list) -> dict:
    """The artifact on the format's GPU accelerator (its own process, its own timeout): placement,
    device, fidelity against PyTorch and against the CPU run of the same file, and the time. A GPU
    that is missing, refuses the file, crashes or hangs gives a GPU row saying so; the artifact's
    own status (its CPU fidelity) is not touched."""
    from .fidelity import compare, gpu_gate, gpu_rule_agreement

    rules = rec.gpu_delegate
    try:
        got, extra = run_artifact(rec.path, fmt.name, np.load(ctx.work / "fidelity_inputs.npy"), options=job.options,
                                  threads=job.threads, timeout_s=ctx.opts.timeout_s, work=ctx.work, tag=f"{tag}-gpu",
                                  accelerator="gpu")
    except ArtifactRunError as e:
        status = "not available" if e.status == Status.SKIPPED else "failed"
        return {"status": status, "reason": str(e).split(": ", 1)[-1] if status == "not available" else str(e),
                "failure": e.kind.value if status == "failed" else None, "fully_accelerated": None,
                "rules_agree": None}
    run = dict(extra.get("accelerator_run") or {})
    try:
        run["fidelity"] = compare(ctx.reference, got, ctx.task, ctx.priors)
        run["vs_cpu"] = compare(cpu_out, got, ctx.task, ctx.priors)
    except ValueError as e:
        return {**run, "status": "failed", "reason": f"GPU outputs do not match PyTorch's layout: {e}"}
    run["gate"] = gpu_gate(rec.precision, run["fidelity"], ctx.trained, rec.fidelity)
    run["gate_source"] = "workbench.fidelity.GPU_GATES (fp16 arithmetic; quantized files as on the CPU)"
    run.update(gpu_rule_agreement(rules, run))
    if run["gate"]["passed"] is False:
        why = f"GPU fidelity gate missed: {run['gate']['reason']}"
        if run.get("shader_errors"):  # e.g. llvmpipe's 128 MiB storage-buffer binding limit: zeros out, no error
            why += f"; the Vulkan device reported: {run['shader_errors'][0]}"
        peak = run["fidelity"].get("max_abs_output") or 0.0
        if 0 < peak < FP16_MIN_NORMAL:
            why += (f"; the model's outputs (max |output| {peak:.2g}) are below fp16's normal range, which the GPU's "
                    "fp16 arithmetic flushes: judge it on trained weights")
        run["status"], run["reason"] = "gate missed", why
    return run


FP16_MIN_NORMAL = 6.104e-05


def _read_result(path: Path) -> ConvertResult | None:
    if not path.exists():
        return None
    try:
        return ConvertResult.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError):
        return None
