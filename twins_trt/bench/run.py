"""A classifier benchmark run: the same seeded batches through every backend, each artifact resolved once.

Method (also written into every result as `method`):

- Inputs: `random_inputs(batch, img_size, seed + batch)`, the same array for every backend.
- Timing, rounds and speedups: `twins_trt.bench.measure` (warm-up apart, alternating rounds, device
  synchronized around each timed iteration; speedup = median over rounds of reference p50 / backend p50).
- CPU threads: torch.set_num_threads(threads), ONNX Runtime intra_op_num_threads = threads, OpenVINO
  INFERENCE_NUM_THREADS = threads (one stream, latency hint).
- Artifacts: one `Resolver` per variant answers the plan (is there an INT8 export?), the ONNX files
  (reused, or the missing ones exported in one call) and the TensorRT engines, each once.
- Each backend stands on its own: one whose artifact cannot be made fails with its own reason, the
  others are measured. Speed does not depend on accuracy: a quantized export that misses its accuracy
  bound is timed anyway, from a temporary file that lives for this run only (its engine too), and its
  rows carry `below_bound` (the figures and the twins-export command that makes one within budget).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from twins_trt.artifacts.resolve import Artifact, Calibration, Request, Resolver
from twins_trt.backends import Backend, Capabilities, Plan, make_runner, plan_run, torch_device
from twins_trt.bench.env import capture_environment, usable_cores
from twins_trt.bench.measure import add_speedups, measure
from twins_trt.errors import BackendUnavailableError, one_line

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
class BenchOptions:
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

    def resolver(self, variant: str, say: Callable[[str], None], scratch: str | None = None) -> Resolver:
        """The one resolver of `variant`'s artifacts for this run (`scratch`: where a quantized export below its
        bound is kept for this run only)."""
        request = Request(variant, tuple(self.batches), tuple(self.img_size), self.weights,
                          export_dir=str(self.export_dir))
        return Resolver(request, Calibration(self.calib_dir, self.calib_synthetic, self.calib_size), say=say,
                        progress=self.progress, scratch=scratch)


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="bench", unit="cell", file=sys.stderr, disable=not enabled, leave=False)


def host_setup(threads: int | None, device: str, caps: Capabilities | None = None) -> tuple[Capabilities, int, str]:
    """(capabilities, CPU threads, torch device) of a run, either task; torch set to use those threads."""
    import torch

    caps = caps or Capabilities.detect()
    threads = threads or usable_cores()
    torch.set_num_threads(threads)
    return caps, threads, torch_device(device, caps)


def run_benchmark(cfg: BenchOptions, caps: Capabilities | None = None,
                  say: Callable[[str], None] = print) -> dict:
    """Plan, resolve artifacts, measure every variant; returns the result document (see METHOD)."""
    caps, threads, device = host_setup(cfg.threads, cfg.device, caps)
    doc: dict = {"kind": "twins-bench", "format": FORMAT, "config": cfg.to_dict(), "method": METHOD,
                 "env": capture_environment(threads), "results": [], "skipped": [], "plans": {}}
    doc["config"]["threads"] = threads
    doc["config"]["torch_device"] = device
    with tempfile.TemporaryDirectory(prefix="twins-bench-") as scratch:  # below-bound artifacts live here only
        for variant in cfg.variants:
            resolver = cfg.resolver(variant, say, scratch)
            plan = plan_run(cfg.backends, caps, cfg.device, can_calibrate=resolver.calibration.possible,
                            int8_available=resolver.find("int8") is not None)
            doc["plans"][variant] = plan.to_dict()
            for name, why in plan.skipped.items():
                doc["skipped"].append({"variant": variant, "backend": name, "status": "skipped", "reason": why})
            _run_variant(variant, plan, resolver, cfg, device, threads, doc, say)
    add_speedups(doc["results"])
    if cfg.protocol == "paper":
        doc["paper"] = {v: PAPER_FIGURES[v] for v in cfg.variants if v in PAPER_FIGURES}
    return doc


def _run_variant(variant: str, plan: Plan, resolver: Resolver, cfg: BenchOptions, device: str, threads: int,
                 doc: dict, say: Callable[[str], None]) -> None:
    """One variant: its artifacts, its PyTorch model, a runner per backend, then the measurements."""
    skips = _Skips(doc, variant)
    arts = _resolve_onnx(plan, resolver, skips)
    onnx = {p: a.path for p, a in arts.items()}
    engines = _resolve_engines(plan, arts, resolver, cfg, skips)
    model = _torch_model(variant, plan, cfg, say)
    with contextlib.ExitStack() as stack:
        runners, artifacts = _open_runners(stack, plan, cfg, device, threads, model, onnx, engines, skips)
        below = {b.name: arts[b.precision].below_bound for b in plan.run
                 if b.needs_onnx and b.precision in arts and arts[b.precision].below_bound}
        if runners:
            _measure_and_record(runners, {b.name: b for b in plan.run}, artifacts, variant, cfg, doc, skips, below)


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


def _resolve_onnx(plan: Plan, resolver: Resolver, skips: _Skips) -> dict[str, Artifact]:
    """Precision -> artifact for the runnable backends, each precision on its own: a backend whose precision
    could not be made is dropped with its own reason; one below its bound stays (flagged)."""
    if not plan.onnx_precisions:
        return {}
    arts, failed = resolver.artifacts(plan.onnx_precisions)
    for b in plan.run:
        if b.needs_onnx and b.precision not in arts:
            skips.add(b.name, "failed", failed.get(b.precision, f"no {b.precision} ONNX"))
    plan.run = [b for b in plan.run if not b.needs_onnx or b.precision in arts]
    return arts


def _resolve_engines(plan: Plan, arts: dict[str, Artifact], resolver: Resolver, cfg: BenchOptions,
                     skips: _Skips) -> dict[str, Path]:
    """Precision -> TensorRT engine, built or reused; a failed build drops its backends with why. An ONNX below
    its bound gets its engine beside it, in the run's temporary folder (never under --engines-dir)."""
    engines: dict[str, Path] = {}
    for p in plan.engine_precisions:
        if p not in arts:
            continue
        try:
            where = arts[p].path.parent if arts[p].below_bound else cfg.engines_dir
            engines[p] = resolver.engine(arts[p].path, where)
        except Exception as e:
            for b in [b for b in plan.run if b.needs_engine and b.precision == p]:
                skips.add(b.name, "failed", f"engine build failed: {one_line(e)}")
    return engines


def _torch_model(variant: str, plan: Plan, cfg: BenchOptions, say):
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


def _open_runners(stack: contextlib.ExitStack, plan: Plan, cfg: BenchOptions, device: str, threads: int, model,
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
                        variant: str, cfg: BenchOptions, doc: dict, skips: _Skips,
                        below: dict[str, dict] | None = None) -> None:
    """Measure every (backend, batch) cell and append its result (or the backend's failure) to `doc`; a backend
    timed from an artifact below its accuracy bound carries `below_bound` in each of its results."""
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
            if (below or {}).get(name):
                res["below_bound"] = below[name]
            doc["results"].append(res)
