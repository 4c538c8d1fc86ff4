"""Shared fixtures. Expensive artifacts are built once per run and shared; nothing here needs a GPU.

The suite runs on both cores with pytest-xdist (`-n 2 --dist loadfile`: a file's tests stay on one worker,
so module-scoped fixtures are built once). Artifacts that several files need are built once per *run*,
not once per worker: `built_once` puts them under the run's shared temporary folder behind a file lock.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# Two cores: keep torch from oversubscribing them; with two xdist workers each takes one.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, (os.cpu_count() or 1) // WORKERS))


def shared_root(tmp_path_factory) -> Path:
    """The run's temporary folder that every xdist worker sees (each worker's own base is a sub-folder)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """`build(folder)` once per test run, whichever worker asks first; the others wait and reuse the folder."""
    from filelock import FileLock

    out = shared_root(tmp_path_factory) / name
    with FileLock(f"{out}.lock"):
        if not (out / ".built").is_file():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            build(out)
            (out / ".built").touch()
    return out


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine (run on a GPU host: pytest -m gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


SAMPLE_PHOTOS = {  # class folder -> skimage.data images (real photographs shipped with scikit-image)
    "animal": ["chelsea", "cat"],
    "person": ["astronaut", "camera"],
    "object": ["coffee", "rocket", "coins"],
}


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory):
    """An ImageNet-style folder of real photographs (one sub-folder per class) plus one corrupt file."""
    skdata = pytest.importorskip("skimage.data", reason="scikit-image provides the sample photographs")
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    for cls, names in SAMPLE_PHOTOS.items():
        (root / cls).mkdir()
        for i, name in enumerate(names):
            img = Image.fromarray(getattr(skdata, name)())
            img.save(root / cls / f"{name}.{'jpg' if i % 2 == 0 else 'png'}")
    (root / "object" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


CALIBRATION_PHOTOS = [  # 24 skimage.data images: a calibration set that holds some images out (INT8 budget tests)
    "astronaut", "brick", "camera", "cat", "cell", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass", "gravel",
    "horse", "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page", "retina", "rocket", "text",
    "binary_blobs", "checkerboard", "microaneurysms",
]


@pytest.fixture(scope="session")
def calib_photos(tmp_path_factory):
    """24 of the photographs scikit-image ships, flat, as PNG (grey and binary ones as RGB)."""
    skdata = pytest.importorskip("skimage.data", reason="scikit-image provides the sample photographs")
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("skimage_photos")
    for name in CALIBRATION_PHOTOS:
        a = np.asarray(getattr(skdata, name)())
        a = a.astype(np.uint8) * 255 if a.dtype == bool else a
        Image.fromarray(a).convert("RGB").save(root / f"{name}.png")
    return root


class SharedExport:
    """A built_once export read back: its artifacts, the options that made them, what it said, its manifests."""

    def __init__(self, folder: Path, options, precisions: tuple[str, ...]) -> None:
        self.folder, self.options = folder, options
        self.artifacts = {p: folder / f"{options.stem}.{p}.onnx" for p in ("fp32", *precisions)}
        self.said = (folder / "said.txt").read_text().splitlines()

    def manifest(self, precision: str) -> dict:
        from twins_trt.artifacts import read_manifest

        return read_manifest(self.artifacts[precision])


@pytest.fixture(scope="session")
def svt_s_224(tmp_path_factory) -> SharedExport:
    """svt_s FP32 + FP16 + INT8 at 224x224, static batch 1, random weights (seed 0), INT8 calibrated on 16 synthetic
    inputs (the distribution twins-verify checks on: cosine ~0.990, right at the INT8 bound; fewer fall below it),
    verified on 2 samples, checked on OpenVINO. Built once per run for the trt, triton and openvino tests; read only."""
    import warnings

    from twins_trt.export import ExportOptions, export_variant

    opts = dict(variant="svt_s", precisions=("fp16", "int8"), calib_synthetic=True, calib_size=16, verify_samples=2,
                progress=False)

    def build(out: Path) -> None:
        said: list[str] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # random weights and synthetic calibration, on purpose here
            export_variant(ExportOptions(out_dir=out, **opts), on_step=said.append)
        (out / "said.txt").write_text("\n".join(said) + "\n")

    folder = built_once(tmp_path_factory, "svt_s_224_fp32_fp16_int8", build)

    return SharedExport(folder, ExportOptions(out_dir=folder, **opts), opts["precisions"])
