"""The API conformance suite runs only in a subprocess per TensorRT version (tests/trt/test_trt_api.py starts it).

There, PYTHONPATH points at .trt-api/trtN (the real binding wheel plus the `tensorrt` shim) and
LD_LIBRARY_PATH at its stub libraries; TWINS_TRT_API_MAJOR says which major version to expect.
In the normal test run these files are not collected, so 10.x and 11.x never share a process.
"""

from __future__ import annotations

import os

import pytest

MAJOR = os.environ.get("TWINS_TRT_API_MAJOR")
if not MAJOR:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def real_trt():
    import tensorrt as trt

    assert trt.__version__.split(".")[0] == MAJOR, (trt.__version__, MAJOR)
    return trt


@pytest.fixture
def strict(real_trt):
    from trt_strict import StrictTrt

    return StrictTrt(real_trt)
