"""Runs tests/trt/api (the conformance suite) against the real TensorRT 10.x and 11.x Python APIs.

One subprocess per version, so the two binding modules never share a process. Needs
`bash tools/trt_api/install.sh` (CI runs it); skipped with a reason when it has not been run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("major", [10, 11])
def test_conformance_suite(major):
    target = ROOT / ".trt-api" / f"trt{major}"
    if not (target / "tensorrt" / "__init__.py").is_file() or not (target / "lib" / f"libnvinfer.so.{major}").is_file():
        pytest.skip(f"{target} missing: run `bash tools/trt_api/install.sh` to check code against TensorRT {major}.x")
    env = dict(os.environ, PYTHONPATH=str(target), LD_LIBRARY_PATH=str(target / "lib"),
               TWINS_TRT_API_MAJOR=str(major))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-p", "no:xdist",
                           str(ROOT / "tests" / "trt" / "api")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    report = proc.stdout + proc.stderr
    print(report)
    assert proc.returncode == 0, f"TensorRT {major}.x conformance suite failed:\n{report[-6000:]}"
    summary = report.strip().splitlines()[-1]
    assert "passed" in summary and "skipped" not in summary and "deselected" not in summary, summary
