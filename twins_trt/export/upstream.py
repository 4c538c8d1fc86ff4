"""ModelOpt's and ONNX Runtime's slow paths, swapped for ours while they run here (`faster_modelopt`).

Each swap gives the same graph out, byte for byte (tests/export/test_modelopt_cleanup.py), is undone when the block
ends, also when it raises, and is left out where the library lacks what it replaces:

- `linear_consumer_lookups`: ModelOpt's consumer lookups, quadratic in the node count;
- `weightless_shape_inference`: ONNX shape inference without copying the weights;
- `vectorized_weight_scales`: ONNX Runtime's per-channel weight scales, one numpy pass per weight instead of one
  Python call per channel;
- `vectorized_entropy_sums`: the integer bin sums of ONNX Runtime's entropy calibration from one cumulative sum,
  instead of a Python `sum` per quantized bin and candidate threshold;
- `reader_only_rewiring`: ONNX Runtime's quantizer rewires only the nodes that read a quantized tensor, instead of
  visiting every node per tensor;
- `no_recheck_of`: ModelOpt's closing `onnx.checker` pass over the file it wrote, whose verdict it only logs, is
  skipped.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import onnx

from twins_trt.export.shapes import typed


@contextlib.contextmanager
def _swapped(owner, name: str, ours):
    """`owner.name` is `ours` inside the block and what it was afterwards, also when the block raises; left alone
    where `owner` lacks it."""
    theirs = vars(owner).get(name)
    if theirs is None:
        yield
        return
    setattr(owner, name, ours)
    try:
        yield
    finally:
        setattr(owner, name, theirs)


@contextlib.contextmanager
def linear_consumer_lookups():
    """ModelOpt 0.47 finds a tensor's consumers by scanning every node's inputs, and does so once per node in two
    passes that run in every FP16 conversion and every INT8/FP8 quantization, which makes them quadratic in the
    node count (cProfile of a svt_s 96x96 INT8 quantization: 7 s of 23 s in AutoCast's dead-end cleanup, 1.5 s of
    17 s in `remove_redundant_casts`, 950 scans of 1000 nodes). While ModelOpt runs here:

    - AutoCast's `_cleanup_no_consumer_nodes` finds the same nodes from one set of the names consumed, and deletes
      them by position instead of one equality search of the node list each (957 of them in a svt_s INT8 graph);
    - `remove_redundant_casts` answers its consumer lookups from an index of the graph built once per call and
      re-read for the nodes each bypassed Cast rewires (the only edits to node inputs in that pass), in graph
      order as the scan gives them.

    The same graph out (tested). ModelOpt's own functions are put back afterwards, also when it raises; a ModelOpt
    that lacks one of them is left alone there."""
    import modelopt.onnx.utils as mo_utils  # the callers have imported ModelOpt
    from modelopt.onnx.autocast.precisionconverter import PrecisionConverter

    def cleanup_no_consumer_nodes(self) -> None:
        nodes = self.model.graph.node
        keep = {o.name for o in self.model.graph.output} | {i for n in nodes for i in n.input}
        # by position, last first: `remove(node)` would search the list by message equality for each one
        for pos in reversed([k for k, n in enumerate(nodes) if not any(out in keep for out in n.output)]):
            del nodes[pos]

    upstream = {name: vars(mo_utils).get(name) for name in
                ("remove_redundant_casts", "get_consumer_nodes", "_bypass_cast_node")}

    def remove_redundant_casts(model):
        nodes = model.graph.node
        consumers: dict[str, set[int]] = {}  # tensor -> positions of the nodes that read it
        reads: list[set[str]] = []  # position -> the tensors that node reads
        for pos, node in enumerate(nodes):
            reads.append(set(node.input))
            for name in reads[pos]:
                consumers.setdefault(name, set()).add(pos)

        def lookup(m, tensor_name):
            if m is not model:
                return upstream["get_consumer_nodes"](m, tensor_name)
            return [nodes[pos] for pos in sorted(consumers.get(tensor_name, ()))]

        def bypass(m, node):
            if m is not model:
                return upstream["_bypass_cast_node"](m, node)
            # it rewires readers of the Cast's input or output: read those nodes' inputs again afterwards
            touched = set().union(*(consumers.get(t, set()) for t in (*node.input, *node.output)))
            upstream["_bypass_cast_node"](m, node)
            for pos in touched:
                for name in reads[pos]:
                    consumers[name].discard(pos)
                reads[pos] = set(nodes[pos].input)
                for name in reads[pos]:
                    consumers.setdefault(name, set()).add(pos)

        with _swapped(mo_utils, "get_consumer_nodes", lookup), _swapped(mo_utils, "_bypass_cast_node", bypass):
            return upstream["remove_redundant_casts"](model)

    with contextlib.ExitStack() as stack:
        stack.enter_context(_swapped(PrecisionConverter, "_cleanup_no_consumer_nodes", cleanup_no_consumer_nodes))
        if all(upstream.values()):  # the pass and both functions it looks consumers up with
            stack.enter_context(_swapped(mo_utils, "remove_redundant_casts", remove_redundant_casts))
        yield


@contextlib.contextmanager
def weightless_shape_inference():
    """ModelOpt infers the graph's types and shapes through `modelopt.onnx.utils.infer_shapes` several times in
    every FP16 conversion and INT8/FP8 quantization, and ONNX's inference copies the whole model, weights included,
    into C++ and back each time (40 s of the suite's 300 s in ModelOpt), and its model loader infers on the file in
    place (`onnx.shape_inference.infer_shapes_path`: 1.1-1.35 s on a svt_s file, 0.4-0.55 s so). While ModelOpt runs
    here, both infer on the graph without its weights (`export.shapes.typed`, the same value_info and outputs); the
    first returns a copy of the whole model with them, as ONNX's does, the second writes it where ONNX's would. A
    model near protobuf's 2 GB limit, or a call with arguments other than ONNX's three, goes to the library's own.
    The same graphs out, byte for byte (tested); their functions are put back afterwards, also when ModelOpt raises,
    and a library that lacks one is left alone there."""
    import modelopt.onnx.utils as mo_utils  # the callers have imported ModelOpt

    theirs = vars(mo_utils).get("infer_shapes")
    theirs_path = vars(onnx.shape_inference).get("infer_shapes_path")
    flags = {"check_type", "strict_mode", "data_prop"}

    def infer_shapes(model, **kwargs):
        if (not isinstance(model, onnx.ModelProto) or set(kwargs) - flags
                or sum(len(t.raw_data) for t in model.graph.initializer) > 1 << 30):
            return theirs(model, **kwargs)
        return typed(model, **kwargs)

    def infer_shapes_path(model_path, output_path="", **kwargs):
        """ONNX's in-place file version (ModelOpt's model loader calls it on every model it quantizes): the same
        file out, byte for byte; a model over 1 GB or with external data goes to ONNX's own."""
        path = Path(os.fspath(model_path)) if isinstance(model_path, (str, os.PathLike)) else None
        if path is None or set(kwargs) - flags or not path.is_file() or path.stat().st_size > 1 << 30:
            return theirs_path(model_path, output_path, **kwargs)
        model = onnx.load(str(path), load_external_data=False)
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
            return theirs_path(model_path, output_path, **kwargs)
        onnx.save(typed(model, **kwargs), os.fspath(output_path) or str(path))

    with contextlib.ExitStack() as stack:
        stack.enter_context(_swapped(mo_utils, "infer_shapes", infer_shapes))
        if theirs_path is not None:
            stack.enter_context(_swapped(onnx.shape_inference, "infer_shapes_path", infer_shapes_path))
        yield


@contextlib.contextmanager
def vectorized_weight_scales():
    """ONNX Runtime's QDQ quantizer (under ModelOpt's INT8 and FP8 quantization) computes a weight's per-channel
    scales with one `compute_data_quant_params` call per output channel: 48,320 Python calls, 2.4 s of a 12 s svt_s
    INT8 quantization. While ModelOpt runs here, the common case (a float32 weight, per-channel, symmetric, no
    per-tensor overrides, an integer type) is computed for all channels at once with ONNX Runtime's own formula:
    the range widened to hold 0 and made symmetric, the float32 difference taken to float64 and divided by the
    integer range, the scale back to float32 (1.0 with a zero point of 0 below float32's `tiny`), the zero point the
    rounded middle of the integer range. Every other tensor goes through ONNX Runtime's own method, in the same
    order; the same parameters out, bit for bit (tested)."""
    try:
        from onnxruntime.quantization import qdq_quantizer as qq
        from onnxruntime.quantization.base_quantizer import QuantizationParams
        from onnxruntime.quantization.quant_utils import get_qmin_qmax_for_qType, normalize_axis
    except ImportError:
        yield
        return
    theirs = vars(qq.QDQQuantizer).get("_calc_initializer_quant_params")
    integer = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16}

    def per_channel(self, name: str, info) -> QuantizationParams | None:
        """All channels of weight `name` at once, or None where ONNX Runtime's own method must run."""
        if name in self.tensor_quant_overrides.overrides or info.axis is None or self.min_real_range is not None:
            return None
        is_weight = info.tensor_type is qq.QDQQuantTensorType.WEIGHT
        quant_type = self.weight_qType if is_weight else self.activation_qType
        init = qq.find_by_name(name, self.model.initializer())
        if quant_type not in integer or init is None or init.data_type != onnx.TensorProto.FLOAT:
            return None
        data = qq.tensor_proto_to_array(init)
        ok, axis = normalize_axis(info.axis, data.ndim)
        if not ok or data.size == 0:
            return None
        rows = np.moveaxis(data, axis, 0).reshape(data.shape[axis], -1)
        if rows.shape[1] == 0:
            return None
        qmin, qmax = get_qmin_qmax_for_qType(quant_type, self.reduce_range, symmetric=True)
        absmax = np.maximum(np.abs(np.minimum(rows.min(axis=1), np.float32(0))),
                            np.abs(np.maximum(rows.max(axis=1), np.float32(0))))
        scale = (absmax - -absmax).astype(np.float64) / (np.float64(qmax) - np.float64(qmin))
        tiny = scale < np.finfo(np.float32).tiny
        middle = np.array(np.round((qmin + qmax) / np.array(2.0, dtype=np.float64)), dtype=qmin.dtype)
        zero_point = np.where(tiny, np.zeros((), qmin.dtype), middle).astype(qmin.dtype)
        return QuantizationParams(zero_point=zero_point, scale=np.where(tiny, 1.0, scale).astype(np.float32),
                                  quant_type=quant_type, axis=axis)

    def calc(self):
        ours = {}
        for name, info in self.tensors_to_quantize.items():
            got = per_channel(self, name, info)
            if got is not None:
                ours[name] = got
        everything = self.tensors_to_quantize
        self.tensors_to_quantize = {k: v for k, v in everything.items() if k not in ours}
        try:
            rest = theirs(self)
        finally:
            self.tensors_to_quantize = everything
        return {k: ours[k] if k in ours else rest[k] for k in everything if k in ours or k in rest}

    if theirs is None:
        yield
        return
    with _swapped(qq.QDQQuantizer, "_calc_initializer_quant_params", calc):
        yield


@contextlib.contextmanager
def vectorized_entropy_sums():
    """ONNX Runtime's entropy calibration (ModelOpt's INT8 default) picks each tensor's threshold by trying every
    symmetric window of its histogram: per window, Python `sum`s over slices of the integer histogram (the outliers
    folded into the end bins, the window merged into 128 quantized bins, the non-empty bins counted per quantized
    bin): 5 of a svt_s 224 quantization's 6.6 s of threshold search. While ModelOpt runs here those integer sums
    come from one cumulative sum and reshaped slices, exact in integers, and everything in floating point is ONNX
    Runtime's own, in the same order: the expansion of the quantized bins (the same float64 division, truncated as
    its assignment truncates), its `smooth_distribution` and `entropy`, the first smallest divergence, the clamp to
    the tensor's range. The same thresholds, bit for bit (tested); a histogram that is not of integers goes to ONNX
    Runtime's own method."""
    try:
        from onnxruntime.quantization import calibrate
    except ImportError:
        yield
        return
    collector = getattr(calibrate, "HistogramCollector", None)
    theirs = vars(collector).get("get_entropy_threshold") if collector is not None else None
    if theirs is None or not all(hasattr(calibrate, f) for f in ("smooth_distribution", "entropy")):
        yield
        return

    def get_entropy_threshold(self, histogram, num_quantized_bins):
        hist, edges = histogram[0], histogram[1]
        if not isinstance(hist, np.ndarray) or hist.dtype.kind not in "iu" or hist.ndim != 1:
            return theirs(self, histogram, num_quantized_bins)
        n, dtype = hist.size, edges.dtype
        zero, half = n // 2, num_quantized_bins // 2
        if zero < half or num_quantized_bins < 1:  # no window to try: ONNX Runtime's own says so
            return theirs(self, histogram, num_quantized_bins)
        hist = hist.astype(np.int64)
        total = np.concatenate([[0], np.cumsum(hist)])
        best, best_at = None, None
        for i in range(half, zero + 1):
            start, end = zero - i, min(zero + i + 1, n)
            window = hist[start:end]
            p = window.copy()
            p[0] += total[start]
            p[-1] += total[n] - total[end]
            merged = window.size // num_quantized_bins
            cut = num_quantized_bins * merged
            quantized = window[:cut].reshape(num_quantized_bins, merged).sum(axis=1)
            quantized[-1] += window[cut:].sum()
            norm = (p[:cut] != 0).reshape(num_quantized_bins, merged).sum(axis=1)
            q = np.zeros(p.size, dtype=np.int64)
            filled = norm != 0
            spread = np.zeros(num_quantized_bins, dtype=np.int64)
            spread[filled] = (quantized[filled] / norm[filled]).astype(np.int64)
            q[:cut] = np.where(np.repeat(filled, merged), np.repeat(spread, merged), 0)
            ps, qs = calibrate.smooth_distribution(p), calibrate.smooth_distribution(q)
            div = (np.array(np.inf, dtype=dtype) if ps is None or qs is None
                   else np.array(calibrate.entropy(ps, qs), dtype=dtype))
            value = np.float64(div)  # ONNX Runtime keeps the divergences in a float64 array
            if best is None or value < best or (np.isnan(value) and not np.isnan(best)):
                best, best_at = value, (edges[start], edges[end])
        low, high = best_at
        if low < histogram[2]:
            low = histogram[2]
        if high > histogram[3]:
            high = histogram[3]
        return low, high

    with _swapped(collector, "get_entropy_threshold", get_entropy_threshold):
        yield


@contextlib.contextmanager
def reader_only_rewiring():
    """ONNX Runtime's QDQ quantizer points a tensor's readers at its new DequantizeLinear with
    `ONNXModel.replace_input_of_all_nodes`, which calls `replace_node_input` on every node of the graph, once per
    tensor it quantizes (349 tensors x 1219 nodes in a svt_s INT8 quantization: 0.4 s of Python calls). While
    ModelOpt runs here, only the nodes that read the tensor are handed to ONNX Runtime's `replace_node_input`; the
    others it would leave as they are. The same graph out, byte for byte (tested); the method is put back
    afterwards, also when the quantizer raises, and an ONNX Runtime without it is left alone."""
    try:
        from onnxruntime.quantization.onnx_model import ONNXModel
    except ImportError:
        yield
        return
    theirs = vars(ONNXModel).get("replace_input_of_all_nodes")
    if theirs is None or not hasattr(ONNXModel, "replace_node_input"):
        yield
        return

    def replace_input_of_all_nodes(self, old_input_name, new_input_name):
        for node in self.model.graph.node:
            if old_input_name in node.input:
                ONNXModel.replace_node_input(node, old_input_name, new_input_name)

    with _swapped(ONNXModel, "replace_input_of_all_nodes", replace_input_of_all_nodes):
        yield


@contextlib.contextmanager
def no_recheck_of(written: str | os.PathLike | None):
    """ModelOpt's quantization ends by reading the artifact it wrote back from disk to run `onnx.checker` on it
    ("Validating quantized model"), and only logs a failure, as a warning (the callers here ask ModelOpt for errors
    only): 0.35-0.45 s per svt_s quantization that changes nothing. While ModelOpt runs here, that one check, on the
    file `written`, is skipped; the artifact is checked right after by what decides (ONNX Runtime and OpenVINO
    sessions against PyTorch, the TensorRT parser's operator table). Every other `onnx.checker.check_model` call
    (a model, or another file) runs ONNX's own, and it is put back afterwards, also when ModelOpt raises."""
    theirs = vars(onnx.checker).get("check_model")
    if written is None or theirs is None:
        yield
        return
    skip = os.path.abspath(os.fspath(written))

    def check_model(model, *args, **kwargs):
        if isinstance(model, (str, os.PathLike)) and os.path.abspath(os.fspath(model)) == skip:
            return None
        return theirs(model, *args, **kwargs)

    with _swapped(onnx.checker, "check_model", check_model):
        yield


@contextlib.contextmanager
def faster_modelopt(output_path: str | os.PathLike | None = None):
    """All of the above, for one ModelOpt call (`output_path`: the file a quantization writes, `no_recheck_of`)."""
    with (linear_consumer_lookups(), weightless_shape_inference(), vectorized_weight_scales(),
          vectorized_entropy_sums(), reader_only_rewiring(), no_recheck_of(output_path)):
        yield
