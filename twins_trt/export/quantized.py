"""The budgeted quantized stage of twins-export, one for INT8 and FP8 (`precision`): calibrate once on part of the
images, judge the budget on the rest, rank the regions by sensitivity, keep the most sensitive in FP16 until the
budget is met, and hand the artifact to the pipeline's `produce` (graph check, verification, manifest).

Everything precision-specific comes from `twins_trt.qdq.FORMATS` (its Q/DQ types, the ONNX Runtime optimisation
level its graphs need, its name in reports); the machinery is `export.int8` (budget, regions, search, report).
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx

from twins_trt import artifacts
from twins_trt.errors import AccuracyBudgetError
from twins_trt.export.calibration import calibration_data
from twins_trt.export.convert import calibration_key, read_cache, to_int8
from twins_trt.export.fp8 import describe as describe_fp8
from twins_trt.export.fp8 import scales_from_int8
from twins_trt.export.int8.budget import Budget, HeldOut, heldout_samples, split_holdout
from twins_trt.export.int8.regions import find_regions, mac_share, node_macs
from twins_trt.export.int8.report import format_table, write_report
from twins_trt.export.int8.search import CONFIRM, local_sensitivity, rank, search, sensitivity
from twins_trt.export.options import ExportOptions
from twins_trt.export.verify import resize_images, verification_shapes
from twins_trt.qdq import quant_format, without_qdq


def export_quantized(precision: str, opts: ExportOptions, res, fp32_path: Path, loaded: np.ndarray | None,
                     loaded_files: list[Path], produce: Callable, say: Callable[[str], None],
                     budget: Budget | None = None) -> None:
    """The `precision` ("int8" | "fp8") artifact under `budget` (default: opts.budget); its budget, held-out
    figures and FP16 regions go to `res.budgets[precision]`, its sensitivity table to `res.sensitivity_tables`."""
    fmt = quant_format(precision)
    label = fmt.label
    out_dir = Path(opts.out_dir)
    budget = budget or opts.budget
    if loaded is None:
        warnings.warn(f"twins_trt: {label} calibrated on SYNTHETIC random data (--calib-synthetic); expect an accuracy "
                      "loss: calibrate on a few hundred real images with --calib-data DIR", stacklevel=2)
        loaded, loaded_files, _ = calibration_data(opts)
    cal_idx, held_idx = split_holdout(len(loaded), opts.holdout)
    calib = loaded[cal_idx]
    calib_files = [loaded_files[i] for i in cal_idx] if loaded_files else []
    held = heldout_samples(loaded[held_idx])
    # a dynamic H/W: the budget holds at every size verification checks, so the search is judged there too
    held_at = [resize_images(held, hw) for hw in dict.fromkeys((h, w) for _, h, w in verification_shapes(opts))]
    key = calibration_key(artifacts.sha256_file(fp32_path), calib_files, opts)
    cache_path = out_dir / f"{opts.stem}.{precision}.calib.json"
    cache = read_cache(cache_path, key)
    scales_from = cache_path.name if cache else None
    if cache is None and precision == "fp8":  # INT8's calibration of the same graph, images and method serves FP8
        int8_path = out_dir / f"{opts.stem}.int8.calib.json"
        int8 = read_cache(int8_path, key)
        if int8:
            cache, scales_from = scales_from_int8(int8), int8_path.name
    say(f"quantizing to {label} with ModelOpt ({opts.calib_method} calibration on {len(calib)} "
        f"{'real' if calib_files else 'SYNTHETIC'} sample(s){', scales from cache' if cache else ''}; "
        f"{len(held_idx)} image(s) held out -> {len(held)} verification samples with mirrors; budget {budget})")
    calibration = {"method": opts.calib_method, "samples": int(len(calib)),
                   "source": opts.calibration.source,
                   "files": [str(f) for f in calib_files],  # which images: twins-eval reports them
                   "skipped_images": res.skipped_images, "cache": cache_path.name, "key": key,
                   "heldout_images": int(len(held_idx)), "heldout_samples": int(len(held)),
                   "heldout_files": [loaded_files[i].name for i in held_idx] if loaded_files else []}

    # 1. calibrate once: the all-quantized graph, its scales cached for every later step
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{opts.stem}.{precision}-") as work:
        qdq, scales, reused = to_int8(fp32_path, Path(work) / "all.onnx", opts, calib, cache, precision=precision)
    calibration["cache_reused"] = reused
    calibration["scales_from"] = scales_from if reused else None
    if not reused:
        artifacts.write_json_atomic(cache_path, {"key": key, "method": opts.calib_method, "scales": scales})

    # 2. the budget on held-out images (FP32 reference on ONNX Runtime)
    fp32 = onnx.load(str(fp32_path))
    heldout = HeldOut(fp32, held_at, precision)
    all_q = heldout.score(qdq)
    say(f"all-{label} on held-out images: {all_q.line()} -> "
        f"{'meets' if all_q.meets(budget) else 'MISSES'} budget {budget}")
    macs = node_macs(fp32)
    share_key = f"{precision}_mac_share"
    info: dict = {"precision": precision, "budget": str(budget), f"all_{precision}": all_q.to_dict(),
                  "fp16_regions": [], "fp16_nodes": [], share_key: mac_share(qdq, macs, precision)}
    if precision == "fp8":
        info.update(describe_fp8(opts))  # where FP8 sits (attention or not), ModelOpt's options
    res.budgets[precision] = info
    exclude: list[str] = []
    found = None
    fallback = opts.int8_fallback and not all_q.meets(budget)
    if opts.int8_sensitivity or fallback:
        regions = find_regions(fp32, qdq, opts.int8_regions)
        method = opts.sensitivity_method
        if method == "loo":
            say(f"{precision} sensitivity: {len(regions)} regions, each left out of {label} alone, scored on "
                f"{len(heldout)} samples" + (f" ({len(held)} at each of {len(held_at)} sizes)" if len(held_at) > 1
                                             else ""))
            scores = sensitivity(qdq, regions, heldout, opts.progress)
        else:
            say(f"{precision} sensitivity: {len(regions)} regions ranked by their own {label} error in one pass over "
                f"{len(held_at[0])} samples, the {min(CONFIRM, len(regions))} largest confirmed leave-one-out")
            scores = local_sensitivity(qdq, regions, heldout, CONFIRM, opts.progress)
        res.sensitivity_tables[precision] = format_table(scores, all_q, budget, label)
        report_json = out_dir / f"{opts.stem}.{precision}.sensitivity.json"
        extra: dict = {"precision": precision, "sensitivity_method": method, "regions_by": opts.int8_regions,
                       "heldout_samples": len(heldout), "trials": sum(s.figures is not None for s in scores),
                       "seconds": round(time.perf_counter() - t0, 1)}
        if fallback:
            found = search(qdq, rank(scores, budget), regions, heldout, budget, all_q, opts.progress)
            found.seconds = time.perf_counter() - t0
            extra["search"] = found.to_dict()
            info["search"] = {"method": method, "sensitivity_trials": extra["trials"], "trials": len(found.trials),
                              "seconds": round(found.seconds, 1)}
        write_report(report_json, report_json.with_suffix(".png"), scores, all_q, budget, extra, label)
        info["sensitivity_report"] = report_json.name
        if found is not None:
            if not found.met:
                raise AccuracyBudgetError(
                    f"{label} budget {budget} cannot be met: the best reached is {found.figures.line()} with "
                    f"{len(found.fp16_regions)} of {len(regions)} regions in FP16; nothing written under "
                    f"{opts.stem}.{precision}.onnx. See {report_json.name}; loosen the budget, calibrate on more "
                    f"images or try --calib-method max")
            exclude = [n for r in found.fp16_regions for n in regions[r].nodes]
            info.update(fp16_regions=found.fp16_regions, fp16_nodes=exclude)
            say(f"budget {budget} met with {len(found.fp16_regions)} region(s) in FP16 "
                f"({', '.join(found.fp16_regions)}) after {extra['trials']} sensitivity and {len(found.trials)} search "
                f"trial(s), {found.seconds:.0f} s"
                + (f"; {len(found.returned)} region(s) of the greedy choice put back in {label} by the backward pass "
                   f"({', '.join(found.returned)})" if found.returned else ""))

    def build(tmp: Path) -> dict:
        if exclude:  # the graph the search measured, no other: ModelOpt's calibrated one, those regions' Q/DQ removed
            say(f"writing the graph the search measured: {len(exclude)} node(s) kept in FP16, their Q/DQ removed from "
                f"ModelOpt's calibrated graph")
            info["built_by"] = "ModelOpt, Q/DQ removed from the FP16 regions"
            proto, final = without_qdq(qdq, set(exclude)), found.figures
        else:
            info["built_by"] = "ModelOpt"
            proto, final = qdq, all_q
        onnx.save(proto, str(tmp))
        info.update(figures=final.to_dict(), **{share_key: mac_share(proto, macs, precision)})
        return {"calibration": calibration, precision: info}

    produce(precision, build, verify_on=held, tolerance=(budget.attribute, budget.bound), inputs="held-out images")
