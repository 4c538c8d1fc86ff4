"""Small ONNX graphs built with onnx.helper for the OpenVINO tests (a unique module name, unlike conftest)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TOKENS, DIM = 64, 32  # [1, 64, 32] activations: big enough that OpenVINO gives each MatMul its own kernel


def make_qdq_mlp(path: Path, second_quantized: bool) -> Path:
    """x [1,64,32] -> Q/DQ -> MatMul `mm_int8` (Q/DQ weights) -> Relu -> Q/DQ -> MatMul `mm_second` -> Relu -> y.

    `mm_int8` has Q/DQ on both inputs, so OpenVINO must run it in INT8. `mm_second` has Q/DQ on its
    activation; with `second_quantized=False` its weights stay FP32 initializers, so it is meant to be
    INT8 (Q/DQ on an input) but cannot run in INT8: the FP32 layer left in on purpose.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes = [], []

    def qdq(name: str, x: str, scale: float) -> str:
        inits.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{name}_scale"),
                      numpy_helper.from_array(np.array(0, np.int8), f"{name}_zp")])
        nodes.append(helper.make_node("QuantizeLinear", [x, f"{name}_scale", f"{name}_zp"], [f"{name}_q"], name=f"{name}_Q"))
        nodes.append(helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_scale", f"{name}_zp"], [f"{name}_dq"],
                                      name=f"{name}_DQ"))
        return f"{name}_dq"

    w1 = rng.standard_normal((DIM, DIM)).astype(np.float32)
    w2 = rng.standard_normal((DIM, DIM)).astype(np.float32)
    inits += [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    a = qdq("x", "input", 0.03)
    nodes.append(helper.make_node("MatMul", [a, qdq("w1", "w1", float(np.abs(w1).max() / 127))], ["h"], name="mm_int8"))
    nodes.append(helper.make_node("Relu", ["h"], ["hr"], name="relu1"))
    b = qdq("h", "hr", 0.1)
    w = qdq("w2", "w2", float(np.abs(w2).max() / 127)) if second_quantized else "w2"
    nodes.append(helper.make_node("MatMul", [b, w], ["y0"], name="mm_second"))
    nodes.append(helper.make_node("Relu", ["y0"], ["y"], name="relu2"))
    graph = helper.make_graph(nodes, "qdq_mlp",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, TOKENS, DIM])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, TOKENS, DIM])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def make_classifier(path: Path, batch: int | str = "batch", fp16_io: bool = False) -> Path:
    """input [batch,3,16,16] -> Conv 3x3 -> GlobalAveragePool -> Flatten -> Gemm -> logits [batch,10]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    io = TensorProto.FLOAT16 if fp16_io else TensorProto.FLOAT
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "conv_w"),
             numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "fc_b")]
    nodes = [helper.make_node("Cast", ["input"], ["x"], to=TensorProto.FLOAT, name="cast_in"),
             helper.make_node("Conv", ["x", "conv_w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["l"], name="fc", transB=1),
             helper.make_node("Cast", ["l"], ["logits"], to=io, name="cast_out")]
    graph = helper.make_graph(nodes, "classifier", [helper.make_tensor_value_info("input", io, [batch, 3, 16, 16])],
                              [helper.make_tensor_value_info("logits", io, [batch, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
