"""twins-export's pipeline: PyTorch -> ONNX FP32 -> FP16 / INT8, every artifact checked before it is named.

Each artifact is written to a temporary file, graph-checked, verified against PyTorch fp32 on ONNX
Runtime CPU (and on OpenVINO when it is installed) and only then renamed to its final name, with its
manifest beside it. INT8 is calibrated once on part of the calibration images and judged against its
budget on the rest; regions that lose accuracy are searched for and kept in FP16 (`export.int8`).
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from twins_trt import artifacts
from twins_trt.artifacts.manifest import Manifest
from twins_trt.errors import AccuracyBudgetError, GraphCheckError, VerificationError
from twins_trt.export.calibration import calibration_data
from twins_trt.export.convert import calibration_key, fp16_overflow, read_cache, to_fp16, to_int8, torch_to_onnx
from twins_trt.export.graph_report import GraphReport, report_graph
from twins_trt.export.int8.budget import HeldOut, heldout_samples, split_holdout
from twins_trt.export.int8.regions import find_regions, int8_mac_share, node_macs
from twins_trt.export.int8.report import format_table, write_report
from twins_trt.export.int8.search import rank, search, sensitivity
from twins_trt.export.openvino_check import check_export_artifact
from twins_trt.export.options import ExportOptions, windows_divide
from twins_trt.export.overflow import TensorRange, format_overflow
from twins_trt.export.verify import Verdict, resize_images, verification_shapes, verify_artifact
from twins_trt.models import RandomWeightsWarning, create_model
from twins_trt.qdq import without_qdq
from twins_trt.runners import INPUT_NAME, output_names

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    options: ExportOptions
    artifacts: dict[str, Path] = field(default_factory=dict)
    manifests: dict[str, Path] = field(default_factory=dict)
    reports: dict[str, GraphReport] = field(default_factory=dict)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    skipped_images: int = 0
    int8: dict | None = None  # budget, held-out figures, what stayed FP16 (see _export_int8)
    sensitivity_table: str | None = None
    overflow: list[TensorRange] | None = None

    def summary(self) -> str:
        rows = [("precision", "file", "nodes", "attn", "forbidden", "parity", "verdict", "s")]
        for p, path in self.artifacts.items():
            r, v = self.reports[p], self.verdicts[p]
            rows.append((p, path.name, str(r.nodes), f"{r.attention_chains}/{r.expected_attention_layers}",
                         str(r.forbidden_total), f"{v.metric} {v.worst:.3g}", "PASS" if v.passed else "FAIL",
                         f"{self.seconds.get(p, 0):.1f}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def write_manifest(path: Path, opts: ExportOptions, precision: str, rep: GraphReport, ver: Verdict,
                   weights_sha: str | None, seconds: float, extra: dict | None = None) -> Path:
    """The manifest beside the artifact at `path` (written atomically): what it is, how it was made and checked."""
    shape = ["batch" if opts.dynamic_batch else opts.batch, 3, *(["height", "width"] if opts.dynamic_shape else opts.img_size)]
    extra = dict(extra or {})
    manifest = Manifest(
        kind="onnx", file=path.name, variant=opts.variant, timm_name=opts.cfg.timm_name, task=opts.task,
        precision=precision, features=opts.features,
        inputs=[{"name": INPUT_NAME, "shape": shape,
                 "dtype": "float16" if opts.fp16_io and precision != "fp32" else "float32"}],
        outputs=output_names(opts.features),
        batch=opts.batch_range, img_size=tuple(opts.img_size),
        hw_profile=[list(s) for s in opts.dynamic_shape] if opts.dynamic_shape else None, opset=opts.opset,
        sha256=artifacts.sha256_file(path), weights=str(opts.weights) if opts.weights else None,
        weights_sha256=weights_sha, preprocessing=opts.preprocessing.to_dict(), segmentation=opts.segmentation(),
        graph=rep.to_dict(), verification=ver.to_dict(), export_seconds=round(seconds, 2),
        created=artifacts.now_iso(), versions=artifacts.tool_versions(), calibration=extra.pop("calibration", None),
        extra=extra)
    return manifest.write(path)


def export_variant(opts: ExportOptions, on_step: Callable[[str], None] | None = None) -> ExportResult:
    """Export, convert, verify and graph-check every precision in `opts`; see the module docstring."""
    say = on_step or (lambda msg: log.info(msg))
    out_dir = artifacts.ensure_dir(opts.out_dir)
    res = ExportResult(opts)
    weights_sha = None
    if opts.weights and str(opts.weights) != "timm":
        weights_sha = artifacts.sha256_file(opts.weights)
    with warnings.catch_warnings():
        warnings.simplefilter("always", RandomWeightsWarning)
        if opts.task == "seg":
            from twins_trt.models.segmentor import create_segmentor

            model = create_segmentor(opts.variant, opts.seg_head, opts.num_classes, opts.weights, opts.seg_output,
                                     seed=0).fold_batchnorm()  # BN folded: the graph has convs only
            opts.num_classes = model.num_classes
        else:
            model = create_model(opts.variant, weights=opts.weights, features=opts.features, seed=0)
    images, calib, calib_files = None, None, []
    if opts.calib_dir is not None:
        calib, calib_files, res.skipped_images = calibration_data(opts)
        images = calib[: max(opts.verify_samples, 1)]
    expected = opts.cfg.num_attention_layers

    def produce(precision: str, build: Callable[[Path], dict | None], verify_on: np.ndarray | None = images,
                tolerance: tuple[str, float] | None = None, inputs: str = "images") -> None:
        """build(tmp) writes the artifact; it is graph-checked and verified before it takes its final name."""
        t0 = time.perf_counter()
        final = out_dir / f"{opts.stem}.{precision}.onnx"
        with artifacts.atomic_path(final) as tmp:
            extra = build(tmp)
            # a dynamic-batch export is held to the static rules too: its reshapes use -1, never Shape
            rep = report_graph(tmp, expected, name=f"{opts.stem}.{precision}", static=opts.dynamic_shape is None,
                               pad_allowed=opts.dynamic_shape is not None or not windows_divide(opts),
                               precision=precision if precision in ("fp32", "fp16", "int8", "fp8") else None)
            res.reports[precision] = rep
            for line in rep.tensorrt_lines():  # TensorRT 10 parser + fused attention (the manifest's graph keeps both)
                say(line)
            if not rep.ok:
                raise GraphCheckError(f"{final.name} failed the graph check, nothing written: {'; '.join(rep.problems())}")
            say(f"verifying {precision} on ONNX Runtime CPU against PyTorch fp32")
            how = {"samples": len(verify_on) if tolerance and verify_on is not None else None,
                   "tolerance": tolerance, "inputs": inputs}
            ver = verify_artifact(tmp, precision, model, opts, verify_on, **how)
            res.verdicts[precision] = ver
            say(ver.line())
            if not ver.passed:
                hint = (" (hold more images out, or see the sensitivity report: --int8-sensitivity)"
                        if precision == "int8" else "")
                raise VerificationError(f"{final.name} failed verification, nothing written: {ver.line()}{hint}")
            extra = {**(extra or {}), **(check_export_artifact(tmp, precision, model, opts, verify_on, say, **how) or {})}
        res.seconds[precision] = time.perf_counter() - t0
        res.artifacts[precision] = final
        res.manifests[precision] = write_manifest(final, opts, precision, rep, ver, weights_sha,
                                                  res.seconds[precision], extra)

    say(f"exporting {opts.variant} ({opts.cfg.timm_name}) to ONNX opset {opts.opset}")
    produce("fp32", lambda tmp: torch_to_onnx(model, tmp, opts) and None)
    fp32_path = res.artifacts["fp32"]
    if "fp16" in opts.precisions:
        say("converting to mixed FP16 with ModelOpt AutoCast"
            + (f" (data_max {opts.fp16_data_max:g} judged on {len(calib)} calibration images)" if calib is not None
               else ""))

        def build_fp16(tmp: Path) -> dict:
            proto = to_fp16(fp32_path, tmp, opts, calib)
            say("fp16 overflow check: max |activation| of every FP32 tensor on ONNX Runtime")
            res.overflow, extra = fp16_overflow(fp32_path, proto, opts, calib)
            say(format_overflow(res.overflow))
            return extra

        produce("fp16", build_fp16)
    if "int8" in opts.precisions:
        _export_int8(opts, res, fp32_path, calib, calib_files, produce, say)
    return res


def _export_int8(opts: ExportOptions, res: ExportResult, fp32_path: Path, loaded: np.ndarray | None,
                 loaded_files: list[Path], produce: Callable, say: Callable[[str], None]) -> None:
    """Calibrate once on part of the images, judge the budget on the rest, fall back to FP16 where needed."""
    out_dir = Path(opts.out_dir)
    if loaded is None:
        warnings.warn("twins_trt: INT8 calibrated on SYNTHETIC random data (--calib-synthetic); expect an accuracy "
                      "loss: calibrate on a few hundred real images with --calib-data DIR", stacklevel=2)
        loaded, loaded_files, _ = calibration_data(opts)
    cal_idx, held_idx = split_holdout(len(loaded), opts.holdout)
    calib = loaded[cal_idx]
    calib_files = [loaded_files[i] for i in cal_idx] if loaded_files else []
    held = heldout_samples(loaded[held_idx])
    # a dynamic H/W: the budget holds at every size verification checks, so the search is judged there too
    held_at = [resize_images(held, hw) for hw in dict.fromkeys((h, w) for _, h, w in verification_shapes(opts))]
    budget = opts.budget
    key = calibration_key(artifacts.sha256_file(fp32_path), calib_files, opts)
    cache_path = out_dir / f"{opts.stem}.int8.calib.json"
    cache = read_cache(cache_path, key)
    say(f"quantizing to INT8 with ModelOpt ({opts.calib_method} calibration on {len(calib)} "
        f"{'real' if calib_files else 'SYNTHETIC'} sample(s){', scales from cache' if cache else ''}; "
        f"{len(held_idx)} image(s) held out -> {len(held)} verification samples with mirrors; budget {budget})")
    calibration = {"method": opts.calib_method, "samples": int(len(calib)),
                   "source": opts.calibration.source,
                   "files": [str(f) for f in calib_files],  # which images: twins-eval reports them
                   "skipped_images": res.skipped_images, "cache": cache_path.name, "key": key,
                   "heldout_images": int(len(held_idx)), "heldout_samples": int(len(held)),
                   "heldout_files": [loaded_files[i].name for i in held_idx] if loaded_files else []}

    # 1. calibrate once: the all-INT8 graph, its scales cached for every later step
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{opts.stem}.int8-") as work:
        qdq, scales, reused = to_int8(fp32_path, Path(work) / "all.onnx", opts, calib, cache)
    calibration["cache_reused"] = reused
    if not reused:
        artifacts.write_json_atomic(cache_path, {"key": key, "method": opts.calib_method, "scales": scales})

    # 2. the budget on held-out images (FP32 reference on ONNX Runtime)
    fp32 = onnx.load(str(fp32_path))
    heldout = HeldOut(fp32, held_at)
    all_int8 = heldout.score(qdq)
    say(f"all-INT8 on held-out images: {all_int8.line()} -> "
        f"{'meets' if all_int8.meets(budget) else 'MISSES'} budget {budget}")
    macs = node_macs(fp32)
    info: dict = {"budget": str(budget), "all_int8": all_int8.to_dict(), "fp16_regions": [], "fp16_nodes": [],
                  "int8_mac_share": int8_mac_share(qdq, macs)}
    res.int8 = info
    exclude: list[str] = []
    fallback = opts.int8_fallback and not all_int8.meets(budget)
    if opts.int8_sensitivity or fallback:
        regions = find_regions(fp32, qdq, opts.int8_regions)
        say(f"int8 sensitivity: {len(regions)} regions, each left out of INT8 alone, scored on {len(heldout)} samples"
            + (f" ({len(held)} at each of {len(held_at)} sizes)" if len(held_at) > 1 else ""))
        scores = sensitivity(qdq, regions, heldout, opts.progress)
        res.sensitivity_table = format_table(scores, all_int8, budget)
        report_json = out_dir / f"{opts.stem}.int8.sensitivity.json"
        extra: dict = {"regions_by": opts.int8_regions, "heldout_samples": len(heldout),
                       "seconds": round(time.perf_counter() - t0, 1)}
        if fallback:
            found = search(qdq, rank(scores, budget), regions, heldout, budget, all_int8, opts.progress)
            found.seconds = time.perf_counter() - t0
            extra["search"] = found.to_dict()
            info["search"] = {"trials": len(found.trials), "seconds": round(found.seconds, 1)}
            write_report(report_json, report_json.with_suffix(".png"), scores, all_int8, budget, extra)
            info["sensitivity_report"] = report_json.name
            if not found.met:
                raise AccuracyBudgetError(
                    f"INT8 budget {budget} cannot be met: the best reached is {found.figures.line()} with "
                    f"{len(found.fp16_regions)} of {len(regions)} regions in FP16; nothing written under "
                    f"{opts.stem}.int8.onnx. See {report_json.name}; loosen the budget, calibrate on more images "
                    f"or try --calib-method max")
            exclude = [n for r in found.fp16_regions for n in regions[r].nodes]
            info.update(fp16_regions=found.fp16_regions, fp16_nodes=exclude)
            say(f"budget {budget} met with {len(found.fp16_regions)} region(s) in FP16 "
                f"({', '.join(found.fp16_regions)}) after {len(found.trials)} trial(s), {found.seconds:.0f} s")
        else:
            write_report(report_json, report_json.with_suffix(".png"), scores, all_int8, budget, extra)
            info["sensitivity_report"] = report_json.name

    def build_int8(tmp: Path) -> dict:
        info["built_by"] = "ModelOpt nodes_to_exclude" if exclude else "ModelOpt"
        if exclude:  # ModelOpt again, with the FP16 regions excluded and the cached scales
            say(f"quantizing with {len(exclude)} node(s) kept in FP16 (ModelOpt nodes_to_exclude, cached scales)")
            proto, _, _ = to_int8(fp32_path, tmp, opts, calib, scales, exclude)
            final = heldout.score(proto)
            if not final.meets(budget):
                # ModelOpt places Q/DQ afresh around the excluded nodes (residual Adds, shared inputs), which can
                # score below the graph the search measured: ship the measured graph, the calibrated one with
                # those regions' Q/DQ removed, which met the budget
                say(f"ModelOpt's re-quantization scores {final.line()}, below budget {budget}; writing the graph the "
                    "search measured instead (the calibrated graph with those regions' Q/DQ removed)")
                info["built_by"] = "Q/DQ removed from the calibrated graph (ModelOpt's re-quantization: " \
                                   f"{budget.metric} {final.value(budget):.5f})"
                proto = without_qdq(qdq, set(exclude))
                onnx.save(proto, str(tmp))
                final = found.figures  # the search scored exactly this graph
        else:
            proto, final = qdq, all_int8
            onnx.save(proto, str(tmp))
        info.update(figures=final.to_dict(), int8_mac_share=int8_mac_share(proto, macs))
        return {"calibration": calibration, "int8": info}

    produce("int8", build_int8, verify_on=held, tolerance=(budget.attribute, budget.bound), inputs="held-out images")
