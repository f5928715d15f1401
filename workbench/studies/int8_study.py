"""The INT8 study for a trained RepVGG (``workbench optimize MODEL --weights W --quant-study DIR``):
how much accuracy plain post-training INT8 loses, which layers cause it, and whether the fixes
bring it back, measured side by side on the same data with the real exported files.

Variants (each exported to ONNX QDQ and TFLite full-integer and evaluated in ONNX Runtime / LiteRT):
1. PTQ: the model as trained, per-channel INT8, min/max calibration;
2. PTQ keeping the first and last layers and the N most sensitive layers in float;
3. QAT: quantization-aware fine-tuning of the deploy model, then the same PTQ export;
4. QARepVGG: the quantization-friendly block variant, trained with the same recipe (given as
   weights, or trained here when ``qa_epochs`` is set), then PTQ.
The gap of every INT8 file is stated against the float PyTorch model it came from and against
the original model's float accuracy; a fix "holds" when the INT8 file is within 1 percentage point.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from exporters import get_format

from ..errors import ConfigError


def _eval_export(name: str, weights: str, out: Path, data: str, limit: int | None, *, precisions, formats, quant=None,
                 calib_count: int = 64, input_size: int | None = None) -> list[dict]:
    """Export one variant and score every runnable file, through the executor (no latency cells)."""
    from ..executor import Plan, execute

    # the study scores every INT8 file itself, so the export's agreement gate does not drop any
    plan = Plan(name=out.name, models=[{"name": name, "weights": weights, "input_size": input_size}],
                formats=list(formats), precisions=list(precisions), devices=[], reparam=[True],
                data={"evaluation": data, "eval_limit": limit, "calib_count": calib_count},
                quantization=dict(quant or {}), gates={"int8": {}, "int16x8": {}})
    run = execute(plan, out, cache=out / "cache", write_report=False)["run"]
    rows = [{"runtime": r["runtime"], "format": r.get("format", "pytorch"), "precision": r.get("precision", "fp32"),
             "top1": r["top1"], "top1_ci95": r["top1_ci95"], "images": r["images"],
             "agreement_vs_pytorch": (r.get("vs_pytorch") or {}).get("agreement")}
            for r in run["accuracy"] if "top1" in r]
    rows += [{"runtime": "-", "format": a["format"], "precision": a["precision"], "status": "failed",
              "reason": a["reason"]} for a in run["artifacts"] if a["status"] == "failed"]
    return rows


def quant_study(name: str, weights: str, out_dir: str | os.PathLike, *, data: str = "builtin", eval_limit: int | None = 500,
                input_size: int | None = None, keep_worst: int = 2, qat_epochs: int = 2, qa_model: str | None = None,
                qa_weights: str | None = None, qa_epochs: int = 0, formats=("onnx", "tflite"), say=None) -> dict:
    from ..core import load_model
    from ..fsutil import atomic_write_json, atomic_write_text
    from ..optimize.pipeline import optimize_model
    from ..optimize.quant import sensitivity_on_data

    say = say or (lambda m: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(name, weights=weights, input_size=input_size)
    if model.model_info.task != "classification":
        raise ConfigError("the INT8 study scores top-1: use a classification model (detection models: workbench eval)")
    size = model.model_info.input_size
    say("per-layer sensitivity (simulated INT8, one layer at a time)")
    sens = sensitivity_on_data(model, data, eval_limit=eval_limit)
    variants = []

    def add(label: str, rows: list[dict], fp32_ref: float | None, note: str = "") -> None:
        variants.append({"variant": label, "rows": rows, "note": note, "fp32_reference_top1": fp32_ref})

    say("PTQ INT8 of the model as trained")
    base = _eval_export(name, weights, out / "ptq", data, eval_limit, precisions=("fp32", "int8"), formats=formats,
                        input_size=size)
    fp32 = next(r["top1"] for r in base if r["runtime"] == "pytorch")
    add("PTQ (per-channel, min/max)", base, fp32)
    say(f"PTQ keeping first, last and the {keep_worst} most sensitive layers in float")
    keep = _eval_export(name, weights, out / "ptq-keep", data, eval_limit, precisions=("int8",),
                        formats=[f for f in formats if get_format(f).has_option("keep_float")],
                        quant={"keep_float": ["first", "last"], "keep_worst": keep_worst}, input_size=size)
    add(f"PTQ, float first/last + {keep_worst} worst layers", keep, fp32)
    if qat_epochs:
        say(f"QAT, {qat_epochs} epochs")
        rep = optimize_model(name, {"qat_epochs": qat_epochs, "data": data}, out=out / "qat" / f"{name}-qat.safetensors",
                             weights=weights, input_size=size)
        rows = _eval_export(name, rep["out"], out / "qat" / "export", data, eval_limit, precisions=("fp32", "int8"),
                            formats=formats, input_size=size)
        add(f"QAT ({qat_epochs} epochs) then PTQ", rows, fp32)
    if qa_model:
        if not qa_weights and qa_epochs:
            from ..train import TrainConfig, train

            # the same recipe as the original when its training record is next to the weights
            rec = Path(str(weights) + ".json")
            cfg = json.loads(rec.read_text()).get("config", {}) if rec.exists() else {}
            cfg = {k: v for k, v in cfg.items() if k in TrainConfig.__dataclass_fields__}
            cfg["epochs"] = qa_epochs
            say(f"training {qa_model} for {qa_epochs} epochs (same data{', same recipe' if rec.exists() else ''})")
            qa_weights = str(out / "qarepvgg" / f"{qa_model}.pth")
            train(qa_model, data, out=qa_weights, input_size=size, num_classes=model.model_info.num_classes,
                  config=TrainConfig(**cfg))
        if qa_weights:
            say(f"PTQ INT8 of {qa_model}")
            rows = _eval_export(qa_model, qa_weights, out / "qarepvgg" / "export", data, eval_limit,
                                precisions=("fp32", "int8"), formats=formats, input_size=size)
            qa_fp32 = next(r["top1"] for r in rows if r["runtime"] == "pytorch")
            add(f"{qa_model} (QARepVGG block) then PTQ", rows, qa_fp32,
                note=f"its own float top-1 {qa_fp32:.3f} vs {fp32:.3f} for {name}")
    for v in variants:
        for r in v["rows"]:
            if "top1" in r and r["precision"] != "fp32":
                r["gap_pp"] = 100 * (r["top1"] - v["fp32_reference_top1"])
                r["gap_vs_original_pp"] = 100 * (r["top1"] - fp32)
                r["within_1pp"] = r["gap_pp"] >= -1.0 - 1e-9 and r["gap_vs_original_pp"] >= -1.0 - 1e-9
    ptq_rows = [r for r in variants[0]["rows"] if r.get("precision") == "int8" and "top1" in r]
    worst_ptq = min((r["gap_pp"] for r in ptq_rows), default=None)
    fixes = [(v["variant"], r) for v in variants[1:] for r in v["rows"] if r.get("within_1pp")]
    verdict = (f"plain PTQ INT8 loses {-worst_ptq:.1f} pp at worst; " if worst_ptq is not None else "") + (
        f"{len(fixes)} fixed INT8 file(s) within 1 pp of float (best: {fixes[0][0]}, {fixes[0][1]['format']})"
        if fixes else "no fix brought INT8 within 1 pp of float")
    if worst_ptq is not None and worst_ptq >= -1.0:
        verdict += ("; note: plain PTQ is already within 1 pp on this data, so the fixes have little to recover "
                    "here (the large RepVGG INT8 loss is reported on ImageNet-scale training)")
    study = {"model": name, "weights": weights, "data": sens["data"], "input_size": size, "fp32_top1": fp32,
             "sensitivity": sens, "variants": variants, "verdict": verdict}
    atomic_write_json(out / "study.json", study)
    atomic_write_text(out / "study.md", study_markdown(study))
    return study


def _ci(r: dict) -> str:
    lo, hi = r["top1_ci95"]
    return f"{r['top1']:.3f} [{lo:.3f}, {hi:.3f}]"


def study_markdown(s: dict) -> str:
    L = [f"# INT8 study: {s['model']}", "",
         f"Weights `{s['weights']}`, input {s['input_size']} px; evaluation: {s['data']['source']}, "
         f"{s['data']['images']} images (split {s['data']['split']}). Top-1 with Wilson 95% intervals.", "",
         f"**Verdict:** {s['verdict']}", "", "## Accuracy by variant", "",
         "| variant | runtime | format | precision | top-1 [95% CI] | gap vs its float (pp) | gap vs original float (pp) | within 1 pp |",
         "|---|---|---|---|---|---|---|---|"]
    for v in s["variants"]:
        for r in v["rows"]:
            if "top1" not in r:
                L.append(f"| {v['variant']} | - | {r['format']} | {r['precision']} | failed: {r.get('reason', '')[:80]} | | | |")
                continue
            gap = f"{r['gap_pp']:+.1f}" if "gap_pp" in r else ""
            gap_o = f"{r['gap_vs_original_pp']:+.1f}" if "gap_vs_original_pp" in r else ""
            ok = {True: "yes", False: "no"}.get(r.get("within_1pp"), "")
            L.append(f"| {v['variant']} | {r['runtime']} | {r['format']} | {r['precision']} | {_ci(r)} | {gap} | {gap_o} | {ok} |")
        if v["note"]:
            L.append(f"| *{v['note']}* | | | | | | | |")
    sens = s["sensitivity"]
    L += ["", "## Per-layer sensitivity (deploy model, simulated INT8 one layer at a time)", "",
          f"Weights {'per-channel' if sens['per_channel'] else 'per-tensor'} symmetric INT8, input activations "
          f"asymmetric 8-bit ({sens['calib_method']} over {sens['calib_images']} calibration images); output compared "
          f"with float on {sens['eval_images']} evaluation images. Worst first.", "",
          "| layer | SQNR (dB) | top-1 agreement | top-1 | weight max/std | activation range |", "|---|---|---|---|---|---|"]
    for r in sens["layers"]:
        L.append(f"| {r['layer']} | {r['sqnr_db']:.1f} | {r.get('top1_agreement', float('nan')):.3f} | "
                 f"{r.get('top1', float('nan')):.3f} | {r['weight_absmax_over_std']:.1f} | "
                 f"[{r['act_range'][0]:.2f}, {r['act_range'][1]:.2f}] |")
    a = sens["all_layers"]
    L.append(f"| (all layers) | {a['sqnr_db']:.1f} | {a.get('top1_agreement', float('nan')):.3f} | {a.get('top1', float('nan')):.3f} | | |")
    return "\n".join(L) + "\n"


def load_study(path: str | os.PathLike) -> dict:
    return json.loads((Path(path) / "study.json").read_text())
