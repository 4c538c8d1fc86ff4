"""Fixtures for the twins-bench tests: result documents made by hand, and one fp32 ONNX exported once."""

from __future__ import annotations

import warnings

import pytest
from bench_docs import make_doc  # beside this file; a unique module name, unlike conftest


@pytest.fixture
def doc() -> dict:
    """torch 100 ms, ort-cpu 80 ms (1.25x) at batch 1 and 8, three rounds each."""
    return make_doc({("torch", 1): [100.0, 101.0, 99.0], ("ort-cpu", 1): [80.0, 81.0, 79.0],
                     ("torch", 8): [700.0, 690.0, 710.0], ("ort-cpu", 8): [500.0, 505.0, 495.0]})


@pytest.fixture(scope="module")
def svt_export(tmp_path_factory):
    """export/svt_s.fp32.onnx (batch 1, 224x224) in a temporary folder, exported once per module (~10 s)."""
    from twins_trt.export import ExportOptions, export_variant

    out = tmp_path_factory.mktemp("export")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = export_variant(ExportOptions(variant="svt_s", out_dir=out, img_size=(224, 224), verify_samples=1,
                                           progress=False))
    return res.artifacts["fp32"]
