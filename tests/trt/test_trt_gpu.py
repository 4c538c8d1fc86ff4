"""On a GPU: build svt_s FP16 and INT8 engines (batch 1..64) from real exports, run them, compare with ONNX Runtime.

Skipped with a reason here (no GPU, no TensorRT runtime); CPU-side checks of the same code are in
test_trt_build_cpu.py and tests/trt/api.
"""

from __future__ import annotations

import numpy as np
import pytest

from twins_trt.trt import tensorrt_status

_ok, _why = tensorrt_status()
if not _ok:
    pytest.skip(f"needs a CUDA GPU and TensorRT >= 10: {_why}", allow_module_level=True)

pytestmark = [pytest.mark.gpu, pytest.mark.tensorrt, pytest.mark.slow]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    from twins_trt.export import ExportOptions, export_variant

    out = tmp_path_factory.mktemp("export")
    res = export_variant(ExportOptions(variant="svt_s", out_dir=out, precisions=("fp16", "int8"),
                                       dynamic_batch=(1, 8, 64), calib_synthetic=True))
    return res.artifacts


@pytest.fixture(scope="module")
def engines(exports, tmp_path_factory):
    from twins_trt.trt.build import build_engine

    out = tmp_path_factory.mktemp("engines")
    cache = out / "timing.cache"
    return {p: build_engine(exports[p], out, timing_cache=cache) for p in ("fp16", "int8")}


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_engine_metadata(engines, precision):
    meta = engines[precision].metadata
    assert meta["precision"] == precision
    assert meta["profile"]["input"]["min"][0] == 1 and meta["profile"]["input"]["max"][0] == 64


@pytest.mark.parametrize("precision, cosine", [("fp16", 0.999), ("int8", 0.99)])
@pytest.mark.parametrize("batch", [1, 8, 64])
def test_engine_matches_onnxruntime(exports, engines, precision, cosine, batch):
    from twins_trt.runners.ort_runner import OrtRunner
    from twins_trt.trt.runner import TrtRunner
    from twins_trt.trt.verify import compare_outputs, seeded_input

    x = seeded_input((batch, 3, 224, 224), seed=batch)
    with TrtRunner(engines[precision].plan_path) as trt_runner, OrtRunner(exports[precision], provider="cuda") as ort:
        got, want = trt_runner.infer({"input": x}), ort.infer({"input": x})
        # the memory figure against what was allocated: at least the I/O buffers and TensorRT's own share,
        # at most what the GPU holds
        import torch

        peak = trt_runner.peak_memory_bytes()
        assert trt_runner.io_bytes() >= x.nbytes
        assert trt_runner.io_bytes() + trt_runner.engine_bytes() <= peak <= torch.cuda.get_device_properties(0).total_memory
    for c in compare_outputs("onnxruntime", want, "trt", got, precision):
        assert c.passed and c.cosine >= cosine, c.line()


def test_cuda_graph_replay_matches_plain_enqueue(engines):
    from twins_trt.trt.runner import TrtRunner
    from twins_trt.trt.verify import seeded_input

    x = seeded_input((8, 3, 224, 224))
    with TrtRunner(engines["fp16"].plan_path) as plain, TrtRunner(engines["fp16"].plan_path, use_cuda_graph=True) as g:
        a = plain.infer({"input": x})
        g.prepare({"input": x})  # captures the graph (its warm-up enqueue fills the outputs)
        g.synchronize()
        for out in g.outputs().values():
            out.zero_()  # so only the replay can fill them again
        g.run_prepared()
        g.synchronize()
        b = {n: o.float().cpu().numpy() for n, o in g.outputs().items()}
    assert np.abs(b["logits"]).max() > 0, "the CUDA graph replay wrote nothing"
    np.testing.assert_allclose(a["logits"], b["logits"], rtol=0, atol=1e-3)


def test_twins_verify_passes(engines, exports):
    from twins_trt.cli.verify import main

    assert main([str(engines["fp16"].plan_path), "--onnx", str(exports["fp16"]), "--batch", "8"]) == 0
