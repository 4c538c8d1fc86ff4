"""twins-eval's backends: the project's shared backend names (`twins_trt.backends`), artifact
resolver (`twins_trt.artifacts.resolve`) and runner factory (`make_runner`), plus what only an
evaluation needs.

Each backend stands on its own: one that cannot run here (no GPU, no TensorRT) is *skipped* with
the reason, one whose artifact cannot be made or whose runner breaks is *failed* with the reason,
and the others are still evaluated.

An INT8 export that misses the export's accuracy bound is refused by twins-export (nothing is
written). twins-eval exists to measure exactly that loss, so the run's resolver keeps the refused
artifact in a **temporary folder** that lives only for the evaluation (never under --export-dir, so
it cannot be mistaken for a verified artifact; `Resolver.artifacts`, shared with twins-bench), and
the row is flagged "below the export bound (cosine X < Y)".
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from twins_trt.artifacts.manifest import Manifest
from twins_trt.artifacts.resolve import Artifact, Calibration, Request, Resolver
from twins_trt.backends import BACKENDS, REFERENCE, Backend, Capabilities, make_runner, parse_backends, skip_reason
from twins_trt.errors import BackendUnavailableError, one_line
from twins_trt.eval.results import BackendResult, Row
from twins_trt.runners import INPUT_NAME

log = logging.getLogger(__name__)

DEFAULT_BACKENDS = "torch,ort-cpu,ort-cpu-fp16,ort-cpu-int8,trt-fp16,trt-int8"


def eval_backends(text: str | Sequence[str], cuda: bool = False) -> list[Backend]:
    """The shared vocabulary (`ort-cpu-fp16`, groups, aliases such as `ort-fp16`); PyTorch fp32 first, always."""
    chosen = parse_backends(text if isinstance(text, str) else ",".join(text), cuda=cuda)
    return [BACKENDS[REFERENCE], *[b for b in chosen if b.name != REFERENCE]]


def requested_names(text: str | Sequence[str], cuda: bool = False) -> list[str]:
    """The canonical names the user asked for (the reference only when named)."""
    return [b.name for b in parse_backends(text if isinstance(text, str) else ",".join(text), cuda=cuda)]


@dataclass
class Slot:
    """One backend in the evaluation: its row, its runner, and the batch sizes its artifact takes."""

    backend: Backend
    result: Row
    runner: Any = None
    batch: tuple[int, int] = (1, 1 << 30)  # (min, max)
    static: bool = False
    manifest: Manifest | None = None  # the ONNX artifact's manifest (export verdict, INT8 calibration)


# ---------------------------------------------------------------------------------------------- artifacts


def batches_for(batch: int) -> list[int]:
    """Batches the artifacts must take: batch 1 -> a static export; N > 1 -> a 1..N dynamic one (last chunk smaller)."""
    return [1] if batch == 1 else [1, batch]


def run_resolver(opts, say: Callable[[str], None], scratch: Path | None = None) -> Resolver:
    """The one resolver of a classifier evaluation: every ONNX and engine of the run goes through it; an INT8
    below the export's bound is kept in `scratch` (temporary) and evaluated flagged (`Resolver.artifacts`)."""
    return Resolver(Request(opts.variant, tuple(batches_for(opts.batch)), opts.img_size, opts.weights,
                            export_dir=str(opts.export_dir)),
                    Calibration(opts.calib_source_dir, opts.calib_synthetic, opts.calib_size),
                    say=say, progress=opts.progress, scratch=scratch)


def calibration_info(manifest: Manifest, eval_files: Sequence[Path]) -> dict | None:
    """Which images an INT8 artifact was calibrated on, and how many of them are also in the evaluation set."""
    from twins_trt.data import find_images

    cal = manifest.calibration
    if not cal:
        return None
    src, files, how = manifest.calibration_source, cal.get("files"), "recorded with the artifact"
    if files is None and src not in (None, "synthetic"):
        try:  # manifests from before the file list: the export takes the first readable files in sorted order
            files = [str(f) for f in find_images(src)[: int(cal.get("samples", 0)) + int(cal.get("skipped_images", 0))]]
            how = "reconstructed: the first files of the folder in sorted order (the manifest has no file list)"
        except Exception as e:  # the folder may be gone
            files, how = [], f"unknown: {one_line(e)}"
    files = files or []
    evaluated = {os.path.realpath(f) for f in eval_files}
    overlap = sorted(f for f in files if os.path.realpath(f) in evaluated)
    return {"source": src, "samples": cal.get("samples"), "method": cal.get("method"), "files": files,
            "files_from": how, "overlap": len(overlap), "overlap_files": overlap}


# ---------------------------------------------------------------------------------------------- runners


def skip_unrunnable(slots: list[Slot], caps: Capabilities, device: str) -> list[Slot]:
    """Mark every slot whose backend cannot run here skipped (with the reason); the others, in order."""
    for s in slots:
        why = skip_reason(s.backend, caps, device)
        if why is not None:
            s.result.drop("skipped", why)
    return [s for s in slots if s.result.ok]


def start_runner(s: Slot, *, model, device: str, onnx: dict[str, Path], engines: dict[str, Path],
                 threads: int | None) -> bool:
    """The slot's runner through the one factory, activated; False (the row says why) when it cannot start."""
    try:
        s.runner = make_runner(s.backend, model=model, device=device, onnx=onnx, engines=engines, threads=threads)
        s.runner.activate()
    except BackendUnavailableError as e:
        s.result.drop("skipped", str(e))
        return False
    except Exception as e:
        s.result.drop("failed", one_line(e))
        return False
    s.result.device = getattr(s.runner, "device", None)
    if getattr(s.runner, "emulated", False):  # the TensorRT emulator: ONNX Runtime on the CPU, never TensorRT
        s.result.name, s.result.device = f"{s.result.name} (emulated)", "cpu (TensorRT emulator)"
    return True


def open_slots(opts, backends: list[Backend], caps: Capabilities, model, device: str, scratch: Path,
               say: Callable[[str], None]) -> list[Slot]:
    """A Slot per backend, in order: runnable ones with an active runner, the rest with their reason."""
    slots = [Slot(b, BackendResult(b.name)) for b in backends]
    live = skip_unrunnable(slots, caps, opts.device)
    resolver = run_resolver(opts, say, scratch)
    precisions = [p for p in dict.fromkeys(["fp32", *(s.backend.precision for s in live if s.backend.needs_onnx)])]
    onnx, failed = resolver.artifacts(precisions) if any(s.backend.needs_onnx for s in live) else ({}, {})
    engines = _engines(opts, resolver, [s for s in live if s.backend.needs_engine], onnx)
    for s in live:
        b, r = s.backend, s.result
        if b.needs_onnx and b.precision not in onnx:
            r.drop("failed", failed.get(b.precision, f"no {b.precision} ONNX"))
            continue
        if b.needs_engine and not isinstance(engines.get(b.precision), Path):
            r.drop("failed", engines.get(b.precision) or f"no {b.precision} engine")
            continue
        art = onnx.get(b.precision) if b.needs_onnx else None
        r.artifact = (str(engines[b.precision]) if b.needs_engine else str(art.path) if art
                      else str(opts.weights) if opts.weights else "random weights")
        if art is not None:
            s.manifest, r.below_bound = art.manifest, art.below_bound
            r.verification = (art.manifest.verification if art.manifest else None) or None
        if not start_runner(s, model=model, device=device, onnx={p: a.path for p, a in onnx.items()},
                            engines={p: e for p, e in engines.items() if isinstance(e, Path)}, threads=opts.threads):
            continue
        if b.needs_engine:
            s.batch, s.static = _engine_range(engines[b.precision])
        elif art is not None:
            batch = s.manifest.batch if s.manifest else None  # none recorded: a static batch of 1
            s.batch, s.static = ((batch.min, batch.max), batch.static) if batch else ((1, 1), True)
    return slots


def _engine_range(plan: Path) -> tuple[tuple[int, int], bool]:
    from twins_trt.trt.engine_meta import batch_range, read_engine_metadata

    lo, hi = batch_range(read_engine_metadata(plan))
    return (int(lo), int(hi)), lo == hi


def _engines(opts, resolver: Resolver, wanted: list[Slot], onnx: dict[str, Artifact]) -> dict[str, Path | str]:
    """precision -> engine path, or the reason there is none."""
    out: dict[str, Path | str] = {}
    for p in dict.fromkeys(s.backend.precision for s in wanted):
        if p not in onnx:
            continue
        if onnx[p].below_bound is not None:
            out[p] = "no engine is built from an INT8 ONNX that missed the export's bound"
            continue
        try:
            out[p] = resolver.engine(onnx[p].path, opts.engines_dir)
        except Exception as e:
            out[p] = f"engine build failed: {one_line(e)}"
    return out


def run_in_batches(slot: Slot, x: np.ndarray, batch: int) -> np.ndarray:
    """Logits for `x`, fed in batches the slot's artifact accepts (the last one padded, its padding dropped)."""
    from twins_trt.runners.ort_runner import run_in_batches as padded_run

    lo, hi = slot.batch
    step = lo if slot.static else max(lo, min(batch, hi))
    return padded_run(lambda xb: slot.runner.infer({INPUT_NAME: xb}), x, step, min_batch=lo)["logits"]


def close(slots: list[Slot]) -> None:
    for s in slots:
        if s.runner is not None:
            try:
                s.runner.deactivate()
            except Exception:  # pragma: no cover - closing must not hide the results
                log.debug("closing %s failed", s.backend.name, exc_info=True)


__all__ = ["DEFAULT_BACKENDS", "Slot", "batches_for", "calibration_info", "close", "eval_backends", "open_slots",
           "requested_names", "run_in_batches", "run_resolver", "skip_unrunnable", "start_runner"]
