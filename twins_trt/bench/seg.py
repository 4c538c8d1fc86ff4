"""Frames per second of Twins segmentors at segmentation sizes, per backend (`twins-bench --task seg`).

The measurement is the classifier benchmark's own (`twins_trt.bench.measure.measure`: seeded inputs,
warm-up apart, alternating rounds, device synchronised around each timed iteration); only the
model, the artifacts and the sizes differ. Batch 1: a segmentor serves one frame at a time, so
frames/s = 1 / mean latency. ONNX artifacts come from the one resolver (`Resolver` with a
`Request(task="seg")`, one per variant and size): a dynamic-H/W export in ``export_dir`` whose profile
covers the size is reused, then a static one at that size; failing both, a static export is made at
that size (INT8 only when the run names calibration images, --calib-data or --calib-synthetic; else it
is reused only: export it with `twins-export --task seg --int8`). Each backend stands on its own, and an
INT8 that misses its accuracy bound is timed anyway from a temporary file and flagged BELOW BOUND, as in
the classifier benchmark (`Resolver.artifacts`).
"""

from __future__ import annotations

import contextlib
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from twins_trt.artifacts.resolve import Calibration, Request, Resolver
from twins_trt.backends import Backend, Capabilities, make_runner, plan_run
from twins_trt.bench.env import capture_environment
from twins_trt.bench.measure import latency_stats, measure
from twins_trt.bench.report import below_bound_lines
from twins_trt.bench.run import BenchOptions, host_setup
from twins_trt.errors import one_line

DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((512, 512), (1024, 2048))


@dataclass
class SegBenchOptions:
    variants: list[str]
    backends: list[Backend]
    head: str = "fpn"
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES
    num_classes: int | None = None
    weights: str | None = None
    seg_output: str = "input"
    torch_attn: str = "sdpa"  # the PyTorch baseline's attention, as twins-bench's --torch-attn (exports: explicit)
    warmup: int = 2
    iters: int | None = 5
    min_seconds: float | None = None
    rounds: int = 1
    threads: int | None = None
    device: str = "auto"
    export_dir: str = "export"
    seed: int = 0
    progress: bool = True
    calib_dir: str | None = None  # INT8 is exported (not only reused) with calibration images or synthetic data
    calib_synthetic: bool = False
    calib_size: int = 16
    skipped: list[dict] = field(default_factory=list)

    def resolver(self, variant: str, size: tuple[int, int], say: Callable[[str], None],
                 scratch: str | None = None) -> Resolver:
        """The one resolver of `variant`'s segmentor at `size` (FP32/FP16 exported when missing; INT8 only with
        calibration, else reused only); `scratch` keeps an INT8 below its bound for this run."""
        request = Request(variant, (1,), tuple(size), self.weights, task="seg", seg_head=self.head,
                          num_classes=self.num_classes, seg_output=self.seg_output, export_dir=str(self.export_dir))
        calibration = Calibration(self.calib_dir, self.calib_synthetic, self.calib_size)
        return Resolver(request, calibration, say=say, progress=self.progress, scratch=scratch,
                        exportable=("fp32", "fp16", "int8") if calibration.possible else ("fp32", "fp16"))


def run_seg_benchmark(cfg: SegBenchOptions, caps: Capabilities | None = None,
                      say: Callable[[str], None] = print) -> dict:
    """Every (variant, size, backend) at batch 1; returns a result document like twins-bench's."""
    from twins_trt.models import RandomWeightsWarning
    from twins_trt.models.segmentor import create_segmentor

    caps, threads, device = host_setup(cfg.threads, cfg.device, caps)
    doc: dict = {"kind": "twins-bench-seg", "head": cfg.head, "torch_attn": cfg.torch_attn, "sizes": [list(s) for s in cfg.sizes],
                 "env": capture_environment(threads), "threads": threads, "torch_device": device,
                 "method": "batch 1; frames/s = 1 / mean latency; twins_trt.bench.measure.measure per size",
                 "results": [], "skipped": []}
    for variant in cfg.variants:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)
            model = create_segmentor(variant, cfg.head, cfg.num_classes, cfg.weights, cfg.seg_output, seed=0)
        model.set_attn_impl(cfg.torch_attn)  # export_variant traces a copy of its own, always explicit
        with tempfile.TemporaryDirectory(prefix="twins-bench-seg-") as scratch:  # below-bound INT8 lives here only
            for size in cfg.sizes:
                resolver = cfg.resolver(variant, size, say, scratch)
                plan = plan_run(cfg.backends, caps, cfg.device, can_calibrate=resolver.calibration.possible,
                                int8_available=resolver.find("int8") is not None)
                for name, why in plan.skipped.items():
                    doc["skipped"].append({"variant": variant, "size": list(size), "backend": name, "reason": why})
                arts, failed = resolver.artifacts(plan.onnx_precisions) if plan.onnx_precisions else ({}, {})
                for b in plan.run:  # each backend fails only for its own precision's reason
                    if b.needs_onnx and b.precision in failed:
                        doc["skipped"].append({"variant": variant, "size": list(size), "backend": b.name,
                                               "reason": failed[b.precision]})
                onnx = {p: a.path for p, a in arts.items()}
                below = {p: a.below_bound for p, a in arts.items() if a.below_bound}
                _measure_size(cfg, variant, size, [b for b in plan.run if b.precision not in failed or
                                                   not b.needs_onnx], model, onnx, device, threads, doc, below)
    return doc


def _measure_size(cfg: SegBenchOptions, variant: str, size, backends: list[Backend], model, onnx: dict[str, Path],
                  device: str, threads: int, doc: dict, below: dict[str, dict] | None = None) -> None:
    bcfg = BenchOptions(variants=[variant], backends=backends, batches=[1], img_size=tuple(size), warmup=cfg.warmup,
                       iters=cfg.iters, min_seconds=cfg.min_seconds, rounds=cfg.rounds, threads=threads,
                       seed=cfg.seed, progress=False)
    runners: dict[str, object] = {}
    with contextlib.ExitStack() as stack:
        for b in backends:
            if b.needs_engine or (b.needs_onnx and b.precision not in onnx):
                if b.needs_engine or b.precision == "int8":
                    doc["skipped"].append({"variant": variant, "size": list(size), "backend": b.name,
                                           "reason": f"no {b.precision} segmentation artifact for this size"})
                continue
            try:
                r = make_runner(b, model=model, device=device, onnx=onnx, engines={}, threads=threads)
                stack.enter_context(r)
            except Exception as e:  # BackendUnavailableError above all: reported, the others go on
                doc["skipped"].append({"variant": variant, "size": list(size), "backend": b.name, "reason": one_line(e)})
                continue
            runners[b.name] = r
        cells = measure(runners, {b.name: b for b in backends}, variant, [1], bcfg)
    for (name, _), cell in cells.items():
        row = {"variant": variant, "head": cfg.head, "size": list(size), "backend": name,
               "artifact": str(onnx[cell.backend.precision]) if cell.backend.needs_onnx else None}
        if cell.error:
            doc["skipped"].append({**row, "reason": cell.error})
            continue
        stats = latency_stats(cell.latencies, 1)
        flag = (below or {}).get(cell.backend.precision) if cell.backend.needs_onnx else None
        doc["results"].append({**row, "fps": stats["img_s"], "latency_ms": stats["latency_ms"],
                               "iterations": stats["iterations"], **({"below_bound": flag} if flag else {})})


def format_seg_table(doc: dict) -> str:
    """One row per (variant, backend), one frames/s column per size."""
    sizes = [tuple(s) for s in doc["sizes"]]
    rows: dict[tuple[str, str], dict] = {}
    for r in doc["results"]:
        rows.setdefault((r["variant"], r["backend"]), {})[tuple(r["size"])] = r
    flagged = any(r.get("below_bound") for r in doc["results"])
    head = ["variant", "backend"] + [f"{h}x{w} fps (p50 ms)" for h, w in sizes] + ["note"] * flagged
    lines = [head]
    for (variant, backend), by_size in rows.items():
        cells = [f"{by_size[s]['fps']:.2f} ({by_size[s]['latency_ms']['p50']:.0f})" if s in by_size else "-"
                 for s in sizes]
        below = [f"{'x'.join(map(str, s))}" for s in sizes if s in by_size and by_size[s].get("below_bound")]
        note = [f"BELOW BOUND ({', '.join(below)})" if below else ""] * flagged
        lines.append([variant, backend, *cells, *note])
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines]
    out += below_bound_lines({"results": [{**r, "variant": f"{r['variant']} {r['head']} {'x'.join(map(str, r['size']))}"}
                                          for r in doc["results"]]})
    for s in doc["skipped"]:
        size = "x".join(map(str, s["size"])) if s.get("size") else ""
        out.append(f"skipped {s['variant']} {size} {s['backend']}: {s['reason']}")
    return "\n".join(out)
