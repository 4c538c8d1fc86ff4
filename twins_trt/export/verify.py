"""Artifact vs PyTorch fp32 on the same inputs: the harness (`verify_artifact`), the figures, the tolerance,
and a clear pass or fail."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from twins_trt.data import random_inputs
from twins_trt.errors import VerificationError
from twins_trt.metrics import agreement_rate, cosine_per_sample, cosine_spread, wilson
from twins_trt.metrics import mean_cosine as cosine  # the one cosine: per-sample mean
from twins_trt.runners.base import INPUT_NAME, Runner, output_names
from twins_trt.runners.ort_runner import OrtRunner

if TYPE_CHECKING:
    from twins_trt.export.options import ExportOptions

# precision -> (metric, bound): fp32 must match to the last digits; reduced precisions by direction
TOLERANCES = {"fp32": ("max_abs", 1e-4), "fp16": ("cosine", 0.999), "int8": ("cosine", 0.99), "fp8": ("cosine", 0.99)}


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
    s = cosine_spread(cosine_per_sample(ref, out))
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


# ---------------------------------------------------------------------------------------------- the harness


def verification_shapes(opts: ExportOptions) -> list[tuple[int, int, int]]:
    """(batch, H, W) to verify at: the static shape, or min/opt/max plus a size that needs window padding."""
    if opts.dynamic_shape is None and opts.dynamic_batch is None:
        return [(opts.batch, *opts.img_size)]
    batches = sorted(set(opts.dynamic_batch)) if opts.dynamic_batch else [opts.batch]
    sizes = [tuple(s) for s in opts.dynamic_shape] if opts.dynamic_shape else [opts.img_size]
    if opts.dynamic_shape:
        (h0, w0), _, (h2, w2) = opts.dynamic_shape
        pad = next(((h, w) for h in range(h0, h2 + 1, 32) for w in range(w0, w2 + 1, 32)
                    if (h // 4) % 7 or (w // 4) % 7), None)
        if pad and pad not in sizes:
            sizes.append(pad)
    shapes = [(batches[0], *s) for s in dict.fromkeys(sizes)]
    shapes += [(b, *opts.img_size) for b in batches[1:]]
    return list(dict.fromkeys(shapes))


def resize_images(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Preprocessed images (N, 3, H, W) brought to another H x W (bilinear, antialiased when shrinking): the
    same photographs at every size of a dynamic-H/W profile."""
    if tuple(images.shape[2:]) == tuple(size):
        return images
    import torch.nn.functional as F

    with torch.no_grad():
        return F.interpolate(torch.from_numpy(np.ascontiguousarray(images, np.float32)), size=tuple(size),
                             mode="bilinear", align_corners=False, antialias=True).numpy()


def reference(model: torch.nn.Module, x: np.ndarray, references: dict | None = None) -> tuple[np.ndarray, ...]:
    """PyTorch fp32's outputs for the batch `x`. `references` (one model's: the caller keeps it to that model)
    keeps them by the batch's shape and bytes, so one export computes them once for every artifact and runtime it
    verifies on the same inputs: FP32, FP16 and the OpenVINO checks see the same images."""
    key = (x.shape, x.dtype.str, x.tobytes()) if references is not None else None
    if key is not None and key in references:
        return references[key]
    with torch.no_grad():
        ref = model(torch.from_numpy(np.ascontiguousarray(x)))
    out = tuple(r.numpy() for r in (ref if isinstance(ref, tuple) else (ref,)))
    if key is not None:
        references[key] = out
    return out


def verify_artifact(onnx_path: Path, precision: str, model: torch.nn.Module, opts: ExportOptions,
                    images: np.ndarray | None, runner: Runner | None = None, samples: int | None = None,
                    tolerance: tuple[str, float] | None = None, inputs: str = "images",
                    references: dict | None = None) -> Verdict:
    """Run the artifact on ONNX Runtime CPU (or on `runner`, open, the caller's to close) and PyTorch fp32
    on the same inputs; compare by output.

    `samples` overrides opts.verify_samples; `tolerance` the precision's default bound (an INT8 budget);
    `references` keeps PyTorch's outputs between calls on the same model (see `reference`).
    """
    from tqdm import tqdm

    groups = []
    shapes = verification_shapes(opts)
    with contextlib.nullcontext(runner) if runner is not None else OrtRunner(onnx_path, "cpu") as ort_runner:
        for i, (b, h, w) in enumerate(tqdm(shapes, desc=f"verify {precision}", leave=False, disable=not opts.progress)):
            # every sample at every shape when the count is the caller's (INT8's held-out images); else the
            # requested count at the first shape and one batch at each other
            want = samples or (opts.verify_samples if i == 0 else b)
            n = -(-max(b, want) // b) * b  # whole batches
            if images is not None:
                x = resize_images(images, (h, w))
                x = np.resize(x, (n, 3, h, w)) if len(x) < n else x[:n]
            else:
                x = random_inputs(n, (h, w), seed=i)
            refs: dict[str, list] = {}
            outs: dict[str, list] = {}
            for start in range(0, n, b):
                xb = x[start:start + b]
                ref = reference(model, xb, references)
                got = ort_runner.infer({INPUT_NAME: xb})
                for name, r in zip(output_names(opts.features), ref):
                    refs.setdefault(name, []).append(r)
                    outs.setdefault(name, []).append(got[name])
            groups.append(({k: np.concatenate(v) for k, v in refs.items()},
                           {k: np.concatenate(v) for k, v in outs.items()}))
    return verdict(precision, groups, inputs if images is not None else "random", [list(s) for s in shapes],
                   tolerance)
