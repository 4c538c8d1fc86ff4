"""Will TensorRT 10's ONNX parser take this graph? Checked node by node against its own operator table.

The table is onnx-tensorrt's `docs/operators.md` (10.x release branch, revision recorded in the
packaged JSON, see `trt_table`). For every node this checks:
- the domain: the table covers ONNX's default domain only. onnx-tensorrt dispatches on the op type
  alone (ModelImporter.cpp), so a `com.microsoft::Gelu` would be imported with ONNX Gelu's semantics
  and other contrib ops fall to the plugin importer; both are refused here;
- the op is in the table and marked supported, and the model's opset is in the table's range (9-20);
- the type of the node's first input is among the table's "Supported Types" for the op (when the graph
  or shape inference knows it; DOUBLE counts as FP32, which TensorRT casts it to);
- the written restrictions a graph shows: Q/DQ zero points all zero (and INT8/FP8/INT4, never UINT8),
  `axes`/`axis`/`training_mode`/`K` inputs that must be initializers, `LayerNormalization` with only `Y`
  used, `Resize` modes, pooling dilations, `MaxPool` indices, `TopK` sorted, `ScatterND` reduction,
  `Constant` string/sparse values.
Each refusal carries the parser's `ErrorCode` name, so the emulator's parser reports what TensorRT would.
Pure graph analysis: onnx only.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from twins_trt.export.shapes import typed
from twins_trt.export.trt_table import load_table

DEFAULT_DOMAINS = ("", "ai.onnx")
ONNX_TO_TABLE = {  # ONNX element type -> the table's type names
    onnx.TensorProto.FLOAT: "FP32", onnx.TensorProto.DOUBLE: "FP32", onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.BFLOAT16: "BF16", onnx.TensorProto.INT32: "INT32", onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.INT8: "INT8", onnx.TensorProto.UINT8: "UINT8", onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.INT4: "INT4", onnx.TensorProto.FLOAT8E4M3FN: "FP8",
}
QUANTIZED = ("INT8", "FP8", "INT4")
# ops whose input at this index must be an initializer (or Constant) when given: the table's "must be an initializer"
INITIALIZER_INPUTS = {"CumSum": (1, "axis"), "Pad": (3, "axes"), "Slice": (3, "axes"), "Squeeze": (1, "axes"),
                      "Unsqueeze": (1, "axes"), "Dropout": (2, "training_mode"), "TopK": (1, "K"),
                      "OneHot": (1, "depth"),
                      **{op: (1, "axes") for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
                                                     "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd",
                                                     "ReduceSum", "ReduceSumSquare")}}
RESIZE_ALLOWED = {"coordinate_transformation_mode": ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn",
                                                     "asymmetric", "align_corners"),
                  "mode": ("nearest", "linear"),
                  "nearest_mode": ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil"),
                  "keep_aspect_ratio_policy": ("stretch",)}
MAX_LISTED = 20  # unsupported nodes named one per line, then a count


@dataclass(frozen=True)
class NodeIssue:
    """One node TensorRT's parser would refuse, and why (`code`: the parser's ErrorCode name)."""

    index: int
    name: str
    op: str
    domain: str
    code: str
    reason: str

    def line(self) -> str:
        """As twins-build words a parser error: `node 3 'name' (Op): CODE: why`."""
        return f"node {self.index} {self.name!r} ({self.op}): {self.code}: {self.reason}"


@dataclass
class SupportReport:
    """The verdict for one graph: how many nodes TensorRT 10's parser takes, and every refusal."""

    nodes: int
    opset: int | None
    issues: list[NodeIssue] = field(default_factory=list)
    tensorrt: str = "10"
    table: str = ""  # onnx-tensorrt branch@commit the table came from

    @property
    def supported(self) -> int:
        return self.nodes - len(self.issues)

    @property
    def ok(self) -> bool:
        return not self.issues

    def line(self) -> str:
        return f"TensorRT {self.tensorrt} parser: {self.supported}/{self.nodes} nodes supported (opset {self.opset})"

    def lines(self) -> list[str]:
        out = [self.line()] + [f"  {i.line()}" for i in self.issues[:MAX_LISTED]]
        if len(self.issues) > MAX_LISTED:
            out.append(f"  ... and {len(self.issues) - MAX_LISTED} more")
        return out

    def refusal(self, what: str, limit: int = 5) -> str:
        """One line for an error: what was refused, each node (up to `limit`), and the table it was judged by."""
        nodes = "; ".join(i.line() for i in self.issues[:limit])
        more = f"; and {len(self.issues) - limit} more" if len(self.issues) > limit else ""
        return (f"{what}: TensorRT {self.tensorrt}'s ONNX parser would refuse {len(self.issues)} of {self.nodes} "
                f"nodes: {nodes}{more} (by {self.table}'s docs/operators.md; re-export with supported ops)")

    def to_dict(self) -> dict:
        return {"verdict": self.line(), "ok": self.ok, "nodes": self.nodes, "supported": self.supported,
                "opset": self.opset, "table": self.table, "issues": [asdict(i) for i in self.issues]}


class _Graph:
    """What the checks ask of a graph: constants, tensor types, consumers."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.consts: dict[str, onnx.TensorProto | None] = {i.name: i for i in g.initializer}
        for n in g.node:
            if n.op_type == "Constant" and n.output:
                value = next((a.t for a in n.attribute if a.name == "value"), None)
                self.consts[n.output[0]] = value
        self.types: dict[str, int] = {i.name: i.data_type for i in g.initializer}
        for vi in [*g.input, *g.output, *g.value_info]:
            if vi.type.tensor_type.elem_type:
                self.types.setdefault(vi.name, vi.type.tensor_type.elem_type)
        for n in g.node:
            if n.op_type == "Constant" and n.output and self.consts.get(n.output[0]) is not None:
                self.types.setdefault(n.output[0], self.consts[n.output[0]].data_type)
        self.used = {i for n in g.node for i in n.input if i} | {o.name for o in g.output}

    def value(self, name: str) -> np.ndarray | None:
        t = self.consts.get(name)
        if t is None or (t.data_location == onnx.TensorProto.EXTERNAL):
            return None
        try:
            return numpy_helper.to_array(t)
        except Exception:  # noqa: BLE001 - an unreadable constant is "not known", never a crash
            return None


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _restrictions(node: onnx.NodeProto, g: _Graph) -> list[tuple[str, str]]:
    """(ErrorCode name, reason) for every written restriction of the table this node breaks."""
    op, out = node.op_type, []
    if op in ("QuantizeLinear", "DequantizeLinear"):
        which = "y_zero_point" if op == "QuantizeLinear" else "x_zero_point"
        if len(node.input) > 2 and node.input[2]:
            zp_type = g.types.get(node.input[2])
            if zp_type is not None and ONNX_TO_TABLE.get(zp_type) not in QUANTIZED:
                out.append(("UNSUPPORTED_NODE_DATATYPE",
                            f"{which} is {onnx.TensorProto.DataType.Name(zp_type)}; TensorRT quantizes to "
                            f"{'/'.join(QUANTIZED)} only"))
            zp = g.value(node.input[2])
            if zp is not None and np.any(zp.astype(np.float64) != 0):
                nz = zp.ravel()[np.flatnonzero(zp.ravel() != 0)[0]]
                out.append(("INVALID_NODE", f"{which} must be zero (symmetric quantization), got {nz}"))
    elif op == "LayerNormalization":
        extra = [o for o in node.output[1:] if o and o in g.used]
        if extra:
            out.append(("UNSUPPORTED_NODE", f"only the first output Y is supported; {extra} is used"))
    elif op == "Resize":
        for key, allowed in RESIZE_ALLOWED.items():
            v = _attr(node, key)
            if v is not None and _text(v) not in allowed:
                out.append(("UNSUPPORTED_NODE_ATTR", f"{key}={_text(v)!r} (TensorRT: {', '.join(allowed)})"))
        if _attr(node, "antialias", 0):
            out.append(("UNSUPPORTED_NODE_ATTR", "antialias is not supported"))
        axes = _attr(node, "axes")
        scales_given = len(node.input) > 2 and node.input[2] and not (len(node.input) > 3 and node.input[3])
        if axes is not None and scales_given and list(axes) != list(range(len(axes))):
            out.append(("UNSUPPORTED_NODE_ATTR", f"with tensor scales, axes must be 0..rank-1, got {list(axes)}"))
    elif op in ("AveragePool", "MaxPool", "LpPool"):
        dil = _attr(node, "dilations")
        if dil and any(d != 1 for d in dil):
            out.append(("UNSUPPORTED_NODE_ATTR", f"dilations must be empty or all ones, got {list(dil)}"))
        ks = _attr(node, "kernel_shape")
        if op != "LpPool" and ks is not None and len(ks) not in (2, 3):
            out.append(("UNSUPPORTED_NODE_ATTR", f"2D or 3D pooling only, kernel_shape {list(ks)}"))
        if op == "MaxPool" and len(node.output) > 1 and node.output[1] in g.used:
            out.append(("UNSUPPORTED_NODE", "the Indices output is unsupported"))
    elif op == "TopK" and _attr(node, "sorted", 1) != 1:
        out.append(("UNSUPPORTED_NODE_ATTR", "sorted must be 1"))
    elif op == "ScatterND" and _text(_attr(node, "reduction", "none")) != "none":
        out.append(("UNSUPPORTED_NODE_ATTR", "reduction is not supported"))
    elif op == "Constant":
        bad = [a.name for a in node.attribute if a.name in ("sparse_value", "value_string", "value_strings")]
        if bad:
            out.append(("UNSUPPORTED_NODE_ATTR", f"{bad[0]} is unsupported"))
    elif op == "LSTM" and (_attr(node, "input_forget", 0) or _attr(node, "layout", 0)):
        out.append(("UNSUPPORTED_NODE_ATTR", "input_forget and layout must be 0"))
    if op in INITIALIZER_INPUTS:
        idx, what = INITIALIZER_INPUTS[op]
        if len(node.input) > idx and node.input[idx] and node.input[idx] not in g.consts:
            out.append(("UNSUPPORTED_NODE_INPUT", f"`{what}` must be an initializer"))
        elif op == "Dropout" and len(node.input) > idx and node.input[idx]:
            v = g.value(node.input[idx])
            if v is not None and bool(np.any(v)):
                out.append(("UNSUPPORTED_NODE_INPUT", "training_mode must evaluate to False"))
        elif op == "TopK" and len(node.input) > idx:
            v = g.value(node.input[idx])
            if v is not None and int(np.max(v)) >= 3840:
                out.append(("UNSUPPORTED_NODE_INPUT", f"K must be less than 3840, got {int(np.max(v))}"))
    return out


def with_types(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with inferred value_info where its own is missing (the input is left untouched); load and infer
    once, then pass the result with `infer=False` to `check_model` and `attention.report_attention`."""
    for data_prop in (True, False):  # data propagation resolves Reshape targets built from Shape ops (dynamic H x W)
        try:
            return typed(model, data_prop)
        except Exception:  # noqa: BLE001 - inference is a help, the checks work from what the graph says
            continue
    return model


def model_opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS), None)


def check_model(model: onnx.ModelProto | str | os.PathLike, infer: bool = True) -> SupportReport:
    """Every node of `model` against TensorRT 10's ONNX operator table (see the module docstring)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(Path(model)), load_external_data=False)
    table = load_table()
    lo, hi = table["opset"]["min"], table["opset"]["max"]
    ops = table["operators"]
    opset = model_opset(model)
    g = _Graph(with_types(model) if infer else model)
    issues: list[NodeIssue] = []
    for idx, node in enumerate(model.graph.node):
        found: list[tuple[str, str]] = []
        row = ops.get(node.op_type)
        if node.domain not in DEFAULT_DOMAINS:
            found.append(("UNSUPPORTED_NODE", f"domain {node.domain!r} is not ONNX's; TensorRT's table covers "
                                              "ai.onnx operators only"))
        elif row is None or not row["supported"]:
            found.append(("UNSUPPORTED_NODE", f"{node.op_type} is {'not in' if row is None else 'marked N in'} "
                                              "TensorRT's operator table"))
        else:
            if opset is None or not lo <= opset <= hi:
                found.append(("UNSUPPORTED_GRAPH", f"opset {opset} is outside TensorRT 10's range {lo}-{hi}"))
            found += _restrictions(node, g)
            t = g.types.get(node.input[0]) if node.input and node.input[0] else None
            name = ONNX_TO_TABLE.get(t) if t is not None else None
            if t is not None and name not in row["types"] and not any(c == "UNSUPPORTED_NODE_DATATYPE" for c, _ in found):
                tname = onnx.TensorProto.DataType.Name(t)
                found.append(("UNSUPPORTED_NODE_DATATYPE", f"input {tname} is not among its types "
                                                           f"({', '.join(row['types'])})"))
        if found:  # one line per node: the first refusal's code, every reason
            issues.append(NodeIssue(idx, node.name, node.op_type, node.domain, found[0][0],
                                    "; ".join(why for _, why in found)))
    src = table["source"]
    return SupportReport(nodes=len(model.graph.node), opset=opset, issues=issues, tensorrt="10",
                         table=f"onnx-tensorrt {src['branch']}@{src['commit'][:12]}")


__all__ = ["NodeIssue", "SupportReport", "check_model", "model_opset", "with_types"]
