"""The A/B gate's decision for one cell: per-round speed ratios (new / base) -> pass, regression or inconclusive.

Per round the ratio base p50 / new p50 is taken; over rounds, its median and a distribution-free 95%
interval of that median (order statistics), so a round that a busy neighbour disturbed moves the
interval's edge, not the verdict. Pure functions: no timing, no processes.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class CellVerdict:
    status: str  # pass | regression | inconclusive
    ratio: float  # median over rounds of new img/s / base img/s
    low: float  # distribution-free 95% interval of that median
    high: float
    rounds: int
    spread: tuple[float, float]  # min and max of the per-round ratios

    def to_dict(self) -> dict:
        return asdict(self)


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Order-statistic interval for the median (sign-test inversion): robust to rounds a neighbour disturbed.

    With n values sorted, [x(k), x(n-k+1)] covers the median with probability 1 - 2 P(Binomial(n, 1/2) < k);
    k is the largest that keeps this >= `confidence`, or 1 (the whole range) when none does (n < 6).
    """
    xs = sorted(values)
    n = len(xs)
    tail, k, below = (1 - confidence) / 2, 1, 0.0
    for j in range(1, n // 2 + 1):  # P(B < j+1) = P(B <= j)
        below += math.comb(n, j - 1) / 2**n
        if below > tail:
            break
        k = j
    return xs[k - 1], xs[n - k]


def decide(ratios: list[float], max_regression: float) -> CellVerdict:
    """pass / regression / inconclusive from per-round speed ratios (new / base); pure.

    pass: the whole 95% interval of the median ratio is at or above 1 - max_regression; regression: the
    whole interval is below it; inconclusive: the interval straddles it (more rounds narrow it).
    """
    if not ratios or any(not math.isfinite(r) or r <= 0 for r in ratios):
        raise ValueError(f"speed ratios must be positive numbers, got {ratios}")
    bound = 1.0 - max_regression
    low, high = median_interval(ratios) if len(ratios) >= 2 else (0.0, math.inf)
    status = "pass" if low >= bound else "regression" if high < bound else "inconclusive"
    return CellVerdict(status, statistics.median(ratios), low, high, len(ratios), (min(ratios), max(ratios)))
