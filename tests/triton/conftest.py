"""Fixtures for the Triton repository tests: svt_s ONNX in three precisions, a tiny dynamic-batch ONNX,
and Triton's own ModelConfig schema (from the installed tritonclient) to parse every config with.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

SHARED_EXPORT = "twins-svt_s-export"  # the eval tests export into the same folder; whoever runs first exports


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
def svt_s_onnx(tmp_path_factory) -> dict[str, Path]:
    """export/svt_s.{fp32,fp16,int8}.onnx with manifests (static batch 1)."""
    out = tmp_path_factory.getbasetemp() / SHARED_EXPORT
    paths = {p: out / f"svt_s.{p}.onnx" for p in ("fp32", "fp16", "int8")}
    if not all(p.is_file() and p.with_suffix(".json").is_file() for p in paths.values()):
        from twins_trt.export import ExportOptions, export_variant

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random weights and synthetic calibration, on purpose here
            export_variant(ExportOptions(variant="svt_s", out_dir=out, precisions=("fp16", "int8"),
                                         calib_synthetic=True, calib_size=4, progress=False))
    return paths
