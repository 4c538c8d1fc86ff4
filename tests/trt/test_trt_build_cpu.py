"""What needs no TensorRT: engine metadata and its checks, atomic writes, the hint, the CLIs' messages."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from twins_trt.errors import BackendUnavailableError, BuildError, EngineMismatchError
from twins_trt.trt import build_hint, tensorrt_status
from twins_trt.trt.build import build_engine, save_engine, try_build_after_export
from twins_trt.trt.engine_meta import check_engine_compatible, read_engine_metadata

GPU = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}


@pytest.fixture
def no_tensorrt(monkeypatch):
    """Make `import tensorrt` fail even where a tensorrt package is installed."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


def _meta(**kw):
    base = {"tensorrt": "10.16.1.11", "gpu": dict(GPU),
            "rebuild_command": "twins-build export/svt_s.fp16.onnx -o engines"}
    base.update(kw)
    return base


def test_metadata_round_trip(tmp_path):
    plan = save_engine(b"engine bytes", tmp_path / "engines" / "svt_s.fp16.plan", _meta())
    assert plan.read_bytes() == b"engine bytes"
    meta = read_engine_metadata(plan)
    assert meta == _meta()
    check_engine_compatible(meta, "10.16.1.11", GPU, plan)  # same TensorRT, same GPU: fine


def test_other_tensorrt_version_is_refused_with_the_rebuild_command():
    with pytest.raises(EngineMismatchError) as ei:
        check_engine_compatible(_meta(), "11.4.0.106", GPU, "engines/svt_s.fp16.plan")
    msg = str(ei.value)
    assert "TensorRT 10.16.1.11" in msg and "TensorRT 11.4.0.106" in msg
    assert msg.endswith("Rebuild it here with: twins-build export/svt_s.fp16.onnx -o engines")


def test_other_gpu_is_refused():
    with pytest.raises(EngineMismatchError, match=r"built for NVIDIA H100.*compute capability 9.0.*this GPU is "
                                                  r"NVIDIA A100.*compute capability 8.0.*twins-build"):
        check_engine_compatible(_meta(), "10.16.1.11", {"name": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0"})


def test_engine_without_metadata_is_refused(tmp_path):
    plan = tmp_path / "x.plan"
    plan.write_bytes(b"x")
    with pytest.raises(EngineMismatchError, match="no metadata file"):
        read_engine_metadata(plan)


def test_save_engine_is_all_or_nothing(tmp_path):
    out = tmp_path / "engines"
    with pytest.raises(TypeError):
        save_engine(b"engine", out / "m.plan", {"not json": object()})
    assert list(out.iterdir()) == []  # no .plan, no .json, no temporary files


def test_failed_build_leaves_no_plan_or_json(emu, dynamic_onnx, tmp_path, capsys):
    out = tmp_path / "engines"
    with pytest.raises(BuildError, match="failed to build"):  # the emulator refuses a profile of the wrong rank
        build_engine(dynamic_onnx, out, profile="1:4:16", trt=_BadRank(emu), device=GPU)
    assert "has rank 3, the input has rank 4" in capsys.readouterr().err
    assert list(out.iterdir()) == []


class _BadRank:
    """The emulator, with every optimization profile cut to rank 3 (a mistake TensorRT's build refuses)."""

    def __init__(self, trt):
        self._trt = trt

    def __getattr__(self, name):
        return getattr(self._trt, name)

    def Builder(self, logger):  # noqa: N802 - TensorRT's name
        builder = self._trt.Builder(logger)
        make = builder.create_optimization_profile

        def create_optimization_profile():
            profile = make()
            set_shape = profile.set_shape
            profile.set_shape = lambda name, lo, opt, hi: set_shape(name, lo[:3], opt[:3], hi[:3])
            return profile

        builder.create_optimization_profile = create_optimization_profile
        return builder


def test_successful_build_writes_plan_and_metadata(emu, dynamic_onnx, tmp_path):
    res = build_engine(dynamic_onnx, tmp_path / "engines", profile="1:4:16", trt=emu, device=GPU)
    assert res.plan_path.name == "svt_s.fp16.plan" and res.metadata_path.name == "svt_s.fp16.plan.json"
    data = res.plan_path.read_bytes()
    assert data.startswith(b"TWINS-TRT-EMULATED-PLAN") and dynamic_onnx.read_bytes() in data  # the network itself
    meta = json.loads(res.metadata_path.read_text())
    assert meta["precision"] == "fp16" and meta["variant"] == "svt_s" and meta["engine_bytes"] == len(data)
    assert meta["profile"]["input"]["max"] == [16, 3, 32, 32] and meta["emulated"] is True
    assert meta["inputs"] == [{"name": "input", "shape": [-1, 3, 32, 32], "dtype": "FLOAT"}]
    assert meta["rebuild_command"] == f"twins-build {dynamic_onnx} -o {tmp_path / 'engines'} --profile 1:4:16"
    assert len(meta["onnx_sha256"]) == len(meta["engine_sha256"]) == 64


def test_status_and_hint_without_tensorrt(no_tensorrt):
    ok, why = tensorrt_status()
    assert not ok and "TensorRT is not importable" in why and "\n" not in why
    ok, msg = try_build_after_export("export/svt_s.fp16.onnx")
    assert not ok and "\n" not in msg
    assert msg.endswith("on a GPU machine run: twins-build export/svt_s.fp16.onnx -o engines")
    assert build_hint("export/a b.onnx", "out") == "twins-build 'export/a b.onnx' -o out"


def test_twins_build_without_tensorrt_says_so_in_one_line(no_tensorrt, dynamic_onnx, tmp_path, capsys):
    from twins_trt.cli.build import main

    assert main([str(dynamic_onnx), "-o", str(tmp_path / "engines")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: twins-build needs TensorRT (>= 10) and a CUDA GPU") and "\n" not in err
    assert not (tmp_path / "engines").exists()


def test_twins_verify_without_gpu_says_so_in_one_line(no_tensorrt, tmp_path, capsys):
    from twins_trt.cli.verify import main

    plan = save_engine(b"engine bytes", tmp_path / "svt_s.fp16.plan",
                       _meta(onnx="export/svt_s.fp16.onnx", profile={"input": {"min": [1], "opt": [1], "max": [1]}}))
    assert main([str(plan)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: twins-verify needs a CUDA GPU and TensorRT") and "\n" not in err


def test_runner_without_tensorrt_raises_one_line(no_tensorrt):
    from twins_trt.trt.runner import TrtRunner

    with pytest.raises(BackendUnavailableError) as ei:
        TrtRunner("engines/svt_s.fp16.plan")
    assert "TensorRT" in str(ei.value) and "\n" not in str(ei.value)


def test_importing_the_runner_needs_neither_tensorrt_nor_cuda():
    code = ("import sys, twins_trt.trt.runner, twins_trt.trt.build, twins_trt.cli.build, "
            "twins_trt.cli.verify; assert 'tensorrt' not in sys.modules and 'tensorrt_bindings' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_no_removed_tensorrt_api_in_the_code():
    """Belt and braces beside the conformance suite: names TensorRT 11 removed never appear in our code."""
    import re
    from pathlib import Path

    import twins_trt

    banned = re.compile(r"BuilderFlag\.(FP16|INT8)|int8_calibrator|IInt8|\.max_workspace_size\b|execute_async_v2"
                        r"|builder\.build_engine\b|platform_has_fast_fp16|EXPLICIT_BATCH")
    hits = [f"{p}:{i}: {line.strip()}" for p in Path(twins_trt.__file__).parent.rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if banned.search(line)]
    assert not hits, hits


@pytest.mark.parametrize("precision, delta, passes", [("fp32", 5e-5, True), ("fp32", 5e-4, False),
                                                      ("fp16", 1e-3, True), ("int8", 0.5, False)])
def test_compare_outputs_uses_the_export_tolerances(precision, delta, passes):
    from twins_trt.trt.verify import compare_outputs

    rng = np.random.default_rng(0)
    ref = {"logits": rng.standard_normal((2, 1000)).astype(np.float32)}
    noise = delta if precision == "fp32" else delta * rng.standard_normal((2, 1000)).astype(np.float32)
    cand = {"logits": ref["logits"] + noise}
    (c,) = compare_outputs("torch-fp32", ref, "trt", cand, precision)
    assert c.passed is passes, c.line()
    assert c.line().startswith("PASS" if passes else "FAIL")
