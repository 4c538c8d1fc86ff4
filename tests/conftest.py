"""Shared fixtures. Expensive artifacts are built once per run and shared; nothing here needs a GPU.

The suite runs on both cores with pytest-xdist (`-n 2 --dist loadfile`: a file's tests stay on one worker,
so module-scoped fixtures are built once). Artifacts that several files need are built once per *run*,
not once per worker: `built_once` puts them under the run's shared temporary folder behind a file lock.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

# Two cores: keep torch from oversubscribing them; with two xdist workers each takes one.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, (os.cpu_count() or 1) // WORKERS))

# glibc gives every freed block over 128 KiB back to the kernel and takes fresh pages, zeroed, for the next one:
# the kernel's share was a sixth of the suite's CPU time (exports copy the weights through many 100 MB buffers).
# The processes started from here on (the xdist workers, and what they start) keep what they free instead: the
# kernel's time on the segmentor INT8 tests went 17.5 -> 8.8 s, the wall time 82 -> 74 s. A setting of the
# user's own is kept.
os.environ.setdefault("GLIBC_TUNABLES", "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295:"
                                        "glibc.malloc.top_pad=268435456")


def shared_root(tmp_path_factory) -> Path:
    """The run's temporary folder that every xdist worker sees (each worker's own base is a sub-folder)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session", autouse=True)
def run_trace_cache(tmp_path_factory) -> Path:
    """The run's own trace cache (export.trace_cache), shared by both workers and the commands they start: a model
    traced at a size once per run, as a user's re-exports are; never the user's ~/.cache."""
    folder = shared_root(tmp_path_factory) / "traces"
    os.environ["TWINS_TRT_CACHE"] = str(folder)
    return folder


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """`build(folder)` once per test run, whichever worker asks first; the others wait and reuse the folder."""
    from filelock import FileLock

    out = shared_root(tmp_path_factory) / name
    done = out.with_name(f"{name}.built")  # beside the folder: the folder holds what build wrote and nothing else
    with FileLock(f"{out}.lock"):
        if not done.is_file():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            build(out)
            done.touch()
    return out


# The files that take longest, longest first (each file runs on one worker: --dist loadfile), so the two workers
# end together. The two that read `timm_int8_fp8` lead, one per worker, each building one variant while the other
# builds the other. The shared svt_s_224 is built by the triton tests; its other readers come well after them.
LONGEST_FIRST = [
    "tests/export/test_int8_budget.py", "tests/export/test_fp8.py", "tests/export/test_export.py",
    "tests/bench/test_bench_below_bound.py", "tests/segmentation/test_seg_cli.py", "tests/segmentation/test_seg_int8.py",
    "tests/eval/test_eval.py", "tests/triton/test_triton_repo.py", "tests/bench/test_bench_resolve.py",
    "tests/segmentation/test_segmentor.py", "tests/serve/test_serve.py", "tests/models/test_models.py",
    "tests/export/test_cli.py", "tests/segmentation/test_head_widths.py", "tests/trt/test_trt_e2e_emulated.py",
]


def pytest_configure(config):
    stale = [name for name in LONGEST_FIRST if not (Path(__file__).parent.parent / name).is_file()]
    if stale:
        raise pytest.UsageError(f"tests/conftest.py: LONGEST_FIRST names files that do not exist: {stale}")
    if hasattr(config.option, "loadscopereorder"):  # xdist would order the files by their number of tests instead
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest as collected
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
        tables = folder / "sensitivity_tables.json"  # what the export printed per quantized precision, if anything
        self.sensitivity_tables: dict[str, str] = json.loads(tables.read_text()) if tables.is_file() else {}

    def manifest(self, precision: str) -> dict:
        from twins_trt.artifacts import read_manifest

        return read_manifest(self.artifacts[precision])

    def seen_as(self, precision: str) -> SimpleNamespace:
        """The export as a test of one quantized precision reads it: options, artifacts, that precision's manifest
        and sensitivity table."""
        return SimpleNamespace(options=self.options, artifacts=self.artifacts, manifest=self.manifest(precision),
                               sensitivity_table=self.sensitivity_tables.get(precision))


def _export_into(out: Path, options) -> None:
    """export_variant(options), writing what it said and its sensitivity tables beside the artifacts."""
    import warnings

    from twins_trt.export import export_variant

    said: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights (and synthetic calibration where asked), on purpose here
        res = export_variant(options, on_step=said.append)
    (out / "said.txt").write_text("\n".join(said) + "\n")
    (out / "sensitivity_tables.json").write_text(json.dumps(res.sensitivity_tables))


@pytest.fixture(scope="session")
def svt_s_224(tmp_path_factory) -> SharedExport:
    """svt_s FP32 + FP16 + INT8 at 224x224, static batch 1, random weights (seed 0), INT8 calibrated on 16 synthetic
    inputs (the distribution twins-verify checks on: cosine ~0.990, right at the INT8 bound; fewer fall below it),
    verified on 2 samples, checked on OpenVINO. Built once per run for the trt, triton and openvino tests; read only."""
    from twins_trt.export import ExportOptions

    opts = dict(variant="svt_s", precisions=("fp16", "int8"), calib_synthetic=True, calib_size=16, verify_samples=2,
                progress=False)
    folder = built_once(tmp_path_factory, "svt_s_224_fp32_fp16_int8",
                        lambda out: _export_into(out, ExportOptions(out_dir=out, **opts)))
    return SharedExport(folder, ExportOptions(out_dir=folder, **opts), opts["precisions"])


INT8_BUDGET, FP8_BUDGET = "cosine>=0.999", "cosine>=0.995"


@pytest.fixture(scope="session")
def timm_int8_fp8(tmp_path_factory, calib_photos) -> Callable[[str], SharedExport]:
    """variant -> timm's own state dict (random init, seed 0) exported once per run to FP32, INT8 under
    cosine>=0.999 (a budget all-INT8 misses: the FP16 fallback search runs) and FP8 under cosine>=0.995 (calibrated
    once: FP8 reuses INT8's scales), both sensitivity reports written; 96x96, max calibration on 16 of scikit-image's
    photographs with 4 held out. svt_s ranks its regions by the default (local) method, pcpvt_s leave-one-out.

    test_int8_budget and test_fp8 read the same exports. They ask for the variants in opposite orders, so two workers
    build the two side by side and then each reuses the other's, and one worker builds both in turn."""
    timm = pytest.importorskip("timm")
    from twins_trt import VARIANTS
    from twins_trt.export import ExportOptions

    def options(variant: str, folder: Path) -> ExportOptions:
        return ExportOptions(
            variant=variant, out_dir=folder, weights=folder / "weights.pth", precisions=("int8", "fp8"),
            calib_dir=folder / "photos", calib_size=16, calib_method="max", img_size=(96, 96), int8_regions="kind",
            int8_budget=INT8_BUDGET, fp8_budget=FP8_BUDGET, int8_sensitivity=True, verify_samples=1, progress=False,
            sensitivity_method="loo" if variant == "pcpvt_s" else "local")

    def build(variant: str, out: Path) -> None:
        shutil.copytree(calib_photos, out / "photos")
        torch.manual_seed(0)
        torch.save(timm.create_model(VARIANTS[variant].timm_name, pretrained=False).state_dict(), out / "weights.pth")
        _export_into(out, options(variant, out))

    def get(variant: str) -> SharedExport:
        folder = built_once(tmp_path_factory, f"timm_{variant}_96_int8_fp8", lambda out: build(variant, out))
        return SharedExport(folder, options(variant, folder), ("int8", "fp8"))

    return get
