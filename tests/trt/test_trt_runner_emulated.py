"""TrtRunner and twins-build executed under the TensorRT emulator: each test fails on the defect it names."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from onnx_tiny import DYNAMIC_META, make_onnx

from twins_trt.errors import BackendUnavailableError, EngineRunError, InputSizeError
from twins_trt.trt.build import build_engine
from twins_trt.trt.runner import TrtRunner

FP32_META = {**DYNAMIC_META, "twins_trt.precision": "fp32"}
X = np.random.default_rng(0).standard_normal((4, 3, 32, 32), dtype=np.float32)


@pytest.fixture
def tiny(tmp_path):
    return make_onnx(tmp_path / "export" / "tiny.fp32.onnx", meta=FP32_META)


def _reference(onnx_path, x):
    import onnxruntime as ort

    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def test_retry_after_a_rejected_shape_binds_again(emu, tiny, tmp_path):
    """prepare() used to keep the rejected buffer: a retry with the same shape skipped set_input_shape and ran
    on memory TensorRT never accepted (freed on a GPU)."""
    plan = build_engine(tiny, tmp_path / "engines", profile="1:2:4", trt=emu).plan_path
    with TrtRunner(plan, trt=emu) as r:
        too_big = np.zeros((8, 3, 32, 32), np.float32)
        for _ in range(2):
            with pytest.raises(InputSizeError):
                r.prepare({"input": too_big})
        with pytest.raises(EngineRunError, match="nothing is prepared"):
            r.run_prepared()
        np.testing.assert_array_equal(r.infer({"input": X[:2]})["logits"], _reference(tiny, X[:2]))


def test_each_batch_runs_on_the_profile_tuned_for_it(emu, tiny, tmp_path):
    res = build_engine(tiny, tmp_path / "engines", profile="1:1:4", opt_batches=[1, 4], trt=emu)
    assert [p["input"]["opt"][0] for p in res.metadata["profiles"]] == [1, 4]
    assert "--opt-batches 1,4" in res.metadata["rebuild_command"]
    with TrtRunner(res.plan_path, trt=emu) as r:
        for b, profile in [(4, 1), (1, 0), (2, 0), (4, 1)]:
            out = r.infer({"input": X[:b]})
            assert r.context.active_optimization_profile == profile, b
            np.testing.assert_array_equal(out["logits"], _reference(tiny, X[:b]))


def test_cuda_graphs_are_skipped_with_a_reason_on_the_host(emu, tiny, tmp_path):
    """No graph is involved on the host, and the runner must not claim one: it is named "trt", not "trt-graph",
    and says why. (Capture and replay run for real in test_trt_device_emulated.py, marked gpu.)"""
    plan = build_engine(tiny, tmp_path / "engines", batch=None, profile="1:1:1", trt=emu).plan_path
    with TrtRunner(plan, use_cuda_graph=True, trt=emu) as r:
        r.infer({"input": X[:1]})
        info = r.describe()
        assert r._graph is None
    assert r.device == "cpu" and info["emulated"] is True and info["cuda_graph"] is False and r.name == "trt"
    assert "CUDA graphs need a GPU" in info["cuda_graph_skipped"]


def test_run_prepared_writes_fresh_outputs_every_time(emu, tiny, tmp_path):
    """run_prepared enqueues again: zeroed outputs are filled again (no CUDA graph on the host)."""
    plan = build_engine(tiny, tmp_path / "engines", profile="1:2:2", trt=emu).plan_path
    with TrtRunner(plan, trt=emu) as r:
        r.prepare({"input": X[:2]})
        r.run_prepared()
        first = r.outputs()["logits"].clone()
        r.outputs()["logits"].zero_()
        r.run_prepared()
        r.synchronize()
        np.testing.assert_array_equal(r.outputs()["logits"].numpy(), first.numpy())
        assert np.abs(first.numpy()).max() > 0


def test_host_memory_is_not_reported_as_device_memory(emu, tiny, tmp_path):
    """The device-memory figure used to be io_bytes() + engine_bytes(), checked against that same sum. On the host
    there is no device memory to measure: the runner says None, so the bench takes the process RSS (measured).
    What stays checkable here are the parts, against the model rather than the runner: the buffers hold exactly
    the input and the logits, and the engine's weights are the ONNX's initializers. The device figure itself is
    measured (torch.cuda.max_memory_allocated) in the gpu test of test_trt_device_emulated.py."""
    plan = build_engine(tiny, tmp_path / "engines", profile="1:4:4", trt=emu).plan_path
    weights = (4 * 3 + 5 * 4 + 5) * 4  # the tiny model's float32 initializers
    with TrtRunner(plan, trt=emu) as r:
        r.infer({"input": X})
        assert r.peak_memory_bytes() is None and r.describe()["memory"] == "host"
        assert r.io_bytes() == X.nbytes + 4 * 5 * 4  # input and logits buffers, nothing else
        assert r.engine_bytes() == weights
        assert all(int(t.data_ptr()) % 256 == 0 for t in (*r._inputs.values(), *r.outputs().values()))


def test_engine_is_saved_before_the_timing_cache(emu, tiny, tmp_path, caplog):
    """A timing cache that cannot be written used to lose the finished engine (it was saved first)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache's folder should be")
    res = build_engine(tiny, tmp_path / "engines", profile="1:1:1", timing_cache=blocker / "timing.cache", trt=emu)
    assert res.plan_path.is_file() and res.metadata_path.is_file()
    assert "timing cache not saved" in caplog.text


def test_timing_cache_is_written_and_reused(emu, tiny, tmp_path, capsys):
    """Through twins-build: the cache file holds what was built, and a second build loads it (the emulator logs
    how many layers it found there; an empty or unread cache finds none). An empty cache and a full one used to
    serialize to the same bytes, so this passed even if the file was never read."""
    from twins_trt.cli.build import main

    cache = tmp_path / "timing.cache"
    empty = bytes(emu.Builder(emu.Logger()).create_builder_config().create_timing_cache(b"").serialize())
    assert main([str(tiny), "-o", str(tmp_path / "a"), "--profile", "1:1:1", "--timing-cache", str(cache), "-v"]) == 0
    first = cache.read_bytes()
    assert first.startswith(b"TWINS-TRT-EMULATED-TIMING-CACHE") and len(first) > len(empty)
    assert "timing cache: 0 of 4 layers found" in capsys.readouterr().err
    assert main([str(tiny), "-o", str(tmp_path / "b"), "--profile", "1:1:1", "--timing-cache", str(cache), "-v"]) == 0
    assert "timing cache: 4 of 4 layers found" in capsys.readouterr().err
    assert cache.read_bytes() == first


def test_engine_metadata_does_not_clobber_the_onnx_manifest(emu, tiny):
    """`twins-build export/x.onnx -o export` used to overwrite export/x.json, the ONNX manifest."""
    manifest = tiny.with_suffix(".json")
    manifest.write_text(json.dumps({"kind": "onnx", "variant": "svt_s"}))
    before = manifest.read_text()
    res = build_engine(tiny, tiny.parent, profile="1:1:1", trt=emu)
    assert manifest.read_text() == before
    assert res.metadata_path == tiny.parent / "tiny.fp32.plan.json"


def test_twins_build_cli_under_the_emulator(emu, tiny, tmp_path, capsys):
    from twins_trt.cli.build import main

    assert main([str(tiny), "-o", str(tmp_path / "engines"), "--opt-batches", "1,8"]) == 0
    out = capsys.readouterr().out
    assert "tiny.fp32.plan: fp32 engine" in out and "emulated" in out
    meta = json.loads((tmp_path / "engines" / "tiny.fp32.plan.json").read_text())
    assert [p["input"]["opt"][0] for p in meta["profiles"]] == [1, 8]


def test_status_says_emulated(emu):
    from twins_trt.trt import tensorrt_status

    ok, why = tensorrt_status()
    assert ok and "emulator" in why and "not TensorRT's" in why


def test_no_import_cycle_between_the_runner_and_the_builder():
    """trt_runner imported trt.build, which imported the runners: engine metadata now lives on its own."""
    root = Path(__file__).resolve().parents[2] / "twins_trt"

    def imports(path: Path) -> set[str]:
        tree = ast.parse(path.read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | \
               {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}

    assert "twins_trt.trt.build" not in imports(root / "trt" / "runner.py")
    assert not {m for m in imports(root / "trt" / "build.py") if m.startswith("twins_trt.runners")}
    assert not {m for m in imports(root / "trt" / "engine_meta.py") if m.startswith("twins_trt.runners.")}


# ---------------------------------------------------------------------------------------------- ort-trt label


class _Session:
    """ONNX Runtime's InferenceSession as it behaves when its TensorRT provider cannot load: it runs on CUDA."""

    def __init__(self, path, sess_options=None, providers=None):
        assert providers == ["TensorrtExecutionProvider", "CUDAExecutionProvider"], providers
        self._providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def get_providers(self):
        return list(self._providers)


def test_ort_trt_is_not_labelled_tensorrt_when_onnx_runtime_fell_back(tiny, monkeypatch):
    import onnxruntime as ort

    from twins_trt.runners.ort_runner import OrtRunner

    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", _Session)
    with pytest.raises(BackendUnavailableError, match="could not start its TensorRT provider.*runs on "
                                                      "CUDAExecutionProvider"):
        OrtRunner(tiny, provider="trt").activate()


def test_infer_returns_arrays_the_next_run_does_not_overwrite(emu, tiny, tmp_path):
    """On the host, .cpu() of an output buffer is the buffer itself: results must be copies."""
    plan = build_engine(tiny, tmp_path / "engines", profile="1:1:1", trt=emu).plan_path
    with TrtRunner(plan, trt=emu) as r:
        first = r.infer({"input": X[:1]})["logits"]
        kept = first.copy()
        r.infer({"input": X[1:2]})
    np.testing.assert_array_equal(first, kept)
