"""Our build and runner code against the REAL TensorRT Python API (10.x or 11.x, one per process).

Every object our code touches is a spec_set autospec of the real class (see trt_strict.py); enum
members and flags are the real ones. Nothing here runs TensorRT itself: it proves that every call,
attribute and argument our code uses exists, with that signature, in this TensorRT version.
"""

from __future__ import annotations

import json
import os

import pytest
from onnx_tiny import DYNAMIC_META, make_onnx
from trt_strict import HostMemory, configure

from twins_trt.errors import BuildError
from twins_trt.trt.build import build_engine, network_flags, network_from_onnx_path
from twins_trt.trt.runner import bind_tensors, engine_from_bytes, enqueue, io_tensors

MAJOR = int(os.environ["TWINS_TRT_API_MAJOR"])
DEVICE = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


def test_real_module_against_stub_libraries(real_trt):
    assert real_trt.Builder.__module__.startswith("tensorrt_bindings")
    # the stubs return null: the API is all there, nothing can be created
    with pytest.raises(TypeError, match="nullptr"):
        real_trt.Builder(real_trt.Logger())


def test_network_is_strongly_typed(real_trt, strict):
    flags = network_flags(real_trt)
    if MAJOR == 10:
        assert flags == 1 << int(real_trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    else:  # 11: always strongly typed; the flag is kept but documented as ignored
        assert flags == 0
        assert "ignored" in real_trt.NetworkDefinitionCreationFlag.__doc__


def _network_io(strict, batch="batch"):
    """Make every INetworkDefinition the harness creates look like our tiny ONNX's network."""
    trt = strict._real

    def tensor(name, shape, dtype):
        t = strict.strict(trt.ITensor)
        configure(t, name=name, shape=trt.Dims(shape), dtype=dtype)
        return t

    b = -1 if batch == "batch" else batch
    inp = tensor("input", (b, 3, 32, 32), trt.DataType.FLOAT)
    out = tensor("logits", (b, 5), trt.DataType.FLOAT)

    def setup(net):
        configure(net, num_inputs=1, num_outputs=1)
        strict.on(net.get_input, lambda i: inp)
        strict.on(net.get_output, lambda i: out)

    strict.on_create("INetworkDefinition", setup)


def test_build_path(strict, tmp_path):
    trt = strict._real
    onnx_path = make_onnx(tmp_path / "export" / "svt_s.fp16.onnx", meta=DYNAMIC_META)
    _network_io(strict)
    cache = tmp_path / "timing.cache"
    res = build_engine(onnx_path, tmp_path / "engines", workspace_gib=2, opt_level=4, timing_cache=cache,
                       trt=strict, device=DEVICE)

    builder = strict.last("Builder")
    builder.create_network.assert_called_once_with(network_flags(trt))
    parser = strict.last("OnnxParser")
    parser.parse_from_file.assert_called_once_with(str(onnx_path))
    config = builder.create_builder_config.return_value
    config.set_memory_pool_limit.assert_called_once_with(trt.MemoryPoolType.WORKSPACE, 2 << 30)
    assert config.builder_optimization_level == 4
    profile = builder.create_optimization_profile.return_value
    profile.set_shape.assert_called_once_with("input", (1, 3, 32, 32), (8, 3, 32, 32), (64, 3, 32, 32))
    config.add_optimization_profile.assert_called_once_with(profile)
    config.create_timing_cache.assert_called_once_with(b"")
    config.set_timing_cache.assert_called_once_with(config.create_timing_cache.return_value, False)
    builder.build_serialized_network.assert_called_once_with(builder.create_network.return_value, config)
    # no precision flag of any kind: fp16 comes from the ONNX
    config.set_flag.assert_not_called()
    config.clear_flag.assert_not_called()

    plan = tmp_path / "engines" / "svt_s.fp16.plan"
    assert res.plan_path == plan and plan.read_bytes() == b"\0" * 64
    meta = json.loads(plan.with_name(plan.name + ".json").read_text())
    assert meta["tensorrt"] == trt.__version__ and meta["precision"] == "fp16" and meta["gpu"] == DEVICE
    assert meta["profile"] == {"input": {"min": [1, 3, 32, 32], "opt": [8, 3, 32, 32], "max": [64, 3, 32, 32]}}
    assert meta["inputs"] == [{"name": "input", "shape": [-1, 3, 32, 32], "dtype": "FLOAT"}]
    assert meta["outputs"] == [{"name": "logits", "shape": [-1, 5], "dtype": "FLOAT"}]
    assert cache.read_bytes() == b"\0" * 64  # the timing cache was serialized and saved


def test_existing_timing_cache_is_loaded_and_merged(strict, tmp_path):
    onnx_path = make_onnx(tmp_path / "x.onnx", meta=DYNAMIC_META)
    _network_io(strict)
    cache = tmp_path / "timing.cache"
    cache.write_bytes(b"old cache")
    build_engine(onnx_path, tmp_path / "engines", timing_cache=cache, trt=strict, device=DEVICE)
    config = strict.last("Builder").create_builder_config.return_value
    assert [c.args for c in config.create_timing_cache.call_args_list] == [(b"old cache",), (b"old cache",)]
    config.get_timing_cache.return_value.combine.assert_called_once()


def test_fp32_export_disables_tf32(strict, tmp_path):
    trt = strict._real
    onnx_path = make_onnx(tmp_path / "m.fp32.onnx", batch=2, meta={"twins_trt.precision": "fp32"})
    _network_io(strict, batch=2)
    build_engine(onnx_path, tmp_path / "engines", trt=strict, device=DEVICE)
    config = strict.last("Builder").create_builder_config.return_value
    config.clear_flag.assert_called_once_with(trt.BuilderFlag.TF32)
    profile = strict.last("Builder").create_optimization_profile.return_value
    profile.set_shape.assert_called_once_with("input", (2, 3, 32, 32), (2, 3, 32, 32), (2, 3, 32, 32))


def test_every_parser_error_is_reported_and_nothing_written(strict, tmp_path):
    trt = strict._real
    onnx_path = make_onnx(tmp_path / "bad.onnx", meta=DYNAMIC_META)
    errors = []
    for i, (node, op, desc) in enumerate([("conv", "Conv", "weights must be constant"),
                                           ("fc", "Gemm", "unsupported broadcast")]):
        e = strict.strict(trt.ParserError)
        strict.on(e.node, lambda i=i: i)
        strict.on(e.node_name, lambda node=node: node)
        strict.on(e.node_operator, lambda op=op: op)
        strict.on(e.desc, lambda desc=desc: desc)
        strict.on(e.code, lambda: trt.ErrorCode.UNSUPPORTED_NODE)
        errors.append(e)

    def setup(parser):
        strict.on(parser.parse_from_file, lambda path: False)
        configure(parser, num_errors=2)
        strict.on(parser.get_error, lambda i: errors[i])

    strict.on_create("OnnxParser", setup)
    with pytest.raises(BuildError) as ei:
        build_engine(onnx_path, tmp_path / "engines", trt=strict, device=DEVICE)
    msg = str(ei.value)
    assert "2 errors" in msg
    assert "node 0 'conv' (Conv): UNSUPPORTED_NODE: weights must be constant" in msg
    assert "node 1 'fc' (Gemm): UNSUPPORTED_NODE: unsupported broadcast" in msg
    assert not list((tmp_path / "engines").glob("*")), "a failed build must leave no .plan/.json"


def test_failed_build_leaves_nothing(strict, tmp_path):
    onnx_path = make_onnx(tmp_path / "m.onnx", meta=DYNAMIC_META)
    _network_io(strict)
    strict.on_create("Builder", lambda b: strict.on(b.build_serialized_network, lambda n, c: None))
    with pytest.raises(BuildError, match="failed to build"):
        build_engine(onnx_path, tmp_path / "engines", trt=strict, device=DEVICE)
    assert not list((tmp_path / "engines").glob("*"))


def test_network_from_onnx_path_returns_builder_network_parser(strict, tmp_path):
    onnx_path = make_onnx(tmp_path / "m.onnx", meta=DYNAMIC_META)
    builder, network, parser = network_from_onnx_path(onnx_path, trt=strict)
    assert isinstance(builder, strict._real.Builder) and isinstance(network, strict._real.INetworkDefinition)
    assert isinstance(parser, strict._real.OnnxParser)


class FakeDeviceTensor:
    """What bind_tensors needs from a torch CUDA tensor."""

    def __init__(self, shape, ptr):
        self.shape, self._ptr = tuple(shape), ptr

    def data_ptr(self) -> int:
        return self._ptr


def _engine(strict):
    trt = strict._real
    engine = strict.strict(trt.ICudaEngine)
    names = ["input", "logits"]
    configure(engine, num_io_tensors=2)
    strict.on(engine.get_tensor_name, lambda i: names[i])
    strict.on(engine.get_tensor_mode, lambda n: trt.TensorIOMode.INPUT if n == "input" else trt.TensorIOMode.OUTPUT)
    strict.on(engine.get_tensor_dtype, lambda n: trt.DataType.HALF if n == "input" else trt.DataType.FLOAT)
    strict.on(engine.get_tensor_shape, lambda n: trt.Dims((-1, 3, 32, 32) if n == "input" else (-1, 5)))
    strict.on(engine.get_tensor_profile_shape,
              lambda n, i: [trt.Dims((1, 3, 32, 32)), trt.Dims((8, 3, 32, 32)), trt.Dims((64, 3, 32, 32))])
    return engine


def test_runner_setup_path(strict):
    trt = strict._real
    runtime, engine, context = engine_from_bytes(b"plan", strict, trt.Logger(), "x.plan")
    runtime.deserialize_cuda_engine.assert_called_once_with(b"plan")
    engine.create_execution_context.assert_called_once_with()

    engine = _engine(strict)
    tensors = io_tensors(engine, trt)
    assert [(t.name, t.is_input, t.dtype, t.shape) for t in tensors] == [
        ("input", True, "HALF", (-1, 3, 32, 32)), ("logits", False, "FLOAT", (-1, 5))]

    context = strict.strict(trt.IExecutionContext)
    strict.on(context.get_tensor_shape, lambda n: trt.Dims((8, 5)))
    allocated = []

    def alloc(shape, dtype):
        allocated.append((shape, dtype))
        return FakeDeviceTensor(shape, 0x2000)

    outs = bind_tensors(context, tensors, {"input": FakeDeviceTensor((8, 3, 32, 32), 0x1000)}, alloc, engine)
    context.set_input_shape.assert_called_once_with("input", (8, 3, 32, 32))
    assert [c.args for c in context.set_tensor_address.call_args_list] == [("input", 0x1000), ("logits", 0x2000)]
    assert allocated == [((8, 5), "FLOAT")] and list(outs) == ["logits"]
    enqueue(context, 1234)
    context.execute_async_v3.assert_called_once_with(1234)


def test_runner_reports_the_engine_profile_on_a_bad_shape(strict):
    from twins_trt.errors import InputSizeError

    trt = strict._real
    engine = _engine(strict)
    context = strict.strict(trt.IExecutionContext)
    strict.on(context.set_input_shape, lambda n, s: False)
    with pytest.raises(InputSizeError, match=r"max \(64, 3, 32, 32\)"):
        bind_tensors(context, io_tensors(engine, trt), {"input": FakeDeviceTensor((128, 3, 32, 32), 1)},
                     lambda s, d: FakeDeviceTensor(s, 2), engine)


def test_host_memory_stand_in_matches_the_real_class(real_trt):
    assert {"nbytes", "dtype"} <= set(dir(real_trt.IHostMemory))
    assert bytes(memoryview(HostMemory(b"ab", real_trt.IHostMemory))) == b"ab"


# ---------------------------------------------------------------------------------------------
# The harness must reject what TensorRT removed. Each case: (what, call, present in 10.x, present in 11.x).


def _removed_cases(strict):
    trt = strict._real
    builder = strict.Builder(trt.Logger())
    config = builder.create_builder_config()
    network = builder.create_network(0)
    context = strict.strict(trt.IExecutionContext)
    return [
        ("BuilderFlag.FP16", lambda: config.set_flag(strict.BuilderFlag.FP16), True, False),
        ("BuilderFlag.INT8", lambda: config.set_flag(strict.BuilderFlag.INT8), True, False),
        ("config.int8_calibrator = ...", lambda: setattr(config, "int8_calibrator", None), True, False),
        ("IInt8EntropyCalibrator2", lambda: strict.IInt8EntropyCalibrator2, True, False),
        ("builder.platform_has_fast_fp16", lambda: builder.platform_has_fast_fp16, True, False),
        ("config.max_workspace_size = ...", lambda: setattr(config, "max_workspace_size", 1 << 30), False, False),
        ("builder.build_engine(network, config)", lambda: builder.build_engine(network, config), False, False),
        ("context.execute_async_v2(bindings, stream)", lambda: context.execute_async_v2([0, 0], 0), False, False),
        ("builder.create_netwrk() (misspelt)", lambda: builder.create_netwrk(0), False, False),
    ]


@pytest.mark.parametrize("index", range(9))
def test_removed_api_fails_in_the_harness(strict, index):
    what, call, in10, in11 = _removed_cases(strict)[index]
    present = in10 if MAJOR == 10 else in11
    if present:
        call()  # deprecated but still there in this version: the harness lets it through, as TensorRT would
    else:
        with pytest.raises(AttributeError):
            call()
    print(f"TensorRT {strict.__version__}: {what}: {'present (deprecated)' if present else 'AttributeError'}")


def test_autospec_without_spec_set_would_let_removed_attributes_through(real_trt):
    """Why the harness uses spec_set: plain autospec accepts assignment of attributes the class lacks."""
    from unittest import mock

    loose = mock.create_autospec(real_trt.IBuilderConfig, instance=True)
    loose.max_workspace_size = 1 << 30  # silently accepted
    tight = mock.create_autospec(real_trt.IBuilderConfig, instance=True, spec_set=True)
    with pytest.raises(AttributeError):
        tight.max_workspace_size = 1 << 30


def test_wrong_arguments_fail_like_pybind11(strict, tmp_path):
    from pathlib import Path

    trt = strict._real
    builder = strict.Builder(trt.Logger())
    config = builder.create_builder_config()
    parser = strict.OnnxParser(builder.create_network(0), trt.Logger())
    with pytest.raises(TypeError, match="incompatible"):
        config.set_timing_cache(config.create_timing_cache(b""))  # ignore_mismatch is required
    with pytest.raises(TypeError, match="incompatible"):
        parser.parse_from_file(Path("m.onnx"))  # a str, not a Path
    with pytest.raises(TypeError, match="incompatible"):
        config.set_memory_pool_limit("WORKSPACE", 1 << 30)  # the enum, not its name
    with pytest.raises(AttributeError, match="read-only"):
        strict.strict(trt.ICudaEngine).num_io_tensors = 3


def test_legacy_tensorrt8_build_code_fails_in_the_harness(strict):
    """The TensorRT 8 way of building (what the old samples do) does not survive this suite."""
    trt = strict._real

    def legacy_build():
        builder = strict.Builder(trt.Logger())
        network = builder.create_network(1 << int(strict.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
        config = builder.create_builder_config()
        config.max_workspace_size = 1 << 30
        config.set_flag(strict.BuilderFlag.FP16)
        return builder.build_engine(network, config)

    with pytest.raises(AttributeError):
        legacy_build()
