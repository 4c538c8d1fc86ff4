"""PyTorch -> ONNX FP32 -> FP16 (ModelOpt AutoCast) / INT8 Q/DQ (ModelOpt PTQ), each verified on ONNX Runtime.

Precision lives in the ONNX graph because TensorRT 11 is strongly typed only (and TensorRT 10
deprecated the FP16/INT8 builder flags): an FP16 engine is built from FP16 tensors, an INT8 engine
from QuantizeLinear/DequantizeLinear pairs. Every artifact is written to a temporary file,
verified against PyTorch fp32 and graph-checked there, and only then renamed to its final name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch

from twins_trt import artifacts
from twins_trt.data import find_images, load_images, random_inputs
from twins_trt.errors import (
    AccuracyBudgetError,
    CalibrationDataError,
    ExportError,
    GraphCheckError,
    InputSizeError,
    VerificationError,
    one_line,
)
from twins_trt.export import budget as bud
from twins_trt.export import overflow as ovf
from twins_trt.export.graph_report import GraphReport, report_graph
from twins_trt.export.openvino_check import check_export_artifact
from twins_trt.export.verify import Verdict, resize_images, verification_shapes, verify_artifact
from twins_trt.models import RandomWeightsWarning, Twins, check_input_size, create_model, resolve_variant
from twins_trt.runners import INPUT_NAME, output_names

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
MIN_OPSET, INT8_MIN_OPSET = 18, 19
DEFAULT_OPSET = 20  # GELU as one Gelu node; LayerNormalization since 17
META = "twins_trt."


@dataclass
class ExportOptions:
    variant: str
    out_dir: str | os.PathLike = "export"
    weights: str | os.PathLike | None = None
    precisions: tuple[str, ...] = ("fp32",)
    batch: int = 1
    dynamic_batch: tuple[int, int, int] | None = None  # (min, opt, max)
    img_size: tuple[int, int] = (224, 224)
    dynamic_shape: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None  # (min, opt, max) HxW
    features: bool = False
    opset: int = DEFAULT_OPSET
    calib_dir: str | os.PathLike | None = None
    calib_method: str = "entropy"
    calib_size: int = 64
    calib_synthetic: bool = False
    fp16_io: bool = False  # keep fp32 inputs/outputs unless asked
    verify_samples: int = 4
    progress: bool = True
    # task "seg": a segmentor (twins_trt.models.segmentor) whose one output is "logits" (B, K, H, W)
    task: str = "cls"
    seg_head: str = "fpn"
    num_classes: int | None = None  # seg: None takes it from the checkpoint (else 150)
    seg_output: str = "input"  # seg: logits resized to the input ("input") or at stride 4 ("stride4")
    int8_budget: str | None = None  # "cosine>=0.995" / "agreement>=0.99"; None = budget.DEFAULT_INT8_BUDGET
    int8_sensitivity: bool = False  # always write the per-region sensitivity report
    int8_fallback: bool = True  # budget missed: search for FP16 regions (False: write all-INT8 or fail verification)
    int8_regions: str = "layer"  # sensitivity regions: one per block and sub-layer ("layer") or per kind ("kind")
    holdout: float = 0.25  # share of the calibration images held out to verify INT8 on (never calibrated on)
    fp16_data_max: float = 512.0  # AutoCast's data_max: nodes whose I/O exceeds it on the images stay FP32

    def __post_init__(self) -> None:
        self.cfg = resolve_variant(self.variant)
        self.variant = self.cfg.name
        if self.task not in ("cls", "seg"):
            raise ValueError(f"task must be 'cls' or 'seg', got {self.task!r}")
        if self.task == "seg":
            if self.features:
                raise ValueError("--task seg exports a whole segmentor; --features is for the backbone alone")
            # segmentation preprocessing (calibration, verification images): the whole image resized, no crop
            self.cfg = dataclasses.replace(self.cfg, crop_pct=1.0, interpolation="bilinear")
        self.precisions = tuple(dict.fromkeys(("fp32", *self.precisions)))  # fp32 first: the others derive from it
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown:
            raise ValueError(f"unknown precision(s) {unknown}; expected some of {', '.join(PRECISIONS)}")
        if self.opset < MIN_OPSET:
            raise ExportError(f"opset {self.opset} is too old: use {MIN_OPSET} or newer (the exporter writes 18 natively)")
        if "int8" in self.precisions and self.opset < INT8_MIN_OPSET:
            raise ExportError(f"INT8 needs opset >= {INT8_MIN_OPSET} for ModelOpt's Q/DQ; got --opset {self.opset}")
        if self.calib_method not in ("entropy", "max"):
            raise ValueError(f"calibration method must be 'entropy' or 'max', got {self.calib_method!r}")
        if "int8" in self.precisions and self.calib_dir is None and not self.calib_synthetic:
            raise CalibrationDataError(
                "--int8 needs real calibration images: pass --calib-data DIR (a folder of jpg/png/webp, searched "
                "recursively); --calib-synthetic calibrates on random data instead, which gives a poor INT8 model"
            )
        self.budget = bud.parse_budget(self.int8_budget or bud.DEFAULT_INT8_BUDGET)
        if self.budget.metric == "agreement" and self.features:
            raise AccuracyBudgetError(f"--int8-budget {self.budget}: a backbone (--features) has no class logits to "
                                      "agree on; use a cosine budget, e.g. cosine>=0.99")
        if self.int8_regions not in ("layer", "kind"):
            raise ValueError(f"sensitivity regions must be 'layer' or 'kind', got {self.int8_regions!r}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.dynamic_batch is not None:
            lo, opt, hi = self.dynamic_batch
            if not 1 <= lo <= opt <= hi:
                raise ValueError(f"dynamic batch must satisfy 1 <= MIN <= OPT <= MAX, got {lo}:{opt}:{hi}")
        check_input_size(*self.img_size, what="--img-size")
        if self.dynamic_shape is not None:
            for hw in self.dynamic_shape:
                check_input_size(*hw, what="--dynamic-shape")
            (h0, w0), (h1, w1), (h2, w2) = self.dynamic_shape
            if not (h0 <= h1 <= h2 and w0 <= w1 <= w2):
                raise InputSizeError(f"dynamic shape must satisfy MIN <= OPT <= MAX, got {self.dynamic_shape}")
            self.img_size = self.dynamic_shape[1]

    @property
    def stem(self) -> str:
        return artifact_stem(self.variant, self.img_size, self.batch, self.dynamic_batch, self.dynamic_shape,
                             self.features, self.seg_head if self.task == "seg" else None)

    def segmentation(self) -> dict | None:
        """What a segmentation artifact's manifest and metadata say about its head (None for cls)."""
        if self.task != "seg":
            return None
        return {"head": self.seg_head, "num_classes": self.num_classes, "output": self.seg_output}


def artifact_stem(variant: str, img_size=(224, 224), batch: int = 1, dynamic_batch=None, dynamic_shape=None,
                  features: bool = False, seg_head: str | None = None) -> str:
    """`svt_s` for the default (224, batch 1, classifier); suffixes name every departure from it."""
    parts = [resolve_variant(variant).name]
    if features:
        parts.append("feat")
    if seg_head:
        parts.append(f"seg{seg_head}")
    if dynamic_shape is not None:
        parts.append("dynhw")
    elif tuple(img_size) != (224, 224):
        parts.append(f"{img_size[0]}x{img_size[1]}")
    if dynamic_batch is not None:
        parts.append("bdyn")
    elif batch != 1:
        parts.append(f"b{batch}")
    return "_".join(parts)


@dataclass
class ExportResult:
    options: ExportOptions
    artifacts: dict[str, Path] = field(default_factory=dict)
    manifests: dict[str, Path] = field(default_factory=dict)
    reports: dict[str, GraphReport] = field(default_factory=dict)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    skipped_images: int = 0
    int8: dict | None = None  # budget, held-out figures, what stayed FP16 (see _int8_candidate)
    sensitivity_table: str | None = None
    overflow: list[ovf.TensorRange] | None = None

    def summary(self) -> str:
        rows = [("precision", "file", "nodes", "attn", "forbidden", "parity", "verdict", "s")]
        for p, path in self.artifacts.items():
            r, v = self.reports[p], self.verdicts[p]
            rows.append((p, path.name, str(r.nodes), f"{r.attention_chains}/{r.expected_attention_layers}",
                         str(r.forbidden_total), f"{v.metric} {v.worst:.3g}", "PASS" if v.passed else "FAIL",
                         f"{self.seconds.get(p, 0):.1f}"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


# ---------------------------------------------------------------------------------------------- fp32


def _dims(opts: ExportOptions):
    """torch.export dynamic shapes: batch symbolic, and H/W as multiples of 32 with --dynamic-shape."""
    spec: dict[int, object] = {}
    if opts.dynamic_batch is not None:
        lo, _, hi = opts.dynamic_batch
        spec[0] = torch.export.Dim("batch", min=lo, max=max(hi, 2))
    if opts.dynamic_shape is not None:
        (h0, w0), _, (h2, w2) = opts.dynamic_shape
        spec[2] = 32 * torch.export.Dim("h32", min=max(h0 // 32, 1), max=max(h2 // 32, 2))
        spec[3] = 32 * torch.export.Dim("w32", min=max(w0 // 32, 1), max=max(w2 // 32, 2))
    return spec or None


def _example_batch(opts: ExportOptions) -> int:
    # torch.export specialises a dim whose example is 0 or 1, so dynamic exports trace at >= 2
    return max(2, opts.dynamic_batch[1]) if opts.dynamic_batch else opts.batch


def _name_dims(model: onnx.ModelProto, opts: ExportOptions) -> None:
    """Readable symbolic dims: batch, height, width (what TensorRT profiles and Triton configs show)."""
    names = {0: "batch", 2: "height", 3: "width"}
    dyn_axes = set()
    if opts.dynamic_batch is not None:
        dyn_axes.add(0)
    if opts.dynamic_shape is not None:
        dyn_axes |= {2, 3}
    for vi in list(model.graph.input) + list(model.graph.output):
        for axis, d in enumerate(vi.type.tensor_type.shape.dim):
            if d.HasField("dim_param"):
                if axis == 0 and 0 in dyn_axes:
                    d.dim_param = "batch"
                elif vi in model.graph.input and axis in dyn_axes:
                    d.dim_param = names[axis]


def set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    keep = {p.key: p.value for p in model.metadata_props if not p.key.startswith(META)}
    keep.update({META + k: str(v) for k, v in values.items()})
    del model.metadata_props[:]
    for k, v in keep.items():
        model.metadata_props.add(key=k, value=v)


def get_metadata(model: onnx.ModelProto | str | os.PathLike) -> dict[str, str]:
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    return {p.key[len(META):]: p.value for p in model.metadata_props if p.key.startswith(META)}


def _metadata(opts: ExportOptions, precision: str) -> dict[str, str]:
    meta = {"variant": opts.variant, "precision": precision, "features": str(opts.features).lower(),
            "img_size": f"{opts.img_size[0]}x{opts.img_size[1]}"}
    if opts.dynamic_batch:
        meta["batch_profile"] = ":".join(map(str, opts.dynamic_batch))
    if opts.dynamic_shape:
        meta["hw_profile"] = ":".join(f"{h}x{w}" for h, w in opts.dynamic_shape)
    if opts.segmentation():
        meta.update(task="seg", **{f"seg_{k}": v for k, v in opts.segmentation().items()})
    return meta


@contextlib.contextmanager
def _quiet():
    """torch.onnx and ModelOpt print pages of progress; keep it out of the user's terminal unless debugging."""
    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)  # ModelOpt installs its own handlers and levels; mute them while it runs
        try:
            yield
        finally:
            logging.disable(logging.NOTSET)


def torch_to_onnx(model: Twins, path: Path, opts: ExportOptions) -> onnx.ModelProto:
    """The export-ready forward through torch's dynamo exporter; static shapes unless asked otherwise."""
    model = model.eval().set_attn_impl("explicit")
    x = torch.randn(_example_batch(opts), 3, *opts.img_size)
    try:
        with _quiet(), torch.no_grad():
            prog = torch.onnx.export(
                model, (x,), dynamo=True, opset_version=opts.opset, input_names=[INPUT_NAME],
                output_names=output_names(opts.features), dynamic_shapes=(_dims(opts),) if _dims(opts) else None,
                optimize=True, verbose=False,
            )
    except Exception as e:
        raise ExportError(f"torch.onnx.export failed for {opts.variant}: {type(e).__name__}: "
                          f"{str(e).strip().splitlines()[-1][:500]}") from e
    proto = prog.model_proto
    _name_dims(proto, opts)
    set_metadata(proto, _metadata(opts, "fp32"))
    onnx.save(proto, str(path))
    return proto


# ---------------------------------------------------------------------------------------------- fp16 / int8


def to_fp16(src: Path, dst: Path, opts: ExportOptions, images: np.ndarray | None = None) -> onnx.ModelProto:
    """ModelOpt AutoCast: fp16 everywhere except nodes whose data or weights would overflow fp16.

    With `images`, AutoCast's reference run (its data_max rule) sees them instead of random inputs.
    """
    from modelopt.onnx.autocast import convert_to_mixed_precision

    # AutoCast's reference run feeds random inputs whose symbolic dims are 1; a 1x1 image has empty feature
    # maps and ONNX Runtime dies on them (SIGFPE). With a dynamic H/W, feed one input at the OPT size instead.
    # With calibration images (static H/W), its data_max rule judges those instead of random inputs.
    ref_input = {INPUT_NAME: random_inputs(1, opts.img_size, seed=7)} if opts.dynamic_shape else None
    batch = opts.batch if opts.dynamic_batch is None else 1
    try:
        with contextlib.ExitStack() as stack:
            if images is not None and not opts.dynamic_shape:
                ref_input = stack.enter_context(ovf.npz_inputs(INPUT_NAME, images, batch))
            with _quiet():
                proto = convert_to_mixed_precision(str(src), low_precision_type="fp16",
                                                   keep_io_types=not opts.fp16_io, providers=["cpu"], opset=opts.opset,
                                                   data_max=opts.fp16_data_max, calibration_data=ref_input)
    except Exception as e:  # ModelOpt raises whatever its dependencies raise
        raise ExportError(f"ModelOpt AutoCast (fp16) failed on {src.name}: {one_line(e)}") from e
    if opts.dynamic_shape:  # its shape inference ran at that size: drop the static intermediate shapes it wrote
        for vi in proto.graph.value_info:
            vi.type.tensor_type.ClearField("shape")
    set_metadata(proto, _metadata(opts, "fp16"))
    onnx.save(proto, str(dst))
    return proto


def fp16_overflow(fp32_path: Path, fp16: onnx.ModelProto, opts: ExportOptions,
                  images: np.ndarray | None) -> tuple[list[ovf.TensorRange], dict]:
    """The overflow check of the FP32 graph's activations, and the manifest entry: what stayed FP32 and why."""
    x = images if images is not None else random_inputs(max(opts.verify_samples, 1), opts.img_size, seed=7)
    ranges = ovf.activation_absmax(onnx.load(str(fp32_path)), x)
    flagged = ovf.check_overflow(ranges, fp16)
    kept = ovf.fp32_nodes_and_reasons(fp16, ranges, opts.fp16_data_max)
    return flagged, {"fp16": {
        "autocast": {"data_max": opts.fp16_data_max, "calibration_data": "images" if images is not None else "random",
                     "samples": int(len(x))},
        "overflow_check": {"inputs": "images" if images is not None else "random", "samples": int(len(x)),
                           "fp16_max": ovf.FP16_MAX, "margin": ovf.OVERFLOW_MARGIN,
                           "flagged": [r.to_dict() for r in flagged],
                           "max_absmax": max((v[2] for v in ranges.values()), default=0.0)},
        "kept_fp32": kept,
    }}


def calibration_key(fp32_sha: str, files: list[Path], opts: ExportOptions) -> str:
    """Same fp32 graph, same images (path, size, mtime), same method and preprocessing -> same scales."""
    h = hashlib.sha256()
    h.update(json.dumps([fp32_sha, opts.calib_method, opts.calib_size, list(opts.img_size),
                         opts.cfg.interpolation, opts.cfg.crop_pct, opts.cfg.mean, opts.cfg.std]).encode())
    for f in files:
        st = f.stat() if f.exists() else None
        h.update(f"{f}|{st.st_size if st else -1}|{int(st.st_mtime) if st else -1}\n".encode())
    return h.hexdigest()


def activation_scales(model: onnx.ModelProto) -> dict[str, float]:
    """Scale of every QuantizeLinear on an activation (weights have their own, fixed by the weights)."""
    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for n in model.graph.node:
        if n.op_type == "QuantizeLinear" and n.input[0] not in inits and n.input[1] in inits:
            out[n.input[1]] = float(onnx.numpy_helper.to_array(inits[n.input[1]]).reshape(-1)[0])
    return out


def apply_scales(model: onnx.ModelProto, scales: dict[str, float]) -> int:
    inits = {i.name: i for i in model.graph.initializer}
    missing = [k for k in scales if k not in inits]
    if missing:
        raise CalibrationDataError(f"calibration cache names {len(missing)} tensor(s) this graph lacks "
                                   f"(e.g. {missing[0]}); delete the cache to recalibrate")
    # each DequantizeLinear has its own scale initializer: give it its QuantizeLinear's value, or the pair
    # would quantize with the cached scale and dequantize with the one-sample one
    q_scale = {n.output[0]: n.input[1] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    paired: dict[str, set[str]] = {}
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in q_scale and n.input[1] in inits:
            paired.setdefault(q_scale[n.input[0]], set()).add(n.input[1])
    for name, value in scales.items():
        for target in {name} | paired.get(name, set()):
            old = onnx.numpy_helper.to_array(inits[target])
            inits[target].CopyFrom(onnx.numpy_helper.from_array(np.full(old.shape, value, dtype=old.dtype), target))
    return len(scales)


def to_int8(src: Path, dst: Path, opts: ExportOptions, calib: np.ndarray,
            cache: dict | None, exclude: list[str] | None = None) -> tuple[onnx.ModelProto, dict, bool]:
    """ModelOpt PTQ: per-channel weights, calibrated activations, fp16 elsewhere (TensorRT's best mix).

    `exclude`: node names ModelOpt leaves out of INT8 (they stay FP16); their scales are simply unused.
    """
    from modelopt.onnx.quantization import quantize

    data = calib[:1] if cache else calib  # cached scales: one sample only builds the Q/DQ structure
    try:
        with _quiet():
            reader = _progress_reader(src, data, opts.progress)  # ModelOpt logs as the provider is built
            quantize(str(src), quantize_mode="int8", calibration_data_reader=reader,
                     calibration_method=opts.calib_method, calibration_eps=["cpu"], output_path=str(dst),
                     log_level="ERROR", opset=opts.opset, direct_io_types=opts.fp16_io,
                     nodes_to_exclude=bud.exclude_patterns(exclude or []))
    except Exception as e:  # ModelOpt raises whatever its dependencies raise
        raise ExportError(f"ModelOpt INT8 quantization failed on {src.name}: {one_line(e)}") from e
    proto = onnx.load(str(dst))
    if cache:
        got = set(activation_scales(proto))
        if (got != set(cache)) if not exclude else not got <= set(cache):
            # one sample gave a different set of quantized activations: the cache does not describe this
            # graph, so calibrate for real rather than mix cached and one-sample scales
            log.info("calibration cache does not cover this graph's activations; recalibrating")
            return to_int8(src, dst, opts, calib, None, exclude)
        apply_scales(proto, {k: cache[k] for k in got})
    set_metadata(proto, _metadata(opts, "int8"))
    onnx.save(proto, str(dst))
    return proto, activation_scales(proto), bool(cache)


def _progress_reader(src: Path, data: np.ndarray, progress: bool):
    """ModelOpt's own data provider, with a progress bar over the calibration batches."""
    from modelopt.onnx.quantization.calib_utils import CalibrationDataProvider
    from tqdm import tqdm

    class ProgressReader(CalibrationDataProvider):
        def __init__(self) -> None:
            super().__init__(str(src), data)
            self.bar = tqdm(total=len(self.calibration_data_list), desc="calibration", unit="batch",
                            file=sys.__stderr__, disable=not progress, leave=False)

        def get_next(self):
            item = super().get_next()
            if item is not None:
                self.bar.update(1)
            return item

        def rewind(self) -> None:
            super().rewind()
            self.bar.reset()

    return ProgressReader()


# ---------------------------------------------------------------------------------------------- verification


def windows_divide(opts: ExportOptions) -> bool:
    """True when every LSA feature map divides by its window: then the graph needs no Pad at all."""
    if opts.cfg.wss is None:
        return True
    h, w = opts.img_size
    return all((h // (4 << k)) % ws == 0 and (w // (4 << k)) % ws == 0 for k, ws in enumerate(opts.cfg.wss))


# ---------------------------------------------------------------------------------------------- pipeline


def _calibration_data(opts: ExportOptions) -> tuple[np.ndarray, list[Path], int]:
    if opts.calib_dir is None:
        warnings.warn("twins_trt: INT8 calibrated on SYNTHETIC random data (--calib-synthetic); expect an accuracy "
                      "loss: calibrate on a few hundred real images with --calib-data DIR", stacklevel=3)
        return random_inputs(opts.calib_size, opts.img_size, seed=1234), [], 0
    files = find_images(opts.calib_dir)
    loaded = load_images(files, opts.cfg, opts.img_size, limit=opts.calib_size, progress=opts.progress,
                         desc="calibration images")
    return loaded.array, loaded.files, len(loaded.skipped)


def _write_manifest(path: Path, opts: ExportOptions, precision: str, rep: GraphReport, ver: Verdict,
                    weights_sha: str | None, seconds: float, extra: dict | None = None) -> Path:
    b = opts.dynamic_batch
    shape = ["batch" if b else opts.batch, 3, *(["height", "width"] if opts.dynamic_shape else opts.img_size)]
    manifest = {
        "kind": "onnx",
        "file": path.name,
        "variant": opts.variant,
        "timm_name": opts.cfg.timm_name,
        "precision": precision,
        "features": opts.features,
        "inputs": [{"name": INPUT_NAME, "shape": shape,
                    "dtype": "float16" if opts.fp16_io and precision != "fp32" else "float32"}],
        "outputs": output_names(opts.features),
        "batch": {"min": b[0], "opt": b[1], "max": b[2]} if b else {"static": opts.batch},
        "img_size": list(opts.img_size),
        "hw_profile": [list(s) for s in opts.dynamic_shape] if opts.dynamic_shape else None,
        "opset": opts.opset,
        "sha256": artifacts.sha256_file(path),
        "weights": str(opts.weights) if opts.weights else None,
        "weights_sha256": weights_sha,
        "preprocessing": {"interpolation": opts.cfg.interpolation, "crop_pct": opts.cfg.crop_pct,
                          "mean": opts.cfg.mean, "std": opts.cfg.std},
        "segmentation": opts.segmentation(),
        "graph": rep.to_dict(),
        "verification": ver.to_dict(),
        "export_seconds": round(seconds, 2),
        "created": artifacts.now_iso(),
        "versions": artifacts.tool_versions(),
    }
    manifest.update(extra or {})
    return artifacts.write_json_atomic(artifacts.manifest_path(path), manifest)


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
        calib, calib_files, res.skipped_images = _calibration_data(opts)
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
                               pad_allowed=opts.dynamic_shape is not None or not windows_divide(opts))
            res.reports[precision] = rep
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
        res.manifests[precision] = _write_manifest(final, opts, precision, rep, ver, weights_sha,
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
            say(ovf.format_overflow(res.overflow))
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
        loaded, loaded_files, _ = _calibration_data(opts)
    cal_idx, held_idx = bud.split_holdout(len(loaded), opts.holdout)
    calib = loaded[cal_idx]
    calib_files = [loaded_files[i] for i in cal_idx] if loaded_files else []
    held = bud.heldout_samples(loaded[held_idx])
    # a dynamic H/W: the budget holds at every size verification checks, so the search is judged there too
    held_at = [resize_images(held, hw) for hw in dict.fromkeys((h, w) for _, h, w in verification_shapes(opts))]
    budget = opts.budget
    key = calibration_key(artifacts.sha256_file(fp32_path), calib_files, opts)
    cache_path = out_dir / f"{opts.stem}.int8.calib.json"
    cache = _read_cache(cache_path, key)
    say(f"quantizing to INT8 with ModelOpt ({opts.calib_method} calibration on {len(calib)} "
        f"{'real' if calib_files else 'SYNTHETIC'} sample(s){', scales from cache' if cache else ''}; "
        f"{len(held_idx)} image(s) held out -> {len(held)} verification samples with mirrors; budget {budget})")
    calibration = {"method": opts.calib_method, "samples": int(len(calib)),
                   "source": str(opts.calib_dir) if opts.calib_dir else "synthetic",
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
    heldout = bud.HeldOut(fp32, held_at)
    all_int8 = heldout.score(qdq)
    say(f"all-INT8 on held-out images: {all_int8.line()} -> "
        f"{'meets' if all_int8.meets(budget) else 'MISSES'} budget {budget}")
    macs = bud.node_macs(fp32)
    info: dict = {"budget": str(budget), "all_int8": all_int8.to_dict(), "fp16_regions": [], "fp16_nodes": [],
                  "int8_mac_share": bud.int8_mac_share(qdq, macs)}
    res.int8 = info
    exclude: list[str] = []
    search = opts.int8_fallback and not all_int8.meets(budget)
    if opts.int8_sensitivity or search:
        regions = bud.find_regions(fp32, qdq, opts.int8_regions)
        say(f"int8 sensitivity: {len(regions)} regions, each left out of INT8 alone, scored on {len(heldout)} samples"
            + (f" ({len(held)} at each of {len(held_at)} sizes)" if len(held_at) > 1 else ""))
        scores = bud.sensitivity(qdq, regions, heldout, opts.progress)
        res.sensitivity_table = bud.format_table(scores, all_int8, budget)
        report_json = out_dir / f"{opts.stem}.int8.sensitivity.json"
        extra: dict = {"regions_by": opts.int8_regions, "heldout_samples": len(heldout),
                       "seconds": round(time.perf_counter() - t0, 1)}
        if search:
            found = bud.search(qdq, bud.rank(scores, budget), regions, heldout, budget, all_int8, opts.progress)
            found.seconds = time.perf_counter() - t0
            extra["search"] = found.to_dict()
            info["search"] = {"trials": len(found.trials), "seconds": round(found.seconds, 1)}
            bud.write_report(report_json, report_json.with_suffix(".png"), scores, all_int8, budget, extra)
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
            bud.write_report(report_json, report_json.with_suffix(".png"), scores, all_int8, budget, extra)
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
                proto = bud.without_qdq(qdq, set(exclude))
                onnx.save(proto, str(tmp))
                final = found.figures  # the search scored exactly this graph
        else:
            proto, final = qdq, all_int8
            onnx.save(proto, str(tmp))
        info.update(figures=final.to_dict(), int8_mac_share=bud.int8_mac_share(proto, macs))
        return {"calibration": calibration, "int8": info}

    produce("int8", build_int8, verify_on=held, tolerance=(budget.attribute, budget.bound), inputs="held-out images")


def _read_cache(path: Path, key: str) -> dict[str, float] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if data.get("key") != key:
        log.info("calibration cache %s is for other inputs; recalibrating", path)
        return None
    return {k: float(v) for k, v in data["scales"].items()}
