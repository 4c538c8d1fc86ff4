"""What OpenVINO really executed: the runtime precision of every MatMul/Conv, and the artifacts verified on it.

Each node of `compiled_model.get_runtime_model()` carries its layer type, its runtime precision
(i8/u8 for INT8 kernels, bf16, f32, ...) and the names of the original layers fused into it. Every
MatMul/Convolution of the model OpenVINO compiled is traced to the executed node that ran it; its
MACs come from its static shapes. A layer is *meant* to be INT8 when the ONNX makes it an INT8 node
(`twins_trt.qdq`: one of its inputs comes from a DequantizeLinear, through shape-only ops at most): if it
ran in another precision the report names it. A layer meant to be FP8 (FLOAT8E4M3FN Q/DQ) is counted the same way:
OpenVINO reads FP8 Q/DQ as FakeConvert (rounding to f8e4m3, weights stored as f8e4m3) and, on CPUs without FP8
arithmetic, runs the MatMul/Conv itself in f32, which the report says (`fp8_converts`: the executed f8e4m3 nodes).
Nothing here imports OpenVINO at module level.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

COMPUTE_OPS = ("MatMul", "Convolution", "GroupConvolution")  # ov op types whose MACs are counted
# runtime layer types that execute a MatMul/Conv (Subgraph: OpenVINO's fused attention / MLP kernels)
EXEC_TYPES = ("FullyConnected", "Convolution", "MatMul", "Subgraph", "GroupConvolution", "Deconvolution", "Gemm")
PRECISION_CLASS = {"i8": "int8", "u8": "int8", "bf16": "bf16", "f16": "fp16", "f32": "fp32", "f8e4m3": "fp8",
                   "f8e5m2": "fp8"}
FUSABLE_AFTER = ("Add", "Multiply", "Convert", "Subtract")  # ops a runtime node fuses after a MatMul/Conv


@dataclass
class LayerPrecision:
    name: str  # the layer as OpenVINO names it (the ONNX node name, or its output's name)
    op: str  # MatMul | Convolution | GroupConvolution
    macs: int
    runtime_precision: str  # as OpenVINO reports it: i8, u8, bf16, f32, ...
    precision: str  # int8 | bf16 | fp16 | fp32 | unknown
    executed_as: str | None  # the runtime node that ran it
    layer_type: str | None  # its runtime layer type (FullyConnected, Convolution, Subgraph, ...)
    meant_int8: bool = False
    meant_fp8: bool = False  # FP8 Q/DQ (FLOAT8E4M3FN) on its inputs in the ONNX


@dataclass
class PrecisionReport:
    input_shape: list[int]
    layers: list[LayerPrecision] = field(default_factory=list)
    fp8_converts: int = 0  # executed nodes whose runtime precision is f8e4m3/f8e5m2 (FP8 rounding, FakeConvert)

    @property
    def total_macs(self) -> int:
        return sum(x.macs for x in self.layers)

    def by_precision(self) -> dict[str, dict]:
        """precision -> layers, MACs and share of all MatMul/Conv MACs, most MACs first."""
        out: dict[str, dict] = {}
        for x in self.layers:
            d = out.setdefault(x.precision, {"layers": 0, "macs": 0})
            d["layers"] += 1
            d["macs"] += x.macs
        total = self.total_macs or 1
        for d in out.values():
            d["mac_share"] = d["macs"] / total
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["macs"]))

    @property
    def meant_int8(self) -> list[LayerPrecision]:
        return [x for x in self.layers if x.meant_int8]

    @property
    def int8_misses(self) -> list[LayerPrecision]:
        """Layers with Q/DQ on their inputs in the ONNX that did not run in INT8."""
        return [x for x in self.meant_int8 if x.precision != "int8"]

    @property
    def meant_fp8(self) -> list[LayerPrecision]:
        return [x for x in self.layers if x.meant_fp8]

    @property
    def fp8_misses(self) -> list[LayerPrecision]:
        """Layers with FP8 Q/DQ on their inputs in the ONNX whose MatMul/Conv did not run in FP8."""
        return [x for x in self.meant_fp8 if x.precision != "fp8"]

    def summary(self) -> str:
        parts = ", ".join(f"{p} {d['layers']} ({d['mac_share']:.1%} of MACs)" for p, d in self.by_precision().items())
        line = (f"{len(self.layers)} MatMul/Conv layers, {self.total_macs / 1e9:.2f} GMAC at "
                f"{'x'.join(map(str, self.input_shape))}: {parts or 'none'}")
        if self.meant_int8:
            misses = self.int8_misses
            line += f"; meant INT8 (Q/DQ in the ONNX): {len(self.meant_int8)}, of which ran INT8: " \
                    f"{len(self.meant_int8) - len(misses)}"
            if misses:
                line += "; meant INT8 but ran " + ", ".join(f"{x.precision.upper()}: {x.name}" for x in misses)
        if self.meant_fp8:
            ran = len(self.meant_fp8) - len(self.fp8_misses)
            line += f"; meant FP8 (FP8 Q/DQ in the ONNX): {len(self.meant_fp8)}, of which ran FP8: {ran}"
            if self.fp8_misses:
                kinds = sorted({x.precision.upper() for x in self.fp8_misses})
                line += (f"; the other {len(self.fp8_misses)} ran {'/'.join(kinds)} on FP8-rounded inputs "
                         f"({self.fp8_converts} f8e4m3 FakeConvert/Convert nodes executed): FP8 emulated, not FP8 "
                         "arithmetic")
        return line

    def to_dict(self) -> dict:
        return {"input_shape": self.input_shape, "layers_total": len(self.layers), "macs_total": self.total_macs,
                "by_precision": self.by_precision(), "meant_int8": len(self.meant_int8),
                "int8_misses": [x.name for x in self.int8_misses], "meant_fp8": len(self.meant_fp8),
                "fp8_misses": len(self.fp8_misses), "fp8_converts": self.fp8_converts, "summary": self.summary(),
                "layers": [asdict(x) for x in self.layers]}


# ---------------------------------------------------------------------------------------------- the ONNX side


def quantized_layers(onnx_model, precision: str = "int8") -> set[str]:
    """Names (node names and their output names) of the `precision` ("int8" | "fp8") MatMul/Conv/Gemm nodes of the
    ONNX (`twins_trt.qdq`: an operand from a DequantizeLinear of that type, shape-only ops between allowed), the
    layers meant to run in it.

    `onnx_model`: a path or an onnx.ModelProto.
    """
    return {name for name, p in layer_formats(onnx_model).items() if p == precision}


def layer_formats(onnx_model) -> dict[str, str]:
    """Every quantized MatMul/Conv/Gemm of the ONNX by name (node and output names) -> "int8" or "fp8"."""
    import onnx

    from twins_trt.qdq import FORMATS, quantized_compute

    if isinstance(onnx_model, (str, os.PathLike)):
        onnx_model = onnx.load(str(onnx_model), load_external_data=False)
    out: dict[str, str] = {}
    for precision in FORMATS:
        for n in quantized_compute(onnx_model, precision):
            out.update(dict.fromkeys([n.name, *n.output], precision))
    return out


# ---------------------------------------------------------------------------------------------- the OpenVINO side


def _dims(partial_shape) -> list[int] | None:
    return [int(d) for d in partial_shape.to_shape()] if partial_shape.is_static else None


def layer_macs(op) -> int:
    """Multiply-accumulates of one MatMul / (Group)Convolution of an ov.Model with static shapes (0 if dynamic)."""
    out = _dims(op.get_output_partial_shape(0))
    a, b = _dims(op.get_input_partial_shape(0)), _dims(op.get_input_partial_shape(1))
    if out is None or a is None or b is None:
        return 0
    kind = op.get_type_name()
    if kind == "MatMul":
        if len(a) == 1:
            k = a[0]
        else:
            k = a[-2] if op.get_attributes().get("transpose_a") else a[-1]
        return math.prod(out) * k
    if kind == "Convolution":  # weights [Cout, Cin, *kernel]
        return math.prod(out) * math.prod(b[1:])
    if kind == "GroupConvolution":  # weights [G, Cout/G, Cin/G, *kernel]
        return math.prod(out) * math.prod(b[2:])
    raise ValueError(f"no MAC formula for {kind}")


def _executed_nodes(compiled) -> dict[str, tuple[str, str, str]]:
    """Original layer name -> (runtime node, layer type, runtime precision); compute nodes win over others."""
    exact: dict[str, tuple[str, str, str]] = {}
    prefix: dict[str, tuple[str, str, str]] = {}
    for rank in (0, 1):  # first the node types that can compute a MatMul/Conv, then any node
        for node in compiled.get_runtime_model().get_ordered_ops():
            info = node.get_rt_info()
            layer_type = info["layerType"].astype(str)
            if (layer_type in EXEC_TYPES) != (rank == 0):
                continue
            entry = (node.get_friendly_name(), layer_type, info["runtimePrecision"].astype(str))
            for orig in filter(None, info["originalLayersNames"].astype(str).split(",")):
                exact.setdefault(orig, entry)
                prefix.setdefault(orig.split("/")[0], entry)
    return {**prefix, **exact}


def _candidate_names(op, depth: int = 3) -> list[str]:
    """The op's own names, then those of the elementwise ops it feeds (a Gemm's bias Add, an output Convert),
    whose names the fused runtime node may carry instead of the MatMul's."""
    names = [op.get_friendly_name(), op.get_friendly_name().split("/")[0]]
    frontier = [op]
    for _ in range(depth):
        frontier = [i.get_node() for n in frontier for o in n.outputs() for i in o.get_target_inputs()
                    if i.get_node().get_type_name() in FUSABLE_AFTER]
        names += [n.get_friendly_name() for n in frontier]
    return names


def precision_report(model, compiled, quantized: set[str] | dict[str, str] | None = None) -> PrecisionReport:
    """Trace every MatMul/Conv of `model` (the ov.Model that was compiled) to the node that executed it.

    `quantized`: layer_formats() of the ONNX it came from (name -> "int8" | "fp8"), or quantized_layers() (INT8
    names), to flag layers meant to be INT8 or FP8.
    """
    where = _executed_nodes(compiled)
    formats = quantized if isinstance(quantized, dict) else dict.fromkeys(quantized or (), "int8")
    rep = PrecisionReport(_dims(model.inputs[0].get_partial_shape()) or [])
    rep.fp8_converts = sum(PRECISION_CLASS.get(n.get_rt_info()["runtimePrecision"].astype(str)) == "fp8"
                           for n in compiled.get_runtime_model().get_ordered_ops())
    for op in model.get_ordered_ops():
        if op.get_type_name() not in COMPUTE_OPS:
            continue
        name = op.get_friendly_name()
        base = name.split("/")[0]
        entry = next((where[n] for n in _candidate_names(op) if n in where), None)
        outs = set().union(*(o.get_names() for o in op.outputs()))
        meant = next((formats[n] for n in (base, *sorted(outs)) if n in formats), None)
        rp = entry[2] if entry else "unknown"
        rep.layers.append(LayerPrecision(base, op.get_type_name(), layer_macs(op), rp, PRECISION_CLASS.get(rp, rp),
                                         entry[0] if entry else None, entry[1] if entry else None,
                                         meant == "int8", meant == "fp8"))
    return rep


# ---------------------------------------------------------------------------------------------- the manifest's word


def refusal(openvino_entry: dict | None, name: str) -> str | None:
    """Why OpenVINO must not run the artifact this manifest describes (it missed the tolerance on OpenVINO at
    export), or None."""
    ov = openvino_entry or {}
    ver = ov.get("verification") or {}
    if ver.get("passed") is not False:
        return None
    return (f"OpenVINO {ov.get('version', '?').split('-')[0]} computed {name} wrongly when it was exported "
            f"({ver.get('metric')} {ver.get('worst', float('nan')):.3g}, bound {ver.get('bound')}) although ONNX "
            "Runtime matched PyTorch; not run on OpenVINO (see the manifest's openvino.verification)")
