"""The Q/DQ structure of a quantized (INT8 or FP8) ONNX graph, read once: which compute nodes are quantized, in
which format, and how to take them out.

One definition of a quantized node serves the accuracy budget (its MAC share, its FP16 fallback) and the
OpenVINO runtime-precision report (the layers *meant* to run INT8): a MatMul/Conv/Gemm is quantized when
one of its operands (data or weights) comes from a DequantizeLinear, directly or through shape-only ops
(a transposed K, a reshape), which TensorRT and OpenVINO both look through. The DequantizeLinear's quantized
type (its input's: an INT8/UINT8 or FLOAT8E4M3FN initializer, or the zero point / `output_dtype` of the
QuantizeLinear feeding it) says which format (`FORMATS`). That is where the graph asks for low precision;
whether a runtime honours it is the runtime's report. ONNX graphs only: onnx and numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import TensorProto

COMPUTE_OPS = ("MatMul", "Conv", "Gemm")  # the nodes whose multiply-accumulates INT8 is for
PASS_THROUGH = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Cast")  # shape-only ops
MAX_PASS_THROUGH = 4  # shape-only ops followed back from an operand towards its DequantizeLinear


@dataclass(frozen=True)
class QuantFormat:
    """One quantized precision of the budgeted export: what its Q/DQ pairs carry and how ONNX Runtime runs them."""

    name: str  # "int8" | "fp8": the artifact's precision (<stem>.<name>.onnx)
    label: str  # "INT8" | "FP8": how reports and progress name it
    types: tuple[int, ...]  # the onnx.TensorProto element types of its quantized tensors
    ort_optimization: str  # the ONNX Runtime CPU optimisation level (runners.ort_runner.OPTIMIZATION) that runs it:
    # FP8 needs "basic", since "all" fuses a Q/DQ MatMul into MatMulIntegerToFloat, which has no FP8 type


FORMATS = {
    "int8": QuantFormat("int8", "INT8", (TensorProto.INT8, TensorProto.UINT8), "all"),
    "fp8": QuantFormat("fp8", "FP8", (TensorProto.FLOAT8E4M3FN,), "basic"),
}


def quant_format(precision: str) -> QuantFormat:
    if precision not in FORMATS:
        raise ValueError(f"quantized precision must be one of {', '.join(FORMATS)}, got {precision!r}")
    return FORMATS[precision]


def dq_types(model: onnx.ModelProto) -> dict[str, int]:
    """DequantizeLinear output -> the element type it dequantizes (0 where the graph does not say): its input's
    initializer type, or the type the QuantizeLinear feeding it writes (its zero point's, else its `output_dtype`,
    else UINT8, ONNX's default)."""
    inits = {i.name: i.data_type for i in model.graph.initializer}
    typed = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    consts = {n.output[0]: a.t.data_type for n in model.graph.node if n.op_type == "Constant"
              for a in n.attribute if a.name == "value"}
    inits.update(consts)
    quantize = {n.output[0]: n for n in model.graph.node if n.op_type == "QuantizeLinear"}
    out = {}
    for n in model.graph.node:
        if n.op_type != "DequantizeLinear":
            continue
        src = n.input[0]
        if src in inits:
            out[n.output[0]] = inits[src]
        elif src in quantize:
            q = quantize[src]
            zp = q.input[2] if len(q.input) > 2 and q.input[2] else None
            attr = next((a.i for a in q.attribute if a.name == "output_dtype"), 0)
            out[n.output[0]] = inits.get(zp, 0) if zp else (attr or TensorProto.UINT8)
        else:
            out[n.output[0]] = typed.get(src, 0)
    return out


def formats_in(model: onnx.ModelProto) -> set[str]:
    """The quantized precisions ("int8", "fp8": `FORMATS`) whose Q/DQ the graph carries."""
    present = set(dq_types(model).values())
    return {name for name, f in FORMATS.items() if present & set(f.types)}


def qdq_source(model: onnx.ModelProto) -> dict[str, str]:
    """DequantizeLinear output -> the high-precision tensor its QuantizeLinear took."""
    q_in = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    return {n.output[0]: q_in[n.input[0]] for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in q_in}


def quantized_compute(model: onnx.ModelProto, precision: str | None = None) -> list[onnx.NodeProto]:
    """The quantized compute nodes, in graph order: a MatMul/Conv/Gemm with an operand (of its first two) from a
    DequantizeLinear of `precision`'s types (`FORMATS`; None: any), through at most MAX_PASS_THROUGH shape-only ops."""
    producer = {o: n for n in model.graph.node for o in n.output}
    types = dq_types(model)
    wanted = quant_format(precision).types if precision else None

    def from_dq(tensor: str, depth: int = 0) -> bool:
        n = producer.get(tensor)
        if n is None or depth > MAX_PASS_THROUGH:
            return False
        if n.op_type == "DequantizeLinear":
            return wanted is None or types.get(n.output[0]) in wanted
        return n.op_type in PASS_THROUGH and bool(n.input) and from_dq(n.input[0], depth + 1)

    return [n for n in model.graph.node if n.op_type in COMPUTE_OPS and any(from_dq(i) for i in n.input[:2] if i)]


def quantized_nodes(model: onnx.ModelProto, precision: str | None = None) -> set[str]:
    """Names of the quantized compute nodes of `precision` (`quantized_compute`)."""
    return {n.name for n in quantized_compute(model, precision)}


def int8_compute(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The INT8 compute nodes (`quantized_compute` of "int8")."""
    return quantized_compute(model, "int8")


def int8_nodes(model: onnx.ModelProto) -> set[str]:
    """Names of the INT8 compute nodes (`int8_compute`)."""
    return quantized_nodes(model, "int8")


def dq_fed_nodes(model: onnx.ModelProto) -> set[str]:
    """Names of every node but Q/DQ with an input straight from a DequantizeLinear: the compute nodes and the
    others a quantizer puts Q/DQ in front of (ModelOpt: residual Adds, LayerNorm inputs)."""
    dq = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return {n.name for n in model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and any(i in dq for i in n.input)}


def without_qdq(model: onnx.ModelProto, nodes: set[str]) -> onnx.ModelProto:
    """A copy of the calibrated graph in which `nodes` take their inputs straight from the high-precision
    tensors (no Q/DQ in between): those nodes run in FP16, the rest INT8 (or FP8) with unchanged scales."""
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


__all__ = ["COMPUTE_OPS", "FORMATS", "PASS_THROUGH", "QuantFormat", "dq_fed_nodes", "dq_types", "formats_in",
           "int8_compute", "int8_nodes", "qdq_source", "quant_format", "quantized_compute", "quantized_nodes", "without_qdq"]
