"""Reports rebuilt from ``run.json`` alone: results.csv, report.md, report.html (self-contained,
inline SVG charts, opens offline) and devices/<profile>.md. Estimates are marked everywhere."""
from __future__ import annotations

import csv
import html
import io
from pathlib import Path

from ..fsutil import atomic_write_text

CSV_FIELDS = ["model", "reparam", "format", "precision", "device", "runner", "status", "reason", "estimated",
              "p50_ms", "mean_ms", "std_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "runs", "threads",
              "size_bytes", "fidelity_cosine", "top1", "top1_ci_low", "top1_ci_high", "agreement", "route",
              "gpu_delegated_ops", "gpu_total_ops", "noisy", "others_cpu_share", "probe_drift", "retakes",
              "gpu_status", "gpu_fully_accelerated", "gpu_ops", "gpu_fallback_ops", "gpu_cosine", "gpu_vs_cpu_cosine",
              "gpu_device", "gpu_rules_agree", "oldest_runtime", "runtime_loads"]


def gpu_text(a: dict) -> str:
    """The executed GPU run in one cell: delegated / fallback ops / GPU fidelity."""
    g = a.get("gpu")
    if not g:
        return "n/a"
    st = g.get("status")
    if st == "not available":
        return "not run: no GPU device here"
    if st == "failed":
        return f"failed: {g.get('reason')}"
    fb = ", ".join(f"{k} x{v}" for k, v in (g.get("fallback_by_op") or {}).items())
    ops = f"{g.get('gpu_ops')}/{g.get('total_ops')} ops"
    cos = (g.get("fidelity") or {}).get("cosine")
    head = "delegated" if g.get("fully_accelerated") else "PARTIAL"
    return (f"{head} {ops}" + (f"; fallback {fb}" if fb else "") + (f"; cos {cos:.5f}" if cos is not None else "")
            + ("; GATE MISSED" if st == "gate missed" else ""))


def runtime_text(a: dict) -> str:
    """The oldest runtime that loads the file, and the 2.14 load check where it ran."""
    c = a.get("runtime_compat")
    if not c:
        return "n/a"
    s = f"TFLite {c['oldest_runtime']}" + ("+ (lower bound)" if c.get("lower_bound") else "")
    chk = (c.get("checked") or {}).get("tflite-runtime 2.14.0")
    if chk is not None:
        s += "; 2.14: " + ("loads" if chk["loads"] else "REFUSED")
    return s


def _key(r: dict) -> tuple:
    return (r["model"], r.get("reparam", True), r["format"], r["precision"])


def _acc(run: dict) -> dict:
    return {_key(a): a for a in run["accuracy"]}


def cells(run: dict) -> list[dict]:
    """One row per model x format x precision x device (artifacts without latency rows get one
    row with an empty device, so failed exports appear too)."""
    arts = {_key(a): a for a in run["artifacts"]}
    acc = _acc(run)
    rows = []
    seen = set()
    for lat in run["latency"]:
        k = _key(lat)
        seen.add(k)
        rows.append(_row(arts.get(k, {}), acc.get(k, {}), lat))
    for k, a in arts.items():
        if k not in seen:
            rows.append(_row(a, acc.get(k, {}), {"device": "", "status": a["status"], "reason": a.get("reason")}))
    return rows


def _row(a: dict, acc: dict, lat: dict) -> dict:
    f = a.get("fidelity") or {}
    g = a.get("gpu_delegate") or {}
    ci = acc.get("top1_ci95") or [None, None]
    status = lat.get("status", "ok") if a.get("status", "ok") == "ok" else a.get("status")
    reason = lat.get("reason") if a.get("status", "ok") == "ok" else a.get("reason")
    return {"model": a.get("model", lat.get("model")), "reparam": a.get("reparam", lat.get("reparam")),
            "format": a.get("format", lat.get("format")), "precision": a.get("precision", lat.get("precision")),
            "device": lat.get("device", ""), "runner": lat.get("runner", ""), "status": status, "reason": reason,
            "estimated": lat.get("estimated", False), **{k: lat.get(k) for k in ("p50_ms", "mean_ms", "std_ms", "p90_ms",
                                                                               "p99_ms", "min_ms", "max_ms", "runs", "threads")},
            "size_bytes": a.get("size_bytes"), "fidelity_cosine": f.get("cosine"), "top1": acc.get("top1"),
            "top1_ci_low": ci[0], "top1_ci_high": ci[1], "agreement": (acc.get("vs_pytorch") or {}).get("agreement"),
            "route": a.get("route"), "gpu_delegated_ops": g.get("delegated_ops"), "gpu_total_ops": g.get("total_ops"),
            "noisy": lat.get("noisy"), "others_cpu_share": (lat.get("noise") or {}).get("others_share_max"),
            "probe_drift": (lat.get("noise") or {}).get("probe_drift"), "retakes": lat.get("retakes"),
            **_gpu_fields(a), "runtime_loads": (lat.get("runtime_check") or {}).get("loads")}


def _gpu_fields(a: dict) -> dict:
    g = a.get("gpu") or {}
    c = a.get("runtime_compat") or {}
    return {"gpu_status": g.get("status"), "gpu_fully_accelerated": g.get("fully_accelerated"), "gpu_ops": g.get("gpu_ops"),
            "gpu_fallback_ops": ", ".join(f"{k} x{v}" for k, v in (g.get("fallback_by_op") or {}).items()) or None,
            "gpu_cosine": (g.get("fidelity") or {}).get("cosine"), "gpu_vs_cpu_cosine": (g.get("vs_cpu") or {}).get("cosine"),
            "gpu_device": (g.get("device") or {}).get("name"), "gpu_rules_agree": g.get("rules_agree"),
            "oldest_runtime": c.get("oldest_runtime")}


def _rule(rows: list[dict]) -> str:
    """The noise rule as the measurement recorded it (each flagged row carries the rule it was judged by)."""
    return next(((r.get("noise") or {}).get("rule") for r in rows if (r.get("noise") or {}).get("rule")),
                "see workbench/bench/noise.py")


def kind_of(r: dict) -> str:
    """How a latency row was obtained, in one word or two; a noisy measurement says so with its figures;
    a file that will not load on the profile's named runtime says that too."""
    chk = r.get("runtime_check") or {}
    base = _kind(r)
    return base + (f"; does NOT load on {chk['runtime']}" if chk.get("loads") is False else "")


def _kind(r: dict) -> str:
    if r.get("estimated"):
        return "est."
    if r.get("status", "ok") != "ok":
        return str(r.get("status"))
    if r.get("noisy"):
        return "NOISY: " + "; ".join((r.get("noise") or {}).get("reasons", []))
    return "measured"


def write_csv(run: dict, path: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for r in cells(run):
        w.writerow(r)
    atomic_write_text(path, buf.getvalue())


def _fmt(v, p: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{p}f}"
    return str(v)


def pareto(points: list[tuple[float, float, str]]) -> list[str]:
    """Labels on the front: no other point is both faster (lower x) and more accurate (higher y)."""
    front = []
    for x, y, lab in points:
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for x2, y2, _ in points):
            front.append(lab)
    return front


def _label(r: dict) -> str:
    return f"{r['model']}{'' if r.get('reparam', True) else ' (train-time)'} {r['format']} {r['precision']}"


def devices(run: dict) -> list[str]:
    return sorted({r["device"] for r in run["latency"] if r.get("device")})


def markdown(run: dict) -> str:
    acc = _acc(run)
    arts = {_key(a): a for a in run["artifacts"]}
    prov = run["provenance"]
    L = [f"# Edge Workbench report: {run.get('name', 'run')}", "",
         f"Created {run['created']}; host {prov['host']['cpu_model']} ({prov['host']['cores']} cores); "
         f"workbench {prov['workbench_version']}, commit {(prov.get('git_commit') or 'unknown')[:12]}.",
         "Latency marked **est.** is a roofline estimate from MACs, bytes and the profile's peak figures, not a measurement.", "",
         "## Summary", "", "| model | format | precision | size MB | status | fidelity cos | top-1 (95% CI) | agreement | "
         "GPU: delegated / fallback ops / GPU fidelity | oldest runtime |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for k, a in arts.items():
        ac = acc.get(k, {})
        ci = ac.get("top1_ci95")
        top1 = f"{ac['top1']:.3f} ({ci[0]:.3f}-{ci[1]:.3f})" if "top1" in ac else (
            f"mAP@.5 {ac['map50']:.3f}" if "map50" in ac else ("needs macOS" if a.get("runnable_here") is False else "-"))
        L.append(f"| {_label(a).rsplit(' ', 2)[0]} | {a['format']} | {a['precision']} | "
                 f"{_fmt((a.get('size_bytes') or 0) / 1e6, 2)} | {a['status']} | {_fmt((a.get('fidelity') or {}).get('cosine'), 6)} | "
                 f"{top1} | {_fmt((ac.get('vs_pytorch') or {}).get('agreement'))} | {gpu_text(a)} | {runtime_text(a)} |")
    for ac in run["accuracy"]:
        if ac["runtime"] == "pytorch":
            ci = ac.get("top1_ci95")
            form = "" if ac.get("reparam", True) else ", train-time form"
            L.append(f"\nPyTorch reference ({ac['model']}{form}): " + (f"top-1 {ac['top1']:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f}) on {ac['images']} images"
                                                               if "top1" in ac else f"mAP@0.5 {ac['map50']:.3f}, mAP@[.5:.95] {ac['map50_95']:.3f}"))
    for dev in devices(run):
        L += ["", f"## Latency on {dev}", "", "| artifact | p50 ms | p90 ms | p99 ms | std ms | runs | kind |", "|---|---|---|---|---|---|---|"]
        for r in sorted((r for r in run["latency"] if r.get("device") == dev), key=lambda r: (r.get("p50_ms") is None, r.get("p50_ms") or 0)):
            kind = kind_of(r)
            L.append(f"| {_label(r)} | {_fmt(r.get('p50_ms'))} | {_fmt(r.get('p90_ms'))} | {_fmt(r.get('p99_ms'))} | "
                     f"{_fmt(r.get('std_ms'))} | {r.get('runs', 0)} | {kind} |")
    noisy = [r for r in run["latency"] if r.get("noisy")]
    if noisy:
        L += ["", f"**{len(noisy)} latency row(s) are NOISY** (the machine was busy while they were timed; re-taken and "
              f"still noisy): {_rule(noisy)}. Their figures are kept but no comparison should rest on them."]
    L += ["", "## Re-parameterization", "", "| model | params train -> deploy | MACs train -> deploy | max abs diff | cosine |", "|---|---|---|---|---|"]
    for m in run["models"]:
        rp = m.get("reparam") or {}
        L.append(f"| {m['model']} | {m['params']:,} -> {m['params_deploy']:,} | {m['macs'] / 1e9:.3f}G -> {m['macs_deploy'] / 1e9:.3f}G | "
                 f"{format(rp['max_abs_diff'], '.2e') if rp.get('max_abs_diff') is not None else '-'} | {_fmt(rp.get('cosine'), 9) if rp else '-'} |")
    opt = [m for m in run["models"] if m.get("optimize")]
    if opt:
        L += ["", "## Optimization (before -> after; latency and accuracy of both are in the tables above when both are in the run)", "",
              "| model | steps | params | MACs | weights MB | gzip MB | note |", "|---|---|---|---|---|---|---|"]
        for m in opt:
            o = m["optimize"]
            b, a = o["before"], o["after"]
            steps = ", ".join(f"{k}={v}" for k, v in o["steps"].items())
            L.append(f"| {m['model']} | {steps} | {b['params']:,} -> {a['params']:,} (-{o['params_reduction']:.1%}) | "
                     f"{b['macs'] / 1e9:.4f}G -> {a['macs'] / 1e9:.4f}G (-{o['macs_reduction']:.1%}) | "
                     f"{b['file_bytes'] / 1e6:.2f} -> {a['file_bytes'] / 1e6:.2f} | {b['file_gzip_bytes'] / 1e6:.2f} -> "
                     f"{a['file_gzip_bytes'] / 1e6:.2f} | {o.get('note') or ''} |")
    gpu_rows = [a for a in run["artifacts"] if a.get("gpu") or a.get("gpu_delegate")]
    if gpu_rows:
        L += ["", "## LiteRT GPU accelerator (executed here) and the rule table", "",
              "Each .tflite ran on LiteRT's GPU accelerator (WebGPU over Vulkan). On a software Vulkan device (llvmpipe) "
              "placement and numerics are real and the time is not a device latency; Android's OpenCL GPU delegate shares "
              "the kernels but is not the same binary.", "",
              "| artifact | GPU run | device | GPU ops / total | fallback ops (refused) | cos vs PyTorch | cos vs CPU run | time | "
              "rule table says | rules agree |", "|---|---|---|---|---|---|---|---|---|---|"]
        for a in gpu_rows:
            g, r = a.get("gpu") or {}, a.get("gpu_delegate") or {}
            t = g.get("time") or {}
            rules = (f"{r['delegated_ops']} / {r['total_ops']}" + (f"; {', '.join(f'{k} x{v}' for k, v in r['fallback_by_op'].items())}"
                                                                  if r.get("fallback_by_op") else "")) if r else "-"
            L.append(f"| {_label(a)} | {g.get('status', '-')}{': ' + g['reason'] if g.get('reason') and g.get('status') != 'ok' else ''} | "
                     f"{(g.get('device') or {}).get('name', '-')} | {_fmt(g.get('gpu_ops'))} / {_fmt(g.get('total_ops'))} | "
                     f"{', '.join(f'{k} x{v}' for k, v in (g.get('fallback_by_op') or {}).items()) or ('none' if g.get('fully_accelerated') else '-')} | "
                     f"{_fmt((g.get('fidelity') or {}).get('cosine'), 6)} | {_fmt((g.get('vs_cpu') or {}).get('cosine'), 6)} | "
                     f"{(_fmt(t.get('p50_ms')) + ' ms (' + t.get('label', '') + ')') if t else '-'} | {rules} | "
                     f"{'-' if g.get('rules_agree') is None else ('yes' if g['rules_agree'] else 'NO: ' + g.get('rules_disagreement', ''))} |")
    compat = [a for a in run["artifacts"] if a.get("runtime_compat")]
    if compat:
        L += ["", "## Runtime compatibility (op versions)", "",
              "| artifact | oldest runtime that loads it | deciding op | tflite-runtime 2.14 (loaded here) | converter's claim |",
              "|---|---|---|---|---|"]
        for a in compat:
            c = a["runtime_compat"]
            chk = (c.get("checked") or {}).get("tflite-runtime 2.14.0")
            L.append(f"| {_label(a)} | TFLite {c['oldest_runtime']}{' or later (lower bound: ' + ', '.join(c['unknown_pairs']) + ')' if c.get('lower_bound') else ''} | "
                     f"{c.get('deciding') or '-'} | {'-' if chk is None else ('loads' if chk['loads'] else 'refused: ' + str(chk['error']))} | "
                     f"{c.get('converter_min_runtime') or '-'} |")
    engines = [a for a in run["artifacts"] if a.get("engine")]
    if engines:
        L += ["", "## TensorRT engines", "", "| artifact | engine | TensorRT | GPU | build s |", "|---|---|---|---|---|"]
        for a in engines:
            e = a["engine"]
            L.append(f"| {_label(a)} | {'built' if e.get('status') == 'built' else e.get('reason')} | "
                     f"{e.get('tensorrt', '-')} | {e.get('gpu', '-')} | {e.get('build_seconds', '-')} |")
    L += ["", "## Failures", ""]
    L += [f"- {f['stage']}: {' '.join(str(f.get(k)) for k in ('model', 'format', 'precision', 'device') if f.get(k))}: {f['reason']}"
          for f in run["failures"]] or ["none"]
    return "\n".join(L) + "\n"


def device_markdown(run: dict, dev: str) -> str:
    rows = sorted((r for r in run["latency"] if r.get("device") == dev),
                  key=lambda r: (r.get("p50_ms") is None, r.get("p50_ms") or 0))
    first = next((r for r in rows if r.get("timed_scope")), {})
    checks = [r for r in rows if r.get("runtime_check")]
    L = [f"# Latency on {dev}", "", f"Runner: {rows[0].get('runner') if rows else '-'}; threads: {rows[0].get('threads') if rows else '-'}.",
         f"Protocol: {first.get('timed_scope', '-')}; warm-up, then timed runs until a count and a time are reached, repeated.",
         "Rows marked est. are roofline estimates.", "",
         "| rank | artifact | p50 ms | mean ms | std ms | p90 | p99 | min | max | runs | init ms | first ms | peak MB | kind |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    if any(r.get("noisy") for r in rows):
        L[5:5] = [f"Rows marked NOISY were measured while the machine was busy ({_rule(rows)}); they were re-taken "
                  "and stayed noisy: do not compare them.", ""]
    for i, r in enumerate(rows, 1):
        kind = kind_of(r)
        L.append(f"| {i} | {_label(r)} | " + " | ".join(_fmt(r.get(k)) for k in ("p50_ms", "mean_ms", "std_ms", "p90_ms", "p99_ms",
                                                                               "min_ms", "max_ms", "runs", "init_ms", "first_ms",
                                                                               "peak_rss_mb")) + f" | {kind} |")
    if checks:
        rt = checks[0]["runtime_check"]["runtime"]
        L += ["", f"## Does it load on {rt} (the runtime this profile names)?", "", "| artifact | loads | why |", "|---|---|---|"]
        for r in checks:
            c = r["runtime_check"]
            L.append(f"| {_label(r)} | {'-' if c['loads'] is None else ('yes' if c['loads'] else '**NO**')} | {c['why']}"
                     f"{' (measured)' if c.get('measured') else ''} |")
    return "\n".join(L) + "\n"


# --- HTML with inline SVG charts -------------------------------------------------------------

def _bar_chart(title: str, items: list[tuple[str, float, bool]], unit: str) -> str:
    if not items:
        return ""
    w, bar, gap, left = 760, 18, 6, 300
    vmax = max(v for _, v, _ in items) or 1
    h = len(items) * (bar + gap) + 40
    out = [f'<figure><figcaption>{html.escape(title)}</figcaption><svg class="chart" width="{w}" height="{h}" '
           f'viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg">']
    for i, (lab, v, est) in enumerate(items):
        y = 10 + i * (bar + gap)
        bw = max(1, (w - left - 90) * v / vmax)
        fill = "url(#hatch)" if est else "#3b6ea8"
        out.append(f'<text x="{left - 6}" y="{y + 13}" text-anchor="end" font-size="12">{html.escape(lab)}</text>'
                   f'<rect x="{left}" y="{y}" width="{bw:.1f}" height="{bar}" fill="{fill}" stroke="#3b6ea8"/>'
                   f'<text x="{left + bw + 4:.1f}" y="{y + 13}" font-size="12">{v:.3f} {unit}{" est." if est else ""}</text>')
    out.append('<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
               '<rect width="6" height="6" fill="#e8eef6"/><line x1="0" y1="0" x2="0" y2="6" stroke="#3b6ea8" stroke-width="2"/>'
               '</pattern></defs></svg></figure>')
    return "".join(out)


def _scatter(title: str, pts: list[tuple[float, float, str]]) -> str:
    if not pts:
        return ""
    w, h, m = 760, 380, 60
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = 0, max(xs) * 1.1 or 1
    y0, y1 = min(ys) - 0.02, max(ys) + 0.02
    sx = lambda x: m + (w - 2 * m) * (x - x0) / (x1 - x0)  # noqa: E731
    sy = lambda y: h - m - (h - 2 * m) * (y - y0) / ((y1 - y0) or 1)  # noqa: E731
    front = set(pareto(pts))
    out = [f'<figure><figcaption>{html.escape(title)}</figcaption><svg class="chart" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
           f'xmlns="http://www.w3.org/2000/svg"><line x1="{m}" y1="{h - m}" x2="{w - m}" y2="{h - m}" stroke="#333"/>'
           f'<line x1="{m}" y1="{m}" x2="{m}" y2="{h - m}" stroke="#333"/>'
           f'<text x="{w / 2}" y="{h - 15}" text-anchor="middle" font-size="12">p50 latency (ms)</text>'
           f'<text x="15" y="{h / 2}" transform="rotate(-90 15 {h / 2})" text-anchor="middle" font-size="12">top-1</text>'
           f'<text x="{m}" y="{h - m + 15}" font-size="11">{x0:.1f}</text><text x="{w - m}" y="{h - m + 15}" font-size="11" text-anchor="end">{x1:.2f}</text>'
           f'<text x="{m - 5}" y="{m + 4}" font-size="11" text-anchor="end">{y1:.3f}</text><text x="{m - 5}" y="{h - m}" font-size="11" text-anchor="end">{y0:.3f}</text>']
    fp = sorted((p for p in pts if p[2] in front), key=lambda p: p[0])
    if len(fp) > 1:
        out.append('<polyline fill="none" stroke="#c0392b" stroke-dasharray="4 3" points="' +
                   " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _ in fp) + '"/>')
    for x, y, lab in pts:
        on = lab in front
        out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="{6 if on else 4}" fill="{"#c0392b" if on else "#3b6ea8"}">'
                   f'<title>{html.escape(lab)}: {x:.3f} ms, top-1 {y:.3f}{" (Pareto front)" if on else ""}</title></circle>')
        if on:  # label the front; every point has a hover title
            out.append(f'<text x="{sx(x) + 7:.1f}" y="{sy(y) - 6:.1f}" font-size="10">{html.escape(lab)}</text>')
    out.append("</svg></figure>")
    return "".join(out)


def _md_table_to_html(md: str) -> str:
    """Render the Markdown report's tables and text as HTML (one renderer for both formats)."""
    out, in_table = [], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells_ = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells_)) <= set("-: "):
                continue
            if not in_table:
                out.append('<table class="sortable"><thead><tr>' + "".join(f"<th>{html.escape(c)}</th>" for c in cells_) + "</tr></thead><tbody>")
                in_table = True
                continue
            out.append("<tr>" + "".join(f"<td>{html.escape(c).replace('**', '')}</td>" for c in cells_) + "</tr>")
            continue
        if in_table:
            out.append("</tbody></table>")
            in_table = False
        if line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("- "):
            out.append(f"<p class='failure'>{html.escape(line[2:])}</p>")
        elif line.strip():
            out.append(f"<p>{html.escape(line).replace('**est.**', '<b>est.</b>')}</p>")
    if in_table:
        out.append("</tbody></table>")
    return "\n".join(out)


SORT_JS = """document.querySelectorAll('table.sortable th').forEach(function(th, i){th.onclick=function(){
var t=th.closest('table'), b=t.tBodies[0], rows=Array.from(b.rows), asc=th.dataset.asc!=='1'; th.dataset.asc=asc?'1':'0';
rows.sort(function(a,c){var x=a.cells[i].innerText, y=c.cells[i].innerText, nx=parseFloat(x), ny=parseFloat(y);
var r=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y); return asc?r:-r;}); rows.forEach(function(r){b.appendChild(r);});};});"""


def html_report(run: dict) -> str:
    md = markdown(run)
    acc = _acc(run)
    charts = []
    for dev in devices(run):
        items = [(_label(r), r["p50_ms"], bool(r.get("estimated"))) for r in run["latency"]
                 if r.get("device") == dev and r.get("p50_ms") is not None]
        charts.append(_bar_chart(f"p50 latency on {dev}" + (" (hatched: estimate)" if any(e for *_, e in items) else ""),
                                 sorted(items, key=lambda t: t[1]), "ms"))
    measured = [r for r in run["latency"] if not r.get("estimated") and r.get("p50_ms") is not None]
    if measured:
        dev0 = measured[0]["device"]
        pts = [(r["p50_ms"], acc[_key(r)]["top1"], _label(r)) for r in measured
               if r["device"] == dev0 and "top1" in acc.get(_key(r), {})]
        charts.insert(0, _scatter(f"Accuracy vs latency on {dev0} (red: Pareto front)", pts))
    sizes = [(_label(a), (a.get("size_bytes") or 0) / 1e6, False) for a in run["artifacts"] if a.get("size_bytes")]
    charts.append(_bar_chart("Model size (MB)", sorted(sizes, key=lambda t: t[1]), "MB"))
    reparam = [(f"{r['model']} {r['format']} {r['precision']} {'deploy' if r.get('reparam', True) else 'train-time'} on {r['device']}",
                r["p50_ms"], bool(r.get("estimated"))) for r in run["latency"] if r.get("p50_ms") is not None]
    if len({r.get("reparam", True) for r in run["latency"]}) > 1:
        charts.append(_bar_chart("Re-parameterization: train-time vs deploy p50", reparam, "ms"))
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}th{background:#eef;cursor:pointer}"
             "td:first-child{text-align:left}figure{margin:1.5em 0}figcaption{font-weight:600;margin-bottom:.4em}.failure{color:#a00}")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Edge Workbench report: {html.escape(run.get('name', 'run'))}</title>"
            f"<style>{style}</style></head><body>{_md_table_to_html(md)}<h2>Charts</h2>{''.join(charts)}"
            f"<script>{SORT_JS}</script></body></html>")


def write_reports(run: dict, out_dir: Path, formats: tuple[str, ...] = ("html", "md", "csv", "devices")) -> dict[str, str]:
    out_dir = Path(out_dir)
    written = {}
    if "csv" in formats:
        write_csv(run, out_dir / "results.csv")
        written["csv"] = str(out_dir / "results.csv")
    if "md" in formats:
        atomic_write_text(out_dir / "report.md", markdown(run))
        written["md"] = str(out_dir / "report.md")
    if "html" in formats:
        atomic_write_text(out_dir / "report.html", html_report(run))
        written["html"] = str(out_dir / "report.html")
    if "devices" in formats:
        for dev in devices(run):
            atomic_write_text(out_dir / "devices" / f"{dev}.md", device_markdown(run, dev))
        written["devices"] = str(out_dir / "devices")
    return written
