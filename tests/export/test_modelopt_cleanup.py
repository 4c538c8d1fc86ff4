"""The linear dead-end cleanup that stands in for ModelOpt AutoCast's quadratic one while we call ModelOpt: the same
graph out, node for node, and ModelOpt's own method back in place afterwards."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from twins_trt.export.convert import linear_dead_end_cleanup

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
    with linear_dead_end_cleanup():
        assert PrecisionConverter._cleanup_no_consumer_nodes is not upstream  # ours runs inside
        ours = _autocast(src)
    assert PrecisionConverter._cleanup_no_consumer_nodes is upstream  # and ModelOpt's is back outside
    names = [n.name for n in ours.graph.node]
    assert "dead_relu" not in names and "dead_sigmoid" not in names and "softmax" in names
    assert ours.SerializeToString() == theirs.SerializeToString()


def test_the_method_is_put_back_when_modelopt_raises(tmp_path):
    from modelopt.onnx.autocast.precisionconverter import PrecisionConverter

    upstream = PrecisionConverter._cleanup_no_consumer_nodes
    with pytest.raises(FileNotFoundError), linear_dead_end_cleanup():
        _autocast(tmp_path / "missing.onnx")
    assert PrecisionConverter._cleanup_no_consumer_nodes is upstream
