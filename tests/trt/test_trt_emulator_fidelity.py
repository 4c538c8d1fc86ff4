"""Where the TensorRT emulator used to depart from TensorRT (issue 20), each shown on the raw API.

Sources: NVIDIA/TensorRT python/src/infer/pyCore.cpp (which calls raise RuntimeError), include/NvInferRuntime.h
(IExecutionContext::setTensorAddress: nullptr resets, 256-byte alignment), the 10.x -> 11.x migration guide
(weak typing deprecated in 10.12, gone in 11). Each test failed on the emulator before that change.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from emulator import load
from onnx_tiny import DYNAMIC_META, make_onnx

from twins_trt.trt.build import build_engine, network_flags, network_from_onnx_path
from twins_trt.trt.runner import aligned_host_tensor

FP32_META = {**DYNAMIC_META, "twins_trt.precision": "fp32"}


@pytest.fixture
def tiny(tmp_path):
    return make_onnx(tmp_path / "export" / "tiny.fp32.onnx", meta=FP32_META)


@pytest.fixture
def plan(emu, tiny, tmp_path):
    return build_engine(tiny, tmp_path / "engines", profile="1:2:4", opt_batches=[2, 4], trt=emu).plan_path


def _context(trt, plan_path):
    engine = trt.Runtime(trt.Logger()).deserialize_cuda_engine(plan_path.read_bytes())
    return engine, engine.create_execution_context()


def _parsed(trt, onnx_path, flags):
    logger = trt.Logger(trt.Logger.INFO)
    builder = trt.Builder(logger)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(onnx_path))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 3, 32, 32), (1, 3, 32, 32), (2, 3, 32, 32))
    config.add_optimization_profile(profile)
    return builder, network, config


def _bind(ctx, batch=2):
    x = aligned_host_tensor((batch, 3, 32, 32), "float32")
    x.copy_(__import__("torch").from_numpy(np.random.default_rng(0).standard_normal((batch, 3, 32, 32),
                                                                                 dtype=np.float32)))
    y = aligned_host_tensor((batch, 5), "float32")
    assert ctx.set_input_shape("input", tuple(x.shape))
    assert ctx.set_tensor_address("input", x.data_ptr()) and ctx.set_tensor_address("logits", y.data_ptr())
    return x, y


# ---------------------------------------------------------------------------------------------- typing


def test_tensorrt_10_builds_weakly_typed_networks_and_says_they_are_deprecated(tiny, capsys):
    trt = load("10")
    builder, network, config = _parsed(trt, tiny, flags=0)
    config.set_flag(trt.BuilderFlag.FP16)  # a precision flag is allowed on a weakly typed network
    assert builder.build_serialized_network(network, config) is not None
    err = capsys.readouterr().err
    assert "[W]" in err and "weakly typed" in err and "deprecated" in err
    # the product still asks for STRONGLY_TYPED, so its engines carry no such warning
    builder, network, _ = network_from_onnx_path(tiny, trt=trt)
    assert network_flags(trt) == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) and network._strongly_typed


def test_tensorrt_11_has_no_weak_typing_to_ask_for(tiny, capsys):
    trt = load("11")
    for flags in (0, 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)):  # the flag is kept, and ignored
        builder, network, config = _parsed(trt, tiny, flags=flags)
        assert network._strongly_typed and builder.build_serialized_network(network, config) is not None
    assert "deprecated" not in capsys.readouterr().err
    assert not hasattr(trt.BuilderFlag, "FP16") and not hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")


# ---------------------------------------------------------------------------------------------- addresses


def test_a_null_address_resets_the_tensor(emu, plan, capsys):
    engine, ctx = _context(emu, plan)
    x, y = _bind(ctx)
    assert ctx.get_tensor_address("logits") == y.data_ptr()
    assert ctx.set_tensor_address("logits", 0) is True  # NvInferRuntime.h: "Pass data=nullptr to reset"
    assert ctx.get_tensor_address("logits") == 0
    assert ctx.execute_async_v3(0) is False
    assert "Address is not set for ['logits']" in capsys.readouterr().err
    assert ctx.set_tensor_address("no_such_tensor", 0) is False  # an unknown name is still an error


def test_addresses_need_256_byte_alignment(emu, plan, capsys):
    engine, ctx = _context(emu, plan)
    x, y = _bind(ctx)
    assert ctx.set_tensor_address("logits", y.data_ptr() + 64) is False
    assert "256" in capsys.readouterr().err
    assert ctx.get_tensor_address("logits") == y.data_ptr()  # the refused address did not replace the good one
    with pytest.raises(TypeError, match="incompatible"):  # size_t: pybind11 refuses a negative address
        ctx.set_tensor_address("logits", -256)
    assert ctx.execute_async_v3(0) is True


def test_stream_handles_are_checked(emu, plan, capsys, monkeypatch):
    monkeypatch.setenv("TRT_EMULATOR_MEMORY", "host")
    engine, ctx = _context(emu, plan)
    buffers = _bind(ctx)  # kept alive: the context holds only their addresses
    with pytest.raises(TypeError, match="incompatible"):
        ctx.execute_async_v3(-1)
    assert ctx.execute_async_v3(0x7F00DEAD) is False  # host memory has only the default stream
    assert "invalid resource handle" in capsys.readouterr().err
    assert ctx.execute_async_v3(0) is True
    del buffers


# ---------------------------------------------------------------------------------------------- RuntimeErrors


def test_a_failed_profile_switch_raises_runtime_error(emu, plan, capsys):
    engine, ctx = _context(emu, plan)
    assert engine.num_optimization_profiles == 2
    assert ctx.set_optimization_profile_async(1, 0) is True
    with pytest.raises(RuntimeError, match="Error in set optimization profile async"):
        ctx.set_optimization_profile_async(2, 0)
    assert "out of range" in capsys.readouterr().err
    assert ctx.active_optimization_profile == 1


@pytest.mark.parametrize("lo, opt, hi, which", [((1, 3, 32, 32), (8, 3, 32, 32), (4, 3, 32, 32), "max"),
                                                ((1, 3, 32, 32), (2, 3, 32), (4, 3, 32, 32), "opt"),
                                                ((-1, 3, 32, 32), (2, 3, 32, 32), (4, 3, 32, 32), "min")])
def test_inconsistent_profile_shapes_raise_runtime_error(emu, lo, opt, hi, which):
    profile = emu.Builder(emu.Logger()).create_optimization_profile()
    with pytest.raises(RuntimeError, match=f"Shape provided for {which} is inconsistent with other shapes"):
        profile.set_shape("input", lo, opt, hi)


def test_set_input_shape_raises_on_too_many_dimensions_and_returns_false_outside_the_profile(emu, plan):
    engine, ctx = _context(emu, plan)
    with pytest.raises(RuntimeError, match="exceeds the maximum allowed number of dimensions"):
        ctx.set_input_shape("input", (1,) * 9)
    assert ctx.set_input_shape("input", (8, 3, 32, 32)) is False  # pyCore.cpp returns setInputShape's bool


# ---------------------------------------------------------------------------------------------- plans


def _with_header(data: bytes, edit) -> bytes:
    magic = data.index(b"\n") + 1
    (n,) = struct.unpack_from("<I", data, magic)
    header = edit(json.loads(data[magic + 4:magic + 4 + n]))
    head = json.dumps(header).encode()
    return data[:magic] + struct.pack("<I", len(head)) + head + data[magic + 4 + n:]


@pytest.mark.parametrize("edit", [lambda h: {k: v for k, v in h.items() if k != "inputs"},
                                  lambda h: {**h, "outputs": [["logits", [-1, 5], "NO_SUCH_TYPE"]]},
                                  lambda h: {**h, "profiles": "not a list"}],
                         ids=["no-inputs", "bad-dtype", "bad-profiles"])
def test_a_malformed_header_with_valid_magic_and_hash_returns_none(emu, plan, capsys, edit):
    bad = _with_header(plan.read_bytes(), edit)
    assert emu.Runtime(emu.Logger()).deserialize_cuda_engine(bad) is None
    assert "Error Code 1: Serialization (corrupt plan header" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- timing cache


def test_the_timing_cache_holds_what_was_built_and_a_loaded_one_is_used(emu, tiny, tmp_path, capsys):
    other = make_onnx(tmp_path / "export" / "other.fp32.onnx", hw=(16, 16), meta=FP32_META)
    cache = tmp_path / "timing.cache"
    build_engine(tiny, tmp_path / "a", profile="1:1:1", timing_cache=cache, trt=emu, verbose=True)
    first = cache.read_bytes()
    assert "timing cache: 0 of 4 layers found" in capsys.readouterr().err  # an empty cache: nothing to reuse
    build_engine(tiny, tmp_path / "b", profile="1:1:1", timing_cache=cache, trt=emu, verbose=True)
    assert "timing cache: 4 of 4 layers found" in capsys.readouterr().err  # the file was loaded and used
    assert cache.read_bytes() == first  # nothing new was timed
    build_engine(other, tmp_path / "c", profile="1:1:1", timing_cache=cache, trt=emu, verbose=True)
    assert "timing cache: 0 of 4 layers found" in capsys.readouterr().err  # other shapes: other tactics
    grown = cache.read_bytes()
    assert len(grown) > len(first) and grown != first  # the content changes with what was built


def test_a_timing_cache_from_another_version_is_refused_unless_mismatch_is_ignored(tmp_path):
    t10, t11 = load("10"), load("11")
    data = bytes(t10.Builder(t10.Logger()).create_builder_config().create_timing_cache(b"").serialize())
    config = t11.Builder(t11.Logger()).create_builder_config()
    foreign = config.create_timing_cache(data)
    assert config.set_timing_cache(foreign, False) is False and config.set_timing_cache(foreign, True) is True


# ---------------------------------------------------------------------------------------------- perturbation


def _run(trt, plan_path, x):
    import torch

    engine, ctx = _context(trt, plan_path)
    assert engine is not None
    xin = aligned_host_tensor(x.shape, "float32")
    xin.copy_(torch.from_numpy(x))
    out = aligned_host_tensor((x.shape[0], 5), "float32")
    ctx.set_input_shape("input", x.shape)
    ctx.set_tensor_address("input", xin.data_ptr())
    ctx.set_tensor_address("logits", out.data_ptr())
    assert ctx.execute_async_v3(0)
    return out.numpy().copy()


def test_perturb_switch_makes_the_engine_compute_something_else(emu, plan, tiny, monkeypatch, capsys):
    import onnxruntime as ort

    from twins_trt.trt.verify import compare_outputs

    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32), dtype=np.float32)
    want = ort.InferenceSession(str(tiny), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_array_equal(_run(emu, plan, x), want)
    monkeypatch.setenv("TRT_EMULATOR_PERTURB", "conv")
    got = _run(emu, plan, x)
    (c,) = compare_outputs("onnxruntime", {"logits": want}, "trt (emulated)", {"logits": got}, "fp16")
    assert not c.passed and c.cosine < 0.999 and c.line().startswith("FAIL trt (emulated) vs onnxruntime [logits]")
    monkeypatch.setenv("TRT_EMULATOR_PERTURB", "no_such_layer")
    assert emu.Runtime(emu.Logger()).deserialize_cuda_engine(plan.read_bytes()) is None
    assert "TRT_EMULATOR_PERTURB names no layer 'no_such_layer'" in capsys.readouterr().err


def _qdq_onnx(path):
    """input -> Q/DQ -> Conv (DQ'd int8 weights) -> GlobalAveragePool -> Flatten -> Gemm -> logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (4, 3, 1, 1)).astype(np.int8)
    inits = [numpy_helper.from_array(np.float32(0.05), "x_scale"), numpy_helper.from_array(np.int8(0), "x_zp"),
             numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(np.float32(0.01), "w_scale"),
             numpy_helper.from_array(np.int8(0), "w_zp"),
             numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "fc_b")]
    nodes = [helper.make_node("QuantizeLinear", ["input", "x_scale", "x_zp"], ["xq"], name="x_q"),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xd"], name="x_dq"),
             helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], name="w_dq"),
             helper.make_node("Conv", ["xd", "w"], ["c"], name="conv"),
             helper.make_node("GlobalAveragePool", ["c"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                          ["batch", 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    for k, v in {**DYNAMIC_META, "twins_trt.precision": "int8"}.items():
        model.metadata_props.add(key=k, value=v)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("switch", ["qdq-scale", "qdq-scale:w_dq"])
def test_perturb_switch_drops_a_qdq_scale(emu, tmp_path, monkeypatch, switch):
    import onnxruntime as ort

    onnx_path = _qdq_onnx(tmp_path / "export" / "tiny.int8.onnx")
    plan_path = build_engine(onnx_path, tmp_path / "engines", profile="1:2:2", trt=emu).plan_path
    x = np.random.default_rng(4).standard_normal((2, 3, 32, 32), dtype=np.float32)
    want = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(_run(emu, plan_path, x), want, rtol=0, atol=1e-6)
    monkeypatch.setenv("TRT_EMULATOR_PERTURB", switch)
    got = _run(emu, plan_path, x)
    assert np.abs(got - want).max() > 0.1


# ---------------------------------------------------------------------------------------------- device memory


def test_device_memory_without_cuda_is_refused_with_a_reason(emu, plan, monkeypatch, capsys):
    from twins_trt.device import cuda_available
    from twins_trt.errors import BackendUnavailableError
    from twins_trt.trt.runner import TrtRunner

    if cuda_available():
        pytest.skip("this machine has a GPU: device memory is tested in test_trt_device_emulated.py")
    assert emu.emulated_memory() == "host"  # pinned by the conftest
    monkeypatch.setenv("TRT_EMULATOR_MEMORY", "auto")
    assert emu.emulated_memory() == "host"
    monkeypatch.setenv("TRT_EMULATOR_MEMORY", "device")
    assert emu.Runtime(emu.Logger()).deserialize_cuda_engine(plan.read_bytes()) is None
    assert "TRT_EMULATOR_MEMORY=device needs a CUDA GPU" in capsys.readouterr().err
    with pytest.raises(BackendUnavailableError):
        TrtRunner(plan, trt=emu)
    monkeypatch.setenv("TRT_EMULATOR_MEMORY", "gpu")
    assert emu.Runtime(emu.Logger()).deserialize_cuda_engine(plan.read_bytes()) is None
    assert "TRT_EMULATOR_MEMORY must be host, device or auto" in capsys.readouterr().err


def test_the_cuda_runtime_torch_brings_has_what_device_memory_calls():
    """Device memory calls libcudart through ctypes: the library torch's wheels ship is found and exports every
    function declared (cudaMemcpyAsync, cudaLaunchHostFunc, cudaPointerGetAttributes, ...). Loading it needs no
    GPU; calling it does (test_trt_device_emulated.py)."""
    import ctypes

    import torch  # noqa: F401 - torch loads its libcudart, which the emulator then finds in /proc/self/maps
    from emulator import load

    cuda = load()._cuda()
    paths = cuda.runtime_candidates()
    assert paths, "no libcudart next to torch"
    lib = cuda.declare(ctypes.CDLL(paths[0]))
    assert lib.cudaLaunchHostFunc.argtypes[1] is cuda._HOST_FN and lib.cudaMemcpyAsync.restype is ctypes.c_int
