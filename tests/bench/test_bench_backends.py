"""Backend names, skip reasons and the plan of work, with capabilities made by hand (GPU logic without a GPU)."""

from __future__ import annotations

import pytest

from twins_trt.backends import (
    BACKENDS,
    GROUPS,
    Capabilities,
    parse_backends,
    parse_batches,
    plan_run,
    skip_reason,
    torch_device,
)

CPU = Capabilities(cuda=False, ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
                   tensorrt_ok=False, tensorrt_why="TensorRT is not importable here (No module named 'tensorrt')")
GPU = Capabilities(cuda=True, gpu_name="NVIDIA H100", tensorrt_ok=True, tensorrt_why="TensorRT 10.9 on NVIDIA H100",
                   ort_providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"))


def names(bs):
    return [b.name for b in bs]


def test_parse_backends_names_groups_aliases():
    assert names(parse_backends("torch, ort-cpu-fp32,ort-cpu-int8,torch")) == ["torch", "ort-cpu", "ort-cpu-int8"]
    assert names(parse_backends("cpu")) == GROUPS["cpu"]
    assert names(parse_backends("auto", cuda=False)) == GROUPS["cpu"]
    assert names(parse_backends("auto", cuda=True)) == GROUPS["gpu"]
    assert set(names(parse_backends("all"))) == set(BACKENDS)


def test_parse_backends_unknown_names_every_bad_one():
    with pytest.raises(ValueError) as e:
        parse_backends("torch,onnx,trt-int4")
    msg = str(e.value)
    assert "'onnx'" in msg and "'trt-int4'" in msg and "ort-cpu-fp16" in msg
    with pytest.raises(ValueError, match="no backend"):
        parse_backends(" , ")


def test_parse_batches():
    assert parse_batches("1,8, 64,8") == [1, 8, 64]
    for bad in ("1,x", "0", "-4", "", "1.5"):
        with pytest.raises(ValueError):
            parse_batches(bad)


@pytest.mark.parametrize("name", [n for n in BACKENDS if BACKENDS[n].gpu_only])
def test_every_gpu_backend_has_a_reason_on_a_cpu_machine(name):
    why = skip_reason(BACKENDS[name], CPU)
    assert why and "\n" not in why
    assert skip_reason(BACKENDS[name], GPU) is None


def test_cpu_backends_run_on_both():
    for n in GROUPS["cpu"]:
        if BACKENDS[n].hint == "bf16":  # needs a CPU with native bf16 (tests/openvino)
            continue
        assert skip_reason(BACKENDS[n], CPU) is None
        assert skip_reason(BACKENDS[n], GPU) is None
    assert "cuda" in skip_reason(BACKENDS["torch"], CPU, device="cuda")
    assert torch_device("auto", CPU) == "cpu" and torch_device("auto", GPU) == "cuda"


def test_reasons_name_the_missing_piece():
    assert "TensorRT is not importable" in skip_reason(BACKENDS["trt-fp16"], CPU)
    assert "CUDA only" in skip_reason(BACKENDS["torch-fp16"], CPU)
    no_ort_trt = Capabilities(cuda=True, ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
                              tensorrt_ok=True)
    assert "lacks TensorrtExecutionProvider" in skip_reason(BACKENDS["ort-trt-fp16"], no_ort_trt)


def test_plan_on_a_gpu_machine_needs_onnx_and_engines():
    plan = plan_run(parse_backends("gpu"), GPU, can_calibrate=True)
    assert names(plan.run) == GROUPS["gpu"] and not plan.skipped
    assert plan.onnx_precisions == ["fp32", "fp16", "int8", "fp8"]  # trt-fp8: the hand-made GPU builds FP8
    assert plan.engine_precisions == ["fp32", "fp16", "int8", "fp8"]


def test_plan_on_this_cpu_skips_gpu_and_exports_only_what_runs():
    plan = plan_run(parse_backends("ort-cpu,trt-fp16,trt-int8,torch-fp16"), CPU, can_calibrate=True)
    assert names(plan.run) == ["torch", "ort-cpu"]  # the torch reference is always added
    assert set(plan.skipped) == {"trt-fp16", "trt-int8", "torch-fp16"}
    assert plan.onnx_precisions == ["fp32"] and plan.engine_precisions == []


def test_plan_int8_without_calibration():
    plan = plan_run(parse_backends("torch,ort-cpu-int8"), CPU, can_calibrate=False)
    assert "--calib-data" in plan.skipped["ort-cpu-int8"]
    plan = plan_run(parse_backends("torch,ort-cpu-int8"), CPU, can_calibrate=False, int8_available=True)
    assert names(plan.run) == ["torch", "ort-cpu-int8"] and plan.onnx_precisions == ["int8"]


def test_detected_capabilities_here():
    caps = Capabilities.detect()
    if caps.cuda:
        pytest.skip("this machine has a GPU")
    for n in ("trt-fp16", "trt-int8", "ort-cuda", "ort-trt-fp16", "torch-fp16"):
        assert skip_reason(BACKENDS[n], caps)
