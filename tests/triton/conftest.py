"""Fixtures for the Triton repository tests: svt_s ONNX in three precisions, a tiny dynamic-batch ONNX,
and Triton's own ModelConfig schema (from the installed tritonclient) to parse every config with.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def pb2():
    from twins_trt.triton import model_config_pb2

    module = model_config_pb2()
    if module is None:
        pytest.skip("tritonclient (Triton's model_config.proto) is not installed: pip install tritonclient")
    assert module.ModelConfig.DESCRIPTOR.full_name == "inference.ModelConfig"
    return module


@pytest.fixture(scope="session")
def parse(pb2):
    from google.protobuf import text_format

    return lambda path: text_format.Parse(Path(path).read_text(), pb2.ModelConfig())


@pytest.fixture(scope="session")
def svt_s_onnx(svt_s_224) -> dict[str, Path]:
    """svt_s.{fp32,fp16,int8}.onnx with manifests (static batch 1): the run's shared export (tests/conftest.py)."""
    return svt_s_224.artifacts
