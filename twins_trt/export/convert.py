"""The conversions, each from a file to a file: PyTorch -> ONNX FP32 (torch's dynamo exporter), FP32 -> mixed
FP16 (ModelOpt AutoCast, with the overflow check of its activations) and FP32 -> INT8 Q/DQ (ModelOpt PTQ,
its activation scales cached under a key of what they were calibrated on).

Precision lives in the ONNX graph because TensorRT 11 is strongly typed only (and TensorRT 10
deprecated the FP16/INT8 builder flags): an FP16 engine is built from FP16 tensors, an INT8 engine
from QuantizeLinear/DequantizeLinear pairs.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch

from twins_trt.data import random_inputs
from twins_trt.errors import CalibrationDataError, ExportError, one_line
from twins_trt.export import trace_cache
from twins_trt.export.fp8 import quantize_options
from twins_trt.export.options import ExportOptions, metadata_for, set_metadata
from twins_trt.export.overflow import (
    FP16_MAX,
    OVERFLOW_MARGIN,
    TensorRange,
    activation_absmax,
    check_overflow,
    fp32_nodes_and_reasons,
    npz_inputs,
)
from twins_trt.export.upstream import faster_modelopt
from twins_trt.models import Twins
from twins_trt.runners import INPUT_NAME, output_names

log = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet():
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


def torch_to_onnx(model: Twins, path: Path, opts: ExportOptions,
                  on_step: Callable[[str], None] | None = None) -> onnx.ModelProto:
    """The export-ready forward through torch's dynamo exporter; static shapes unless asked otherwise. A graph traced
    before from the same model, code and shapes comes from the trace cache instead (`export.trace_cache`)."""
    model = model.eval().set_attn_impl("explicit")
    folder = trace_cache.cache_dir(opts.trace_cache)
    key = trace_cache.trace_key(model, opts) if folder is not None else ""
    proto = trace_cache.load(folder, key)
    if proto is not None:
        if on_step:
            on_step(f"traced graph reused from the trace cache ({folder}; --no-trace-cache traces again)")
    else:
        x = torch.randn(_example_batch(opts), 3, *opts.img_size)
        try:
            with quiet(), torch.no_grad():
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
        trace_cache.store(folder, key, proto)
    set_metadata(proto, metadata_for(opts, "fp32"))
    onnx.save(proto, str(path))
    return proto


def _dims(opts: ExportOptions):
    """torch.export dynamic shapes: batch symbolic, and H/W as multiples of 32 with --dynamic-shape."""
    spec: dict[int, object] = {}
    if opts.dynamic_batch is not None:  # one range for every profile: one trace (export.trace_cache.traced_batch)
        _, lo, hi = trace_cache.traced_batch(opts)
        spec[0] = torch.export.Dim("batch", min=lo, max=hi)
    if opts.dynamic_shape is not None:
        (h0, w0), _, (h2, w2) = opts.dynamic_shape
        spec[2] = 32 * torch.export.Dim("h32", min=max(h0 // 32, 1), max=max(h2 // 32, 2))
        spec[3] = 32 * torch.export.Dim("w32", min=max(w0 // 32, 1), max=max(w2 // 32, 2))
    return spec or None


def _example_batch(opts: ExportOptions) -> int:
    return trace_cache.traced_batch(opts)[0] if opts.dynamic_batch else opts.batch


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
                ref_input = stack.enter_context(npz_inputs(INPUT_NAME, images, batch))
            with quiet(), faster_modelopt():
                proto = convert_to_mixed_precision(str(src), low_precision_type="fp16",
                                                   keep_io_types=not opts.fp16_io, providers=["cpu"], opset=opts.opset,
                                                   data_max=opts.fp16_data_max, calibration_data=ref_input)
    except Exception as e:  # ModelOpt raises whatever its dependencies raise
        raise ExportError(f"ModelOpt AutoCast (fp16) failed on {src.name}: {one_line(e)}") from e
    if opts.dynamic_shape:  # its shape inference ran at that size: drop the static intermediate shapes it wrote
        for vi in proto.graph.value_info:
            vi.type.tensor_type.ClearField("shape")
    set_metadata(proto, metadata_for(opts, "fp16"))
    onnx.save(proto, str(dst))
    return proto


def fp16_overflow(fp32_path: Path, fp16: onnx.ModelProto, opts: ExportOptions,
                  images: np.ndarray | None) -> tuple[list[TensorRange], dict]:
    """The overflow check of the FP32 graph's activations, and the manifest entry: what stayed FP32 and why."""
    x = images if images is not None else random_inputs(max(opts.verify_samples, 1), opts.img_size, seed=7)
    ranges = activation_absmax(onnx.load(str(fp32_path)), x)
    flagged = check_overflow(ranges, fp16)
    kept = fp32_nodes_and_reasons(fp16, ranges, opts.fp16_data_max)
    return flagged, {"fp16": {
        "autocast": {"data_max": opts.fp16_data_max, "calibration_data": "images" if images is not None else "random",
                     "samples": int(len(x))},
        "overflow_check": {"inputs": "images" if images is not None else "random", "samples": int(len(x)),
                           "fp16_max": FP16_MAX, "margin": OVERFLOW_MARGIN,
                           "flagged": [r.to_dict() for r in flagged],
                           "max_absmax": max((v[2] for v in ranges.values()), default=0.0)},
        "kept_fp32": kept,
    }}


def calibration_key(fp32_sha: str, files: list[Path], opts: ExportOptions) -> str:
    """Same fp32 graph, same images (path, size, mtime), same method and preprocessing -> same scales."""
    h = hashlib.sha256()
    h.update(json.dumps([fp32_sha, opts.calib_method, opts.calib_size, list(opts.img_size),
                         *opts.preprocessing.to_dict().values()]).encode())
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
            cache: dict | None, precision: str = "int8") -> tuple[onnx.ModelProto, dict, bool]:
    """ModelOpt PTQ: per-channel weights, calibrated activations, fp16 elsewhere (TensorRT's best mix). Regions
    kept in FP16 by a budget are taken out of the calibrated graph afterwards (`export.quantized`).

    `precision`: ModelOpt's quantize_mode, "int8" or "fp8" (the same calibration, Q/DQ in FLOAT8E4M3FN).
    """
    from modelopt.onnx.quantization import quantize

    data = calib[:1] if cache else calib  # cached scales: one sample only builds the Q/DQ structure
    try:
        with quiet(), faster_modelopt(dst):
            reader = _progress_reader(src, data, opts.progress)  # ModelOpt logs as the provider is built
            quantize(str(src), quantize_mode=precision, calibration_data_reader=reader,
                     calibration_method=opts.calib_method, calibration_eps=["cpu"], output_path=str(dst),
                     log_level="ERROR", opset=opts.opset, direct_io_types=opts.fp16_io,
                     **quantize_options(precision, opts))
    except Exception as e:  # ModelOpt raises whatever its dependencies raise
        raise ExportError(f"ModelOpt {precision.upper()} quantization failed on {src.name}: {one_line(e)}") from e
    proto = onnx.load(str(dst))
    if cache:
        got = set(activation_scales(proto))
        if not got <= set(cache):
            # one sample gave quantized activations the cache lacks: the cache does not describe this graph, so
            # calibrate for real rather than mix cached and one-sample scales (a cache may hold more than a graph
            # uses: an INT8 cache serving FP8, which quantizes fewer tensors)
            log.info("calibration cache does not cover this graph's activations; recalibrating")
            return to_int8(src, dst, opts, calib, None, precision)
        apply_scales(proto, {k: cache[k] for k in got})
    set_metadata(proto, metadata_for(opts, precision))
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


def read_cache(path: Path, key: str) -> dict[str, float] | None:
    """The activation scales cached at `path` when they were calibrated under `key` (`calibration_key`), else None."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if data.get("key") != key:
        log.info("calibration cache %s is for other inputs; recalibrating", path)
        return None
    return {k: float(v) for k, v in data["scales"].items()}
