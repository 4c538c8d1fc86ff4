"""The calibration images an INT8 export is calibrated on (and held out from), loaded one way for every caller:
twins-export, and twins-eval when it quantizes an INT8 model that missed its bound."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from twins_trt.data import find_images, load_images, random_inputs
from twins_trt.export.options import ExportOptions

SYNTHETIC_SEED = 1234


def calibration_data(opts: ExportOptions) -> tuple[np.ndarray, list[Path], int]:
    """(images, their files, how many files were skipped as unreadable) from `opts.calib_dir`, at most
    `opts.calib_size` of them preprocessed by the task's one preprocessing; without a folder (--calib-synthetic),
    `opts.calib_size` seeded random inputs and no files."""
    if opts.calib_dir is None:
        return random_inputs(opts.calib_size, opts.img_size, seed=SYNTHETIC_SEED), [], 0
    files = find_images(opts.calib_dir)
    loaded = load_images(files, opts.preprocessing, opts.img_size, limit=opts.calib_size, progress=opts.progress,
                         desc="calibration images")
    return loaded.array, loaded.files, len(loaded.skipped)
