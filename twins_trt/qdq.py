"""The Q/DQ structure of an INT8 ONNX graph, read once: which compute nodes are INT8, and how to take them out.

One definition of an INT8 node serves the INT8 budget (its MAC share, its FP16 fallback) and the
OpenVINO runtime-precision report (the layers *meant* to run INT8): a MatMul/Conv/Gemm is INT8 when
one of its operands (data or weights) comes from a DequantizeLinear, directly or through shape-only ops
(a transposed K, a reshape), which TensorRT and OpenVINO both look through. That is where the graph
asks for INT8; whether a runtime honours it is the runtime's report. ONNX graphs only: onnx and numpy.
"""

from __future__ import annotations

import onnx

COMPUTE_OPS = ("MatMul", "Conv", "Gemm")  # the nodes whose multiply-accumulates INT8 is for
PASS_THROUGH = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Cast")  # shape-only ops
MAX_PASS_THROUGH = 4  # shape-only ops followed back from an operand towards its DequantizeLinear


def qdq_source(model: onnx.ModelProto) -> dict[str, str]:
    """DequantizeLinear output -> the high-precision tensor its QuantizeLinear took."""
    q_in = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    return {n.output[0]: q_in[n.input[0]] for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in q_in}


def int8_compute(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The INT8 compute nodes, in graph order: a MatMul/Conv/Gemm with an operand (of its first two) from a
    DequantizeLinear, through at most MAX_PASS_THROUGH shape-only ops."""
    producer = {o: n for n in model.graph.node for o in n.output}

    def from_dq(tensor: str, depth: int = 0) -> bool:
        n = producer.get(tensor)
        if n is None or depth > MAX_PASS_THROUGH:
            return False
        if n.op_type == "DequantizeLinear":
            return True
        return n.op_type in PASS_THROUGH and bool(n.input) and from_dq(n.input[0], depth + 1)

    return [n for n in model.graph.node if n.op_type in COMPUTE_OPS and any(from_dq(i) for i in n.input[:2] if i)]


def int8_nodes(model: onnx.ModelProto) -> set[str]:
    """Names of the INT8 compute nodes (`int8_compute`)."""
    return {n.name for n in int8_compute(model)}


def dq_fed_nodes(model: onnx.ModelProto) -> set[str]:
    """Names of every node but Q/DQ with an input straight from a DequantizeLinear: the compute nodes and the
    others a quantizer puts Q/DQ in front of (ModelOpt: residual Adds, LayerNorm inputs)."""
    dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return {n.name for n in model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and any(i in dq for i in n.input)}


def without_qdq(model: onnx.ModelProto, nodes: set[str]) -> onnx.ModelProto:
    """A copy of the calibrated graph in which `nodes` take their inputs straight from the high-precision
    tensors (no Q/DQ in between): those nodes run in FP16, the rest INT8 with unchanged scales."""
    src = qdq_source(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for n in out.graph.node:
        if n.name in nodes:
            for i, name in enumerate(n.input):
                if name in src:
                    n.input[i] = src[name]
    used = {i for n in out.graph.node for i in n.input} | {o.name for o in out.graph.output}
    keep = [n for n in out.graph.node if not (n.op_type == "DequantizeLinear" and n.output[0] not in used)]
    used = {i for n in keep for i in n.input} | {o.name for o in out.graph.output}
    keep = [n for n in keep if not (n.op_type == "QuantizeLinear" and n.output[0] not in used)]
    del out.graph.node[:]
    out.graph.node.extend(keep)
    return out


__all__ = ["COMPUTE_OPS", "PASS_THROUGH", "dq_fed_nodes", "int8_compute", "int8_nodes", "qdq_source", "without_qdq"]
