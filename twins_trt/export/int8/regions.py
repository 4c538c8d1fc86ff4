"""Quantization regions: the graph's MatMul/Conv/Gemm nodes (and the others ModelOpt quantizes) grouped by the Twins
sub-layer they were traced in (e.g. `blocks.2.3 gsa.kv`), with their multiply-accumulates.

A region is what the sensitivity analysis leaves out of INT8 (or FP8) and the FP16 fallback keeps in FP16.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from twins_trt.export.shapes import infer_types
from twins_trt.qdq import COMPUTE_OPS, dq_fed_nodes, quantized_nodes
from twins_trt.runners.ort_runner import cpu_session, session_infer


@dataclass
class Region:
    name: str  # e.g. "blocks.2.3 gsa.kv", "patch_embeds.0 patch_embed", "head"
    scope: str  # the module: "blocks.2.3", "patch_embeds.0", "" for the head
    kind: str  # sub-layer kind: patch_embed, lsa.qkv, gsa.q, gsa.kv, gsa.sr, *.qk, *.av, *.proj, mlp.fc1/2, peg, head
    # (and for a segmentor: neck, decode_head, with its classifier conv_seg as head)
    nodes: list[str] = field(default_factory=list)
    macs: int = 0


_ATTN = {"LocallyGroupedAttn": "lsa", "GlobalSubSampleAttn": "gsa"}
SEG_PARTS = ("neck", "decode_head")  # twins_trt.models.segmentor.TwinsSegmentor's modules after its backbone


def _namespace(node: onnx.NodeProto) -> list[tuple[str, str]]:
    """torch.onnx's `namespace` metadata as (module path, class) pairs, root first, the op last."""
    ns = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
    pairs = []
    for seg in ns.split("/"):
        name, _, cls = seg.partition(": ")
        pairs.append((name, cls.rsplit(".", 1)[-1]))
    return pairs


def classify(node: onnx.NodeProto, attn_matmuls: dict[str, int]) -> tuple[str, str]:
    """(scope, kind) of a MatMul/Conv/Gemm node from the module it was traced in; the node name otherwise."""
    pairs = _namespace(node)
    mods = [(n, c) for n, c in pairs[1:-1] if n]
    if not mods:
        return node.name, node.op_type.lower()
    path, cls = mods[-1]
    parts = path.split(".")
    if parts[0] == "backbone" and len(parts) > 1:  # a segmentor's backbone is a Twins: the same regions
        parts = parts[1:]
    if parts[0] in SEG_PARTS:  # a segmentor's neck / decode head: one region per conv module
        if parts[-1] == "conv_seg":
            return "decode_head.conv_seg", "head"
        return ".".join(parts[:-1] if parts[-1] == "conv" and len(parts) > 1 else parts), parts[0]
    if node.op_type not in COMPUTE_OPS:  # Q/DQ on the residual stream (Add, LayerNorm inputs) or inside attention
        attn = next((_ATTN[c] for _, c in mods if c in _ATTN), None)
        is_stream = node.op_type in ("Add", "LayerNormalization") or attn is None
        kind = "residual" if is_stream else f"{attn}.{node.op_type.lower()}"
        scope = "norm" if parts[0] == "norm" else ".".join(parts[:3] if parts[0] == "blocks" else parts[:2])
        return scope, kind
    if parts[0] == "patch_embeds":
        return ".".join(parts[:2]), "patch_embed"
    if parts[0] == "pos_block":
        return ".".join(parts[:2]), "peg"
    if parts[0] == "head":
        return "", "head"
    if parts[0] == "blocks" and len(parts) >= 3:
        scope = ".".join(parts[:3])
        attn = next((_ATTN[c] for _, c in mods if c in _ATTN), None)
        if cls in _ATTN:  # the bare attention MatMuls: first q@k^T, then attn@v
            seen = attn_matmuls[scope] = attn_matmuls.get(scope, 0) + 1
            return scope, f"{_ATTN[cls]}.{'qk' if seen == 1 else 'av'}"
        leaf = parts[-1]
        if leaf in ("fc1", "fc2"):
            return scope, f"mlp.{leaf}"
        return scope, f"{attn}.{leaf}" if attn else leaf
    return path, parts[-1] if cls else node.op_type.lower()


def _at_static_shape(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph with its symbolic input dims fixed: batch 1, and H x W at the OPT size of its H/W profile
    (the export's `hw_profile` metadata), so shape inference gives every MatMul/Conv its real size."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if all(d.HasField("dim_value") for d in dims):
        return model
    fixed = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
    profile = next((p.value for p in model.metadata_props if p.key == "twins_trt.hw_profile"), None)
    if profile and len(fixed) == 4:
        fixed[2:] = map(int, profile.split(":")[1].split("x"))
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]
    for d, v in zip(out.graph.input[0].type.tensor_type.shape.dim, fixed):
        d.Clear()
        d.dim_value = v
    return out


def node_macs(model: onnx.ModelProto) -> dict[str, int]:
    """Multiply-accumulates of every MatMul/Conv/Gemm at the graph's own shapes (a dynamic graph: batch 1 at
    the OPT size of its H/W profile); 0 where a size stays unknown.

    Shapes come from ONNX shape inference; where it cannot follow a dynamic graph (reshapes computed from
    Shape ops), from one ONNX Runtime run at that size with those tensors exposed.
    """
    static = _at_static_shape(model)
    inferred = infer_types(static, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    compute = [n for n in model.graph.node if n.op_type in COMPUTE_OPS]
    unknown = {t for n in compute for t in (*n.input[:2], n.output[0]) if t and t not in shapes}
    if unknown:
        shapes.update(_run_shapes(static, unknown))
    out = {}
    for n in compute:
        a, w, y = shapes.get(n.input[0]), shapes.get(n.input[1]), shapes.get(n.output[0])
        if not (a and w and y):
            out[n.name] = 0
        elif n.op_type == "Conv":  # output elements x (Cin / groups) x kernel
            out[n.name] = int(np.prod(y)) * int(np.prod(w[1:]))
        elif n.op_type == "Gemm":
            trans_a = next((at.i for at in n.attribute if at.name == "transA"), 0)
            out[n.name] = int(np.prod(y)) * (a[0] if trans_a else a[-1])
        else:
            out[n.name] = int(np.prod(y)) * a[-1]
    return out


def _run_shapes(static: onnx.ModelProto, names: set[str]) -> dict[str, list[int]]:
    """The shapes of `names` in one ONNX Runtime run of a static-input graph on a zero input."""
    sess = cpu_session(static, optimization="none", expose=names)
    infer, _ = session_infer(sess)
    outs = infer(np.zeros(sess.get_inputs()[0].shape, np.float32))
    return {name: list(v.shape) for name, v in outs.items() if name in names}


def find_regions(fp32: onnx.ModelProto, qdq: onnx.ModelProto | None = None, by: str = "layer") -> dict[str, Region]:
    """Every MatMul/Conv/Gemm, and every other node the calibrated graph `qdq` feeds through Q/DQ (ModelOpt
    also quantizes residual Adds and LayerNorm inputs), grouped into regions: one per block and sub-layer
    kind (`layer`), or one per kind across all blocks (`kind`, a coarse and quick view). Node names are
    those ModelOpt keeps, so a region's nodes name the calibrated graph's nodes (`qdq.without_qdq`)."""
    if by not in ("layer", "kind"):
        raise ValueError(f"regions are grouped by 'layer' or 'kind', got {by!r}")
    macs = node_macs(fp32)
    quantized = dq_fed_nodes(qdq) if qdq is not None else set()
    regions: dict[str, Region] = {}
    seen: dict[str, int] = {}
    for n in fp32.graph.node:
        if n.op_type not in COMPUTE_OPS and n.name not in quantized:
            continue
        scope, kind = classify(n, seen)
        if by == "kind":
            scope = ""
        name = f"{scope} {kind}".strip()
        r = regions.setdefault(name, Region(name, scope, kind))
        r.nodes.append(n.name)
        r.macs += macs.get(n.name, 0)
    return regions


def mac_share(model: onnx.ModelProto, macs: dict[str, int], precision: str = "int8") -> float:
    """The share of `macs` (node_macs of the FP32 graph) that `model`'s quantized nodes of `precision` ("int8" |
    "fp8", `twins_trt.qdq`) compute."""
    total = sum(macs.values())
    return sum(macs.get(n, 0) for n in quantized_nodes(model, precision)) / total if total else 0.0
