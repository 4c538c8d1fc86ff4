"""Segmentation metrics: confusion matrix, mIoU as mmseg computes it, mask reading."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from twins_trt.errors import CalibrationDataError
from twins_trt.eval.seg import IGNORE_INDEX, confusion, miou, read_mask


def test_miou_by_hand():
    gt = np.array([[0, 0, 1, 1], [2, 2, IGNORE_INDEX, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 1]])
    conf = confusion(pred, gt, num_classes=4)
    assert conf.sum() == 7  # the ignored pixel is not counted
    m, acc, iou = miou(conf)
    # class 0: inter 1, union 3; class 1: inter 3, union 4; class 2: inter 1, union 2; class 3 absent -> NaN
    assert iou[:3] == pytest.approx([1 / 3, 3 / 4, 1 / 2])
    assert np.isnan(iou[3])
    assert m == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert acc == pytest.approx(5 / 7)


def test_perfect_prediction_scores_one():
    gt = np.random.default_rng(0).integers(0, 5, size=(16, 16))
    m, acc, _ = miou(confusion(gt, gt, 5))
    assert m == acc == 1.0


def test_mask_reduce_zero_label_and_nearest_resize(tmp_path):
    path = tmp_path / "m.png"
    Image.fromarray(np.array([[0, 1], [2, 3]], dtype=np.uint8)).save(path)
    m = read_mask(path, (4, 4), reduce_zero_label=True)
    assert m.shape == (4, 4)
    assert set(np.unique(m)) == {IGNORE_INDEX, 0, 1, 2}


def test_rgb_mask_is_refused(tmp_path):
    path = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(path)
    with pytest.raises(CalibrationDataError, match="one class index per pixel"):
        read_mask(path, (4, 4))
