"""TensorRT's ONNX-parser rules: a good small graph passes; each thing TensorRT's operator table refuses, injected
into it, is refused by the support check, by the emulator's parser (with TensorRT's ErrorCode) and by twins-build
before it parses, each naming the node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from twins_trt.errors import BuildError, UnsupportedByTensorRTError
from twins_trt.export.trt_support import check_model
from twins_trt.trt.build import build_engine


def good_graph(zero_point: np.ndarray | None = None, gelu_domain: str = "", opset: int = 20,
               layernorm_mean_used: bool = False) -> onnx.ModelProto:
    """x [1,4,8] -> Q/DQ (INT8, zero point 0) -> MatMul -> LayerNormalization -> Gelu -> y: all in TensorRT 10's table."""
    rng = np.random.default_rng(0)
    zp = np.zeros((), np.int8) if zero_point is None else zero_point
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "scale"), numpy_helper.from_array(zp, "zp"),
             numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"),
             numpy_helper.from_array(np.ones(8, np.float32), "gamma"),
             numpy_helper.from_array(np.zeros(8, np.float32), "beta")]
    ln_out = ["ln", "mean"] if layernorm_mean_used else ["ln"]
    nodes = [helper.make_node("QuantizeLinear", ["x", "scale", "zp"], ["xq"], name="quant_x"),
             helper.make_node("DequantizeLinear", ["xq", "scale", "zp"], ["xd"], name="dequant_x"),
             helper.make_node("MatMul", ["xd", "w"], ["h"], name="fc"),
             helper.make_node("LayerNormalization", ["h", "gamma", "beta"], ln_out, name="norm", axis=-1),
             helper.make_node("Gelu", ["ln"], ["y"], name="act", domain=gelu_domain)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])]
    if layernorm_mean_used:
        outputs.append(helper.make_tensor_value_info("mean", TensorProto.FLOAT, [1, 4, 1]))
    graph = helper.make_graph(nodes, "rules", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                              outputs, inits)
    opsets = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(gelu_domain, 1)] if gelu_domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    model.metadata_props.add(key="twins_trt.precision", value="int8")
    onnx.checker.check_model(model)
    return model


# injection -> (graph, the nodes that must be named, the ErrorCode TensorRT gives the first)
INJECTIONS = {
    "contrib_gelu": (lambda: good_graph(gelu_domain="com.microsoft"), ["act"], "UNSUPPORTED_NODE"),
    "uint8_zero_point_128": (lambda: good_graph(zero_point=np.array(128, np.uint8)), ["quant_x", "dequant_x"],
                             "UNSUPPORTED_NODE_DATATYPE"),
    "opset_21": (lambda: good_graph(opset=21), ["quant_x", "dequant_x", "fc", "norm", "act"], "UNSUPPORTED_GRAPH"),
    "layernorm_mean_used": (lambda: good_graph(layernorm_mean_used=True), ["norm"], "UNSUPPORTED_NODE"),
}


def _save(model, tmp_path, name="rules.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _parse(emu, path):
    builder = emu.Builder(emu.Logger())
    network = builder.create_network(0 if int(emu.__version__.split(".")[0]) >= 11
                                     else 1 << int(emu.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = emu.OnnxParser(network, emu.Logger())
    ok = parser.parse_from_file(str(path))
    return ok, [parser.get_error(i) for i in range(parser.num_errors)]


def test_the_good_graph_passes_the_check_and_parses(emu, tmp_path):
    rep = check_model(good_graph())
    assert rep.ok and rep.line() == "TensorRT 10 parser: 5/5 nodes supported (opset 20)"
    ok, errors = _parse(emu, _save(good_graph(), tmp_path))
    assert ok and errors == []


@pytest.mark.parametrize("injection", list(INJECTIONS))
def test_each_injection_is_refused_by_the_check_and_the_emulated_parser(emu, tmp_path, injection):
    make, named, code = INJECTIONS[injection]
    rep = check_model(make())
    assert not rep.ok and [i.name for i in rep.issues] == named
    assert rep.issues[0].code == code
    assert rep.supported == 5 - len(named)

    ok, errors = _parse(emu, _save(make(), tmp_path))
    assert ok is False
    assert [e.node_name() for e in errors] == named
    assert errors[0].code() == emu.ErrorCode[code]
    assert [e.node() for e in errors] == [i.index for i in rep.issues]
    assert all(e.node_operator() for e in errors)


@pytest.mark.parametrize("injection", ["contrib_gelu", "uint8_zero_point_128"])
def test_twins_build_refuses_before_the_parser_in_one_line_naming_the_node(emu, tmp_path, injection):
    make, named, code = INJECTIONS[injection]
    path = _save(make(), tmp_path)
    with pytest.raises(UnsupportedByTensorRTError) as err:
        build_engine(path, tmp_path / "engines", trt=emu)
    msg = str(err.value)
    assert "\n" not in msg and f"'{named[0]}'" in msg and code in msg and "onnx-tensorrt 10.1-GA" in msg
    assert isinstance(err.value, BuildError)
    assert not (tmp_path / "engines" / "rules.plan").exists()


def test_the_zero_point_rule_is_about_the_value(tmp_path):
    """INT8 zero point 3 (the type is fine) breaks only the symmetric-quantization rule: INVALID_NODE, as TensorRT."""
    rep = check_model(good_graph(zero_point=np.array(3, np.int8)))
    assert [(i.name, i.code) for i in rep.issues] == [("quant_x", "INVALID_NODE"), ("dequant_x", "INVALID_NODE")]
    assert "must be zero" in rep.issues[0].reason and "got 3" in rep.issues[0].reason
