"""Throughput vs batch, one line per backend, speedup vs PyTorch fp32 annotated (matplotlib Agg, no display)."""

from __future__ import annotations

import os
from pathlib import Path

from twins_trt.artifacts import atomic_path
from twins_trt.bench.ab_stats import document_confidence


def plot_throughput(doc: dict, path: str | os.PathLike) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    variants = list(dict.fromkeys(r["variant"] for r in doc["results"]))
    fig, axes = plt.subplots(1, max(len(variants), 1), figsize=(6.5 * max(len(variants), 1), 4.5), squeeze=False)
    for ax, variant in zip(axes[0], variants, strict=False):
        rows = [r for r in doc["results"] if r["variant"] == variant]
        for backend in dict.fromkeys(r["backend"] for r in rows):
            pts = sorted((r for r in rows if r["backend"] == backend), key=lambda r: r["batch"])
            xs, ys = [r["batch"] for r in pts], [r["img_s"] for r in pts]
            style = "--" if pts[0]["runtime"] == "torch" else "-"
            ax.plot(xs, ys, style, marker="o", label=backend)
            for r in pts:
                if r.get("speedup_vs_torch") is not None and r["backend"] != "torch":
                    ax.annotate(f"{r['speedup_vs_torch']:.2f}x", (r["batch"], r["img_s"]), textcoords="offset points",
                                xytext=(4, 4), fontsize=7)
        batches = sorted({r["batch"] for r in rows})
        if len(batches) > 1:
            ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("batch")
        ax.set_ylabel("images / s")
        ax.set_title(f"{variant} (annotations: speedup vs PyTorch fp32)", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    env = doc.get("env", {})
    gpu = (env.get("gpu") or {}).get("name")
    fig.suptitle(f"twins-bench on {gpu or env.get('cpu', '?')}, {doc['config'].get('threads')} thread(s)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


def plot_ab(doc: dict, path: str | os.PathLike) -> Path:
    """New/base speed ratio per cell with its interval (99%; 95% in older documents) and min..max, against the gate's bound."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    cells = [c for c in doc["cells"] if c.get("verdict")]
    bound = 1 - doc["config"]["max_regression"]
    conf = document_confidence(doc)
    colors = {"pass": "tab:green", "regression": "tab:red", "inconclusive": "tab:orange"}
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(cells) + 2), 4.2))
    for i, c in enumerate(cells):
        v = c["verdict"]
        ax.plot([i, i], v["spread"], color="0.7", linewidth=6, solid_capstyle="butt")
        ax.errorbar([i], [v["ratio"]], yerr=[[v["ratio"] - v["low"]], [min(v["high"], 10) - v["ratio"]]], fmt="o",
                    color=colors[v["status"]], capsize=5)
        ax.annotate(f"{v['ratio']:.3f}\n{v['status']}", (i, v["ratio"]), textcoords="offset points", xytext=(8, -4),
                    fontsize=7)
    ax.axhline(1.0, color="0.4", linewidth=0.8)
    ax.axhline(bound, color="tab:red", linestyle="--", linewidth=0.8, label=f"bound {bound:.2f}")
    ax.set_xticks(range(len(cells)), [c["key"] for c in cells], rotation=20, fontsize=7)
    ax.set_ylabel("new img/s / base img/s")
    ax.set_title(f"A/B vs {doc['base_describe'][:60]} (dot: median, bar: its {conf:.0%} interval, grey: min..max)", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
