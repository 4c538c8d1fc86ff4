"""twins-export's pipeline: PyTorch -> ONNX FP32 -> FP16 / INT8, every artifact checked before it is named.

Each artifact is written to a temporary file, graph-checked, verified against PyTorch fp32 on ONNX
Runtime CPU (and on OpenVINO when it is installed) and only then renamed to its final name, with its
manifest beside it. INT8 is calibrated once on part of the calibration images and judged against its
budget on the rest; regions that lose accuracy are searched for and kept in FP16 (`export.quantized`).
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twins_trt import artifacts
from twins_trt.artifacts.manifest import Manifest
from twins_trt.errors import GraphCheckError, VerificationError
from twins_trt.export.calibration import calibration_data
from twins_trt.export.convert import fp16_overflow, to_fp16, torch_to_onnx
from twins_trt.export.graph_report import GraphReport, report_graph
from twins_trt.export.openvino_check import check_export_artifact
from twins_trt.export.options import ExportOptions, windows_divide
from twins_trt.export.overflow import TensorRange, format_overflow
from twins_trt.export.quantized import export_quantized
from twins_trt.export.verify import Verdict, verify_artifact
from twins_trt.models import RandomWeightsWarning, create_model
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
    # per quantized precision ("int8", "fp8"): budget, held-out figures, what stayed FP16 (export.quantized)
    budgets: dict[str, dict] = field(default_factory=dict)
    sensitivity_tables: dict[str, str] = field(default_factory=dict)
    overflow: list[TensorRange] | None = None

    @property
    def int8(self) -> dict | None:
        return self.budgets.get("int8")

    @property
    def sensitivity_table(self) -> str | None:
        return "\n\n".join(self.sensitivity_tables.values()) or None

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


def export_variant(opts: ExportOptions, on_step: Callable[[str], None] | None = None,
                   below_bound_dir: str | os.PathLike | None = None) -> ExportResult:
    """Export, convert, verify and graph-check every precision in `opts`; see the module docstring.

    `below_bound_dir` (a run's temporary folder, never the export folder): a quantized artifact that misses its
    accuracy bound is moved there as `<stem>.<precision>.BELOW-BOUND.onnx` with its manifest, then refused as
    always, so a benchmark or an evaluation can still measure it (artifacts.resolve.Resolver.artifacts).
    """
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
    references: dict = {}  # PyTorch's outputs by input, computed once for every artifact verified on them

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
                   "tolerance": tolerance, "inputs": inputs, "references": references}
            ver = verify_artifact(tmp, precision, model, opts, verify_on, **how)
            res.verdicts[precision] = ver
            say(ver.line())
            if not ver.passed:
                if below_bound_dir is not None and precision not in ("fp32", "fp16"):  # quantized: kept, unnamed
                    kept = artifacts.ensure_dir(below_bound_dir) / f"{opts.stem}.{precision}.BELOW-BOUND.onnx"
                    shutil.move(tmp, kept)
                    write_manifest(kept, opts, precision, rep, ver, weights_sha, time.perf_counter() - t0, extra)
                hint = (" (hold more images out, or see the sensitivity report: --int8-sensitivity)"
                        if precision in ("int8", "fp8") else "")
                raise VerificationError(f"{final.name} failed verification, nothing written: {ver.line()}{hint}")
            extra = {**(extra or {}), **(check_export_artifact(tmp, precision, model, opts, verify_on, say, **how) or {})}
        res.seconds[precision] = time.perf_counter() - t0
        res.artifacts[precision] = final
        res.manifests[precision] = write_manifest(final, opts, precision, rep, ver, weights_sha,
                                                  res.seconds[precision], extra)

    say(f"exporting {opts.variant} ({opts.cfg.timm_name}) to ONNX opset {opts.opset}")
    produce("fp32", lambda tmp: torch_to_onnx(model, tmp, opts, say) and None)
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
        export_quantized("int8", opts, res, fp32_path, calib, calib_files, produce, say)
    if "fp8" in opts.precisions:  # the same stage, calibration images and held-out split; its own budget
        export_quantized("fp8", opts, res, fp32_path, calib, calib_files, produce, say, opts.budgets["fp8"])
    return res
