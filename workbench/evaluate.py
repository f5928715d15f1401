"""Task accuracy on labelled data, for PyTorch and for every artifact runnable here.

Classification: top-1 / top-5 with a 95% Wilson interval and the number of images.
Detection: mAP@0.5 and mAP@[.5:.95] from pycocotools' COCOeval (the maintained reference
implementation; 101-point interpolation for both). Artifacts are scored on the same images as
PyTorch, with paired agreement (how many predictions changed).
"""
from __future__ import annotations

import math

import numpy as np
import torch


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    if n == 0:
        return (0.0, 0.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
    n = len(labels)
    top1 = logits.argmax(1) == labels
    k = min(5, logits.shape[1])
    top5 = (np.argsort(-logits, 1)[:, :k] == labels[:, None]).any(1)
    return {"images": n, "top1": float(top1.mean()), "top1_ci95": wilson_interval(int(top1.sum()), n),
            "top5": float(top5.mean()), "top5_ci95": wilson_interval(int(top5.sum()), n),
            "top5_k": k}


def detection_metrics(loc: np.ndarray, conf: np.ndarray, targets: list[dict], priors: np.ndarray, size: int) -> dict:
    """COCO-style evaluation of decoded detections against ground-truth boxes."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from .detection import postprocess

    num_classes = conf.shape[-1]
    gt = {"images": [], "annotations": [], "categories": [{"id": c} for c in range(1, num_classes)]}
    dets = []
    ann_id = 1
    for i, t in enumerate(targets):
        gt["images"].append({"id": i, "width": size, "height": size})
        for b, lab in zip(t["boxes"] * size, t["labels"]):
            w, h = float(b[2] - b[0]), float(b[3] - b[1])
            gt["annotations"].append({"id": ann_id, "image_id": i, "category_id": int(lab), "bbox": [float(b[0]), float(b[1]), w, h],
                                      "area": w * h, "iscrowd": 0})
            ann_id += 1
        d = postprocess(loc[i], conf[i], priors)
        for b, s, lab in zip(d.boxes * size, d.scores, d.labels):
            dets.append({"image_id": i, "category_id": int(lab), "score": float(s),
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    if not dets:
        return {"images": len(targets), "map50": 0.0, "map50_95": 0.0, "detections": 0,
                "note": "no detections above the score threshold"}
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        res = coco.loadRes(dets)
        ev = COCOeval(coco, res, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"images": len(targets), "map50_95": float(max(ev.stats[0], 0.0)), "map50": float(max(ev.stats[1], 0.0)),
            "detections": len(dets), "implementation": "pycocotools COCOeval (101-point interpolation)"}


@torch.no_grad()
def torch_outputs(model: torch.nn.Module, x: np.ndarray, batch: int = 32) -> list[np.ndarray]:
    model.eval()
    outs = []
    for i in range(0, len(x), batch):
        y = model(torch.from_numpy(x[i:i + batch]))
        y = y["main"] if isinstance(y, dict) else y
        outs.append([t.numpy() for t in (y if isinstance(y, tuple) else (y,))])
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def _load_eval(model_task: str, data: str, size: int, limit: int | None):
    from .data.datasets import load_classification, load_detection

    return (load_detection if model_task == "detection" else load_classification)(data, "eval", size, limit)


def score(task: str, outputs: list[np.ndarray], ds, priors=None, size: int | None = None) -> dict:
    if task == "detection":
        return detection_metrics(outputs[0], outputs[1], ds.targets, priors, size)
    return classification_metrics(outputs[0], ds.labels)


def evaluate_torch(model: torch.nn.Module, data: str, limit: int | None = None) -> dict:
    from .data.preprocess import for_model

    size, task = model.model_info.input_size, model.model_info.task
    ds = _load_eval(task, data, size, limit)
    outs = torch_outputs(model, for_model(model, size)(ds.images))
    priors = model.decode_config if task == "detection" else None  # boxes, coder and rules of its layout
    extra = {"decode": priors.layout, "decode_source": getattr(model, "decode_note", "ours")} if priors else {}
    return {"runtime": "pytorch", "data": ds.manifest(), **score(task, outs, ds, priors, size), **extra}


def paired_agreement(task: str, ref: list[np.ndarray], other: list[np.ndarray], priors=None) -> dict:
    if task == "classification":
        a, b = ref[0].argmax(1), other[0].argmax(1)
        return {"agreement": float((a == b).mean()), "changed_predictions": int((a != b).sum())}
    from .fidelity import detection_agreement

    d = detection_agreement(ref, other, priors)
    return {"agreement": d["detection_agreement"], **d}


def data_warnings(ds, model_classes: int) -> list[str]:
    return _class_warnings(getattr(ds, "num_classes", None), model_classes)


def _class_warnings(n: int | None, model_classes: int) -> list[str]:
    """What makes an accuracy figure on this data meaningless or odd, said once."""
    out = []
    if n == 1:
        out.append("the data set has one class: every prediction of that class scores 100%; top-1 says nothing here")
    elif n is not None and n != model_classes:
        out.append(f"the data set has {n} classes, the model {model_classes}: labels are compared by index, so "
                   "top-1 is only meaningful if the model was trained on these classes in this order")
    return out


def artifact_context(path: str) -> tuple[dict, dict | None]:
    """(manifest row, manifest) for an artifact, from the manifest.json beside it; else from its
    ONNX metadata. Raises a one-line error when neither tells what made the file."""
    from pathlib import Path

    from .errors import ConfigError
    from .exportdir import ExportDir

    p = Path(path).resolve()
    found = ExportDir.of(p.parent).row_for(p)
    if found:
        return found
    meta = _stamped_metadata(p)
    if meta.get("producer") == "edge-workbench":
        row = {"model": meta["model"], "format": meta.get("format"), "precision": meta.get("precision"),
               "path": str(p), "status": "ok"}
        return row, {"model": meta["model"], "num_classes": int(meta["num_classes"]),
                     "input_size": int(meta["input_size"]), "options": {"nchw": False}}
    raise ConfigError(f"cannot tell which model made {p.name}: keep it in its export folder (with manifest.json)")


def _stamped_metadata(p) -> dict:
    """The provenance stamp inside an artifact, where its format keeps one readable here (ONNX)."""
    from .errors import ConfigError

    if p.suffix != ".onnx":
        return {}
    import onnx

    try:
        return {m.key: m.value for m in onnx.load(str(p), load_external_data=False).metadata_props}
    except Exception as e:
        raise ConfigError(f"{p.name} is not a readable ONNX file ({type(e).__name__}); re-export it") from e


def evaluate_target(target: str, data: str, *, weights: str | None = None, num_classes: int | None = None,
                    input_size: int | None = None, limit: int | None = None, threads: int = 2,
                    decode: str | None = None) -> dict:
    """``workbench eval``: a model name, an artifact file, or an export folder (every artifact
    runnable here, each with paired agreement against the PyTorch source on the same images)."""
    from pathlib import Path

    from exporters import Status, get_format

    from .artifact_run import ArtifactRunError, run_artifact
    from .modelinfo import info_of
    from .core import load_model
    from .data.preprocess import Preprocess
    from .exportdir import ExportDir

    p = Path(target)
    if not p.exists():  # a zoo model
        model = load_model(target, weights=weights, num_classes=num_classes, input_size=input_size, decode=decode)
        res = evaluate_torch(model, data, limit)
        n = len(res["data"]["classes"]) + (1 if info_of(model).task == "detection" else 0)
        return {"results": [{"target": target, **res}], "warnings": _class_warnings(n, info_of(model).num_classes)}
    xd = ExportDir.of(p if p.is_dir() else p.parent)
    if p.is_dir():
        manifest = xd.read()
        rows = [a for a in manifest["artifacts"] if a["status"] == Status.OK]
    else:
        row, manifest = artifact_context(str(p))
        rows = [row]
    size, task = manifest["input_size"], manifest.get("task", "classification")
    src = xd.source_weights
    ds = _load_eval(task, data, size, limit)
    x = Preprocess(size)(ds.images)
    priors = None
    results = []
    ref = None
    if src.exists():
        from .data.preprocess import for_model

        model = load_model(manifest["model"], weights=str(src), num_classes=manifest["num_classes"], input_size=size,
                           decode=decode)
        x = for_model(model, size)(ds.images)  # the source's own preprocessing (an SSD layout's)
        ref = torch_outputs(model, x)
        if task == "detection":
            priors = model.decode_config
        results.append({"target": "pytorch (export source)", "runtime": "pytorch", "data": ds.manifest(),
                        **score(task, ref, ds, priors, size)})
    for a in rows:
        entry = {"target": Path(a["path"]).name, "format": a["format"], "precision": a["precision"]}
        fmt = get_format(a["format"])
        if not fmt.runs_here:
            results.append({**entry, "status": Status.NOT_MEASURED,
                            "reason": f"not runnable on this host ({fmt.capability.not_runnable_reason})"})
            continue
        try:  # in a process of its own: a runtime crash on a damaged file is a failed row
            outs, _ = run_artifact(a["path"], fmt.name, x, options=manifest.get("options", {}), threads=threads)
        except ArtifactRunError as e:
            results.append({**entry, "status": Status.FAILED, "reason": str(e)[:300]})
            continue
        res = {**entry, "runtime": fmt.capability.runtime, "data": ds.manifest(),
               **score(task, outs, ds, priors, size)}
        if ref is not None:
            res["vs_pytorch"] = paired_agreement(task, ref, outs, priors)
        results.append(res)
    return {"results": results, "warnings": data_warnings(ds, manifest["num_classes"])}
