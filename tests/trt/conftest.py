"""Shared fixtures for the TensorRT tests: small ONNX files made with onnx.helper, and where the API wheels live."""

from __future__ import annotations

from pathlib import Path

import pytest
from onnx_tiny import DYNAMIC_META, make_onnx

ROOT = Path(__file__).resolve().parents[2]
TRT_API = ROOT / ".trt-api"


@pytest.fixture
def dynamic_onnx(tmp_path) -> Path:
    return make_onnx(tmp_path / "export" / "svt_s.fp16.onnx", meta=DYNAMIC_META)


@pytest.fixture
def static_onnx(tmp_path) -> Path:
    return make_onnx(tmp_path / "export" / "svt_s.fp32.onnx", batch=4,
                     meta={"twins_trt.variant": "svt_s", "twins_trt.precision": "fp32"})


@pytest.fixture(autouse=True)
def _emulator_memory(request, monkeypatch):
    """Tests not marked `gpu` bind host buffers: pin the emulator to host memory even on a GPU machine (where its
    default, auto, would take device pointers). `gpu` tests get the default."""
    if request.node.get_closest_marker("gpu") is None:
        monkeypatch.setenv("TRT_EMULATOR_MEMORY", "host")


@pytest.fixture
def emu():
    """The TensorRT emulator ($TRT_EMULATOR_VERSION, default 11), importable as `tensorrt` during the test."""
    from emulator import installed

    with installed() as mod:
        yield mod
