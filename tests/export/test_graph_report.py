"""The graph report must catch what it is there to catch: a shifted (Swin-style) attention, pads, shapes."""

from __future__ import annotations

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from twins_trt.errors import GraphCheckError
from twins_trt.export import ExportOptions, export_variant, report_graph
from twins_trt.models.twins import LocallyGroupedAttn


def test_a_deliberately_shifted_attention_is_caught(tmp_path, monkeypatch):
    plain = LocallyGroupedAttn.forward

    def shifted(self, x, size):  # Swin's cyclic shift, inserted before the windows
        B, N, C = x.shape
        x = torch.roll(x.view(-1, *size, C), shifts=(-3, -3), dims=(1, 2)).reshape(-1, N, C)
        return plain(self, x, size)

    monkeypatch.setattr(LocallyGroupedAttn, "forward", shifted)
    with pytest.raises(GraphCheckError, match="cyclic_shift") as err:
        export_variant(ExportOptions("svt_s", out_dir=tmp_path, progress=False, verify_samples=1))
    assert "nothing written" in str(err.value)
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob(".*partial"))


def _graph(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])


def test_attention_chain_and_forbidden_op_counts_on_a_hand_made_graph():
    f = TensorProto.FLOAT
    q = helper.make_tensor_value_info("q", f, [1, 4, 8])
    k = helper.make_tensor_value_info("k", f, [1, 8, 4])
    v = helper.make_tensor_value_info("v", f, [1, 4, 8])
    out = helper.make_tensor_value_info("out", f, [1, 4, 8])
    nodes = [
        helper.make_node("MatMul", ["q", "k"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["s2"]),
        helper.make_node("Softmax", ["s2"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "v"], ["o"]),
        helper.make_node("Shape", ["o"], ["shp"]),
        helper.make_node("Reshape", ["o", "shp"], ["o2"]),
        helper.make_node("Slice", ["o2", "st", "en", "ax"], ["a"]),
        helper.make_node("Slice", ["o2", "en", "st2", "ax"], ["b"]),
        helper.make_node("Concat", ["b", "a"], ["out"], axis=1),
    ]
    inits = [helper.make_tensor("scale", f, [], [0.5])] + [
        helper.make_tensor(n, TensorProto.INT64, [1], [val]) for n, val in
        (("st", 0), ("en", 2), ("st2", 4), ("ax", 1))
    ]
    rep = report_graph(_graph(nodes, [q, k, v], [out], inits), expected_attention_layers=1)
    assert rep.attention_chains == 1
    assert rep.forbidden["cyclic_shift(Slice->Concat)"] == 1
    assert rep.forbidden["Shape"] == 1 and rep.forbidden["dynamic_reshape"] == 1
    assert not rep.ok and any("cyclic_shift" in p for p in rep.problems())
    assert report_graph(_graph(nodes[:4], [q, k, v], [helper.make_tensor_value_info("o", f, [1, 4, 8])], inits[:1]),
                        expected_attention_layers=2).problems() == ["1 MatMul->Softmax->MatMul chains, expected 2"]


def test_report_reads_files_and_names_them(tmp_path):
    f = TensorProto.FLOAT
    m = _graph([helper.make_node("Pad", ["x", "pads"], ["y"])], [helper.make_tensor_value_info("x", f, [1, 2])],
               [helper.make_tensor_value_info("y", f, [1, 4])], [helper.make_tensor("pads", TensorProto.INT64, [4],
                                                                                     [0, 1, 0, 1])])
    onnx.save(m, tmp_path / "p.onnx")
    rep = report_graph(tmp_path / "p.onnx")
    assert rep.name == "p.onnx" and rep.static and rep.forbidden["Pad"] == 1
    assert report_graph(tmp_path / "p.onnx", pad_allowed=True).forbidden_total == 0
