"""Measurement: the same seeded batches through every backend, warm-up apart from timing, rounds alternated.

Method (also written into every result as `method`):

- Inputs: `random_inputs(batch, img_size, seed + batch)`, the same array for every backend.
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
- CPU threads: torch.set_num_threads(threads), ONNX Runtime intra_op_num_threads = threads, OpenVINO
  INFERENCE_NUM_THREADS = threads (one stream, latency hint).
"""

from __future__ import annotations

import contextlib
import logging
import resource
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from twins_trt.backends import REFERENCE, Backend, Capabilities, Plan, make_runner, plan_run, torch_device
from twins_trt.bench.env import capture_environment, usable_cores
from twins_trt.errors import BackendUnavailableError, one_line

log = logging.getLogger(__name__)

FORMAT = 1
METHOD = {
    "throughput": "img/s = batch / mean latency (= iterations x batch / total timed seconds)",
    "latency": "per iteration: perf_counter around run_prepared() + synchronize(), device synchronized before; "
               "inputs staged once per visit with prepare()",
    "speedup": "median over rounds of (reference p50 latency / backend p50 latency), both measured in the same "
               "round of the same process; reference = PyTorch eager fp32 ('torch')",
    "rounds": "each (backend, batch) visited once per round, backend order reversed on odd rounds",
    "memory": "GPU backends: runner.peak_memory_bytes() (device); CPU: process peak RSS so far (getrusage)",
}

# The paper's throughput protocol (Twins follows Swin/DeiT): batch 64, 50 warm-up, 30 timed iterations.
PAPER_PROTOCOL = {"batch": [64], "warmup": 50, "iters": 30, "rounds": 1}
# Figures quoted for comparison; only Twins-SVT-S is quoted (V100, batch 64, TensorRT 7).
PAPER_FIGURES = {
    "svt_s": {"gpu": "V100", "batch": 64, "torch": 1059.0, "tensorrt": 1732.0, "tensorrt_version": "7"},
}


@dataclass
class BenchConfig:
    variants: list[str]
    backends: list[Backend]
    batches: list[int]
    img_size: tuple[int, int] = (224, 224)
    warmup: int = 10
    iters: int | None = 20
    min_seconds: float | None = None
    rounds: int = 1
    threads: int | None = None  # None: every usable core
    device: str = "auto"  # torch backends: auto | cpu | cuda
    weights: str | None = None
    torch_attn: str = "sdpa"
    export_dir: str = "export"
    engines_dir: str = "engines"
    calib_dir: str | None = None
    calib_synthetic: bool = False
    calib_size: int = 16
    cuda_graph: bool = False
    seed: int = 0
    protocol: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.iters is None and self.min_seconds is None:
            raise ValueError("give a number of timed iterations or a minimum time")
        if self.iters is not None and self.iters < 1:
            raise ValueError(f"--iters must be >= 1, got {self.iters}")
        if self.min_seconds is not None and self.min_seconds <= 0:
            raise ValueError(f"--min-seconds must be > 0, got {self.min_seconds}")
        if self.warmup < 0:
            raise ValueError(f"--warmup must be >= 0, got {self.warmup}")
        if self.rounds < 1:
            raise ValueError(f"--rounds must be >= 1, got {self.rounds}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["backends"] = [b.name for b in self.backends]
        d["img_size"] = list(self.img_size)
        return d


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
            cfg: BenchConfig, bar=None) -> dict[tuple[str, int], Cell]:
    """Warm-up then timed iterations for every (backend, batch), `cfg.rounds` alternating rounds."""
    from twins_trt.data import random_inputs

    inputs = {b: random_inputs(b, cfg.img_size, seed=cfg.seed + b) for b in batches}
    cells = {(name, b): Cell(variant, backends[name], b) for name in runners for b in batches}
    for rnd in range(cfg.rounds):
        order = list(runners) if rnd % 2 == 0 else list(reversed(runners))
        for batch in batches:
            for name in order:
                cell = cells[(name, batch)]
                if bar is not None:
                    bar.set_postfix_str(f"{variant} {name} b{batch} round {rnd + 1}/{cfg.rounds}")
                if cell.error is not None:
                    if bar is not None:
                        bar.update(1)
                    continue
                runner = runners[name]
                try:
                    runner.prepare({"input": inputs[batch]})
                    n_warm = cfg.warmup if rnd == 0 else min(cfg.warmup, 1)  # re-warm caches after the others ran
                    _reset_device_peak(runner.device)
                    cell.warmup_seconds += warm_up(runner, n_warm)
                    cell.warmup_iterations += n_warm
                    lat = time_iterations(runner, cfg.iters, cfg.min_seconds)
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


# ---------------------------------------------------------------------------------------------- a whole run


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="bench", unit="cell", file=sys.stderr, disable=not enabled, leave=False)


def run_benchmark(cfg: BenchConfig, caps: Capabilities | None = None,
                  say: Callable[[str], None] = print) -> dict:
    """Plan, resolve artifacts, measure every variant; returns the result document (see METHOD)."""
    import torch

    caps = caps or Capabilities.detect()
    threads = cfg.threads or usable_cores()
    torch.set_num_threads(threads)
    device = torch_device(cfg.device, caps)
    doc: dict = {"kind": "twins-bench", "format": FORMAT, "config": cfg.to_dict(), "method": METHOD,
                 "env": capture_environment(threads), "results": [], "skipped": [], "plans": {}}
    doc["config"]["threads"] = threads
    doc["config"]["torch_device"] = device
    for variant in cfg.variants:
        from twins_trt.artifacts.resolve import find_onnx

        int8_there = find_onnx(cfg.export_dir, variant, "int8", cfg.img_size, cfg.batches, cfg.weights,
                               cfg.calib_dir) is not None
        plan = plan_run(cfg.backends, caps, cfg.device,
                        can_calibrate=cfg.calib_dir is not None or cfg.calib_synthetic, int8_available=int8_there)
        doc["plans"][variant] = plan.to_dict()
        for name, why in plan.skipped.items():
            doc["skipped"].append({"variant": variant, "backend": name, "status": "skipped", "reason": why})
        _run_variant(variant, plan, cfg, device, threads, doc, say)
    add_speedups(doc["results"])
    if cfg.protocol == "paper":
        doc["paper"] = {v: PAPER_FIGURES[v] for v in cfg.variants if v in PAPER_FIGURES}
    return doc


def _run_variant(variant: str, plan: Plan, cfg: BenchConfig, device: str, threads: int, doc: dict,
                 say: Callable[[str], None]) -> None:
    """One variant: its artifacts, its PyTorch model, a runner per backend, then the measurements."""
    skips = _Skips(doc, variant)
    onnx = _resolve_onnx(variant, plan, cfg, skips, say)
    engines = _resolve_engines(plan, onnx, cfg, skips, say)
    model = _torch_model(variant, plan, cfg, say)
    with contextlib.ExitStack() as stack:
        runners, artifacts = _open_runners(stack, plan, cfg, device, threads, model, onnx, engines, skips)
        if runners:
            _measure_and_record(runners, {b.name: b for b in plan.run}, artifacts, variant, cfg, doc, skips)


@dataclass
class _Skips:
    """The `skipped` list of the result document, one entry per (variant, backend) at most."""

    doc: dict
    variant: str

    def add(self, name: str, status: str, reason: str) -> None:
        if not self.has(name):
            self.doc["skipped"].append({"variant": self.variant, "backend": name, "status": status, "reason": reason})

    def has(self, name: str) -> bool:
        return any(s["backend"] == name and s["variant"] == self.variant for s in self.doc["skipped"])


def _resolve_onnx(variant: str, plan: Plan, cfg: BenchConfig, skips: _Skips, say) -> dict[str, Path]:
    """Precision -> ONNX for the runnable backends; when the export fails, those backends are dropped with why."""
    from twins_trt.artifacts.resolve import ensure_onnx

    if not plan.onnx_precisions:
        return {}
    try:
        return ensure_onnx(variant, plan.onnx_precisions, cfg.batches, img_size=cfg.img_size,
                           export_dir=cfg.export_dir, weights=cfg.weights, calib_dir=cfg.calib_dir,
                           calib_synthetic=cfg.calib_synthetic, calib_size=cfg.calib_size,
                           progress=cfg.progress, say=say)
    except Exception as e:
        for b in [b for b in plan.run if b.needs_onnx]:
            skips.add(b.name, "failed", f"ONNX export failed: {one_line(e)}")
        plan.run = [b for b in plan.run if not b.needs_onnx]
        return {}


def _resolve_engines(plan: Plan, onnx: dict[str, Path], cfg: BenchConfig, skips: _Skips, say) -> dict[str, Path]:
    """Precision -> TensorRT engine, built or reused; a failed build drops its backends with why."""
    from twins_trt.artifacts.resolve import ensure_engine

    engines: dict[str, Path] = {}
    for p in plan.engine_precisions:
        if p not in onnx:
            continue
        try:
            engines[p] = ensure_engine(onnx[p], cfg.batches, cfg.engines_dir, say=say)
        except Exception as e:
            for b in [b for b in plan.run if b.needs_engine and b.precision == p]:
                skips.add(b.name, "failed", f"engine build failed: {one_line(e)}")
    return engines


def _torch_model(variant: str, plan: Plan, cfg: BenchConfig, say):
    """The PyTorch model, only when a torch backend runs (random weights are fine for speed, and said so)."""
    from twins_trt.models import RandomWeightsWarning, create_model

    if not any(b.is_torch for b in plan.run):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        model = create_model(variant, weights=cfg.weights, seed=0, attn_impl=cfg.torch_attn)
    if cfg.weights is None:
        say(f"note: {variant} runs with random weights (speed does not depend on them)")
    return model


def _open_runners(stack: contextlib.ExitStack, plan: Plan, cfg: BenchConfig, device: str, threads: int, model,
                  onnx: dict[str, Path], engines: dict[str, Path],
                  skips: _Skips) -> tuple[dict[str, object], dict[str, str | None]]:
    """(backend -> active runner, backend -> artifact path); a backend that cannot open is skipped or failed."""
    runners: dict[str, object] = {}
    artifacts: dict[str, str | None] = {}
    for b in plan.run:
        if b.needs_engine and b.precision not in engines:
            skips.add(b.name, "skipped", f"no {b.precision} ONNX to build an engine from")
            continue
        if b.needs_onnx and b.precision not in onnx:
            continue
        try:
            r = make_runner(b, model=model, device=device, onnx=onnx, engines=engines, threads=threads,
                            cuda_graph=cfg.cuda_graph)
            stack.enter_context(r)
        except BackendUnavailableError as e:
            skips.add(b.name, "skipped", str(e))
            continue
        except Exception as e:
            skips.add(b.name, "failed", one_line(e))
            continue
        runners[b.name] = r
        artifacts[b.name] = (str(engines[b.precision] if b.needs_engine else onnx[b.precision])
                             if b.needs_onnx else None)
    return runners, artifacts


def _measure_and_record(runners: dict[str, object], backends: dict[str, Backend], artifacts: dict[str, str | None],
                        variant: str, cfg: BenchConfig, doc: dict, skips: _Skips) -> None:
    """Measure every (backend, batch) cell and append its result (or the backend's failure) to `doc`."""
    bar = _progress(cfg.rounds * len(cfg.batches) * len(runners), cfg.progress)
    try:
        cells = measure(runners, backends, variant, cfg.batches, cfg, bar)
    finally:
        bar.close()
    for name, r in runners.items():
        try:
            info = r.describe()
        except Exception as e:  # pragma: no cover
            info = {"name": name, "describe_failed": one_line(e)}
        for b in cfg.batches:
            res = cells[(name, b)].result(info, artifacts[name])
            if res["status"] == "failed":
                skips.add(name, "failed", res["reason"])
                continue
            doc["results"].append(res)
