"""Result document -> console table, Markdown, JSON and PNG, all written atomically."""

from __future__ import annotations

import os
import re
from pathlib import Path

from twins_trt.artifacts import atomic_path, ensure_dir, write_json_atomic
from twins_trt.bench.env import environment_line


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _best(r: dict) -> str:
    if r.get("speedup_vs_best_torch") is None:
        return "-"
    return f"{r['speedup_vs_best_torch']:.2f}x ({r['best_torch']})"


def table_rows(doc: dict, wide: bool = False) -> list[list[str]]:
    head = ["variant", "backend", "batch", "img/s", "p50 ms", "p99 ms", "x torch", "x best torch"]
    if wide:
        head = head[:5] + ["p90 ms", "p99 ms", "stdev ms", "x torch", "x best torch", "iters", "peak MiB"]
    flagged = any(r.get("below_bound") for r in doc["results"])
    if flagged:
        head = head + ["note"]
    rows = [head]
    for r in doc["results"]:
        lat = r["latency_ms"]
        row = [r["variant"], r["backend"], str(r["batch"]), f"{r['img_s']:.1f}", f"{lat['p50']:.2f}"]
        if wide:
            mem = r.get("peak_memory_bytes")
            kind = "" if r.get("memory_kind") == "device_peak" else " (RSS)"
            row += [f"{lat['p90']:.2f}", f"{lat['p99']:.2f}", f"{lat['stdev']:.2f}", _x(r.get("speedup_vs_torch")),
                    _best(r), f"{r['iterations']} in {r['rounds']}r",
                    "-" if mem is None else f"{mem / 2**20:.0f}{kind}"]
        else:
            row += [f"{lat['p99']:.2f}", _x(r.get("speedup_vs_torch")), _best(r)]
        if flagged:
            row.append("BELOW BOUND" if r.get("below_bound") else "")
        rows.append(row)
    return rows


def format_table(doc: dict) -> str:
    rows = table_rows(doc)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    num = {2, 3, 4, 5, 6}
    lines = ["  ".join(c.rjust(w) if i in num else c.ljust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += below_bound_lines(doc)
    lines += precision_lines(doc)
    lines += skipped_lines(doc)
    if doc.get("paper"):
        lines += [""] + paper_lines(doc)
    return "\n".join(lines)


def below_bound_lines(doc: dict) -> list[str]:
    """Each artifact timed although it missed its accuracy bound: its figures, who ran it, and the fix."""
    seen: dict[tuple[str, str], tuple[dict, list[str]]] = {}
    for r in doc["results"]:
        if b := r.get("below_bound"):
            _, names = seen.setdefault((r["variant"], b["precision"]), (b, []))
            if r["backend"] not in names:
                names.append(r["backend"])
    if not seen:
        return []
    out = ["", "BELOW BOUND: timed anyway (speed does not depend on accuracy), from a temporary file; nothing was "
               "written to the export folder:"]
    for (variant, precision), (b, names) in seen.items():
        out.append(f"  {variant} {precision} ({', '.join(names)}): {b['metric']} {b['value']:.4f} < bound "
                   f"{b['bound']:g} on {b.get('samples')} {b.get('inputs') or 'images'}")
        out.append(f"    an artifact within the budget: {b['hint']}")
    return out


def precision_lines(doc: dict) -> list[str]:
    """What each OpenVINO backend really executed in (runner.describe()'s precision_report), once per backend."""
    out: dict[tuple[str, str], str] = {}
    for r in doc["results"]:
        rep = (r.get("runner") or {}).get("precision_report")
        if rep:
            out[(r["variant"], r["backend"])] = rep["summary"]
    if not out:
        return []
    return ["", "runtime precision (OpenVINO's runtime model, MatMul/Conv layers):"] + \
        [f"  {variant} {backend}: {summary}" for (variant, backend), summary in out.items()]


def skipped_lines(doc: dict) -> list[str]:
    if not doc.get("skipped"):
        return []
    return [""] + [f"{s['status']}: {s['variant']} {s['backend']}: {s['reason']}" for s in doc["skipped"]]


def paper_lines(doc: dict) -> list[str]:
    """The paper's figures beside ours (protocol paper only)."""
    out = []
    for variant, p in doc.get("paper", {}).items():
        out.append(f"paper ({p['gpu']}, batch {p['batch']}, TensorRT {p['tensorrt_version']}): {variant} PyTorch "
                   f"{p['torch']:.0f} img/s, TensorRT {p['tensorrt']:.0f} img/s ({p['tensorrt'] / p['torch']:.2f}x)")
        ours = [r for r in doc["results"] if r["variant"] == variant and r["batch"] == p["batch"]]
        ref = next((r for r in ours if r["backend"] == "torch"), None)
        others = [r for r in ours if r["runtime"] != "torch"]
        best = max(others, key=lambda r: r["img_s"]) if others else None
        gpu = (doc["env"].get("gpu") or {}).get("name") or f"CPU {doc['env'].get('cpu')}"
        if ref is not None:
            line = f"ours  ({gpu}, batch {p['batch']}): {variant} PyTorch {ref['img_s']:.0f} img/s"
            if best is not None:
                line += f", {best['backend']} {best['img_s']:.0f} img/s ({_x(best.get('speedup_vs_torch'))})"
            out.append(line)
    return out


def format_markdown(doc: dict) -> str:
    rows = table_rows(doc, wide=True)
    md = [f"# twins-bench: {', '.join(doc['config']['variants'])}", "",
          f"Environment: {environment_line(doc['env'])}", "",
          f"Method: {doc['method']['throughput']}; speedup = {doc['method']['speedup']}. "
          f"Warm-up {doc['config']['warmup']} iterations, "
          + (f"{doc['config']['iters']} timed iterations" if doc['config'].get('iters') else
             f"timed for >= {doc['config']['min_seconds']} s")
          + f" per cell and round, {doc['config']['rounds']} round(s), {doc['config']['threads']} CPU thread(s).",
          "",
          "| " + " | ".join(rows[0]) + " |",
          "|" + "|".join("---" if i < 2 else "---:" for i in range(len(rows[0]))) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    if below_bound_lines(doc):
        md += ["", "**BELOW BOUND**: " + below_bound_lines(doc)[1].split(": ", 1)[1], ""]
        md += [f"- {line.strip()}" for line in below_bound_lines(doc)[2:]]
    if precision_lines(doc):
        md += ["", "Runtime precision (OpenVINO's runtime model: MatMul/Conv layers by the precision they ran in):", ""]
        md += [f"- {line.strip()}" for line in precision_lines(doc)[2:]]
    if doc.get("skipped"):
        md += ["", "Not measured:", ""] + [f"- {s['variant']} `{s['backend']}` ({s['status']}): {s['reason']}"
                                          for s in doc["skipped"]]
    if doc.get("paper"):
        md += ["", "Paper vs this run:", ""] + [f"- {line}" for line in paper_lines(doc)]
    if doc.get("gate"):
        g = doc["gate"]
        md += ["", f"Regression gate vs `{g['baseline']}` (max regression {g['max_regression']:.0%}): "
                   f"**{'PASS' if g['passed'] else 'FAIL'}**", ""] + [f"- {line}" for line in g["lines"]]
    return "\n".join(md) + "\n"


def default_stem(doc: dict) -> str:
    variants = "_".join(doc["config"]["variants"])
    stamp = re.sub(r"[^0-9T]", "", doc["env"]["date"])[:15]
    return f"bench_{variants}_{stamp}"


def write_reports(doc: dict, out_dir: str | os.PathLike, stem: str | None = None, plot: bool = True) -> dict[str, Path]:
    """`<out_dir>/<stem>.json|.md|.png`, each written to a temporary file and renamed when complete."""
    out_dir = ensure_dir(out_dir)
    stem = stem or default_stem(doc)
    paths = {"json": out_dir / f"{stem}.json", "md": out_dir / f"{stem}.md"}
    doc.setdefault("outputs", {})
    if plot and doc["results"]:
        paths["png"] = out_dir / f"{stem}.png"
    doc["outputs"] = {k: str(v) for k, v in paths.items()}
    with atomic_path(paths["md"]) as tmp:
        tmp.write_text(format_markdown(doc))
    if "png" in paths:
        from twins_trt.bench.plot import plot_throughput

        plot_throughput(doc, paths["png"])
    write_json_atomic(paths["json"], doc)
    return paths
