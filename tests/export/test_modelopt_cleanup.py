"""What stands in for ModelOpt's and ONNX Runtime's slow paths while we call ModelOpt (export.upstream): the linear
consumer lookups (AutoCast's dead-end cleanup, the redundant-cast pass), shape inference without the weights, the
per-channel weight scales in one pass, the entropy sums, ONNX Runtime's rewiring of only a tensor's readers, no
re-check of the written file: the same graph out, byte for byte, and the libraries' own functions back
afterwards."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from twins_trt.export.upstream import linear_consumer_lookups

pytest.importorskip("modelopt.onnx.autocast")


def _graph_with_dead_ends(path) -> onnx.ModelProto:
    """x -> MatMul -> Add -> Softmax -> y, plus branches nothing consumes (a Relu off the MatMul, a Sigmoid off the
    Add), so AutoCast's cleanup has both its own dead-end casts and the model's dead-end nodes to drop."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal((16,)).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"], name="mm"),
             helper.make_node("Relu", ["mm"], ["dead_relu"], name="dead_relu"),
             helper.make_node("Add", ["mm", "b"], ["add"], name="add"),
             helper.make_node("Sigmoid", ["add"], ["dead_sigmoid"], name="dead_sigmoid"),
             helper.make_node("Softmax", ["add"], ["y"], name="softmax", axis=-1)]
    graph = helper.make_graph(nodes, "dead_ends", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.save(model, str(path))
    return model


def _autocast(path) -> onnx.ModelProto:
    from modelopt.onnx.autocast import convert_to_mixed_precision

    return convert_to_mixed_precision(str(path), low_precision_type="fp16", keep_io_types=True, providers=["cpu"])


def test_the_linear_cleanup_gives_modelopts_graph_and_puts_modelopts_method_back(tmp_path):
    from modelopt.onnx.autocast.precisionconverter import PrecisionConverter

    src = tmp_path / "dead_ends.onnx"
    _graph_with_dead_ends(src)
    upstream = PrecisionConverter._cleanup_no_consumer_nodes
    theirs = _autocast(src)
    with linear_consumer_lookups():
        assert PrecisionConverter._cleanup_no_consumer_nodes is not upstream  # ours runs inside
        ours = _autocast(src)
    assert PrecisionConverter._cleanup_no_consumer_nodes is upstream  # and ModelOpt's is back outside
    names = [n.name for n in ours.graph.node]
    assert "dead_relu" not in names and "dead_sigmoid" not in names and "softmax" in names
    assert ours.SerializeToString() == theirs.SerializeToString()


def test_the_methods_are_put_back_when_modelopt_raises(tmp_path):
    import modelopt.onnx.utils as mo_utils
    from modelopt.onnx.autocast.precisionconverter import PrecisionConverter

    upstream = PrecisionConverter._cleanup_no_consumer_nodes, mo_utils.remove_redundant_casts
    with pytest.raises(FileNotFoundError), linear_consumer_lookups():
        _autocast(tmp_path / "missing.onnx")
    assert (PrecisionConverter._cleanup_no_consumer_nodes, mo_utils.remove_redundant_casts) == upstream


def _cast_chains() -> onnx.ModelProto:
    """Casts of every kind the redundant-cast pass removes or keeps, in chains whose bypasses rewire each other:
    x -> Cast(float) [same type] -> Cast(float16) -> Cast(float) [sequential, kept: low to high] -> Relu -> r;
    x -> Cast(double) -> Cast(float) [high then low: the first one goes] -> Cast(float) [same type, feeds the graph
    output y]; a float16 Constant -> Cast(float) [folded] -> Add; a Cast with two readers; a float Constant ->
    Cast(float) [same type: its reader, a Cast(float16), then reads the Constant, which so has two readers and is
    not folded: an index not kept up to date with the bypasses would fold it] -> Cast(float16) -> Cast(float) -> u."""
    f, h, d = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE
    cast = lambda i, o, to: helper.make_node("Cast", [i], [o], name=o, to=to)  # noqa: E731
    const = helper.make_node("Constant", [], ["k16"], name="k16",
                             value=numpy_helper.from_array(np.full((4,), 0.5, np.float16)))
    nodes = [cast("x", "same", f), cast("same", "half", h), cast("half", "back", f),
             helper.make_node("Relu", ["back"], ["r"], name="relu"),
             cast("x", "dbl", d), cast("dbl", "flt", f), cast("flt", "y", f),
             const, cast("k16", "k32", f), helper.make_node("Add", ["r", "k32"], ["z"], name="add"),
             cast("z", "z2", f), helper.make_node("Mul", ["z2", "z2"], ["w"], name="square"),
             helper.make_node("Sub", ["z2", "w"], ["v"], name="sub"),
             helper.make_node("Constant", [], ["c32"], name="c32",
                              value=numpy_helper.from_array(np.full((4,), 0.25, np.float32))),
             cast("c32", "ca", f), cast("ca", "cb", h), cast("cb", "u", f)]
    graph = helper.make_graph(nodes, "casts", [helper.make_tensor_value_info("x", f, [4])],
                              [helper.make_tensor_value_info(o, f, [4]) for o in ("y", "v", "u")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    return onnx.shape_inference.infer_shapes(model)  # the pass reads every tensor's type, as AutoCast leaves them


def test_the_indexed_redundant_cast_pass_gives_modelopts_graph():
    import modelopt.onnx.utils as mo_utils

    theirs = mo_utils.remove_redundant_casts(_cast_chains())
    upstream = mo_utils.remove_redundant_casts, mo_utils.get_consumer_nodes, mo_utils._bypass_cast_node
    with linear_consumer_lookups():
        assert mo_utils.remove_redundant_casts is not upstream[0]  # ours runs inside
        ours = mo_utils.remove_redundant_casts(_cast_chains())
    assert (mo_utils.remove_redundant_casts, mo_utils.get_consumer_nodes, mo_utils._bypass_cast_node) == upstream
    removed = {n.name for n in _cast_chains().graph.node} - {n.name for n in ours.graph.node}
    assert {"same", "dbl", "k32", "ca"} <= removed and not {"back", "cb"} & removed  # it removed casts, kept some
    assert ours.SerializeToString() == theirs.SerializeToString()


def _mlp(path) -> onnx.ModelProto:
    """x (1, 8, 64) -> MatMul 64x256 -> Add -> Relu -> MatMul 256x64 -> Add -> Softmax -> y: weights large enough
    (16384 values each) that shape inference leaves them out."""
    rng = np.random.default_rng(0)
    f = TensorProto.FLOAT
    w1 = (rng.standard_normal((64, 256)) * 0.1).astype(np.float32)
    w1[:, 3] = 0.0  # a channel of zeros: scale 1, zero point 0 (below float32's tiny)
    w1[:, 5] = -np.abs(w1[:, 5])  # one all negative, one all positive
    w1[:, 6] = np.abs(w1[:, 6])
    inits = [numpy_helper.from_array(w1, "w1"),
             numpy_helper.from_array(rng.standard_normal(256).astype(np.float32), "b1"),
             numpy_helper.from_array((rng.standard_normal((256, 64)) * 0.1).astype(np.float32), "w2"),
             numpy_helper.from_array(rng.standard_normal(64).astype(np.float32), "b2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Add", ["h", "b1"], ["hb"], name="fc1_bias"),
             helper.make_node("Relu", ["hb"], ["a"], name="act"),
             helper.make_node("MatMul", ["a", "w2"], ["o"], name="fc2"),
             helper.make_node("Add", ["o", "b2"], ["ob"], name="fc2_bias"),
             helper.make_node("Softmax", ["ob"], ["y"], name="softmax", axis=-1)]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", f, [1, 8, 64])],
                              [helper.make_tensor_value_info("y", f, [1, 8, 64])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    onnx.save(model, str(path))
    return model


def _mlp_int8(src, dst) -> onnx.ModelProto:
    """ModelOpt's INT8 quantization of the MLP at `src` (max calibration on 4 fixed batches, FP16 elsewhere),
    written to `dst` and read back."""
    from modelopt.onnx.quantization import quantize

    calib = np.random.default_rng(1).standard_normal((4, 8, 64)).astype(np.float32)
    quantize(str(src), quantize_mode="int8", calibration_data={"x": calib}, calibration_method="max",
             calibration_eps=["cpu"], output_path=str(dst), log_level="ERROR", high_precision_dtype="fp16")
    return onnx.load(str(dst))


def test_weightless_shape_inference_gives_modelopts_graphs_and_puts_modelopts_function_back(tmp_path, monkeypatch):
    """ModelOpt's INT8 quantization (FP16 elsewhere) and AutoCast's FP16 conversion, each with its shape inference
    and with ours: the same graphs, byte for byte, and ours ran inside."""
    import modelopt.onnx.utils as mo_utils

    import twins_trt.export.upstream as convert
    from twins_trt.export.upstream import weightless_shape_inference

    src = tmp_path / "mlp.onnx"
    _mlp(src)

    calls: list[bool] = []

    def counted(model, **kwargs):
        calls.append(True)
        return real(model, **kwargs)

    real = convert.typed
    monkeypatch.setattr(convert, "typed", counted)
    upstream, upstream_path = mo_utils.infer_shapes, onnx.shape_inference.infer_shapes_path
    theirs = _mlp_int8(src, tmp_path / "theirs.int8.onnx").SerializeToString(), _autocast(src).SerializeToString()
    assert not calls
    with weightless_shape_inference():
        assert mo_utils.infer_shapes is not upstream  # ours runs inside
        assert onnx.shape_inference.infer_shapes_path is not upstream_path
        ours = _mlp_int8(src, tmp_path / "ours.int8.onnx").SerializeToString(), _autocast(src).SerializeToString()
    assert mo_utils.infer_shapes is upstream  # and ModelOpt's is back outside
    assert onnx.shape_inference.infer_shapes_path is upstream_path
    assert len(calls) >= 3  # ModelOpt inferred shapes through ours, in both, and its loader on the file
    assert b"QuantizeLinear" in ours[0]
    assert ours == theirs
    with pytest.raises(FileNotFoundError), weightless_shape_inference():
        _autocast(tmp_path / "missing.onnx")
    assert mo_utils.infer_shapes is upstream and onnx.shape_inference.infer_shapes_path is upstream_path


def test_weightless_inference_on_a_file_writes_what_onnx_writes(tmp_path):
    """ModelOpt's loader infers on its file in place: ours writes the same bytes as ONNX's, in place and to another
    file, and a path that is not there fails as ONNX's does."""
    from twins_trt.export.upstream import weightless_shape_inference

    for name in ("theirs.onnx", "ours.onnx"):
        _mlp(tmp_path / name)
    onnx.shape_inference.infer_shapes_path(str(tmp_path / "theirs.onnx"))
    with weightless_shape_inference():
        onnx.shape_inference.infer_shapes_path(tmp_path / "ours.onnx")
        onnx.shape_inference.infer_shapes_path(str(tmp_path / "ours.onnx"), str(tmp_path / "copy.onnx"))
        with pytest.raises(Exception, match="missing"):
            onnx.shape_inference.infer_shapes_path(str(tmp_path / "missing.onnx"))
    written = (tmp_path / "theirs.onnx").read_bytes()
    assert onnx.load(str(tmp_path / "theirs.onnx")).graph.value_info  # inference added types: not a no-op
    assert (tmp_path / "ours.onnx").read_bytes() == written == (tmp_path / "copy.onnx").read_bytes()


def test_vectorized_weight_scales_give_onnx_runtimes_graph_and_put_its_method_back(tmp_path, monkeypatch):
    """ModelOpt's INT8 quantization of the MLP (per-channel weights, a channel of zeros, an all-negative and an
    all-positive one) with ONNX Runtime's per-channel loop and with ours: the same graph, byte for byte; inside,
    no weight went through ONNX Runtime's per-channel call."""
    from onnxruntime.quantization import qdq_quantizer

    from twins_trt.export.upstream import vectorized_weight_scales

    src = tmp_path / "mlp.onnx"
    _mlp(src)

    sizes: list[int] = []
    real = qdq_quantizer.compute_data_quant_params

    def counted(data, *args, **kwargs):  # ONNX Runtime's own, counted: one call per channel of a per-channel weight
        sizes.append(data.size)
        return real(data, *args, **kwargs)

    monkeypatch.setattr(qdq_quantizer, "compute_data_quant_params", counted)
    upstream = qdq_quantizer.QDQQuantizer._calc_initializer_quant_params
    theirs = _mlp_int8(src, tmp_path / "theirs.onnx")
    assert sizes.count(64) == 256 and sizes.count(256) == 64  # w1's 256 channels of 64, w2's 64 of 256
    sizes.clear()
    with vectorized_weight_scales():
        assert qdq_quantizer.QDQQuantizer._calc_initializer_quant_params is not upstream
        ours = _mlp_int8(src, tmp_path / "ours.onnx")
    assert qdq_quantizer.QDQQuantizer._calc_initializer_quant_params is upstream
    assert 64 not in sizes and 256 not in sizes  # both weights' scales came from ours
    scales = {i.name: numpy_helper.to_array(i) for i in ours.graph.initializer}
    w1_scale = next(v for k, v in scales.items() if k.startswith("w1") and "scale" in k and v.shape == (256,))
    assert w1_scale[3] == 1.0 and (w1_scale[[0, 5, 6]] < 1.0).all()  # the zero channel's scale, and the others'
    assert ours.SerializeToString() == theirs.SerializeToString()
    with pytest.raises(RuntimeError, match="ModelOpt failed"), vectorized_weight_scales():
        raise RuntimeError("ModelOpt failed")
    assert qdq_quantizer.QDQQuantizer._calc_initializer_quant_params is upstream


def test_entropy_sums_give_onnx_runtimes_thresholds(monkeypatch):
    """ONNX Runtime's entropy threshold search and ours on histograms like calibration's (a peak with long tails,
    empty bins, a bin count not a multiple of 128, an odd one, outliers at one end only, one at 128 bins): the same
    thresholds, bit for bit, and ONNX Runtime's method back afterwards."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    from twins_trt.export.upstream import vectorized_entropy_sums

    rng = np.random.default_rng(0)
    cases = []
    for bins, spread in [(128, 1.0), (2048, 1.0), (1000, 0.2), (1001, 3.0), (4096, 0.05), (512, 8.0)]:
        data = rng.standard_t(3, size=20000).astype(np.float32) * spread
        edge = np.float32(np.abs(data).max())
        hist, edges = np.histogram(data, bins, range=(-edge, edge))
        hist[rng.integers(0, bins, bins // 10)] = 0  # empty bins, as coarse calibration leaves them
        cases.append((hist, edges.astype(np.float32), np.float32(data.min()), np.float32(data.max())))
    hist, edges, lo, hi = cases[1]
    cases.append((np.where(np.arange(hist.size) < hist.size // 2, 0, hist), edges, np.float32(0.0), hi))  # one-sided
    collector = HistogramCollector("entropy", True, 128, 128, 99.99, "same")
    upstream = HistogramCollector.get_entropy_threshold
    theirs = [collector.get_entropy_threshold(c, 128) for c in cases]
    # ours must not fall back on ONNX Runtime's own: its per-bin Python sum is what it replaces
    calls = []
    monkeypatch.setattr(HistogramCollector, "get_entropy_threshold",
                        lambda self, *a: calls.append(a) or upstream(self, *a))
    with vectorized_entropy_sums():
        ours = [collector.get_entropy_threshold(c, 128) for c in cases]
        assert HistogramCollector.get_entropy_threshold is not upstream
    assert not calls
    monkeypatch.undo()
    assert HistogramCollector.get_entropy_threshold is upstream
    for (a_lo, a_hi), (b_lo, b_hi) in zip(theirs, ours):
        assert a_lo.dtype == b_lo.dtype and a_lo.tobytes() == b_lo.tobytes() and a_hi.tobytes() == b_hi.tobytes()
    assert len({(float(a), float(b)) for a, b in theirs}) >= 5  # the cases pick different windows


def test_entropy_calibrated_int8_gives_modelopts_graph(tmp_path):
    """ModelOpt's INT8 quantization with entropy calibration over several batches (the histograms widen as they
    merge) with all of `faster_modelopt` and without: the same graph, byte for byte."""
    from modelopt.onnx.quantization import quantize

    from twins_trt.export.upstream import faster_modelopt

    src = tmp_path / "mlp.onnx"
    _mlp(src)
    rng = np.random.default_rng(2)
    calib = (rng.standard_normal((6, 8, 64)) * np.linspace(0.5, 3.0, 6)[:, None, None]).astype(np.float32)

    def int8(dst):
        quantize(str(src), quantize_mode="int8", calibration_data={"x": calib}, calibration_method="entropy",
                 calibration_eps=["cpu"], output_path=str(dst), log_level="ERROR", high_precision_dtype="fp16")
        return onnx.load(str(dst)).SerializeToString()

    theirs = int8(tmp_path / "theirs.onnx")
    with faster_modelopt(tmp_path / "ours.onnx"):
        ours = int8(tmp_path / "ours.onnx")
    assert ours == theirs


def test_reader_only_rewiring_gives_onnx_runtimes_graph_and_puts_its_method_back(tmp_path, monkeypatch):
    """ModelOpt's INT8 quantization of the MLP with ONNX Runtime's rewiring (every node visited per quantized
    tensor) and with ours (only the nodes that read it): the same graph, byte for byte, from fewer visits."""
    from onnxruntime.quantization.onnx_model import ONNXModel

    from twins_trt.export.upstream import reader_only_rewiring

    src = tmp_path / "mlp.onnx"
    _mlp(src)
    visits: list[str] = []
    real = ONNXModel.replace_node_input

    def counted(node, old, new):
        visits.append(node.name)
        return real(node, old, new)

    monkeypatch.setattr(ONNXModel, "replace_node_input", staticmethod(counted))
    upstream = ONNXModel.replace_input_of_all_nodes
    theirs = _mlp_int8(src, tmp_path / "theirs.onnx").SerializeToString()
    visited_by_theirs = len(visits)
    visits.clear()
    with reader_only_rewiring():
        assert ONNXModel.replace_input_of_all_nodes is not upstream
        ours = _mlp_int8(src, tmp_path / "ours.onnx").SerializeToString()
    assert ONNXModel.replace_input_of_all_nodes is upstream
    assert 0 < len(visits) < visited_by_theirs  # it rewired readers, and visited fewer nodes to do it
    assert ours == theirs
    with pytest.raises(RuntimeError, match="quantizer failed"), reader_only_rewiring():
        raise RuntimeError("quantizer failed")
    assert ONNXModel.replace_input_of_all_nodes is upstream


def test_no_recheck_of_skips_only_the_check_of_the_written_file(tmp_path, monkeypatch):
    """ModelOpt checks its models with `onnx.checker` as it goes and, last, the file it wrote. Under
    `no_recheck_of(that file)` the last check is skipped and every other one still runs; the same graph out, and
    ONNX's function back afterwards, also when ModelOpt raises."""
    from twins_trt.export.upstream import no_recheck_of

    src = tmp_path / "mlp.onnx"
    _mlp(src)
    checked: list[str] = []
    real = onnx.checker.check_model

    def counted(model, *args, **kwargs):
        checked.append(str(model) if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__") else "model")
        return real(model, *args, **kwargs)

    monkeypatch.setattr(onnx.checker, "check_model", counted)
    theirs = _mlp_int8(src, tmp_path / "theirs.onnx").SerializeToString()
    assert str(tmp_path / "theirs.onnx") in checked and "model" in checked
    before = checked.count("model")
    checked.clear()
    with no_recheck_of(tmp_path / "ours.onnx"):
        ours = _mlp_int8(src, tmp_path / "ours.onnx").SerializeToString()
    assert str(tmp_path / "ours.onnx") not in checked  # the written file was not read back to be checked
    assert checked.count("model") == before  # the checks of the models in between all ran
    assert onnx.checker.check_model is counted
    assert ours == theirs
    with pytest.raises(RuntimeError, match="ModelOpt failed"), no_recheck_of(tmp_path / "x.onnx"):
        raise RuntimeError("ModelOpt failed")
    assert onnx.checker.check_model is counted
