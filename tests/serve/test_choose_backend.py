"""Which runner twins-serve picks for an artifact, and its refusals (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from twins_trt.backends import Capabilities
from twins_trt.errors import BackendUnavailableError
from twins_trt.serve.server import choose_backend
from twins_trt.triton import ModelSpec, Tensor

CPU = Capabilities(openvino_ok=True)
NO_OPENVINO = Capabilities(openvino_ok=False, openvino_why="OpenVINO is not importable here")
EMULATED_TRT = Capabilities(tensorrt_ok=True, tensorrt_why="")


def spec(kind: str, precision: str) -> ModelSpec:
    io = [Tensor("input", "TYPE_FP32", (-1, 3, 64, 64))], [Tensor("logits", "TYPE_FP32", (-1, 1000))]
    suffix = ".plan" if kind == "plan" else ".onnx"
    return ModelSpec(Path(f"svt_s.{precision}{suffix}"), kind, precision, *io, {"min": 1, "opt": 4, "max": 16},
                     f"svt_s.{precision}")


@pytest.mark.parametrize("kind, precision, wanted, caps, name", [
    ("onnx", "fp32", None, CPU, "openvino"),
    ("onnx", "int8", None, CPU, "openvino-int8"),
    ("onnx", "int8", "ort-cpu", CPU, "ort-cpu-int8"),
    ("onnx", "fp16", None, NO_OPENVINO, "ort-cpu-fp16"),
    ("plan", "fp16", None, EMULATED_TRT, "trt-fp16"),
])
def test_the_runner_follows_the_artifact(kind, precision, wanted, caps, name):
    assert choose_backend(spec(kind, precision), wanted, caps).name == name


@pytest.mark.parametrize("kind, wanted, caps, error, says", [
    ("plan", None, CPU, BackendUnavailableError, "cannot serve svt_s.fp16.plan on trt-fp16"),
    ("plan", "openvino", EMULATED_TRT, ValueError, "is a TensorRT plan: it is served by the trt backend"),
    ("onnx", "trt", CPU, ValueError, "serve its TensorRT plan (twins-build) for the trt backend"),
    ("onnx", "onnxruntime", CPU, ValueError, "unknown serving backend 'onnxruntime'; expected one of openvino"),
])
def test_refusals_say_what_would_work(kind, wanted, caps, error, says):
    with pytest.raises(error, match=says.replace("(", r"\(").replace(")", r"\)")):
        choose_backend(spec(kind, "fp16"), wanted, caps)
