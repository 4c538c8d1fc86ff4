"""Will TensorRT fuse this graph's attention? Every MatMul -> Softmax -> MatMul chain against the fused-MHA rules.

TensorRT turns MatMul -> (scale, mask) -> Softmax -> MatMul into one multi-head-attention kernel only
under documented conditions; unfused, INT8 attention is often no faster than FP16. The rules
(`RULES_SOURCE`):
- every precision: Q, K, V rank 4, [B, heads, S, head_dim] (K transposed into the first MatMul), with
  the attention scale on Q or K before the first MatMul, not on its output;
- FP16/BF16: head dim 16-256 and a multiple of 8;
- INT8: head dim 16, 32 or 64; sequence lengths (query and key) <= 512; Q/DQ before both inputs of the
  first MatMul, after the Softmax, on V, and after the second MatMul (through shape-only ops);
- FP8 (ModelOpt's placement, `quantize_mode="fp8"`): FP8 Q/DQ on both first-MatMul inputs, on the
  Softmax output and on V, head dim in (8, 256].
FP32 is not a fused-MHA type; FP32 chains are reported as such. Pure graph analysis: onnx only.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from twins_trt.export.trt_support import with_types

RULES_SOURCE = ("TensorRT docs 10.16, 'Fused Attention' (docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/"
                "transformers-fused-attention.html): Q [B, N, S_q, H], K/V [B, N, S_kv, H], scale on Q or K before the "
                "first BMM; head-dim and INT8 S<=512 limits from the TensorRT 10.x developer guide's 'Multi-Head "
                "Attention Fusion' table, as ModelOpt 0.47 applies them when it places MHA Q/DQ "
                "(graph_utils.find_nodes_from_mha_to_exclude: INT8 S_kv<=512, FP8 head dim in (8, 256])")
INT8_HEAD_DIMS = (16, 32, 64)
INT8_MAX_SEQ = 512
SCORE_OPS = ("Mul", "Div", "Add", "Sub", "Cast", "Reshape", "Where")  # first MatMul -> Softmax: scale, mask
PROB_OPS = ("Cast", "QuantizeLinear", "DequantizeLinear")  # between the Softmax and the second MatMul
SHAPE_OPS = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Cast")
OPERAND_OPS = (*SHAPE_OPS, "Mul", "Div", "QuantizeLinear", "DequantizeLinear")
MAX_HOPS = 6
FLOAT_TYPES = {onnx.TensorProto.FLOAT: "fp32", onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}


@dataclass(frozen=True)
class Chain:
    """One attention chain as the graph has it."""

    index: int  # 1-based, graph order
    kind: str  # "lsa" (Q and K from one qkv Split: local windows) or "gsa" (K/V from their own projection)
    stage: int  # 1-based, by heads x head_dim
    bmm1: str
    softmax: str
    bmm2: str
    dtype: str  # the first MatMul's input type: fp32 / fp16 / bf16, or int8 / fp8 when it is fed by Q/DQ
    q_shape: tuple
    k_shape: tuple  # as the first MatMul takes it (transposed: [..., head_dim, S_kv])
    v_shape: tuple
    scale: str  # "q", "k", "scores" (after the first MatMul) or "none"
    scores_reshaped: bool = False  # a Reshape between the first MatMul and the Softmax (a mask added per window)
    qdq: dict = field(default_factory=dict)  # bmm1_q, bmm1_k, softmax_out, v, bmm2_out -> quantized type or ""

    @property
    def label(self) -> str:
        return f"{self.kind} stage {self.stage}"

    @property
    def head_dim(self):
        return self.q_shape[-1] if self.q_shape else None

    @property
    def s_q(self):
        return self.q_shape[-2] if len(self.q_shape) >= 2 else None

    @property
    def s_kv(self):
        return self.v_shape[-2] if len(self.v_shape) >= 2 else None


def failed_conditions(chain: Chain, precision: str) -> list[str]:
    """Why `chain` misses TensorRT's fused MHA at `precision` (fp16/bf16/int8/fp8/fp32); [] when it meets them."""
    out = []
    ranks = {len(s) for s in (chain.q_shape, chain.k_shape, chain.v_shape)}
    if ranks != {4}:
        out.append(f"rank-{max(ranks)} layout, not [B, heads, S, head_dim]")
    if chain.scale == "scores":
        out.append("scale on the first MatMul's output, not on Q")
    if chain.scores_reshaped:
        out.append("scores reshaped between the first MatMul and the Softmax (mask added in another layout, "
                   "not on [B, heads, S_q, S_kv])")
    h, sq, skv = chain.head_dim, chain.s_q, chain.s_kv
    known = isinstance(h, int) and h > 0
    if precision == "fp32":
        out.append("fp32 is not a fused-MHA type (FP16/BF16, INT8, FP8)")
    elif precision in ("fp16", "bf16"):
        if not known or not (16 <= h <= 256 and h % 8 == 0):
            out.append(f"head_dim={h} not in 16-256 or not a multiple of 8")
    elif precision == "int8":
        if not known or h not in INT8_HEAD_DIMS:
            out.append(f"head_dim={h} not 16/32/64")
        for name, s in (("S_q", sq), ("S_kv", skv)):
            if not isinstance(s, int) or s <= 0:
                out.append(f"{name} not static")
            elif s > INT8_MAX_SEQ:
                out.append(f"{name}={s} > {INT8_MAX_SEQ}")
        out += _missing_qdq(chain, ("bmm1_q", "bmm1_k", "softmax_out", "v", "bmm2_out"), "int8")
    elif precision == "fp8":
        if not known or not 8 < h <= 256:
            out.append(f"head_dim={h} not in (8, 256]")
        out += _missing_qdq(chain, ("bmm1_q", "bmm1_k", "softmax_out", "v"), "fp8")
    else:
        raise ValueError(f"precision must be fp32, fp16, bf16, int8 or fp8, got {precision!r}")
    return out


_WHERE = {"bmm1_q": "before the first MatMul (Q)", "bmm1_k": "before the first MatMul (K)",
          "softmax_out": "after the Softmax", "v": "on V", "bmm2_out": "after the second MatMul"}


def _missing_qdq(chain: Chain, places: tuple[str, ...], kind: str) -> list[str]:
    missing = [_WHERE[p] for p in places if chain.qdq.get(p) != kind]
    return [f"no {kind.upper()} Q/DQ {', '.join(missing)}"] if missing else []


@dataclass
class AttentionReport:
    """Every chain of one artifact judged at its precision."""

    precision: str
    chains: list[Chain]
    failures: list[list[str]]

    @property
    def fusable(self) -> int:
        return sum(1 for f in self.failures if not f)

    def line(self) -> str:
        head = f"{self.precision}: {self.fusable}/{len(self.chains)} chains fusable"
        by_reason: dict[str, Counter] = {}
        for c, f in zip(self.chains, self.failures):
            for r in f:
                by_reason.setdefault(r, Counter())[c.label] += 1
        parts = []
        for reason, labels in by_reason.items():
            n = sum(labels.values())
            where = (f"all {n} chains" if n == len(self.chains) and len(labels) > 3 else
                     ", ".join(label + (f" (x{k})" if k > 1 else "") for label, k in labels.items()))
            parts.append(f"{where}: {reason}")
        return "; ".join([head, *parts])

    def to_dict(self) -> dict:
        return {"verdict": self.line(), "precision": self.precision, "chains": len(self.chains),
                "fusable": self.fusable, "rules": RULES_SOURCE,
                "per_chain": [{**{k: v for k, v in asdict(c).items() if k != "qdq"}, "label": c.label,
                               "head_dim": c.head_dim, "s_q": c.s_q, "s_kv": c.s_kv, "qdq": c.qdq,
                               "fusable": not f, "fails": f} for c, f in zip(self.chains, self.failures)]}


class _G:
    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.prod = {o: n for n in g.node for o in n.output}
        self.cons: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for i in n.input:
                self.cons.setdefault(i, []).append(n)
        self.consts = {i.name: i for i in g.initializer}
        self.consts.update({n.output[0]: next((a.t for a in n.attribute if a.name == "value"), None)
                            for n in g.node if n.op_type == "Constant"})
        self.info: dict[str, onnx.TypeProto.Tensor] = {}
        for vi in [*g.input, *g.output, *g.value_info]:
            self.info.setdefault(vi.name, vi.type.tensor_type)
        for i in g.initializer:
            self.info.setdefault(i.name, onnx.helper.make_tensor_type_proto(i.data_type, list(i.dims)).tensor_type)

    def shape(self, name: str) -> tuple:
        t = self.info.get(name)
        if t is None or not t.HasField("shape"):
            return ()
        return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)

    def dtype(self, name: str) -> int | None:
        t = self.info.get(name)
        return t.elem_type if t is not None and t.elem_type else None

    def scalar_const(self, name: str) -> bool:
        t = self.consts.get(name)
        if t is None:
            return False
        try:
            return int(np.prod(numpy_helper.to_array(t).shape)) == 1
        except Exception:  # noqa: BLE001 - external or odd data: not a known scalar
            return False

    def back(self, tensor: str, ops: tuple[str, ...], hops: int = MAX_HOPS) -> list[onnx.NodeProto]:
        """Producers from `tensor` backwards through `ops` (first input; either input of Mul/Div/Add)."""
        out, node = [], self.prod.get(tensor)
        while node is not None and hops > 0:
            out.append(node)
            if node.op_type not in ops:
                break
            data = node.input[0]
            if node.op_type in ("Mul", "Div", "Add", "Sub") and self.scalar_or_const(data) and len(node.input) > 1:
                data = node.input[1]
            node, hops = self.prod.get(data), hops - 1
        return out

    def scalar_or_const(self, name: str) -> bool:
        return name in self.consts

    def quant_type(self, dq: onnx.NodeProto) -> str:
        """"int8"/"fp8"/... for a DequantizeLinear (or QuantizeLinear), from its zero point or input type."""
        zp = dq.input[2] if len(dq.input) > 2 and dq.input[2] else None
        t = self.dtype(zp) if zp else None
        if t is None and zp in self.consts and self.consts[zp] is not None:
            t = self.consts[zp].data_type
        if t is None and dq.op_type == "DequantizeLinear":
            t = self.dtype(dq.input[0])
        return {onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8",
                onnx.TensorProto.FLOAT8E4M3FN: "fp8"}.get(t, "int8" if t is None else "other")


def _operand_qdq(g: _G, tensor: str) -> str:
    """The quantized type of the DequantizeLinear feeding `tensor` through shape-only ops/scales, or ""."""
    for node in g.back(tensor, OPERAND_OPS):
        if node.op_type == "DequantizeLinear":
            return g.quant_type(node)
        if node.op_type not in OPERAND_OPS or node.op_type == "QuantizeLinear":
            return ""
    return ""


def _output_qdq(g: _G, tensor: str, hops: int = MAX_HOPS) -> str:
    """The quantized type of a QuantizeLinear every path from `tensor` reaches through shape-only ops, or ""."""
    kinds = set()
    for node in g.cons.get(tensor, []):
        if node.op_type == "QuantizeLinear":
            kinds.add(g.quant_type(node))
        elif node.op_type in SHAPE_OPS and hops > 0:
            kinds.add(_output_qdq(g, node.output[0], hops - 1))
        else:
            kinds.add("")
    return kinds.pop() if len(kinds) == 1 else ""


def _source_split(g: _G, tensor: str) -> str | None:
    for node in g.back(tensor, (*OPERAND_OPS, "Gather", "Slice")):
        if node.op_type in ("Split", "Gather", "Slice"):
            return node.input[0]
    return None


def _scores_path(g: _G, tensor: str, hops: int) -> list[onnx.NodeProto] | None:
    """The nodes from a Softmax's input back to its first MatMul (that MatMul last), through SCORE_OPS on either
    operand of a binary op (the scores may be either side of a mask Add); None when no MatMul is reached."""
    node = g.prod.get(tensor)
    if node is None or hops < 0:
        return None
    if node.op_type == "MatMul":
        return [node]
    if node.op_type not in SCORE_OPS:
        return None
    data = node.input[1:3] if node.op_type == "Where" else node.input[:2] if node.op_type in ("Add", "Sub", "Mul", "Div") \
        else node.input[:1]
    for i in data:
        if i and i not in g.consts:
            rest = _scores_path(g, i, hops - 1)
            if rest is not None:
                return [node, *rest]
    return None


def find_chains(model: onnx.ModelProto, infer: bool = True) -> list[Chain]:
    """Every Softmax fed by a MatMul (through scale/mask/cast ops) and feeding a MatMul's first input."""
    g = _G(with_types(model) if infer else model)
    raw = []
    for sm in model.graph.node:
        if sm.op_type != "Softmax":
            continue
        back = _scores_path(g, sm.input[0], MAX_HOPS)
        bmm1 = back[-1] if back else None
        fwd, t = None, sm.output[0]
        for _ in range(MAX_HOPS):
            nxt = g.cons.get(t, [])
            if len(nxt) != 1:
                break
            if nxt[0].op_type == "MatMul" and nxt[0].input[0] == t:
                fwd = nxt[0]
                break
            if nxt[0].op_type not in PROB_OPS:
                break
            t = nxt[0].output[0]
        if bmm1 is None or fwd is None:
            continue
        scores_scaled = any(n.op_type in ("Mul", "Div") and any(g.scalar_const(i) for i in n.input) for n in back[:-1])
        scale = "scores" if scores_scaled else "none"
        for side, tensor in (("q", bmm1.input[0]), ("k", bmm1.input[1])):
            if scale == "none" and any(n.op_type in ("Mul", "Div") and any(g.scalar_const(i) for i in n.input)
                                       for n in g.back(tensor, OPERAND_OPS)):
                scale = side
        dq1 = _operand_qdq(g, bmm1.input[0])
        dtype = dq1 or FLOAT_TYPES.get(g.dtype(bmm1.input[0]) or 0, "fp32")
        qdq = {"bmm1_q": dq1, "bmm1_k": _operand_qdq(g, bmm1.input[1]),
               "softmax_out": _operand_qdq(g, fwd.input[0]), "v": _operand_qdq(g, fwd.input[1]),
               "bmm2_out": _output_qdq(g, fwd.output[0])}
        q_src, k_src = _source_split(g, bmm1.input[0]), _source_split(g, bmm1.input[1])
        kind = "lsa" if q_src is not None and q_src == k_src else "gsa"
        raw.append((bmm1, sm, fwd, dtype, g.shape(bmm1.input[0]), g.shape(bmm1.input[1]), g.shape(fwd.input[1]),
                    scale, qdq, kind, any(n.op_type == "Reshape" for n in back)))
    widths = sorted({_width(r[4]) for r in raw if _width(r[4])})
    return [Chain(index=i + 1, kind=kind, stage=widths.index(_width(q)) + 1 if _width(q) in widths else 0,
                  bmm1=b1.name, softmax=sm.name, bmm2=b2.name, dtype=dt, q_shape=q, k_shape=k, v_shape=v,
                  scale=sc, qdq=qd, scores_reshaped=rs)
            for i, (b1, sm, b2, dt, q, k, v, sc, qd, kind, rs) in enumerate(raw)]


def _width(shape: tuple) -> int | None:
    """heads x head_dim of a [B, heads, S, head_dim] operand: which stage a chain belongs to."""
    if len(shape) == 4 and isinstance(shape[1], int) and isinstance(shape[3], int):
        return shape[1] * shape[3]
    return None


def graph_precision(chains: list[Chain]) -> str:
    """The precision an artifact's attention asks for: int8/fp8 when any chain is fed by Q/DQ, else its dtype."""
    kinds = Counter(c.dtype for c in chains)
    for p in ("fp8", "int8", "fp16", "bf16"):
        if kinds.get(p):
            return p
    return "fp32"


def report_attention(model: onnx.ModelProto | str | os.PathLike, precision: str | None = None,
                     infer: bool = True) -> AttentionReport:
    """Find the chains and judge each at `precision` (None: what the graph asks for, `graph_precision`)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(Path(model)), load_external_data=False)
    chains = find_chains(model, infer=infer)
    precision = precision or graph_precision(chains)
    return AttentionReport(precision, chains, [failed_conditions(c, precision) for c in chains])


__all__ = ["AttentionReport", "Chain", "RULES_SOURCE", "failed_conditions", "find_chains", "graph_precision",
           "report_attention"]
