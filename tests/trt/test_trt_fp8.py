"""FP8 engines: built strongly typed at compute capability >= 8.9, refused below it in one line, under the emulator.

The emulator declares the compute capability a test sets (TRT_EMULATOR_COMPUTE_CAPABILITY); its builder refuses a
network with FP8 Q/DQ below 8.9 in TensorRT's own words, and twins-build refuses first, naming the device and the
requirement. A tiny FP8 Q/DQ MatMul (onnx.helper, opset 19) keeps these tests to seconds; the FP8 Twins export
itself is tests/export/test_fp8.py's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from twins_trt.backends import BACKENDS, GROUPS, Capabilities, plan_run, skip_reason
from twins_trt.errors import BackendUnavailableError, BuildError
from twins_trt.trt.build import (
    build_engine,
    config_from_network,
    engine_bytes_from_network,
    network_from_onnx_path,
    try_build_after_export,
)
from twins_trt.trt.engine_meta import fp8_refusal

HOPPER, AMPERE = "9.0", "8.6"
FP8_META = {"twins_trt.variant": "svt_s", "twins_trt.precision": "fp8"}


def make_fp8_onnx(path, meta: dict[str, str] | None = None):
    """input [2,16] -> FP8 Q/DQ -> MatMul with FP8 weights (DequantizeLinear of a FLOAT8E4M3FN initializer) -> [2,8],
    as ModelOpt's FP8 PTQ writes a linear layer. ONNX Runtime opens it at ORT_ENABLE_BASIC only."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 8)).astype(np.float32)
    sw = float(np.abs(w).max() / 448)
    inits = [
        helper.make_tensor("w_fp8", TensorProto.FLOAT8E4M3FN, w.shape, (w / sw).ravel().tolist()),
        numpy_helper.from_array(np.float32(sw), "w_scale"),
        numpy_helper.from_array(np.float32(4.0 / 448), "x_scale"),
        helper.make_tensor("zp", TensorProto.FLOAT8E4M3FN, [], [0.0]),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["input", "x_scale", "zp"], ["xq"], name="x_q"),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "zp"], ["xd"], name="x_dq"),
        helper.make_node("DequantizeLinear", ["w_fp8", "w_scale", "zp"], ["wd"], name="w_dq"),
        helper.make_node("MatMul", ["xd", "wd"], ["logits"], name="fc"),
    ]
    graph = helper.make_graph(nodes, "fp8", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [2, 16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [2, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    for k, v in (meta or {}).items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def fp8_onnx(tmp_path):
    return make_fp8_onnx(tmp_path / "export" / "svt_s.fp8.onnx", FP8_META)


@pytest.fixture
def at(monkeypatch):
    """Set the emulated device's compute capability."""
    return lambda cc: monkeypatch.setenv("TRT_EMULATOR_COMPUTE_CAPABILITY", cc)


def test_emulator_declares_the_compute_capability_a_test_sets(emu, at, monkeypatch):
    monkeypatch.delenv("TRT_EMULATOR_COMPUTE_CAPABILITY", raising=False)
    assert emu.emulated_device()["compute_capability"] == "0.0"  # not a GPU unless told
    at(HOPPER)
    assert emu.emulated_device()["compute_capability"] == "9.0"
    at("hopper")
    with pytest.raises(ValueError, match="MAJOR.MINOR"):
        emu.emulated_device()


def test_fp8_engine_builds_at_9_0_and_computes_what_onnx_runtime_does(emu, at, fp8_onnx, tmp_path):
    at(HOPPER)
    result = build_engine(fp8_onnx, tmp_path / "engines", trt=emu)
    meta = json.loads(result.metadata_path.read_text())
    assert meta["precision"] == "fp8" and meta["gpu"]["compute_capability"] == "9.0"
    assert meta["builder"]["strongly_typed"] is True and meta["emulated"] is True
    from twins_trt.runners.ort_runner import cpu_session
    from twins_trt.trt.runner import TrtRunner

    x = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
    with TrtRunner(result.plan_path, trt=emu) as r:
        got = r.infer({"input": x})["logits"]
    want = cpu_session(fp8_onnx).run(None, {"input": x})[0]  # the one helper picks ORT_ENABLE_BASIC for FP8
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_emulator_builder_itself_refuses_fp8_below_8_9_in_tensorrts_words(emu, at, fp8_onnx, capsys):
    """Past twins-build's own check, the emulated builder still refuses (as TensorRT does on an A6000, SM 8.6)."""
    at(AMPERE)
    builder, network, _ = network_from_onnx_path(fp8_onnx, trt=emu)
    config = config_from_network(builder, network, [], trt=emu)  # static input: no profile needed
    with pytest.raises(BuildError, match="failed to build"):
        engine_bytes_from_network(builder, network, config)
    assert "Networks with FP8 Q/DQ layers require hardware with FP8 support." in capsys.readouterr().err


def test_twins_build_refuses_fp8_at_8_6_in_one_line(emu, at, fp8_onnx, tmp_path, capsys):
    from twins_trt.cli import build as cli

    at(AMPERE)
    assert cli.main([str(fp8_onnx), "-o", str(tmp_path / "engines")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: twins-build refuses svt_s.fp8.onnx: ")
    assert "compute capability >= 8.9" in err and "TensorRT emulator (host CPU) has 8.6" in err
    assert not (tmp_path / "engines" / "svt_s.fp8.plan").exists()


def test_an_export_on_an_old_gpu_says_why_no_fp8_engine_was_built(emu, at, fp8_onnx, tmp_path):
    at(AMPERE)
    built, line = try_build_after_export(fp8_onnx, tmp_path / "engines", trt=emu)
    assert not built and line.startswith("no TensorRT engine built: ") and "compute capability >= 8.9" in line
    at(HOPPER)
    assert try_build_after_export(fp8_onnx, tmp_path / "engines", trt=emu)[0]


def test_fp8_refusal_names_the_device_and_the_requirement():
    assert fp8_refusal({"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}) is None
    assert fp8_refusal({"name": "NVIDIA L40S", "compute_capability": "8.9"}) is None
    assert fp8_refusal({"name": "NVIDIA B200", "compute_capability": "10.0"}) is None
    why = fp8_refusal({"name": "NVIDIA A100-SXM4-80GB", "compute_capability": "8.0"})
    assert "NVIDIA A100-SXM4-80GB has 8.0" in why and ">= 8.9" in why


def test_trt_fp8_is_in_the_vocabulary_with_a_reason_where_it_cannot_run():
    assert "trt-fp8" in GROUPS["gpu"] and BACKENDS["trt-fp8"].precision == "fp8"
    assert {"ort-cpu-fp8", "openvino-fp8"} <= set(BACKENDS) and "ort-cpu-fp8" not in GROUPS["cpu"]
    ampere = Capabilities(cuda=True, gpu_name="NVIDIA A100", tensorrt_ok=True, tensorrt_why="TensorRT 10.16",
                          fp8_refused=fp8_refusal({"name": "NVIDIA A100", "compute_capability": "8.0"}))
    assert "compute capability >= 8.9" in skip_reason(BACKENDS["trt-fp8"], ampere)
    assert skip_reason(BACKENDS["trt-fp16"], ampere) is None
    plan = plan_run([BACKENDS["trt-fp8"], BACKENDS["trt-fp16"]], ampere, can_calibrate=True)
    assert [b.name for b in plan.run] == ["torch", "trt-fp16"] and "8.9" in plan.skipped["trt-fp8"]
    assert "FP8 needs a calibrated ONNX" in plan_run([BACKENDS["ort-cpu-fp8"]], Capabilities(),
                                                     can_calibrate=False).skipped["ort-cpu-fp8"]


def test_detected_capabilities_carry_the_emulated_devices_fp8_refusal(emu, at):
    from emulator import installed

    at(AMPERE)
    with installed():
        caps = Capabilities.detect()
    assert caps.tensorrt_ok and "has 8.6" in skip_reason(BACKENDS["trt-fp8"], caps)
    at(HOPPER)
    with installed():
        assert skip_reason(BACKENDS["trt-fp8"], Capabilities.detect()) is None


def test_build_refuses_before_anything_is_written_even_without_metadata(emu, at, tmp_path):
    """The graph's FP8 Q/DQ decide, not only the metadata: a foreign FP8 ONNX is refused too."""
    bare = make_fp8_onnx(tmp_path / "foreign.onnx")
    at(AMPERE)
    with pytest.raises(BackendUnavailableError, match="compute capability >= 8.9"):
        build_engine(bare, tmp_path / "engines", trt=emu)
    assert not (tmp_path / "engines").exists() or not any((tmp_path / "engines").iterdir())


# ---------------------------------------------------------------------------------------------- bench and eval rows


@pytest.fixture
def tiny_folder(tmp_path):
    """Two classes of one photograph each (scikit-image's), enough for a reference row."""
    skdata = pytest.importorskip("skimage.data", reason="scikit-image provides the sample photographs")
    from PIL import Image

    for cls, name in (("cat", "chelsea"), ("rocket", "rocket")):
        (tmp_path / "data" / cls).mkdir(parents=True)
        Image.fromarray(getattr(skdata, name)()).save(tmp_path / "data" / cls / f"{name}.png")
    return tmp_path / "data"


def test_eval_gives_trt_fp8_a_reason_row_on_a_gpu_without_fp8(emu, at, tiny_folder, tmp_path, capsys):
    from twins_trt.cli.eval import main

    at(AMPERE)
    rc = main(["--variant", "svt_s", "--data", str(tiny_folder), "--backends", "trt-fp8", "--limit", "1",
               "--export-dir", str(tmp_path / "export"), "-o", str(tmp_path / "out"), "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 2 and "none of the requested backends could be evaluated: trt-fp8: " in err
    rep = json.loads((tmp_path / "out" / "svt_s.eval.json").read_text())
    rows = {b["name"]: b for b in rep["backends"]}
    assert list(rows) == ["torch", "trt-fp8"] and rows["torch"]["status"] == "ok"
    assert rows["trt-fp8"]["status"] == "skipped" and "compute capability >= 8.9" in json.dumps(rows["trt-fp8"])
    assert "trt-fp8 skipped:" in out
    assert not list((tmp_path / "export").glob("*.fp8.onnx"))  # refused before anything was exported


def test_bench_gives_trt_fp8_a_reason_row_on_a_gpu_without_fp8(emu, at, tmp_path, capsys):
    from twins_trt.cli.bench import main

    at(AMPERE)
    rc = main(["--variant", "svt_s", "--backends", "trt-fp8", "--batch", "1", "--warmup", "1", "--iters", "1",
               "--rounds", "1", "--threads", "1", "--img-size", "64", "--export-dir", str(tmp_path / "export"),
               "-o", str(tmp_path / "out"), "--name", "fp8", "-q"])
    out = capsys.readouterr().out
    assert rc == 0
    doc = json.loads((tmp_path / "out" / "fp8.json").read_text())
    assert [r["backend"] for r in doc["results"]] == ["torch"]
    (row,) = [s for s in doc["skipped"] if s["backend"] == "trt-fp8"]
    assert "compute capability >= 8.9" in row["reason"] and "has 8.6" in row["reason"]
    assert "skipped: svt_s trt-fp8: " in out
