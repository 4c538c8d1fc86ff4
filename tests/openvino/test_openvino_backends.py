"""The OpenVINO backends in the shared vocabulary: names, groups, skip reasons, the runner factory."""

from __future__ import annotations

import pytest

from twins_trt.backends import BACKENDS, GROUPS, Capabilities, make_runner, parse_backends, plan_run, skip_reason
from twins_trt.runners.openvino_runner import bf16_decision, bf16_status, int8_decision

OV = ["openvino", "openvino-bf16", "openvino-fp16", "openvino-int8"]
WITH_BF16 = Capabilities(bf16=True, bf16_why="native bf16 (amx_bf16)")
NO_BF16 = Capabilities(bf16=False, bf16_why="this CPU has no native bf16 (neither avx512_bf16 nor amx_bf16 ...)")


def test_names_artifacts_and_hints():
    got = {n: (BACKENDS[n].runtime, BACKENDS[n].precision, BACKENDS[n].hint) for n in OV}
    assert got == {"openvino": ("openvino", "fp32", "f32"), "openvino-bf16": ("openvino", "fp32", "bf16"),
                   "openvino-fp16": ("openvino", "fp16", "f32"), "openvino-int8": ("openvino", "int8", "f32")}
    assert all(BACKENDS[n].needs_onnx and not BACKENDS[n].needs_engine and not BACKENDS[n].gpu_only for n in OV)
    assert set(OV) <= set(GROUPS["cpu"]) and not set(OV) & set(GROUPS["gpu"])
    assert [b.name for b in parse_backends("openvino-fp32,openvino-int8")] == ["openvino", "openvino-int8"]


def test_bf16_skip_reason_both_ways():
    assert skip_reason(BACKENDS["openvino-bf16"], WITH_BF16) is None
    why = skip_reason(BACKENDS["openvino-bf16"], NO_BF16)
    assert why.startswith("the bf16 hint needs a CPU with native bf16: this CPU has no native bf16") and "\n" not in why
    for n in ("openvino", "openvino-fp16", "openvino-int8"):  # the other OpenVINO backends need no bf16
        assert skip_reason(BACKENDS[n], NO_BF16) is None


def test_missing_openvino_skips_all_four():
    caps = Capabilities(openvino_ok=False, openvino_why="OpenVINO is not importable here (No module named 'openvino')")
    for n in OV:
        assert skip_reason(BACKENDS[n], caps) == caps.openvino_why


def test_plan_exports_what_the_openvino_backends_need():
    plan = plan_run(parse_backends("openvino,openvino-bf16,openvino-int8"), NO_BF16, can_calibrate=True)
    assert [b.name for b in plan.run] == ["torch", "openvino", "openvino-int8"]
    assert "native bf16" in plan.skipped["openvino-bf16"]
    assert plan.onnx_precisions == ["fp32", "int8"] and plan.engine_precisions == []
    plan = plan_run(parse_backends("openvino-int8"), WITH_BF16, can_calibrate=False)
    assert "--calib-data" in plan.skipped["openvino-int8"]


@pytest.mark.parametrize("caps, flags, native", [
    (("FP32", "INT8", "BF16"), {"avx512f", "avx512_bf16"}, True),  # Zen 4/5, Cooper Lake
    (("FP32", "INT8", "BF16"), {"avx512f", "amx_bf16", "amx_tile"}, True),  # Sapphire Rapids
    (("FP32", "INT8", "BF16"), set(), True),  # flags unknown (not Linux): OpenVINO's word
    (("FP32", "INT8", "BF16"), {"avx2", "avx512f"}, False),  # OpenVINO offers it, the CPU would emulate it
    (("FP32", "INT8"), {"avx2", "fma"}, False),
    (("FP32", "INT8"), {"avx512_bf16"}, False),
])
def test_bf16_decision(caps, flags, native):
    ok, why = bf16_decision(caps, frozenset(flags))
    assert ok is native and why
    if not native:
        assert "no native bf16" in why


@pytest.mark.parametrize("flags, cap, exact", [
    ({"avx2", "avx512f", "avx512_vnni"}, None, True),  # Cascade Lake and newer Xeons
    ({"avx2", "avx_vnni"}, None, True),  # Alder Lake and newer clients
    ({"avx512f", "amx_int8", "amx_tile"}, None, True),  # Sapphire Rapids
    ({"avx2", "fma"}, None, False),  # an AMD EPYC without AVX-512: vpmaddubsw saturates
    ({"avx512f", "avx512bw"}, None, False),  # Skylake-SP
    ({"avx512f", "avx512_vnni"}, "avx2", False),  # oneDNN told to stop at AVX2
    ({"avx512f", "avx512_vnni"}, "AVX512_CORE_VNNI", True),
    (set(), None, True),  # flags unknown: taken as exact
])
def test_int8_decision(flags, cap, exact):
    ok, why = int8_decision(frozenset(flags), cap)
    assert ok is exact and why
    if not exact:
        assert "VNNI" in why


def test_detected_capabilities_here():
    caps = Capabilities.detect()
    assert caps.openvino_ok and caps.openvino_why.startswith("OpenVINO ")
    ok, why = bf16_status()
    assert (caps.bf16, caps.bf16_why) == (ok, why)
    reason = skip_reason(BACKENDS["openvino-bf16"], caps)
    if caps.bf16:
        assert reason is None
    else:  # e.g. an AMD EPYC without AVX-512: the reason says so
        assert reason == f"the bf16 hint needs a CPU with native bf16: {why}" and "no native bf16" in why


def test_make_runner_passes_hint_and_threads(tmp_path):
    pytest.importorskip("openvino")
    from ov_graphs import make_classifier

    from twins_trt.runners.openvino_runner import OpenVinoRunner

    onnx = {p: make_classifier(tmp_path / f"m.{p}.onnx") for p in ("fp32", "int8")}
    r = make_runner(BACKENDS["openvino-bf16"], model=None, device="cpu", onnx=onnx, engines={}, threads=2)
    assert isinstance(r, OpenVinoRunner) and (r.name, r.precision_hint, r.threads, r.path) == \
        ("openvino-bf16", "bf16", 2, onnx["fp32"])
    r = make_runner(BACKENDS["openvino-int8"], model=None, device="cpu", onnx=onnx, engines={}, threads=1)
    assert (r.name, r.precision_hint, r.path) == ("openvino-int8", "f32", onnx["int8"])
    assert r.config() == {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
                          "INFERENCE_NUM_THREADS": 1}
