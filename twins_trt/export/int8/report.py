"""The sensitivity report of a quantized export (INT8 or FP8, named by `label`): a table for the terminal, and a JSON
and a bar plot beside the artifact."""

from __future__ import annotations

from twins_trt.export.int8.budget import Budget, Figures
from twins_trt.export.int8.search import RegionScore, rank

METHOD_TEXT = {
    "loo": "leave-one-out: each region's Q/DQ removed from the calibrated graph (same scales elsewhere)",
    "local": "local: each region's own quantization error in one pass (its nodes with vs without Q/DQ on the "
             "unquantized graph's tensors), the largest then confirmed leave-one-out",
}


def format_table(scores: list[RegionScore], all_int8: Figures, budget: Budget, label: str = "INT8") -> str:
    local = any(s.local_error is not None for s in scores)
    rows = [("region", "kind", "MACs", *(("local err",) if local else ()), "cosine", "min cos", "top-1", "rank")]
    rows.append((f"(none: all {label})", "", "", *(("",) if local else ()), f"{all_int8.cosine:.5f}",
                 f"{all_int8.cosine_min:.4f}", "-" if all_int8.top1_agreement is None else f"{all_int8.top1_agreement:.1%}",
                 ""))
    position = {s.region: i + 1 for i, s in enumerate(rank(scores, budget))}
    for s in scores:
        f = s.figures
        measured = (f"{f.cosine:.5f}", f"{f.cosine_min:.4f}", "-" if f.top1_agreement is None else
                    f"{f.top1_agreement:.1%}") if f else ("", "", "")
        rows.append((s.region, s.kind, f"{s.mac_share:.1%}",
                     *((f"{s.local_error:.2e}" if s.local_error is not None else "",) if local else ()), *measured,
                     str(position[s.region])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    head = f"figures with ONLY that region left out of {label} (kept FP16), vs FP32, on held-out samples:"
    if local:
        head += f"\n(local err: the region's own {label} error; figures only for the regions confirmed leave-one-out)"
    return head + "\n" + "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def write_report(json_path, png_path, scores: list[RegionScore], all_int8: Figures, budget: Budget,
                 extra: dict | None = None, label: str = "INT8") -> None:
    """The sensitivity JSON and bar plot, each written atomically (`all_int8`: the all-`label` figures)."""
    from twins_trt import artifacts

    local = any(s.local_error is not None for s in scores)
    artifacts.write_json_atomic(json_path, {
        "method": METHOD_TEXT["local" if local else "loo"],
        "budget": str(budget), "all_int8": all_int8.to_dict(),
        "ranking": [s.region for s in rank(scores, budget)],
        "regions": [s.to_dict() for s in scores], **(extra or {}),
    })
    with artifacts.atomic_path(png_path) as tmp:
        plot(scores, all_int8, budget, tmp, label)


def plot(scores: list[RegionScore], all_int8: Figures, budget: Budget, path, label: str = "INT8") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if any(s.figures is None for s in scores):
        return plot_local(scores, budget, path, label)
    use_agree = budget.metric == "agreement"
    vals = [(s.figures.top1_agreement if use_agree else s.figures.cosine) or 0.0 for s in scores]
    base = (all_int8.top1_agreement if use_agree else all_int8.cosine) or 0.0
    fig, ax = plt.subplots(figsize=(max(6, 0.18 * len(scores) + 2), 4.5))
    colors = ["tab:red" if v >= budget.bound else "tab:blue" for v in vals]
    ax.bar(range(len(scores)), vals, color=colors)
    ax.axhline(base, color="k", lw=1, ls="--", label=f"all {label} ({base:.4f})")
    ax.axhline(budget.bound, color="tab:green", lw=1, label=f"budget {budget}")
    lo = min(vals + [base, budget.bound])
    ax.set_ylim(lo - 0.1 * (1 - lo) - 1e-4, min(1.0, max(vals + [budget.bound]) + 0.1 * (1 - lo)) + 1e-4)
    ax.set_xticks(range(len(scores)), [s.region for s in scores], rotation=90, fontsize=6)
    ax.set_ylabel(("top-1 agreement" if use_agree else "cosine") + " vs FP32 (held out)")
    ax.set_title(f"{label} sensitivity: figure with only that region kept in FP16")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def plot_local(scores: list[RegionScore], budget: Budget, path, label: str = "INT8") -> None:
    """The `local` ranking: each region's own error (log scale); the regions confirmed leave-one-out in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vals = [max(s.local_error or 0.0, 1e-12) for s in scores]
    fig, ax = plt.subplots(figsize=(max(6, 0.18 * len(scores) + 2), 4.5))
    ax.bar(range(len(scores)), vals, color=["tab:red" if s.figures is not None else "tab:blue" for s in scores])
    ax.set_yscale("log")
    ax.set_xticks(range(len(scores)), [s.region for s in scores], rotation=90, fontsize=6)
    ax.set_ylabel(f"local {label} error (noise / signal energy)")
    ax.set_title(f"{label} sensitivity (budget {budget}): each region's own error; red: confirmed leave-one-out")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)
