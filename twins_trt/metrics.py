"""The figures every comparison in the project reports, defined once.

Cosine is the one the export reports: each sample's output flattened, the cosine similarity of
that pair, then the mean over samples. Export verification, engine verification and twins-eval
all call these, so "cosine 0.993" means the same thing in every report.
"""

from __future__ import annotations

import math

import numpy as np


def cosine_per_sample(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each sample's flattened output (axis 0 is the sample), in float64.

    Two all-zero samples are identical (1.0); a zero sample against a non-zero one shares no direction (0.0).
    """
    a = np.asarray(a).reshape(len(a), -1).astype(np.float64)
    b = np.asarray(b).reshape(len(b), -1).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare outputs of shapes {a.shape} and {b.shape}")
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    den = na * nb
    both_zero = (na == 0) & (nb == 0)
    return np.where(den > 0, (a * b).sum(axis=1) / np.maximum(den, 1e-300), np.where(both_zero, 1.0, 0.0))


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over samples of `cosine_per_sample`: the cosine every report in this project quotes."""
    return float(cosine_per_sample(a, b).mean())


def cosine_spread(per_sample: np.ndarray) -> dict[str, float]:
    """How per-sample cosines scatter: the worst sample, the 5th percentile and the median."""
    per = np.asarray(per_sample)
    return {"cosine_min": float(per.min()), "cosine_p05": float(np.percentile(per, 5)),
            "cosine_median": float(np.median(per))}


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n (k may be fractional: a mean agreement times n)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def topk_hits(logits: np.ndarray, labels: np.ndarray, k: int = 5) -> tuple[int, int]:
    """(top-1 hits, top-k hits) of `logits` (N, classes) against integer `labels` (N,)."""
    top = np.argsort(-np.asarray(logits), axis=1)[:, :k]
    labels = np.asarray(labels)
    return int((top[:, 0] == labels).sum()), int((top == labels[:, None]).any(axis=1).sum())


def top1_agreement(logits: np.ndarray, reference: np.ndarray) -> int:
    """How many decisions have the same arg-max over classes (axis 1) as the reference: one per sample for
    classifier logits (N, K), one per pixel for segmentation logits (N, K, H, W)."""
    return int((np.asarray(logits).argmax(axis=1) == np.asarray(reference).argmax(axis=1)).sum())


def agreement_rate(logits: np.ndarray, reference: np.ndarray) -> float:
    """The share of `top1_agreement`'s decisions that agree: of samples (N, K), or of pixels (N, K, H, W)."""
    reference = np.asarray(reference)
    return top1_agreement(logits, reference) / (reference.size // reference.shape[1])


__all__ = ["agreement_rate", "cosine_per_sample", "cosine_spread", "mean_cosine", "top1_agreement", "topk_hits",
           "wilson"]
