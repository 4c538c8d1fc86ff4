"""The TensorRT emulator refuses what TensorRT refuses, and computes what the ONNX computes.

Each contract is shown twice where it matters: on the raw API (what TensorRT itself does) and through
our code (the typed error a user sees). Tiny ONNX models; both emulated versions where they differ.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from emulator import load
from onnx_tiny import DYNAMIC_META, make_onnx

from twins_trt.errors import BuildError, EngineMismatchError, EngineRunError, InputSizeError, ProfileError
from twins_trt.trt.build import build_engine, network_flags
from twins_trt.trt.runner import TrtRunner, aligned_host_tensor, bind_tensors, enqueue, io_tensors

FP32_META = {**DYNAMIC_META, "twins_trt.precision": "fp32"}


@pytest.fixture
def tiny(tmp_path):
    return make_onnx(tmp_path / "export" / "tiny.fp32.onnx", meta=FP32_META)


@pytest.fixture
def plan(emu, tiny, tmp_path):
    return build_engine(tiny, tmp_path / "engines", profile="1:2:4", trt=emu).plan_path


def _network(trt, onnx_path, flags=None):
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt) if flags is None else flags)
    parser = trt.OnnxParser(network, logger)
    return builder, network, parser


def _context(trt, plan_path):
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(plan_path.read_bytes())
    return engine, engine.create_execution_context()


# ---------------------------------------------------------------------------------------------- parser


def test_parser_reports_a_bad_onnx(emu, tmp_path, tiny):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not protobuf")
    _, _, parser = _network(emu, bad)
    assert parser.parse_from_file(str(bad)) is False and parser.num_errors == 1
    assert parser.get_error(0).code() == emu.ErrorCode.MODEL_DESERIALIZE_FAILED
    from twins_trt.trt.build import network_from_onnx_path

    with pytest.raises(BuildError, match=r"(?s)parser rejected .*bad.onnx \(1 error\).*MODEL_DESERIALIZE_FAILED"):
        network_from_onnx_path(bad, trt=emu)


def test_parser_names_the_node_it_cannot_import(emu, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("NoSuchOp", ["input"], ["logits"], name="mystery", domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    with pytest.raises(BuildError, match=r"node 0 'mystery' \(NoSuchOp\): UNSUPPORTED_NODE"):
        build_engine(path, tmp_path / "engines", trt=emu)


# ---------------------------------------------------------------------------------------------- profiles


def test_dynamic_input_needs_a_profile(emu, tiny, capsys):
    builder, network, parser = _network(emu, tiny)
    assert parser.parse_from_file(str(tiny))
    assert network.get_input(0).shape == (-1, 3, 32, 32)
    assert builder.build_serialized_network(network, builder.create_builder_config()) is None
    assert "no optimization profile has been defined" in capsys.readouterr().err


@pytest.mark.parametrize("lo, opt, hi", [((1, 3, 32, 32), (8, 3, 32, 32), (4, 3, 32, 32)),
                                         ((1, 3, 32), (2, 3, 32), (4, 3, 32))])
def test_profile_needs_min_le_opt_le_max_of_one_rank(emu, tiny, lo, opt, hi, capsys):
    builder, network, parser = _network(emu, tiny)
    parser.parse_from_file(str(tiny))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    if len(lo) == 4:  # an inverted range is refused by set_shape, with the RuntimeError of the bindings
        with pytest.raises(RuntimeError, match="Shape provided for max is inconsistent"):
            profile.set_shape("input", lo, opt, hi)
    else:  # a rank that is not the input's is refused by the build
        profile.set_shape("input", lo, opt, hi)
        assert config.add_optimization_profile(profile) == 0
        assert builder.build_serialized_network(network, config) is None
        assert "has rank 3, the input has rank 4" in capsys.readouterr().err


def test_our_builder_reports_a_refused_profile(emu, tiny, tmp_path):
    from twins_trt.trt.build import config_from_network, network_from_onnx_path
    from twins_trt.trt.profile import Profile

    builder, network, _ = network_from_onnx_path(tiny, trt=emu)
    bad = {"input": Profile((4, 3, 32, 32), (2, 3, 32, 32), (8, 3, 32, 32))}
    with pytest.raises(ProfileError, match="TensorRT rejected the optimization profile"):
        config_from_network(builder, network, bad, trt=emu)


# ---------------------------------------------------------------------------------------------- execution


def test_shapes_are_unknown_until_set_and_refused_outside_the_profile(emu, plan, capsys):
    engine, ctx = _context(emu, plan)
    assert tuple(ctx.get_tensor_shape("input")) == (-1, 3, 32, 32)
    assert tuple(ctx.get_tensor_shape("logits")) == (-1, 5)
    assert ctx.infer_shapes() == ["input"]
    assert ctx.set_input_shape("input", (8, 3, 32, 32)) is False  # profile is 1..4
    assert "outside optimization profile 0" in capsys.readouterr().err
    assert ctx.set_input_shape("input", (2, 3, 32, 32)) is True
    assert tuple(ctx.get_tensor_shape("logits")) == (2, 5) and ctx.infer_shapes() == []


def test_our_runner_reports_the_profile_on_a_shape_outside_it(emu, plan):
    with TrtRunner(plan, trt=emu) as r, pytest.raises(InputSizeError, match=r"max \(4, 3, 32, 32\)"):
        r.infer({"input": np.zeros((8, 3, 32, 32), np.float32)})


def test_execute_needs_every_address_and_every_input_shape(emu, plan, capsys):
    engine, ctx = _context(emu, plan)
    assert ctx.execute_async_v3(0) is False
    assert "input shapes not specified" in capsys.readouterr().err
    ctx.set_input_shape("input", (1, 3, 32, 32))
    x = aligned_host_tensor((1, 3, 32, 32), "float32").zero_()
    ctx.set_tensor_address("input", x.data_ptr())
    assert ctx.execute_async_v3(0) is False  # the output has no address
    assert "Address is not set for ['logits']" in capsys.readouterr().err
    with pytest.raises(EngineRunError, match="execute_async_v3 failed"):
        enqueue(ctx, 0)


def test_outputs_are_onnx_runtimes_numbers_written_where_bound(emu, plan, tiny):
    import onnxruntime as ort
    import torch

    engine, ctx = _context(emu, plan)
    x = aligned_host_tensor((3, 3, 32, 32), "float32")
    x.copy_(torch.from_numpy(np.random.default_rng(1).standard_normal((3, 3, 32, 32), dtype=np.float32)))
    outs = bind_tensors(ctx, io_tensors(engine, emu), {"input": x},
                        lambda s, d: aligned_host_tensor(s, "float32").fill_(np.nan), engine)
    enqueue(ctx, 0)
    want = ort.InferenceSession(str(tiny), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    np.testing.assert_array_equal(outs["logits"].numpy(), want)


# ---------------------------------------------------------------------------------------------- plans


def _rewrite_header(data: bytes, **changes) -> bytes:
    magic = data.index(b"\n") + 1
    (n,) = struct.unpack_from("<I", data, magic)
    header = json.loads(data[magic + 4:magic + 4 + n])
    header.update(changes)
    head = json.dumps(header).encode()
    return data[:magic] + struct.pack("<I", len(head)) + head + data[magic + 4 + n:]


def test_a_plan_from_another_version_is_refused(emu, plan, capsys):
    other = _rewrite_header(plan.read_bytes(), tensorrt="10.16.1.11")
    assert emu.Runtime(emu.Logger()).deserialize_cuda_engine(other) is None
    err = capsys.readouterr().err
    assert "not compatible with this version of TensorRT" in err and "got 10.16.1.11" in err
    plan.write_bytes(other)  # and our runner turns the None into a typed error with the rebuild command
    with pytest.raises(EngineMismatchError, match="could not deserialize .* rebuild it with: twins-build"):
        TrtRunner(plan, check_metadata=False, trt=emu).activate()


def test_a_plan_from_another_device_is_refused(emu, plan, monkeypatch, capsys):
    monkeypatch.setenv("TRT_EMULATOR_DEVICE", "another device")
    assert emu.Runtime(emu.Logger()).deserialize_cuda_engine(plan.read_bytes()) is None
    assert "incompatible device" in capsys.readouterr().err
    with pytest.raises(EngineMismatchError, match="this GPU is another device"):  # metadata checked first
        TrtRunner(plan, trt=emu)


def test_not_a_plan_is_refused(emu, capsys):
    assert emu.Runtime(emu.Logger()).deserialize_cuda_engine(b"\0" * 64) is None
    assert "magic tag does not match" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- strong typing


def test_tensorrt_10_refuses_precision_flags_on_a_strongly_typed_network(tiny, capsys):
    """(Weakly typed networks build on 10, deprecated: test_trt_emulator_fidelity.py.)"""
    trt = load("10")
    assert trt.__version__.startswith("10.") and hasattr(trt.BuilderFlag, "FP16")
    builder = trt.Builder(trt.Logger())
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 32, 32), (1, 3, 32, 32), (1, 3, 32, 32))
    config.add_optimization_profile(profile)

    builder, network, parser = _network(trt, tiny)  # our flags: strongly typed
    parser.parse_from_file(str(tiny))
    config.set_flag(trt.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is None
    assert "cannot be set for a strongly typed network" in capsys.readouterr().err
    config.clear_flag(trt.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is not None


def test_tensorrt_11_is_strongly_typed_by_default_and_has_no_precision_flags(tiny):
    trt = load("11")
    assert network_flags(trt) == 0 and not hasattr(trt.BuilderFlag, "FP16") and not hasattr(trt.BuilderFlag, "INT8")
    builder, network, parser = _network(trt, tiny, flags=0)
    assert parser.parse_from_file(str(tiny)) and network._strongly_typed


@pytest.mark.parametrize("version", ["10", "11"])
def test_build_and_run_under_each_version(version, tiny, tmp_path):
    trt = load(version)
    res = build_engine(tiny, tmp_path / "engines", profile="1:1:2", trt=trt)
    assert res.metadata["tensorrt"] == trt.__version__ and res.metadata["emulated"] is True
    with TrtRunner(res.plan_path, trt=trt) as r:
        out = r.infer({"input": np.ones((2, 3, 32, 32), np.float32)})
    assert out["logits"].shape == (2, 5) and np.isfinite(out["logits"]).all()
