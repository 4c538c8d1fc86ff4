"""Fixtures for the twins-eval tests: the photo folder and one svt_s export shared by the whole session.

The export (fp32, fp16, int8 calibrated on the photos) lives under pytest's session base temp folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from image_folders import make_image_folder  # beside this file; pytest puts the folder on sys.path

SHARED_EXPORT = "twins-svt_s-export"


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp() / "skimage-photos"
    if not (root / "cat").is_dir():
        make_image_folder(root)
    return root


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.getbasetemp() / SHARED_EXPORT
