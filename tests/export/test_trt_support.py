"""The TensorRT 10 parser check: the packaged operator table, the written restrictions, and real artifacts.

The injections (contrib node, UINT8 zero point, opset 21, LayerNormalization's second output) are in
tests/trt/test_trt_parser_rules.py, where the emulator's parser must refuse them too.
"""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from twins_trt import VARIANTS
from twins_trt.export.trt_support import check_model
from twins_trt.export.trt_table import load_table, make_table, parse_operators_md

MD = """# Supported ONNX Operators

TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20. Latest ...

TensorRT supports the following ONNX data types: DOUBLE, FLOAT32, INT8, and BOOL

> Note: UINT8 is only supported as network input or output tensor types.

| Operator                  | Supported  | Supported Types | Restrictions |
|---------------------------|------------|-----------------|--------------|
| Abs                       | Y          | FP32, FP16, BF16, INT32, INT64 |
| AffineGrid                | N          |
| ConstantOfShape           | Y          | FP32, INF64, BOOL |
| Resize | Y | FP32 | Supported resize modes: `nearest`, `linear`.<br />Antialiasing is not supported.|
"""


def test_the_packaged_table_parses_and_records_its_source():
    t = load_table()
    assert t["source"]["branch"] == "10.1-GA" and re.fullmatch(r"[0-9a-f]{40}", t["source"]["commit"])
    assert t["opset"] == {"min": 9, "max": 20} and t["tensorrt"] == "10.0"
    ops = t["operators"]
    assert len(ops) > 150 and ops["MatMul"]["supported"] and ops["MatMul"]["types"] == ["FP32", "FP16", "BF16"]
    assert ops["DequantizeLinear"]["types"] == ["INT8", "FP8", "INT4"]
    assert "must be zero" in ops["DequantizeLinear"]["restrictions"]
    assert ops["AffineGrid"]["supported"] is False
    assert "INT64" in ops["ConstantOfShape"]["types"]  # the table's "INF64" typo, fixed and recorded
    assert t["data_types"][-1] == "BOOL"


def test_the_table_is_regenerated_from_operators_md():
    t = make_table(MD, "10.1-GA", "0" * 40)
    assert t["source"]["commit"] == "0" * 40 and t["opset"] == {"min": 9, "max": 20}
    assert set(t["operators"]) == {"Abs", "AffineGrid", "ConstantOfShape", "Resize"}
    assert t["operators"]["ConstantOfShape"]["types"] == ["FP32", "INT64", "BOOL"]
    assert t["operators"]["Resize"]["restrictions"] == ("Supported resize modes: `nearest`, `linear`. "
                                                        "Antialiasing is not supported.")
    assert t["data_types"] == ["DOUBLE", "FLOAT32", "INT8", "BOOL"]
    with pytest.raises(ValueError, match="opset"):
        parse_operators_md("# not the table")


def _one(node, inputs, outputs, inits=(), opset=20):
    g = helper.make_graph([node], "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


F = TensorProto.FLOAT


def test_written_restrictions_name_the_node_with_tensorrts_code():
    x = helper.make_tensor_value_info("x", F, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", F, [1, 3, 8, 8])
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    cubic = _one(helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="cubic"), [x], [y], [scales])
    rep = check_model(cubic)
    assert [(i.name, i.code) for i in rep.issues] == [("up", "UNSUPPORTED_NODE_ATTR")] and "'cubic'" in rep.issues[0].reason
    linear = _one(helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up", mode="linear",
                                   coordinate_transformation_mode="half_pixel"), [x], [y], [scales])
    assert check_model(linear).ok

    axes_in = helper.make_tensor_value_info("axes", TensorProto.INT64, [1])
    r = helper.make_tensor_value_info("r", F, [1, 3, 4, 1])
    dyn = _one(helper.make_node("ReduceMean", ["x", "axes"], ["r"], name="mean"), [x, axes_in], [r])
    assert [(i.name, i.code) for i in check_model(dyn).issues] == [("mean", "UNSUPPORTED_NODE_INPUT")]

    u = helper.make_tensor_value_info("u", TensorProto.INT8, [4])
    add = _one(helper.make_node("Add", ["u", "u"], ["v"], name="int8_add"), [u],
               [helper.make_tensor_value_info("v", TensorProto.INT8, [4])])
    assert [(i.name, i.code) for i in check_model(add).issues] == [("int8_add", "UNSUPPORTED_NODE_DATATYPE")]

    unique = _one(helper.make_node("Unique", ["x"], ["y"], name="uniq"), [x], [helper.make_tensor_value_info("y", F, None)])
    issue = check_model(unique).issues[0]
    assert (issue.name, issue.code) == ("uniq", "UNSUPPORTED_NODE") and "marked N" in issue.reason


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_real_svt_s_artifacts_pass_and_say_so_in_report_and_manifest(svt_s_224, precision):
    """The run's shared svt_s export (conftest: FP32, FP16 and INT8 at 224): the export printed the parser's verdict
    and its manifest keeps it, for a graph whose every node the parser takes."""
    graph = onnx.load(str(svt_s_224.artifacts[precision]), load_external_data=False).graph
    rep = svt_s_224.manifest(precision)["graph"]  # the export's graph report, as written beside the artifact
    nodes = len(graph.node)
    assert rep["nodes"] == nodes and rep["trt_support"]["ok"] and rep["trt_support"]["issues"] == []
    assert rep["trt_support"]["verdict"] == f"TensorRT 10 parser: {nodes}/{nodes} nodes supported (opset 20)"
    assert rep["trt_support"]["verdict"] in svt_s_224.said  # what the export said while it checked
    assert rep["trt_support"]["table"].startswith("onnx-tensorrt 10.1-GA@")
    att = rep["attention"]
    assert att["chains"] == VARIANTS["svt_s"].num_attention_layers == rep["attention_chains"]  # one per attention block
    assert att["precision"] == precision and att["verdict"].startswith(f"{precision}: ")
    assert f"fused attention, {att['verdict']}" in svt_s_224.said
    if precision == "int8":  # the export quantized something, and the check looked at real Q/DQ nodes
        assert rep["ops"].get("QuantizeLinear", 0) > 0 and any(n.op_type == "QuantizeLinear" for n in graph.node)
