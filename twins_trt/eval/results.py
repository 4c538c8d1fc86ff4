"""Per-backend accuracy figures, accumulated chunk by chunk: top-1/top-5 against the labels, top-1
agreement with PyTorch fp32 and the cosine of the logits (the project's one cosine, `twins_trt.metrics`).

Agreement and cosine mean something even with random weights; accuracy does not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from twins_trt.metrics import cosine_per_sample, top1_agreement, topk_hits


@dataclass
class Row:
    """One backend's row in an evaluation (either task): its name, whether it has figures, and if not why."""

    name: str
    status: str = "ok"  # ok | skipped (cannot run here) | failed (tried and broke)
    reason: str | None = None
    artifact: str | None = None
    device: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def drop(self, status: str, reason: str) -> None:
        self.status, self.reason = status, reason


@dataclass
class BackendResult(Row):
    """A classifier's row: top-1/top-5, and agreement and cosine against the reference."""

    images: int = 0
    seconds: float = 0.0
    top1: float | None = None
    top5: float | None = None
    top1_delta: float | None = None
    top5_delta: float | None = None
    agreement: float | None = None
    cosine_mean: float | None = None
    cosine_min: float | None = None
    verification: dict | None = None  # the artifact's export verdict: metric, bound, worst, passed
    below_bound: dict | None = None  # set when an artifact that missed the export's bound was evaluated on purpose
    calibration: dict | None = None  # INT8: the images it was calibrated on, and their overlap with the eval set
    # running sums, not reported
    _top1: int = 0
    _top5: int = 0
    _agree: int = 0
    _cos: list[np.ndarray] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


def accumulate(r: BackendResult, logits: np.ndarray, labels: np.ndarray, ref: np.ndarray) -> None:
    """Add one chunk's hits, agreement with the reference logits `ref` and per-sample cosines."""
    top1, top5 = topk_hits(logits, labels, 5)
    r._top1 += top1
    r._top5 += top5
    r._agree += top1_agreement(logits, ref)
    r._cos.append(cosine_per_sample(logits, ref))
    r.images += len(labels)


def finish(r: BackendResult, ref: BackendResult | None) -> None:
    """Turn the running sums into percentages and cosine figures; deltas against `ref` (None for the reference)."""
    if not r.ok or not r.images:
        return
    n = r.images
    r.top1, r.top5, r.agreement = 100.0 * r._top1 / n, 100.0 * r._top5 / n, 100.0 * r._agree / n
    cos = np.concatenate(r._cos)
    r.cosine_mean, r.cosine_min = float(cos.mean()), float(cos.min())
    if ref is None:
        r.top1_delta = r.top5_delta = 0.0
    elif ref.top1 is not None:
        r.top1_delta, r.top5_delta = r.top1 - ref.top1, r.top5 - ref.top5


__all__ = ["BackendResult", "Row", "accumulate", "finish"]
