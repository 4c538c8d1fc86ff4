"""An svt_s artifact small enough to serve in a test: FP32, 64 px, dynamic batch 1:4:16, exported once per run."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

pytest.importorskip("pytriton", reason="twins-serve needs the serve extra: pip install -e '.[serve]'")

STEM = "svt_s_64x64_bdyn.fp32"


@pytest.fixture(scope="session")
def svt_s_served_onnx(tmp_path_factory) -> Path:
    """export/svt_s_64x64_bdyn.fp32.onnx with its manifest (one export per run, whichever xdist worker asks first)."""
    from filelock import FileLock

    if os.environ.get("TWINS_SERVE_TEST_ONNX"):  # an export made the same way, reused while developing
        return Path(os.environ["TWINS_SERVE_TEST_ONNX"])
    base = tmp_path_factory.getbasetemp()
    out = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "twins-svt_s-64-bdyn-export"
    path = out / f"{STEM}.onnx"
    with FileLock(f"{out}.lock"):
        if not (path.is_file() and path.with_suffix(".json").is_file()):
            from twins_trt.export import ExportOptions, export_variant

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # random weights, on purpose here
                export_variant(ExportOptions(variant="svt_s", out_dir=out, img_size=(64, 64), dynamic_batch=(1, 4, 16),
                                             verify_samples=1, progress=False))
    assert path.is_file(), sorted(p.name for p in out.iterdir())
    return path
