"""The A/B gate's decision for one cell: per-round speed ratios (new / base) -> pass, regression or inconclusive.

Each side runs in its own process, and two processes of *identical* code differ by a few percent that
stays fixed for the process's life (memory layout, allocation order, which one warmed the caches):
measured on one process pair, every round carries the same offset, and an interval over rounds claims
with confidence that the code is slower than itself. So the unit of replication is the process pair,
not the round: the run restarts both sides every `restart_every` rounds, each pair contributes one
value (the median of its rounds' ratios), and the interval is taken over those values. Then the
process-to-process offset is part of the spread the interval covers, and a real slowdown, which is in
every pair, still moves all of them.

Over pairs: the median and a distribution-free 99% interval of that median (order statistics), so a
pair that a busy neighbour disturbed moves the interval's edge, not the verdict. 99%, not 95%: on
identical code a 95% interval excludes 1.0 in one run of twenty by construction, and with the 5 pairs
the gate used to take ([min, max], 93.75%) in one of sixteen (measured: 1 of 6 A/A runs, all 5 pairs
above 1.0); the gate takes 8 pairs (`MIN_PAIRS`), whose [min, max] covers the median with 99.2%.
One pair alone says nothing about the process offset: its interval is unbounded (inconclusive).
Pure functions: no timing, no processes.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

CONFIDENCE = 0.99  # of the interval over process pairs
MIN_PAIRS = 8  # the fewest pairs (rounds) the gate decides on: [min, max] of 8 covers the median with 99.2%


@dataclass(frozen=True)
class CellVerdict:
    status: str  # pass | regression | inconclusive
    ratio: float  # median over process pairs of new img/s / base img/s
    low: float  # distribution-free CONFIDENCE interval of that median
    high: float
    rounds: int
    spread: tuple[float, float]  # min and max of the per-round ratios
    pairs: int = 0  # process pairs (the units the interval is over); 0 in documents written before pairs
    change: str = "none"  # slower | faster | none: which side of 1.0 the whole interval lies
    confidence: float = CONFIDENCE  # of [low, high]; documents written before it was recorded used 0.95

    def to_dict(self) -> dict:
        return asdict(self)


def median_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Order-statistic interval for the median (sign-test inversion): robust to rounds a neighbour disturbed.

    With n values sorted, [x(k), x(n-k+1)] covers the median with probability 1 - 2 P(Binomial(n, 1/2) < k);
    k is the largest that keeps this >= `confidence`, or 1 (the whole range) when none does (at 99%: n < 12).
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


def pair_values(ratios: list[float], pairs: list[int] | None = None) -> list[float]:
    """One value per process pair: the median of that pair's rounds (each round its own pair when `pairs` is None)."""
    if pairs is None:
        return list(ratios)
    if len(pairs) != len(ratios):
        raise ValueError(f"one process-pair index per round: {len(ratios)} ratios, {len(pairs)} pair indices")
    by_pair: dict[int, list[float]] = {}
    for p, r in zip(pairs, ratios):
        by_pair.setdefault(p, []).append(r)
    return [statistics.median(rs) for rs in by_pair.values()]


def decide(ratios: list[float], max_regression: float, pairs: list[int] | None = None,
           confidence: float = CONFIDENCE) -> CellVerdict:
    """pass / regression / inconclusive from per-round speed ratios (new / base) and each round's process pair; pure.

    pass: the whole `confidence` interval (over process pairs) of the median ratio is at or above 1 - max_regression;
    regression: the whole interval is below it; inconclusive: the interval straddles it (more pairs narrow it).
    `change` says whether the interval lies wholly below 1 (slower) or above it (faster), bound or not.
    """
    if not ratios or any(not math.isfinite(r) or r <= 0 for r in ratios):
        raise ValueError(f"speed ratios must be positive numbers, got {ratios}")
    units = pair_values(ratios, pairs)
    bound = 1.0 - max_regression
    low, high = median_interval(units, confidence) if len(units) >= 2 else (0.0, math.inf)
    status = "pass" if low >= bound else "regression" if high < bound else "inconclusive"
    change = "slower" if high < 1.0 else "faster" if low > 1.0 else "none"
    return CellVerdict(status, statistics.median(units), low, high, len(ratios), (min(ratios), max(ratios)),
                       len(units), change, confidence)


def document_confidence(doc: dict) -> float:
    """The confidence of the intervals an A/B document holds (0.95 in documents written before it was recorded)."""
    return next((c["verdict"].get("confidence", 0.95) for c in doc["cells"] if c.get("verdict")), CONFIDENCE)
