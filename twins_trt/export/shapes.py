"""ONNX type and shape inference without the weights: the one way this package infers a graph's types and shapes.

`onnx.shape_inference.infer_shapes` serializes the whole model into C++ and parses the result back, the weights
included: 0.25 s of an svt_s graph's 0.27 s, and an export infers each of its graphs several times (graph
report, MAC count, FP16 overflow check). Shapes and types never come from the values of large float or quantized
tensors, only from their types and dims, so inference runs on a copy where those initializers are typed graph
inputs instead. Integer initializers (shapes, axes, indices) and small ones (Resize scales) stay as they are,
for data propagation. The value_info and outputs are the same as inference on the whole model gives (tested on
svt_s's FP32, FP16, INT8 and FP8 artifacts, and on a graph whose shapes need propagated values and float scales).
"""

from __future__ import annotations

import math

import onnx
from onnx import helper

# initializers at least this large, of any non-integer type, are weights: their values never decide a shape
WEIGHT_MIN_ELEMENTS = 1024
_SHAPE_TYPES = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}


def _without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    g = model.graph
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    lg = light.graph
    lg.name = g.name
    lg.node.extend(g.node)
    lg.input.extend(g.input)
    lg.output.extend(g.output)
    lg.value_info.extend(g.value_info)
    lg.sparse_initializer.extend(g.sparse_initializer)
    inputs = {i.name for i in g.input}
    for t in g.initializer:
        if t.data_type in _SHAPE_TYPES or math.prod(t.dims) < WEIGHT_MIN_ELEMENTS:
            lg.initializer.append(t)
        elif t.name not in inputs:  # an older graph lists its initializers as inputs too: typed already
            lg.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return light


def infer_types(model: onnx.ModelProto, data_prop: bool = False, check_type: bool = False,
                strict_mode: bool = False) -> onnx.ModelProto:
    """`onnx.shape_inference.infer_shapes(model, ...)`'s value_info and outputs (same arguments, same defaults), on a
    graph with the weights as typed inputs (see the module docstring). Read types and shapes from the result, never
    weights: it has none (`typed` gives the whole model with them). Raises what inference raises."""
    return onnx.shape_inference.infer_shapes(_without_weights(model), check_type=check_type, strict_mode=strict_mode,
                                             data_prop=data_prop)


def typed(model: onnx.ModelProto, data_prop: bool = False, check_type: bool = False,
          strict_mode: bool = False) -> onnx.ModelProto:
    """What `onnx.shape_inference.infer_shapes(model, ...)` returns: a copy of `model` (weights and all) with the
    value_info and outputs `infer_types` gives."""
    types = infer_types(model, data_prop, check_type, strict_mode)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]
    out.graph.value_info.extend(types.graph.value_info)
    del out.graph.output[:]
    out.graph.output.extend(types.graph.output)
    return out


__all__ = ["WEIGHT_MIN_ELEMENTS", "infer_types", "typed"]
