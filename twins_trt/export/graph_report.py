"""What an exported graph is made of, and proof that its attention is shift-free and matmul-only.

The report counts nodes and op types, finds attention as MatMul -> Softmax -> MatMul chains (the
scale Mul, casts and Q/DQ pairs may sit between them), and counts what must not be there: Roll and
the Slice/Concat cyclic shift Swin needs, ScatterND, NonZero, Loop and If, and in a static export
Pad and reshapes whose shape is computed from `Shape` at run time. It also says whether TensorRT 10's
ONNX parser takes every node (`trt_support`, from TensorRT's operator table) and which attention chains
meet TensorRT's fused multi-head-attention conditions at the artifact's precision (`attention`).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from twins_trt.export.attention import report_attention
from twins_trt.export.trt_support import check_model, with_types

ALWAYS_FORBIDDEN = ("Roll", "ScatterND", "ScatterElements", "NonZero", "Loop", "If")
STATIC_FORBIDDEN = ("Pad", "Shape")  # a static export at a window-divisible size needs neither
PASS_THROUGH = {"Mul", "Div", "Cast", "QuantizeLinear", "DequantizeLinear", "Add", "Transpose", "Identity", "Reshape"}


@dataclass
class GraphReport:
    name: str
    nodes: int
    ops: dict[str, int]
    attention_chains: int
    expected_attention_layers: int | None
    forbidden: dict[str, int] = field(default_factory=dict)
    static: bool = True
    trt_support: dict | None = None  # trt_support.SupportReport.to_dict(): TensorRT 10 parser verdict
    attention: dict | None = None  # attention.AttentionReport.to_dict(): fused-MHA verdict per chain

    def tensorrt_lines(self) -> list[str]:
        """The TensorRT parser verdict (and each refused node) and the fused-attention verdict, one per line."""
        out = []
        if self.trt_support:
            out.append(self.trt_support["verdict"])
            out += [f"  unsupported: node {i['index']} {i['name']!r} ({i['op']}): {i['reason']}"
                    for i in self.trt_support["issues"]]
        if self.attention:
            out.append(f"fused attention, {self.attention['verdict']}")
        return out

    @property
    def forbidden_total(self) -> int:
        return sum(self.forbidden.values())

    @property
    def ok(self) -> bool:
        attn_ok = self.expected_attention_layers is None or self.attention_chains == self.expected_attention_layers
        return attn_ok and self.forbidden_total == 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(forbidden_total=self.forbidden_total, ok=self.ok)
        return d

    def problems(self) -> list[str]:
        out = [f"{n} x {op}" for op, n in self.forbidden.items() if n]
        if self.expected_attention_layers is not None and self.attention_chains != self.expected_attention_layers:
            out.append(f"{self.attention_chains} MatMul->Softmax->MatMul chains, expected {self.expected_attention_layers}")
        return out


def _producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output}


def _consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def count_attention_chains(graph: onnx.GraphProto, max_hops: int = 4) -> int:
    """Softmax nodes fed by a MatMul and feeding a MatMul, through at most `max_hops` simple ops."""
    prod, cons = _producers(graph), _consumers(graph)

    def reaches_back(tensor: str, hops: int) -> bool:
        node = prod.get(tensor)
        if node is None or hops < 0:
            return False
        if node.op_type == "MatMul":
            return True
        inputs = node.input if node.op_type == "Add" else node.input[:1]  # bias/mask Adds: either side
        return node.op_type in PASS_THROUGH and any(reaches_back(i, hops - 1) for i in inputs)

    def reaches_forward(tensor: str, hops: int) -> bool:
        if hops < 0:
            return False
        for node in cons.get(tensor, []):
            if node.op_type == "MatMul" and node.input[0] == tensor:
                return True
            if node.op_type in PASS_THROUGH and any(reaches_forward(o, hops - 1) for o in node.output):
                return True
        return False

    return sum(
        1 for n in graph.node
        if n.op_type == "Softmax" and reaches_back(n.input[0], max_hops) and reaches_forward(n.output[0], max_hops)
    )


def count_cyclic_shifts(graph: onnx.GraphProto) -> int:
    """Concats whose inputs are Slices of one tensor: how torch.roll (Swin's shift) is exported."""
    prod = _producers(graph)
    hits = 0
    for n in graph.node:
        if n.op_type != "Concat" or len(n.input) < 2:
            continue
        sources = [prod.get(i) for i in n.input]
        if all(s is not None and s.op_type == "Slice" for s in sources) and len({s.input[0] for s in sources}) == 1:
            hits += 1
    return hits


def _constant_names(graph: onnx.GraphProto) -> set[str]:
    names = {i.name for i in graph.initializer}
    names |= {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    return names


def count_dynamic_reshapes(graph: onnx.GraphProto) -> int:
    consts = _constant_names(graph)
    return sum(1 for n in graph.node if n.op_type == "Reshape" and len(n.input) > 1 and n.input[1] not in consts)


def is_static(model: onnx.ModelProto) -> bool:
    for vi in model.graph.input:
        for d in vi.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                return False
    return True


def report_graph(model: onnx.ModelProto | str | os.PathLike, expected_attention_layers: int | None = None,
                 name: str | None = None, static: bool | None = None, pad_allowed: bool = False,
                 tensorrt: bool = True, precision: str | None = None) -> GraphReport:
    """Build the report. `static=None` reads it off the graph's inputs; `pad_allowed` for sizes whose
    feature maps do not divide by the window (static pads are then expected). `tensorrt` adds the TensorRT
    parser check and the fused-attention report, judged at `precision` (None: what the graph asks for)."""
    if not isinstance(model, onnx.ModelProto):
        name = name or Path(model).name
        model = onnx.load(str(model), load_external_data=False)
    graph = model.graph
    static = is_static(model) if static is None else static
    ops = Counter(n.op_type for n in graph.node)
    typed = with_types(model) if tensorrt else None  # shapes and types once, for both TensorRT reports
    forbidden = {op: ops.get(op, 0) for op in ALWAYS_FORBIDDEN}
    forbidden["cyclic_shift(Slice->Concat)"] = count_cyclic_shifts(graph)
    if static:
        for op in STATIC_FORBIDDEN:
            if not (op == "Pad" and pad_allowed):
                forbidden[op] = ops.get(op, 0)
        forbidden["dynamic_reshape"] = count_dynamic_reshapes(graph)
    return GraphReport(
        name=name or graph.name or "model",
        nodes=len(graph.node),
        ops=dict(ops.most_common()),
        attention_chains=count_attention_chains(graph),
        expected_attention_layers=expected_attention_layers,
        forbidden=forbidden,
        static=static,
        trt_support=check_model(typed, infer=False).to_dict() if typed is not None else None,
        attention=report_attention(typed, precision, infer=False).to_dict() if typed is not None else None,
    )


def format_report(reports: list[GraphReport], top: int = 12) -> str:
    """Side by side: one column per graph."""
    ops = Counter()
    for r in reports:
        ops.update(r.ops)
    rows = [("nodes", [str(r.nodes) for r in reports]),
            ("attention chains", [f"{r.attention_chains}" + (f"/{r.expected_attention_layers}"
                                  if r.expected_attention_layers is not None else "") for r in reports]),
            ("forbidden ops", [str(r.forbidden_total) for r in reports])]
    if any(r.trt_support for r in reports):
        rows.append(("TensorRT 10 parser", [f"{r.trt_support['supported']}/{r.trt_support['nodes']}"
                                            if r.trt_support else "-" for r in reports]))
        rows.append(("fused MHA chains", [f"{r.attention['fusable']}/{r.attention['chains']} {r.attention['precision']}"
                                          if r.attention else "-" for r in reports]))
    rows += [(f"  {op}", [str(r.ops.get(op, 0)) for r in reports]) for op, _ in ops.most_common(top)]
    forb = sorted({k for r in reports for k, v in r.forbidden.items() if v})
    rows += [(f"  forbidden {k}", [str(r.forbidden.get(k, 0)) for r in reports]) for k in forb]
    w0 = max(len(r[0]) for r in rows)
    widths = [max(len(r.name), 8) for r in reports]
    lines = ["".ljust(w0) + "  " + "  ".join(r.name.rjust(w) for r, w in zip(reports, widths))]
    lines += [label.ljust(w0) + "  " + "  ".join(v.rjust(w) for v, w in zip(vals, widths)) for label, vals in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- two revisions' graphs

WATCHED_OPS = ("Pad", "Slice", "Shape", "Gather")  # the ops a clean Twins graph never needs


def graph_summary(onnx_path: str | os.PathLike) -> dict:
    """Node count and op histogram of an ONNX file (`report_graph`'s; weights not loaded), most frequent first."""
    rep = report_graph(onnx_path, tensorrt=False)
    return {"nodes": rep.nodes, "ops": dict(sorted(rep.ops.items(), key=lambda kv: (-kv[1], kv[0])))}


def compare_graphs(base: dict, new: dict, watched: tuple[str, ...] = WATCHED_OPS) -> list[str]:
    """What the new graph (a `graph_summary`) adds that fails the A/B gate: node-count growth, or more of a
    watched op. Pure."""
    diff = {op: new["ops"].get(op, 0) - base["ops"].get(op, 0) for op in {*base["ops"], *new["ops"]}}
    changed = ", ".join(f"{op} {d:+d}" for op, d in sorted(diff.items()) if d)
    problems = []
    if new["nodes"] > base["nodes"]:
        problems.append(f"nodes {base['nodes']} -> {new['nodes']} ({new['nodes'] - base['nodes']:+d}; {changed})")
    for op in watched:
        if diff.get(op, 0) > 0:
            problems.append(f"{op} {base['ops'].get(op, 0)} -> {new['ops'].get(op, 0)} (added {diff[op]})")
    return problems
