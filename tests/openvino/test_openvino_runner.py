"""OpenVinoRunner against the runner interface contract, on tiny ONNX graphs (checked against ONNX Runtime)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("openvino", reason="openvino is a regular dependency; this install lacks it")

from ov_graphs import make_classifier  # noqa: E402  (beside this file)

from twins_trt.errors import BackendUnavailableError  # noqa: E402
from twins_trt.runners import Runner  # noqa: E402
from twins_trt.runners.openvino_runner import OpenVinoRunner, bf16_status  # noqa: E402
from twins_trt.runners.ort_runner import OrtRunner  # noqa: E402


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    return make_classifier(tmp_path_factory.mktemp("ov") / "tiny.onnx")


def batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 16, 16)).astype(np.float32)


def test_infer_matches_onnx_runtime_at_every_batch(classifier):
    with OpenVinoRunner(classifier, threads=1) as ov_runner, OrtRunner(classifier, "cpu", threads=1) as ort_runner:
        assert isinstance(ov_runner, Runner)
        assert ov_runner.input_names == ["input"] and ov_runner.output_names == ["logits"]
        for n in (1, 3, 1):  # a new shape compiles once, an old one is reused
            x = batch(n, seed=n)
            got = ov_runner.infer({"input": x})
            assert set(got) == {"logits"} and got["logits"].dtype == np.float32 and got["logits"].shape == (n, 10)
            np.testing.assert_allclose(got["logits"], ort_runner.infer({"input": x})["logits"], rtol=1e-4, atol=1e-4)
        assert sorted(ov_runner._by_shape) == [(1, 3, 16, 16), (3, 3, 16, 16)]


def test_prepare_run_prepared_synchronize(classifier):
    x = batch(2)
    with OpenVinoRunner(classifier, threads=1) as r:
        with pytest.raises(RuntimeError, match="prepare"):
            r.run_prepared()
        r.prepare({"input": x})
        r.run_prepared()
        r.synchronize()
        out = r._last.request.get_output_tensor(0).data
        np.testing.assert_allclose(out, r.infer(x)["logits"], rtol=1e-6)
        assert r.peak_memory_bytes() is None  # host memory: the bench takes the process RSS


def test_unasked_thread_count_is_torchs_for_every_cpu_runtime(classifier):
    """Two processes sharing two cores must not each start a thread per core: with no count asked for, ONNX Runtime
    (runner and cpu_session) and OpenVINO take PyTorch's, so torch.set_num_threads governs all three."""
    import torch

    from twins_trt.runners.ort_runner import cpu_session

    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            with OrtRunner(classifier, "cpu") as r:
                assert r.session.get_session_options().intra_op_num_threads == n
            assert cpu_session(classifier).get_session_options().intra_op_num_threads == n
            with OpenVinoRunner(classifier) as r:
                r.infer(batch(1))
                assert r._last.compiled.get_property("INFERENCE_NUM_THREADS") == n
    finally:
        torch.set_num_threads(before)


def test_threads_stream_and_hint_reach_the_compiled_model(classifier):
    with OpenVinoRunner(classifier, threads=1) as r:
        r.infer(batch(1))
        compiled = r._last.compiled
        assert compiled.get_property("INFERENCE_NUM_THREADS") == 1
        assert compiled.get_property("NUM_STREAMS") == 1
        assert "float32" in str(compiled.get_property("INFERENCE_PRECISION_HINT"))
        d = r.describe()
    assert d["name"] == "openvino" and d["device"] == "cpu" and d["threads"] == 1 and d["precision_hint"] == "f32"
    assert d["compiled_precision_hint"] == "f32"
    rep = d["precision_report"]
    assert rep["layers_total"] == 2  # the Conv and the Gemm's MatMul
    assert rep["macs_total"] == 16 * 16 * 8 * 3 * 3 * 3 + 8 * 10
    assert rep["by_precision"]["fp32"]["layers"] == 2 and rep["meant_int8"] == 0


def test_fp16_io_is_fed_half(tmp_path):
    path = make_classifier(tmp_path / "half.onnx", fp16_io=True)
    x = batch(2)
    with OpenVinoRunner(path, threads=1) as ov_runner, OrtRunner(path, "cpu", threads=1) as ort_runner:
        got = ov_runner.infer(x)["logits"]
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, ort_runner.infer(x)["logits"], rtol=1e-2, atol=1e-2)


def test_context_manager_releases_and_reopens(classifier):
    r = OpenVinoRunner(classifier, threads=1)
    with r:
        first = r.infer(batch(1))["logits"]
    assert r._core is None and not r._by_shape
    with r:
        np.testing.assert_array_equal(r.infer(batch(1))["logits"], first)


def test_refusals(classifier, tmp_path):
    with pytest.raises(ValueError, match="precision_hint must be one of f32, bf16"):
        OpenVinoRunner(classifier, precision_hint="fp16")
    with pytest.raises(ValueError, match="threads must be >= 1"):
        OpenVinoRunner(classifier, threads=0)
    with pytest.raises(FileNotFoundError, match="twins-export"):
        OpenVinoRunner(tmp_path / "missing.onnx")
    static = make_classifier(tmp_path / "static.onnx", batch=2)
    with OpenVinoRunner(static, threads=1) as r, pytest.raises(ValueError, match=r"takes input shape \[2,3,16,16\]"):
        r.infer(np.zeros((1, 3, 8, 8), np.float32))
    with OpenVinoRunner(classifier) as r, pytest.raises(ValueError, match="one input"):
        r.infer({"input": batch(1), "other": batch(1)})


def test_bf16_runner_follows_the_machine(classifier):
    ok, why = bf16_status()
    r = OpenVinoRunner(classifier, precision_hint="bf16", threads=1)
    if not ok:
        with pytest.raises(BackendUnavailableError, match="native bf16"):
            r.activate()
        return
    with r:
        r.infer(batch(1))
        assert "bfloat16" in str(r._last.compiled.get_property("INFERENCE_PRECISION_HINT"))
        assert r.describe()["precision_report"]["by_precision"].get("bf16", {}).get("layers", 0) >= 1
