"""Artifact vs PyTorch fp32 on the same inputs: the figures, the tolerance, and a clear pass or fail."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from twins_trt.errors import VerificationError
from twins_trt.metrics import agreement_rate, cosine_per_sample
from twins_trt.metrics import mean_cosine as cosine  # the one cosine: per-sample mean

# precision -> (metric, bound): fp32 must match to the last digits; reduced precisions by direction
TOLERANCES = {"fp32": ("max_abs", 1e-4), "fp16": ("cosine", 0.999), "int8": ("cosine", 0.99)}


@dataclass
class Comparison:
    output: str
    max_abs: float
    mean_abs: float
    cosine: float
    top1_agreement: float | None = None
    spread: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def spread(ref: np.ndarray, out: np.ndarray, top1: float | None) -> dict:
    """How the per-sample figures scatter: cosine min / 5th percentile / median, a 95% CI for agreement."""
    from twins_trt.export.budget import wilson

    per = cosine_per_sample(ref, out)
    s = {"cosine_min": float(per.min()), "cosine_p05": float(np.percentile(per, 5)),
         "cosine_median": float(np.median(per))}
    if top1 is not None:
        # per image, not per pixel: a segmentor's pixels are not independent decisions (a conservative interval)
        s["top1_ci95"] = list(wilson(top1 * len(ref), len(ref)))
    return s


def compare(name: str, ref: np.ndarray, out: np.ndarray) -> Comparison:
    if ref.shape != out.shape:
        raise VerificationError(f"output {name}: shape {out.shape} differs from PyTorch's {ref.shape}")
    if not np.isfinite(out).all():
        bad = int((~np.isfinite(out)).sum())
        raise VerificationError(f"output {name}: {bad} non-finite value(s) (overflow? keep those layers in fp32)")
    diff = np.abs(ref.astype(np.float64) - out.astype(np.float64))
    # classifier logits (B, K): top-1 agreement; segmentation logits (B, K, H, W): per-pixel agreement
    top1 = agreement_rate(out, ref) if name == "logits" else None
    return Comparison(name, float(diff.max()), float(diff.mean()), cosine(ref, out), top1, spread(ref, out, top1))


@dataclass
class Verdict:
    precision: str
    metric: str
    bound: float
    comparisons: list[Comparison]
    samples: int
    inputs: str  # "images", "held-out images" (never calibrated on) or "random"
    shapes: list[list[int]]

    @property
    def worst(self) -> float:
        vals = [v for c in self.comparisons if (v := getattr(c, self.metric)) is not None]
        return max(vals) if self.metric == "max_abs" else min(vals)

    @property
    def passed(self) -> bool:
        return self.worst <= self.bound if self.metric == "max_abs" else self.worst >= self.bound

    def line(self) -> str:
        op = "<=" if self.metric == "max_abs" else ">="
        c0 = self.comparisons[0]
        extra = f", top-1 agreement {c0.top1_agreement:.1%}" if c0.top1_agreement is not None else ""
        if self.inputs == "held-out images" and c0.spread:
            extra += f" (per-sample cosine min {c0.spread['cosine_min']:.4f}, 5th pct {c0.spread['cosine_p05']:.4f}"
            if "top1_ci95" in c0.spread:
                extra += f"; agreement 95% CI {c0.spread['top1_ci95'][0]:.1%}-{c0.spread['top1_ci95'][1]:.1%}"
            extra += ")"
        return (f"{self.precision}: {self.metric} {self.worst:.3g} (bound {op} {self.bound:g}) "
                f"max_abs {max(c.max_abs for c in self.comparisons):.3g}, cosine "
                f"{min(c.cosine for c in self.comparisons):.6f}{extra} over {self.samples} {self.inputs} "
                f"input(s) at {', '.join('x'.join(map(str, s)) for s in self.shapes)} -> "
                f"{'PASS' if self.passed else 'FAIL'}")

    def to_dict(self) -> dict:
        return {"precision": self.precision, "metric": self.metric, "bound": self.bound, "worst": self.worst,
                "passed": self.passed, "samples": self.samples, "inputs": self.inputs, "shapes": self.shapes,
                "outputs": [c.to_dict() for c in self.comparisons]}


def merge(parts: list[Comparison], weights: list[int]) -> Comparison:
    """One output compared at several input shapes: the worst max and cosine, the weighted means."""
    if len(parts) == 1:
        return parts[0]
    total = sum(weights)
    top1 = [p.top1_agreement for p in parts]
    return Comparison(
        parts[0].output, max(p.max_abs for p in parts), sum(p.mean_abs * w for p, w in zip(parts, weights)) / total,
        min(p.cosine for p in parts),
        None if None in top1 else sum(t * w for t, w in zip(top1, weights)) / total,
    )


def verdict(precision: str, groups: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]], inputs: str,
            shapes: list[list[int]], tolerance: tuple[str, float] | None = None) -> Verdict:
    """groups: (PyTorch outputs, artifact outputs) per input shape, keyed by output name; `tolerance`
    (metric, bound) replaces the precision's default (an INT8 budget, e.g. ("top1_agreement", 0.99))."""
    metric, bound = tolerance or TOLERANCES[precision]
    names = list(groups[0][0])
    sizes = [next(iter(refs.values())).shape[0] for refs, _ in groups]
    comps = [merge([compare(n, refs[n], outs[n]) for refs, outs in groups], sizes) for n in names]
    return Verdict(precision, metric, bound, comps, sum(sizes), inputs, shapes)
