"""One preprocessing per task: a segmentor is calibrated on exactly the arrays it is evaluated on."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from twins_trt.data import preprocess
from twins_trt.eval.seg import preprocess_seg
from twins_trt.export.calibration import calibration_data
from twins_trt.export.options import ExportOptions
from twins_trt.models import resolve_variant
from twins_trt.models.preprocessing import classification, for_task

SIZE = (64, 64)  # square: where the classifier's rule (short side, centre crop) and a plain resize differ most


@pytest.fixture
def photos(tmp_path):
    """Two non-square images (a crop would cut them; a resize keeps all of each)."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, (w, h) in enumerate(((160, 90), (70, 130))):
        ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
        noise = rng.integers(0, 40, (h, w, 3))
        Image.fromarray(np.clip(ramp + noise, 0, 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


def test_segmentation_calibration_and_evaluation_agree(photos):
    cfg = resolve_variant("svt_s")
    opts = ExportOptions(variant="svt_s", task="seg", img_size=SIZE, calib_dir=photos, calib_size=2,
                         precisions=("fp32",), progress=False)
    assert opts.preprocessing == for_task(cfg, "seg")
    calibrated, files, skipped = calibration_data(opts)
    assert skipped == 0 and len(files) == 2
    evaluated = np.stack([preprocess_seg(f, SIZE, cfg.mean, cfg.std) for f in files])
    np.testing.assert_array_equal(calibrated, evaluated)
    # and it is the segmentation rule, not the classifier's crop: the two differ on these images
    cropped = np.stack([preprocess(f, classification(cfg), SIZE) for f in files])
    assert np.abs(cropped - evaluated).max() > 0.1


def test_classifier_calibration_keeps_the_timm_transform(photos):
    cfg = resolve_variant("svt_s")
    opts = ExportOptions(variant="svt_s", img_size=SIZE, calib_dir=photos, calib_size=2, precisions=("fp32",),
                         progress=False)
    calibrated, files, _ = calibration_data(opts)
    np.testing.assert_array_equal(calibrated, np.stack([preprocess(f, cfg, SIZE) for f in files]))
