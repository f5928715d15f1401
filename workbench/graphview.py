"""Graphs of a model for the dashboard's Model view, as Graphviz DOT text (rendered in the page, no
network): the torch model before and after re-parameterization, an exported .onnx / .tflite with
each op's executed GPU placement, and per-op latency from ONNX Runtime's own profiler."""
from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

MAX_NODES = 400  # beyond this a graph is summarized by op type (a browser cannot lay out VGG's every tensor)


def _q(s: str) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def torch_graph(model, title: str) -> dict:
    """The model's layers in execution order: RepVGG multi-branch blocks drawn as their branches
    (3x3 conv+BN, 1x1 conv+BN, identity BN) joining at an add; everything else as a chain of leaf
    modules. Returns {"dot", "nodes", "branch_blocks"}."""
    import torch.nn as nn

    lines = [f"digraph G {{ rankdir=TB; label={_q(title)}; labelloc=t; node [shape=box, style=rounded, fontsize=10];"]
    prev, n, branches = "input", 0, 0
    lines.append('input [shape=oval];')

    def node(label: str, color: str = "#e8eef6") -> str:
        nonlocal n
        n += 1
        lines.append(f'n{n} [label={_q(label)}, style="rounded,filled", fillcolor="{color}"];')
        return f"n{n}"

    def walk(mod: nn.Module, name: str):
        nonlocal prev, branches
        if hasattr(mod, "rbr_dense") and not getattr(mod, "deploy", False) and getattr(mod, "rbr_reparam", None) is None:
            branches += 1
            add = node(f"{name}: add", "#f6e8e8")
            for bname in ("rbr_dense", "rbr_1x1", "rbr_identity"):
                b = getattr(mod, bname, None)
                if b is None:
                    continue
                convs = [m for m in b.modules() if isinstance(m, nn.Conv2d)]
                desc = (f"{bname}: conv {convs[0].kernel_size[0]}x{convs[0].kernel_size[1]} "
                        f"{convs[0].in_channels}->{convs[0].out_channels} + BN") if convs else f"{bname}: BN"
                k = node(desc)
                lines.append(f"{prev} -> {k}; {k} -> {add};")
            prev = add
            for sub in ("se", "nonlinearity"):
                m = getattr(mod, sub, None)
                if m is not None and not isinstance(m, nn.Identity):
                    k = node(f"{name}.{sub}: {type(m).__name__}")
                    lines.append(f"{prev} -> {k};")
                    prev = k
            return
        kids = list(mod.named_children())
        if not kids:
            if isinstance(mod, nn.Identity):
                return
            label = f"{name}: {type(mod).__name__}"
            if isinstance(mod, nn.Conv2d):
                label += f" {mod.kernel_size[0]}x{mod.kernel_size[1]} {mod.in_channels}->{mod.out_channels}"
            elif isinstance(mod, nn.Linear):
                label += f" {mod.in_features}->{mod.out_features}"
            k = node(label, "#eef6e8" if isinstance(mod, (nn.Conv2d, nn.Linear)) else "#f4f4f4")
            lines.append(f"{prev} -> {k};")
            prev = k
            return
        for cname, child in kids:
            walk(child, f"{name}.{cname}" if name else cname)

    walk(model, "")
    lines.append(f"out [shape=oval, label=output]; {prev} -> out; }}")
    return {"dot": "\n".join(lines), "nodes": n, "branch_blocks": branches}


def _ops(path: Path) -> list[dict]:
    """[{name, type, inputs, outputs}] of an exported file, in graph order."""
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        it = Interpreter(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        names = {t["index"]: t["name"] for t in it.get_tensor_details()}
        return [{"name": f"{op['op_name']} #{op['index']}", "type": op["op_name"],
                 "inputs": [names.get(i, str(i)) for i in op["inputs"] if i >= 0],
                 "outputs": [names.get(i, str(i)) for i in op["outputs"] if i >= 0]}
                for op in it._get_ops_details()]
    if path.suffix == ".onnx":
        import onnx

        g = onnx.load(str(path), load_external_data=False).graph
        return [{"name": nd.name or f"{nd.op_type} #{i}", "type": nd.op_type, "inputs": list(nd.input),
                 "outputs": list(nd.output)} for i, nd in enumerate(g.node)]
    raise ValueError(f"{path.name}: the Model view draws .onnx and .tflite files")


def artifact_graph(path: str | Path, gpu: dict | None = None) -> dict:
    """The exported file's operators and data flow; with the row's executed GPU run (``gpu``), the op
    types LiteRT's GPU accelerator refused are drawn red. Large graphs are drawn by op type."""
    path = Path(path)
    ops = _ops(path)
    refused = set((gpu or {}).get("fallback_by_op") or {})
    producer = {o: i for i, op in enumerate(ops) for o in op["outputs"]}
    counts = Counter(op["type"] for op in ops)
    lines = ["digraph G { rankdir=TB; node [shape=box, style=\"rounded,filled\", fontsize=10];"]
    summarized = len(ops) > MAX_NODES
    if summarized:  # one node per op type, edges between types in data order
        edges = Counter()
        for op in ops:
            for t in op["inputs"]:
                if t in producer and ops[producer[t]]["type"] != op["type"]:
                    edges[(ops[producer[t]]["type"], op["type"])] += 1
        for t, c in counts.items():
            lines.append(f'{_q(t)} [label={_q(f"{t} x{c}")}, fillcolor="{"#f4b6b6" if t in refused else "#e8eef6"}"];')
        lines += [f"{_q(a)} -> {_q(b)} [label={_q(c)}];" for (a, b), c in edges.items()]
    else:
        for i, op in enumerate(ops):
            lines.append(f'o{i} [label={_q(op["type"])}, tooltip={_q(op["name"])}, '
                         f'fillcolor="{"#f4b6b6" if op["type"] in refused else "#e8eef6"}"];')
            for t in op["inputs"]:
                if t in producer:
                    lines.append(f"o{producer[t]} -> o{i};")
    lines.append("}")
    return {"dot": "\n".join(lines), "ops": len(ops), "by_type": dict(counts.most_common()), "summarized": summarized,
            "refused_types": sorted(refused),
            "placement": ("executed on LiteRT's GPU accelerator: red = op types it refused (run on the CPU)"
                          if gpu and gpu.get("status") in ("ok", "gate missed") else
                          "no executed GPU placement for this file" + (f" ({gpu.get('reason')})" if gpu and gpu.get("reason") else ""))}


def onnx_op_profile(path: str | Path, input_size: int, runs: int = 20, threads: int = 2) -> list[dict]:
    """Per-node time from ONNX Runtime's own profiler (SessionOptions.enable_profiling) over ``runs``
    runs on a random NCHW input: [{node, op, mean_us, share}] slowest first."""
    import numpy as np
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="wb-prof-") as d:
        so = ort.SessionOptions()
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(d) / "prof")
        so.intra_op_num_threads = threads
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        shape = [1 if not isinstance(s, int) else s for s in inp.shape]
        if len(shape) == 4 and shape[2] == 1 and shape[3] == 1:
            shape[2] = shape[3] = input_size
        x = np.random.RandomState(0).rand(*shape).astype(np.float32)
        for _ in range(runs + 2):
            sess.run(None, {inp.name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    totals: dict[tuple[str, str], list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            node = e["name"][: -len("_kernel_time")]
            totals.setdefault((node, (e.get("args") or {}).get("op_name", "?")), []).append(float(e["dur"]))
    rows = [{"node": n, "op": op, "mean_us": sum(v[2:] or v) / len(v[2:] or v), "calls": len(v)}
            for (n, op), v in totals.items()]
    total = sum(r["mean_us"] for r in rows) or 1.0
    for r in rows:
        r["share"] = r["mean_us"] / total
    return sorted(rows, key=lambda r: -r["mean_us"])
