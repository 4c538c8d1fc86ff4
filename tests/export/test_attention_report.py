"""The fused-attention report: chains found where they are, and each missed TensorRT MHA condition named.

The chain count on real svt_s artifacts (one per attention block) is checked in test_trt_support.py, on the
exports made there.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from twins_trt.export.attention import failed_conditions, find_chains, report_attention
from twins_trt.export.graph_report import count_attention_chains

QDQ_TYPES = {"int8": (TensorProto.INT8, np.int8), "fp8": (TensorProto.FLOAT8E4M3FN, None)}


def attention(heads=2, s_q=49, s_kv=49, head_dim=32, dtype=TensorProto.FLOAT, qdq: str | None = None,
              skip_qdq: tuple[str, ...] = (), scale_on="q", rank=4, window_mask=False) -> onnx.ModelProto:
    """q, k, v inputs -> [scale] -> MatMul(q, k^T) -> [scale] -> Softmax -> MatMul(p, v) -> Transpose -> out,
    with Q/DQ pairs of `qdq` type at the five places of the INT8 rule (minus `skip_qdq`)."""
    lead = [1, heads] if rank == 4 else [heads]
    nodes, inits = [], [numpy_helper.from_array(np.array(head_dim ** -0.5, np.float32 if dtype == TensorProto.FLOAT
                                                         else np.float16), "scale")]
    if qdq:
        zp_type, _ = QDQ_TYPES[qdq]
        inits += [numpy_helper.from_array(np.array(0.02, np.float32), "qs"),
                  helper.make_tensor("qz", zp_type, [], [0])]

    def pair(place: str, tensor: str) -> str:
        if not qdq or place in skip_qdq:
            return tensor
        nodes.append(helper.make_node("QuantizeLinear", [tensor, "qs", "qz"], [f"{tensor}_q"], name=f"q_{place}"))
        nodes.append(helper.make_node("DequantizeLinear", [f"{tensor}_q", "qs", "qz"], [f"{tensor}_dq"], name=f"dq_{place}"))
        return f"{tensor}_dq"

    q = "q"
    if scale_on == "q":
        nodes.append(helper.make_node("Mul", ["q", "scale"], ["q_scaled"], name="scale_q"))
        q = "q_scaled"
    q, k = pair("bmm1_q", q), pair("bmm1_k", "k")
    nodes.append(helper.make_node("MatMul", [q, k], ["scores"], name="bmm1"))
    scores = "scores"
    if scale_on == "scores":
        nodes.append(helper.make_node("Mul", ["scores", "scale"], ["scores_scaled"], name="scale_scores"))
        scores = "scores_scaled"
    if window_mask:  # mmseg's padded LSA: scores viewed per window, a -1000 mask added (mask first), viewed back
        inits += [numpy_helper.from_array(np.array([1, 1, heads, s_q, s_kv], np.int64), "win_shape"),
                  numpy_helper.from_array(np.array([1, heads, s_q, s_kv], np.int64), "flat_shape"),
                  numpy_helper.from_array(np.zeros((1, 1, 1, s_q, s_kv), np.float32), "mask_src")]
        nodes += [helper.make_node("Reshape", [scores, "win_shape"], ["scores_win"], name="view_windows"),
                  helper.make_node("Identity", ["mask_src"], ["mask"], name="mask"),
                  helper.make_node("Add", ["mask", "scores_win"], ["scores_masked"], name="add_mask"),
                  helper.make_node("Reshape", ["scores_masked", "flat_shape"], ["scores_flat"], name="view_back")]
        scores = "scores_flat"
    nodes.append(helper.make_node("Softmax", [scores], ["probs"], name="softmax", axis=-1))
    p, v = pair("softmax_out", "probs"), pair("v", "v")
    nodes.append(helper.make_node("MatMul", [p, v], ["ctx"], name="bmm2"))
    perm = [0, 2, 1, 3] if rank == 4 else [1, 0, 2]
    nodes.append(helper.make_node("Transpose", ["ctx"], ["ctx_t"], name="merge_heads", perm=perm))
    out = pair("bmm2_out", "ctx_t")
    nodes.append(helper.make_node("Identity", [out], ["out"], name="out"))
    io = lambda name, shape: helper.make_tensor_value_info(name, dtype, shape)  # noqa: E731
    graph = helper.make_graph(nodes, "attn", [io("q", [*lead, s_q, head_dim]), io("k", [*lead, head_dim, s_kv]),
                                              io("v", [*lead, s_kv, head_dim])],
                              [io("out", None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def test_one_chain_found_where_the_graph_report_counts_one():
    model = attention()
    chains = find_chains(model)
    assert len(chains) == count_attention_chains(model.graph) == 1
    c = chains[0]
    assert (c.bmm1, c.softmax, c.bmm2) == ("bmm1", "softmax", "bmm2")
    assert (c.head_dim, c.s_q, c.s_kv, c.scale, c.dtype) == (32, 49, 49, "q", "fp32")


def test_fp16_head_dims():
    assert report_attention(attention(head_dim=32, dtype=TensorProto.FLOAT16)).line() == "fp16: 1/1 chains fusable"
    for h in (12, 20, 264):
        rep = report_attention(attention(head_dim=h, dtype=TensorProto.FLOAT16))
        assert rep.fusable == 0 and rep.failures == [[f"head_dim={h} not in 16-256 or not a multiple of 8"]]


def test_int8_conditions_each_named():
    assert report_attention(attention(qdq="int8")).line() == "int8: 1/1 chains fusable"
    rep = report_attention(attention(qdq="int8", s_q=3136))
    assert rep.line() == "int8: 0/1 chains fusable; gsa stage 1: S_q=3136 > 512"
    assert report_attention(attention(qdq="int8", head_dim=128)).failures == [["head_dim=128 not 16/32/64"]]
    rep = report_attention(attention(qdq="int8", skip_qdq=("softmax_out", "bmm2_out")))
    assert rep.failures == [["no INT8 Q/DQ after the Softmax, after the second MatMul"]]
    rep = report_attention(attention(), "int8")  # an unquantized chain judged as INT8: every Q/DQ missing
    assert "no INT8 Q/DQ before the first MatMul (Q), before the first MatMul (K)" in rep.failures[0][0]


def test_layout_and_scale_placement_fail_every_precision():
    rep = report_attention(attention(scale_on="scores", dtype=TensorProto.FLOAT16))
    assert rep.failures == [["scale on the first MatMul's output, not on Q"]]
    rep = report_attention(attention(rank=3, dtype=TensorProto.FLOAT16))
    assert rep.failures == [["rank-3 layout, not [B, heads, S, head_dim]"]]
    assert report_attention(attention(scale_on="none", dtype=TensorProto.FLOAT16)).fusable == 1  # no scale: nothing misplaced


def test_a_mask_added_per_window_is_still_a_chain_and_named():
    model = attention(dtype=TensorProto.FLOAT, window_mask=True)
    assert len(find_chains(model)) == count_attention_chains(model.graph) == 1
    rep = report_attention(model, "fp16")
    assert rep.failures == [["scores reshaped between the first MatMul and the Softmax (mask added in another layout, "
                             "not on [B, heads, S_q, S_kv])"]]


def test_fp32_is_reported_as_not_a_fused_type():
    rep = report_attention(attention())
    assert rep.precision == "fp32" and rep.fusable == 0 and "fp32 is not a fused-MHA type" in rep.line()


def test_fp8_follows_modelopts_placement():
    assert report_attention(attention(qdq="fp8")).line() == "fp8: 1/1 chains fusable"
    assert report_attention(attention(qdq="fp8", head_dim=8)).failures == [["head_dim=8 not in (8, 256]"]]
    rep = report_attention(attention(qdq="int8"), "fp8")  # INT8 Q/DQ do not make an FP8 chain
    assert rep.failures == [["no FP8 Q/DQ before the first MatMul (Q), before the first MatMul (K), after the Softmax, on V"]]


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be"):
        failed_conditions(find_chains(attention())[0], "int4")
