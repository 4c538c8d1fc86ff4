"""Type and shape inference without the weights gives what ONNX's inference on the whole model gives."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from twins_trt.export.shapes import WEIGHT_MIN_ELEMENTS, infer_types, typed


def full(model: onnx.ModelProto, data_prop: bool) -> onnx.ModelProto:
    return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=data_prop)


def types(model: onnx.ModelProto) -> tuple[dict[str, bytes], list[bytes]]:
    return ({v.name: v.SerializeToString() for v in model.graph.value_info},
            [o.SerializeToString() for o in model.graph.output])


def dynamic_graph() -> onnx.ModelProto:
    """x (N, T, 64) @ W (64 x 64, a weight) + b, reshaped to (N, T/4, 4, 64) through a target computed from Shape (data
    propagation needed), then resized by small float scales (values needed); the outputs' types left to inference."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((64, 64)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(64).astype(np.float16), "b16"),
             numpy_helper.from_array(np.array([0], np.int64), "i0"),
             numpy_helper.from_array(np.array([-1, 4, 64], np.int64), "tail"),
             numpy_helper.from_array(np.array([1, 1, 2, 1], np.float32), "scales")]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"]),
             helper.make_node("Cast", ["b16"], ["b"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["y", "b"], ["z"]),
             helper.make_node("Shape", ["z"], ["s"]),
             helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
             helper.make_node("Concat", ["n", "tail"], ["target"], axis=0),
             helper.make_node("Reshape", ["z", "target"], ["r"]),
             helper.make_node("Resize", ["r", "", "scales"], ["out"], mode="nearest")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8, 64])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


@pytest.mark.parametrize("data_prop", [False, True])
def test_a_graph_whose_shapes_need_propagated_values_infers_the_same_without_its_weights(data_prop):
    model = dynamic_graph()
    got = infer_types(model, data_prop)
    assert types(got) == types(full(model, data_prop))
    assert {i.name for i in got.graph.initializer} == {"b16", "i0", "tail", "scales"}  # W (4096 values) left out
    assert 64 * 64 >= WEIGHT_MIN_ELEMENTS
    if data_prop:  # the propagated Reshape target and the Resize scales reached the output's shape
        dims = [d.dim_value for d in got.graph.output[0].type.tensor_type.shape.dim]
        assert dims == [2, 2, 8, 64]
    whole = typed(model, data_prop)  # the whole model, weights and all, with the same types
    assert types(whole) == types(got) and list(whole.graph.initializer) == list(model.graph.initializer)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_real_artifacts_infer_the_same_without_their_weights(svt_s_224, precision):
    model = onnx.load(str(svt_s_224.artifacts[precision]))
    for data_prop in (False, True):
        assert types(infer_types(model, data_prop)) == types(full(model, data_prop)), (precision, data_prop)


def test_an_fp8_artifact_infers_the_same_without_its_weights(timm_int8_fp8):
    model = onnx.load(str(timm_int8_fp8("svt_s").artifacts["fp8"]))
    assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
    for data_prop in (False, True):
        assert types(infer_types(model, data_prop)) == types(full(model, data_prop)), data_prop
