"""Frames per second of Twins segmentors at segmentation sizes, per backend (`twins-bench --task seg`).

The measurement is the classifier benchmark's own (`twins_trt.bench.core.measure`: seeded inputs,
warm-up apart, alternating rounds, device synchronised around each timed iteration); only the
model, the artifacts and the sizes differ. Batch 1: a segmentor serves one frame at a time, so
frames/s = 1 / mean latency. ONNX artifacts: a dynamic-H/W export in ``export_dir`` whose profile
covers the size is reused, then a static one at that size; failing both, a static FP32/FP16 export
is made at that size (INT8 is reused only: export it with `twins-export --task seg --int8`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from twins_trt import artifacts
from twins_trt.backends import Backend, Capabilities, make_runner, plan_run, torch_device
from twins_trt.bench.core import BenchConfig, latency_stats, measure, one_line
from twins_trt.bench.env import capture_environment, usable_cores

log = logging.getLogger(__name__)

DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((512, 512), (1024, 2048))


@dataclass
class SegBenchConfig:
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
    skipped: list[dict] = field(default_factory=list)


def _covers(manifest: dict, size: tuple[int, int], head: str, num_classes: int | None, seg_output: str) -> bool:
    seg = manifest.get("segmentation") or {}
    if seg.get("head") != head or seg.get("output") != seg_output:
        return False
    if num_classes is not None and seg.get("num_classes") != num_classes:
        return False
    prof = manifest.get("hw_profile")
    if prof:
        (h0, w0), _, (h2, w2) = prof
        return h0 <= size[0] <= h2 and w0 <= size[1] <= w2
    return tuple(manifest.get("img_size", ())) == tuple(size)


def find_seg_onnx(export_dir, variant: str, head: str, precision: str, size: tuple[int, int],
                  num_classes: int | None = None, seg_output: str = "input") -> Path | None:
    """A segmentation ONNX for `size`: a dynamic-H/W one covering it first, then a static one at it."""
    from twins_trt.export import artifact_stem

    for stem in (artifact_stem(variant, size, dynamic_shape=True, seg_head=head), artifact_stem(variant, size, seg_head=head)):
        path = Path(export_dir) / f"{stem}.{precision}.onnx"
        mpath = artifacts.manifest_path(path)
        if not (path.is_file() and mpath.is_file()):
            continue
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if manifest.get("batch", {}).get("static", 1) == 1 and _covers(manifest, size, head, num_classes, seg_output):
            return path
        log.info("not reusing %s: another head, class count, output or size range", path)
    return None


def ensure_seg_onnx(cfg: SegBenchConfig, variant: str, size: tuple[int, int], precisions: list[str],
                    say: Callable[[str], None]) -> dict[str, Path]:
    from twins_trt.export import ExportOptions, export_variant

    found = {p: find_seg_onnx(cfg.export_dir, variant, cfg.head, p, size, cfg.num_classes, cfg.seg_output)
             for p in precisions}
    missing = [p for p, path in found.items() if path is None and p != "int8"]
    if missing:
        opts = ExportOptions(variant=variant, out_dir=cfg.export_dir, weights=cfg.weights, precisions=tuple(missing),
                             img_size=size, task="seg", seg_head=cfg.head, num_classes=cfg.num_classes,
                             seg_output=cfg.seg_output, verify_samples=1, progress=cfg.progress)
        say(f"exporting {variant} {cfg.head} segmentor at {size[0]}x{size[1]} ({', '.join(opts.precisions)}) "
            f"to {cfg.export_dir}/{opts.stem}.*.onnx (no matching artifact to reuse)")
        res = export_variant(opts)
        found.update({p: res.artifacts[p] for p in missing})
    return {p: path for p, path in found.items() if path is not None}


def run_seg_benchmark(cfg: SegBenchConfig, caps: Capabilities | None = None,
                      say: Callable[[str], None] = print) -> dict:
    """Every (variant, size, backend) at batch 1; returns a result document like twins-bench's."""
    import torch

    from twins_trt.models import RandomWeightsWarning
    from twins_trt.models.segmentor import create_segmentor

    caps = caps or Capabilities.detect()
    threads = cfg.threads or usable_cores()
    torch.set_num_threads(threads)
    device = torch_device(cfg.device, caps)
    doc: dict = {"kind": "twins-bench-seg", "head": cfg.head, "torch_attn": cfg.torch_attn, "sizes": [list(s) for s in cfg.sizes],
                 "env": capture_environment(threads), "threads": threads, "torch_device": device,
                 "method": "batch 1; frames/s = 1 / mean latency; twins_trt.bench.core.measure per size",
                 "results": [], "skipped": []}
    for variant in cfg.variants:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)
            model = create_segmentor(variant, cfg.head, cfg.num_classes, cfg.weights, cfg.seg_output, seed=0)
        model.set_attn_impl(cfg.torch_attn)  # export_variant traces a copy of its own, always explicit
        for size in cfg.sizes:
            int8_there = find_seg_onnx(cfg.export_dir, variant, cfg.head, "int8", size, cfg.num_classes,
                                       cfg.seg_output) is not None
            plan = plan_run(cfg.backends, caps, cfg.device, can_calibrate=False, int8_available=int8_there)
            for name, why in plan.skipped.items():
                doc["skipped"].append({"variant": variant, "size": list(size), "backend": name, "reason": why})
            onnx: dict[str, Path] = {}
            if plan.onnx_precisions:
                try:
                    onnx = ensure_seg_onnx(cfg, variant, size, plan.onnx_precisions, say)
                except Exception as e:
                    for b in plan.run:
                        if b.needs_onnx:
                            doc["skipped"].append({"variant": variant, "size": list(size), "backend": b.name,
                                                   "reason": f"ONNX export failed: {one_line(e)}"})
            _measure_size(cfg, variant, size, plan.run, model, onnx, device, threads, doc)
    return doc


def _measure_size(cfg: SegBenchConfig, variant: str, size, backends: list[Backend], model, onnx: dict[str, Path],
                  device: str, threads: int, doc: dict) -> None:
    bcfg = BenchConfig(variants=[variant], backends=backends, batches=[1], img_size=tuple(size), warmup=cfg.warmup,
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
        doc["results"].append({**row, "fps": stats["img_s"], "latency_ms": stats["latency_ms"],
                               "iterations": stats["iterations"]})


def format_seg_table(doc: dict) -> str:
    """One row per (variant, backend), one frames/s column per size."""
    sizes = [tuple(s) for s in doc["sizes"]]
    rows: dict[tuple[str, str], dict] = {}
    for r in doc["results"]:
        rows.setdefault((r["variant"], r["backend"]), {})[tuple(r["size"])] = r
    head = ["variant", "backend"] + [f"{h}x{w} fps (p50 ms)" for h, w in sizes]
    lines = [head]
    for (variant, backend), by_size in rows.items():
        cells = [f"{by_size[s]['fps']:.2f} ({by_size[s]['latency_ms']['p50']:.0f})" if s in by_size else "-"
                 for s in sizes]
        lines.append([variant, backend, *cells])
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in lines]
    for s in doc["skipped"]:
        size = "x".join(map(str, s["size"])) if s.get("size") else ""
        out.append(f"skipped {s['variant']} {size} {s['backend']}: {s['reason']}")
    return "\n".join(out)


def main_from_cli(args, kwargs: dict, caps: Capabilities, argv: list[str]) -> int:
    """`twins-bench --task seg`: the classifier CLI's parsed arguments, seg defaults where none given."""
    import shlex
    import sys
    import time

    from twins_trt.bench.env import environment_line

    sizes = tuple(args.seg_sizes) if args.seg_sizes else DEFAULT_SIZES
    cfg = SegBenchConfig(
        variants=kwargs["variants"], backends=kwargs["backends"], head=args.seg_head, sizes=sizes,
        num_classes=args.num_classes, weights=kwargs["weights"], warmup=2 if args.warmup is None else args.warmup,
        iters=None if args.min_seconds is not None else (5 if args.iters is None else args.iters),
        min_seconds=args.min_seconds, rounds=1 if args.rounds is None else args.rounds, threads=kwargs["threads"],
        device=kwargs["device"], export_dir=kwargs["export_dir"], seed=kwargs["seed"], progress=kwargs["progress"],
        torch_attn=kwargs["torch_attn"],
    )
    from twins_trt.errors import TwinsError

    try:
        doc = run_seg_benchmark(cfg, caps=caps, say=lambda m: print(m, file=sys.stderr))
    except TwinsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    doc["command"] = "twins-bench " + shlex.join(argv)
    name = args.name or f"bench_seg_{'_'.join(cfg.variants)}_{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    path = artifacts.write_json_atomic(Path(args.out_dir) / f"{name}.json", doc)
    print(f"# {environment_line(doc['env'])}")
    print(format_seg_table(doc))
    print(f"\nwrote {path}")
    if not doc["results"]:
        print("error: nothing was measured (see the reasons above)", file=sys.stderr)
        return 2
    return 0
