"""The TensorRT runner's CUDA path, executed for real on any GPU machine, TensorRT or not.

Under the emulator in device memory (TRT_EMULATOR_MEMORY=device, the default where torch sees a GPU), the runner
allocates torch CUDA buffers, runs on its own CUDA stream (`int(stream.cuda_stream)` goes to the emulator),
copies outputs back, and captures execute_async_v3 in a CUDA graph; the emulator moves the data through the CUDA
runtime on that stream (tools/trt_emulator/tensorrt/_cuda.py). Only the computation is ONNX Runtime's, on the
host. Skipped with a reason where torch sees no GPU; the CPU-side checks of the same code are in
test_trt_emulator_fidelity.py (device memory refused without CUDA; the runtime functions it calls exist).
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx_tiny import DYNAMIC_META, make_onnx

from twins_trt.device import cuda_available

if not cuda_available():
    pytest.skip("needs a CUDA GPU (torch sees none): the emulator's device memory, CUDA streams and graphs run only "
                "there", allow_module_level=True)

pytestmark = pytest.mark.gpu

X = np.random.default_rng(0).standard_normal((4, 3, 32, 32), dtype=np.float32)


@pytest.fixture
def device_emu(emu, monkeypatch):
    monkeypatch.setenv("TRT_EMULATOR_MEMORY", "device")
    return emu


@pytest.fixture
def tiny(tmp_path):
    return make_onnx(tmp_path / "export" / "tiny.fp32.onnx", meta={**DYNAMIC_META, "twins_trt.precision": "fp32"})


def _reference(onnx_path, x):
    import onnxruntime as ort

    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_runner_buffers_streams_and_profiles_on_the_gpu(device_emu, tiny, tmp_path):
    from twins_trt.trt.build import build_engine
    from twins_trt.trt.runner import TrtRunner

    res = build_engine(tiny, tmp_path / "engines", profile="1:1:4", opt_batches=[1, 4], trt=device_emu)
    with TrtRunner(res.plan_path, trt=device_emu) as r:
        assert r.device == "cuda" and r.describe()["memory"] == "device" and r._mem.handle != 0
        for b, profile in [(4, 1), (1, 0), (2, 0), (4, 1)]:
            out = r.infer({"input": X[:b]})
            assert r.context.active_optimization_profile == profile, b
            np.testing.assert_allclose(out["logits"], _reference(tiny, X[:b]), rtol=0, atol=1e-6)
            assert all(t.is_cuda for t in r.outputs().values())
        # the device figure is measured (torch's allocator), not defined as the sum it is compared with
        import torch

        assert r.io_bytes() + r.engine_bytes() <= r.peak_memory_bytes() <= torch.cuda.get_device_properties(0).total_memory


def test_cuda_graph_capture_and_replay_recompute(device_emu, tiny, tmp_path):
    import torch

    from twins_trt.trt.build import build_engine
    from twins_trt.trt.runner import TrtRunner

    plan = build_engine(tiny, tmp_path / "engines", profile="1:2:2", trt=device_emu).plan_path
    with TrtRunner(plan, use_cuda_graph=True, trt=device_emu) as g:
        assert g.name == "trt-graph" and g.describe()["cuda_graph"] is True
        g.prepare({"input": X[:2]})  # captures (after a warm-up enqueue)
        assert isinstance(g._graph, torch.cuda.CUDAGraph)
        g.synchronize()
        for out in g.outputs().values():
            out.zero_()  # so only the replay can fill them again
        g.run_prepared()
        g.synchronize()
        first = g.outputs()["logits"].cpu().numpy().copy()
        np.testing.assert_allclose(first, _reference(tiny, X[:2]), rtol=0, atol=1e-6)
        g.prepare({"input": X[2:4]})  # same shape: new data copied in, the same graph replays
        g.run_prepared()
        g.synchronize()
        np.testing.assert_allclose(g.outputs()["logits"].cpu().numpy(), _reference(tiny, X[2:4]), rtol=0, atol=1e-6)


def test_host_memory_is_refused_in_device_mode(device_emu, tiny, tmp_path, capsys):
    import torch

    from twins_trt.trt.build import build_engine
    from twins_trt.trt.runner import aligned_host_tensor

    plan = build_engine(tiny, tmp_path / "engines", profile="1:1:1", trt=device_emu).plan_path
    engine = device_emu.Runtime(device_emu.Logger()).deserialize_cuda_engine(plan.read_bytes())
    ctx = engine.create_execution_context()
    x = aligned_host_tensor((1, 3, 32, 32), "float32").zero_()
    y = torch.empty((1, 5), device="cuda")
    ctx.set_input_shape("input", (1, 3, 32, 32))
    assert ctx.set_tensor_address("input", x.data_ptr()) and ctx.set_tensor_address("logits", y.data_ptr())
    assert ctx.execute_async_v3(torch.cuda.current_stream().cuda_stream) is False
    assert "is not device memory" in capsys.readouterr().err
