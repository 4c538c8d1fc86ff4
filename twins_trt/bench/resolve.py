"""Find (or make) the ONNX artifacts and TensorRT engines that twins-bench and twins-eval need: one resolver.

An existing artifact is reused when its manifest says it is what the run needs (variant, precision,
image size, a batch range covering every benchmarked batch, weights; for INT8 the calibration
source when --calib-data names one); otherwise the missing precisions are exported in one go.
One ONNX serves every batch: a static export for a single batch, a dynamic-batch one otherwise.
An engine is reused only when it is current (see ensure_engine); otherwise it is rebuilt, with a message.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from twins_trt.artifacts import read_manifest
from twins_trt.export import ExportOptions, artifact_stem, export_variant

log = logging.getLogger(__name__)


def wanted_shape(batches: list[int]) -> dict:
    """ExportOptions batch arguments for these batches: static for one, (1, max, max) for several."""
    if len(batches) == 1:
        return {"batch": batches[0]}
    hi = max(batches)
    return {"dynamic_batch": (1, hi, hi)}


def candidate_stems(variant: str, img_size: tuple[int, int], batches: list[int]) -> list[str]:
    """Stems that might hold a usable export: the dynamic-batch one, and the static one for a single batch."""
    out = [artifact_stem(variant, img_size, dynamic_batch=(1, 2, 2))]
    if len(batches) == 1:
        out.insert(0, artifact_stem(variant, img_size, batch=batches[0]))
    return out


def manifest_mismatch(manifest: dict, *, variant: str, precision: str, img_size: tuple[int, int], batches: list[int],
                      weights: str | os.PathLike | None, calib_dir: str | os.PathLike | None = None) -> str | None:
    """None when the artifact described by `manifest` serves this run; else what differs."""
    if not manifest:
        return "no manifest"
    checks = [
        ("variant", manifest.get("variant"), variant),
        ("precision", manifest.get("precision"), precision),
        ("features", bool(manifest.get("features")), False),
        ("img_size", list(manifest.get("img_size") or []), list(img_size)),
        ("weights", manifest.get("weights"), str(weights) if weights else None),
    ]
    for what, have, want in checks:
        if have != want:
            return f"{what} is {have!r}, need {want!r}"
    b = manifest.get("batch") or {}
    lo, hi = (b["static"], b["static"]) if "static" in b else (b.get("min", 0), b.get("max", 0))
    if not all(lo <= x <= hi for x in batches):
        return f"batch range {lo}..{hi} does not cover {batches}"
    if precision == "int8" and calib_dir is not None:
        src = (manifest.get("calibration") or {}).get("source")
        if src != str(calib_dir):
            return f"calibrated on {src!r}, need {str(calib_dir)!r}"
    return None


def find_onnx(export_dir: str | os.PathLike, variant: str, precision: str, img_size: tuple[int, int],
              batches: list[int], weights=None, calib_dir=None) -> Path | None:
    for stem in candidate_stems(variant, img_size, batches):
        path = Path(export_dir) / f"{stem}.{precision}.onnx"
        if not path.is_file():
            continue
        why = manifest_mismatch(read_manifest(path), variant=variant, precision=precision, img_size=img_size,
                                batches=batches, weights=weights, calib_dir=calib_dir)
        if why is None:
            return path
        log.info("not reusing %s: %s", path, why)
    return None


def ensure_onnx(variant: str, precisions: list[str], batches: list[int], *, img_size=(224, 224),
                export_dir: str | os.PathLike = "export", weights=None, calib_dir=None, calib_synthetic: bool = False,
                calib_size: int = 16, progress: bool = True,
                say: Callable[[str], None] = print) -> dict[str, Path]:
    """Precision -> ONNX path for every precision asked, exporting only what is missing."""
    found: dict[str, Path] = {}
    for p in precisions:
        path = find_onnx(export_dir, variant, p, img_size, batches, weights, calib_dir)
        if path is not None:
            found[p] = path
    missing = [p for p in precisions if p not in found]
    if not missing:
        for p, path in found.items():
            say(f"reusing {path} ({p})")
        return found
    opts = ExportOptions(variant=variant, out_dir=export_dir, weights=weights, precisions=tuple(missing),
                         img_size=tuple(img_size), calib_dir=calib_dir, calib_synthetic=calib_synthetic,
                         calib_size=calib_size, progress=progress, int8_fallback=False, **wanted_shape(batches))
    say(f"exporting {variant} {', '.join(opts.precisions)} to {export_dir}/{opts.stem}.*.onnx "
        f"(no matching artifact to reuse)")
    res = export_variant(opts)
    out = {p: (res.artifacts.get(p) or found[p]) for p in precisions}
    for p in precisions:
        if p in found and p not in missing:
            say(f"reusing {found[p]} ({p})")
    return out


def engine_covers(metadata: dict, batches: list[int]) -> bool:
    """True when the engine takes every batch in `batches` and, for a dynamic-batch engine, has a profile tuned
    for each (OPT == that batch), so each batch is measured on kernels chosen for it."""
    from twins_trt.trt.engine_meta import batch_range, engine_profiles, opt_batches

    if not engine_profiles(metadata):
        return False
    lo, hi = batch_range(metadata)
    if not all(lo <= b <= hi for b in batches):
        return False
    return lo == hi or set(batches) <= set(opt_batches(metadata))


def engine_reuse_problem(plan: str | os.PathLike, onnx_path: str | os.PathLike, batches: list[int], trt_version: str,
                         device: dict[str, str]) -> str | None:
    """None when `plan` can be reused for `onnx_path` and `batches` here; else why it must be (re)built: missing,
    built from another ONNX (sha256), by another TensorRT or for another device, or not tuned for these batches."""
    from twins_trt.trt.engine_meta import read_engine_metadata, stale_reason

    why = stale_reason(plan, onnx_path, trt_version, device)
    if why is not None:
        return why
    if not engine_covers(read_engine_metadata(plan), batches):
        return f"its optimization profiles are not tuned for batch{'es' * (len(batches) > 1)} {batches}"
    return None


def ensure_engine(onnx_path: str | os.PathLike, batches: list[int], engines_dir: str | os.PathLike = "engines",
                  say: Callable[[str], None] = print, trt=None) -> Path:
    """`engines/<onnx stem>.plan` for `onnx_path`, reused only when it is current, else (re)built with a message.

    Current: built from this very ONNX (its recorded sha256), by this TensorRT, for this device, with a profile
    for every batch. A dynamic-batch engine gets one profile per batch, OPT at that batch (range min..max of
    `batches`), as trtexec measures each batch on kernels tuned for it. Needs TensorRT (or its emulator).
    """
    from twins_trt.trt import engine_paths, load_tensorrt
    from twins_trt.trt.build import build_engine
    from twins_trt.trt.engine_meta import device_info

    trt = load_tensorrt(trt)
    plan, _ = engine_paths(onnx_path, engines_dir)
    why = engine_reuse_problem(plan, onnx_path, batches, str(trt.__version__), device_info(trt))
    if why is None:
        say(f"reusing {plan} (same ONNX, TensorRT and device; tuned for batch {', '.join(map(str, batches))})")
        return plan
    batches = sorted(set(batches))
    static = (read_manifest(onnx_path).get("batch") or {}).get("static") is not None
    profile = None if static else f"{batches[0]}:{batches[0]}:{batches[-1]}"
    opt = None if static or len(batches) == 1 else batches
    say(f"{'rebuilding' if plan.is_file() else 'building'} {plan} from {onnx_path} ({why}; profile "
        f"{'static' if static else profile}{', OPT at each of ' + ','.join(map(str, opt)) if opt else ''})")
    return build_engine(onnx_path, engines_dir, profile=profile, opt_batches=opt, trt=trt).plan_path
