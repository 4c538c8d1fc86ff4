"""Timing and its statistics: warm-up apart from timing, rounds alternated, latency percentiles and speedups.

How one cell is timed (the whole method, written into every result, is `twins_trt.bench.run.METHOD`):

- Each backend gets `prepare(feed)` once per visit (inputs staged on the device for GPU backends),
  then warm-up iterations (counted and timed apart: torch.compile compiles here), then timed ones.
- One timed iteration is `run_prepared(); synchronize()` between two `time.perf_counter()` reads, the
  device synchronized before the first read. On the CPU synchronize is a no-op; on a GPU it waits for
  the device, so the clock sees whole inferences and no host copies.
- img/s = batch / mean latency, which is the same number as iterations x batch / total timed seconds.
- Rounds: every (backend, batch) cell is visited once per round, backends in alternating order
  (reversed on odd rounds), so slow phases of a shared machine hit all backends alike.
  speedup = median over rounds of (reference p50 / backend p50) in the same round: a ratio of
  medians measured side by side, which is what the regression gate compares.

Both tasks measure with `measure` (the classifier bench in `bench.run`, the segmentor bench in `bench.seg`).
"""

from __future__ import annotations

import logging
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from twins_trt.backends import REFERENCE, Backend
from twins_trt.errors import one_line

log = logging.getLogger(__name__)


class Schedule(Protocol):
    """What `measure` reads of the run's options (`BenchOptions` has all of it)."""

    img_size: tuple[int, int]
    seed: int
    rounds: int
    warmup: int
    iters: int | None
    min_seconds: float | None


# ---------------------------------------------------------------------------------------------- statistics


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (NumPy's default), q in [0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def latency_stats(latencies_s: list[float], batch: int) -> dict:
    """Seconds per iteration -> ms statistics and img/s (= batch / mean)."""
    if not latencies_s:
        raise ValueError("no timed iterations")
    ms = [x * 1e3 for x in latencies_s]
    mean = statistics.fmean(ms)
    return {
        "img_s": batch / (mean / 1e3),
        "latency_ms": {"mean": mean, "p50": percentile(ms, 50), "p90": percentile(ms, 90),
                       "p99": percentile(ms, 99), "stdev": statistics.stdev(ms) if len(ms) > 1 else 0.0,
                       "min": min(ms), "max": max(ms)},
        "iterations": len(ms),
        "timed_seconds": sum(latencies_s),
    }


def median_ratio(ref_p50s: list[float], p50s: list[float]) -> float:
    """Median over rounds of ref/this; rounds missing on either side fall back to the ratio of overall medians."""
    if len(ref_p50s) == len(p50s) and ref_p50s:
        return statistics.median(r / x for r, x in zip(ref_p50s, p50s, strict=True))
    return statistics.median(ref_p50s) / statistics.median(p50s)


def add_speedups(results: list[dict], reference: str = REFERENCE) -> None:
    """Fill speedup_vs_torch and speedup_vs_best_torch for every ok cell (pure: result dicts in, same dicts out)."""
    ok = [r for r in results if r.get("status") == "ok"]
    for r in ok:
        same = [c for c in ok if c["variant"] == r["variant"] and c["batch"] == r["batch"]]
        ref = next((c for c in same if c["backend"] == reference), None)
        torches = [c for c in same if c.get("runtime") == "torch"]
        best = min(torches, key=lambda c: statistics.median(c["round_p50_ms"])) if torches else None
        r["speedup_vs_torch"] = median_ratio(ref["round_p50_ms"], r["round_p50_ms"]) if ref else None
        r["best_torch"] = best["backend"] if best else None
        r["speedup_vs_best_torch"] = median_ratio(best["round_p50_ms"], r["round_p50_ms"]) if best else None


# ---------------------------------------------------------------------------------------------- timing


def warm_up(runner, n: int) -> float:
    runner.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        runner.run_prepared()
    runner.synchronize()
    return time.perf_counter() - t0


def time_iterations(runner, iters: int | None = None, min_seconds: float | None = None,
                    min_iters: int = 3) -> list[float]:
    """Per-iteration seconds: `iters` of them, or as many as fill `min_seconds` (at least `min_iters`)."""
    lat: list[float] = []
    runner.synchronize()
    total = 0.0
    while True:
        t0 = time.perf_counter()
        runner.run_prepared()
        runner.synchronize()
        dt = time.perf_counter() - t0
        lat.append(dt)
        total += dt
        if iters is not None:
            if len(lat) >= iters:
                return lat
        elif total >= min_seconds and len(lat) >= min_iters:
            return lat


def host_peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


# ---------------------------------------------------------------------------------------------- cells


@dataclass
class Cell:
    variant: str
    backend: Backend
    batch: int
    latencies: list[float] = field(default_factory=list)
    round_p50_ms: list[float] = field(default_factory=list)
    warmup_iterations: int = 0
    warmup_seconds: float = 0.0
    peak_memory_bytes: int | None = None
    memory_kind: str = "host_peak_rss"
    error: str | None = None

    def result(self, runner_info: dict, artifact: str | None) -> dict:
        emulated = bool(runner_info.get("emulated"))  # the TensorRT emulator: never reported as TensorRT
        base = {"variant": self.variant, "backend": self.backend.name + " (emulated)" * emulated,
                "runtime": self.backend.runtime, "precision": self.backend.precision, "batch": self.batch,
                **({"emulated": True} if emulated else {})}
        if self.error is not None:
            return {**base, "status": "failed", "reason": self.error}
        return {**base, "status": "ok", **latency_stats(self.latencies, self.batch),
                "rounds": len(self.round_p50_ms), "round_p50_ms": self.round_p50_ms,
                "warmup_iterations": self.warmup_iterations, "warmup_seconds": self.warmup_seconds,
                "peak_memory_bytes": self.peak_memory_bytes, "memory_kind": self.memory_kind,
                "runner": runner_info, "artifact": artifact}


def _reset_device_peak(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def measure(runners: dict[str, object], backends: dict[str, Backend], variant: str, batches: list[int],
            opts: Schedule, bar=None) -> dict[tuple[str, int], Cell]:
    """Warm-up then timed iterations for every (backend, batch), `opts.rounds` alternating rounds."""
    from twins_trt.data import random_inputs

    inputs = {b: random_inputs(b, opts.img_size, seed=opts.seed + b) for b in batches}
    cells = {(name, b): Cell(variant, backends[name], b) for name in runners for b in batches}
    for rnd in range(opts.rounds):
        order = list(runners) if rnd % 2 == 0 else list(reversed(runners))
        for batch in batches:
            for name in order:
                cell = cells[(name, batch)]
                if bar is not None:
                    bar.set_postfix_str(f"{variant} {name} b{batch} round {rnd + 1}/{opts.rounds}")
                if cell.error is not None:
                    if bar is not None:
                        bar.update(1)
                    continue
                runner = runners[name]
                try:
                    runner.prepare({"input": inputs[batch]})
                    n_warm = opts.warmup if rnd == 0 else min(opts.warmup, 1)  # re-warm caches after the others ran
                    _reset_device_peak(runner.device)
                    cell.warmup_seconds += warm_up(runner, n_warm)
                    cell.warmup_iterations += n_warm
                    lat = time_iterations(runner, opts.iters, opts.min_seconds)
                except Exception as e:  # a backend failing mid-run is reported, the others go on
                    log.debug("backend %s failed", name, exc_info=True)
                    cell.error = f"failed at batch {batch}: {one_line(e)}"
                    if bar is not None:
                        bar.update(1)
                    continue
                cell.latencies += lat
                cell.round_p50_ms.append(percentile([x * 1e3 for x in lat], 50))
                dev_peak = runner.peak_memory_bytes()
                if dev_peak is not None:
                    cell.peak_memory_bytes = max(cell.peak_memory_bytes or 0, dev_peak)
                    cell.memory_kind = "device_peak"
                else:
                    cell.peak_memory_bytes = host_peak_rss_bytes()
                if bar is not None:
                    bar.update(1)
    return cells
