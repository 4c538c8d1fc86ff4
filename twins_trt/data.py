"""Images in, model-ready arrays out, preprocessed as the task's one `Preprocessing` says
(`twins_trt.models.preprocessing`: timm's eval transform for classifiers, a plain resize for segmentors)."""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twins_trt.errors import CalibrationDataError
from twins_trt.models.preprocessing import Preprocessing, classification
from twins_trt.models.twins import TwinsConfig

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
_RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0, "lanczos": 1}  # PIL.Image.Resampling values


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Image files under `folder`, recursively, in a stable order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationDataError(f"image folder {folder} does not exist or is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationDataError(
            f"no images under {folder} (looked recursively for {', '.join(IMAGE_SUFFIXES)})"
        )
    return files


def preprocess(path: str | os.PathLike, prep: Preprocessing | TwinsConfig, size: tuple[int, int]) -> np.ndarray:
    """One image as CHW float32, by `prep` (a variant's config means its classification preprocessing).

    With a crop (classification): resize the short side to size/crop_pct, centre-crop to `size`, normalise,
    as timm's eval transform (resize, center crop, to tensor, normalise) with the variant's interpolation,
    crop fraction, mean and std. Without (segmentation): the whole image resized to `size`, normalised.
    """
    from PIL import Image

    if isinstance(prep, TwinsConfig):
        prep = classification(prep)
    h, w = size
    with Image.open(path) as im:
        im = im.convert("RGB")
        resample = _RESAMPLE.get(prep.interpolation, 3)
        if prep.crop_pct is None:
            im = im.resize((w, h), resample=resample)
        else:
            scale_h, scale_w = math.floor(h / prep.crop_pct), math.floor(w / prep.crop_pct)
            iw, ih = im.size
            if h == w:  # short side to scale, keep aspect
                r = scale_h / min(iw, ih)
                new = (max(scale_w, round(iw * r)), max(scale_h, round(ih * r)))
            else:
                new = (scale_w, scale_h)
            im = im.resize(new, resample=resample)
            left, top = (new[0] - w) // 2, (new[1] - h) // 2
            im = im.crop((left, top, left + w, top + h))
        arr = np.asarray(im, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


@dataclass(frozen=True)
class Calibration:
    """Where INT8 calibration images come from: a folder, synthetic random data, or nowhere (INT8 is reused only)."""

    dir: str | None = None
    synthetic: bool = False
    size: int = 16

    def __post_init__(self) -> None:
        if self.dir is not None and self.synthetic:
            raise ValueError("give calibration images (a folder) or synthetic calibration, not both")
        if self.dir is not None:
            object.__setattr__(self, "dir", str(self.dir))

    @property
    def possible(self) -> bool:
        """True when an INT8 artifact can be made (not only reused)."""
        return self.dir is not None or self.synthetic

    @property
    def source(self) -> str | None:
        """As a manifest records it: the folder, "synthetic", or None (nothing to calibrate on)."""
        return self.dir if self.dir is not None else "synthetic" if self.synthetic else None

    def mismatch(self, recorded_source: str | None) -> str | None:
        """An INT8 artifact serves a run that names a folder only when it was calibrated on that folder."""
        if self.dir is not None and recorded_source != self.dir:
            return f"calibrated on {recorded_source!r}, need {self.dir!r}"
        return None


@dataclass
class LoadedImages:
    array: np.ndarray  # (N, 3, H, W) float32
    files: list[Path]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def load_images(files: list[Path], cfg: Preprocessing | TwinsConfig, size: tuple[int, int], limit: int | None = None,
                progress: bool = True, desc: str = "images") -> LoadedImages:
    """Preprocess up to `limit` readable images; unreadable ones are skipped and counted, not fatal."""
    from tqdm import tqdm

    arrays, used, skipped = [], [], []
    want = len(files) if limit is None else min(limit, len(files))
    bar = tqdm(total=want, desc=desc, unit="img", disable=not progress, leave=False)
    for path in files:
        if len(arrays) >= want:
            break
        try:
            arrays.append(preprocess(path, cfg, size))
            used.append(path)
            bar.update(1)
        except Exception as e:  # PIL raises many kinds on corrupt files
            skipped.append((path, f"{type(e).__name__}: {e}"))
    bar.close()
    if skipped:
        log.warning("skipped %d unreadable image(s), e.g. %s (%s)", len(skipped), skipped[0][0], skipped[0][1])
    if not arrays:
        raise CalibrationDataError(
            f"none of the {len(files)} image file(s) could be read (first error: {skipped[0][1] if skipped else '?'})"
        )
    return LoadedImages(np.stack(arrays), used, skipped)


def random_inputs(n: int, size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Seeded inputs with the statistics of normalised images (zero mean, unit variance)."""
    return np.random.default_rng(seed).standard_normal((n, 3, *size), dtype=np.float32)
