"""How an image becomes a model input, one definition per task, beside the models they feed.

- classification (`task="cls"`): timm's eval transform for the variant: resize the short side to
  size / crop_pct with the variant's interpolation, centre-crop to the size, normalise;
- segmentation (`task="seg"`): mmseg's test pipeline at a fixed size: the whole image resized
  (stretched) to H x W bilinearly, no crop, normalised with the variant's mean and std.

Calibration, verification and evaluation all take their `Preprocessing` from `for_task`, so a
segmentor is calibrated on exactly the images it is evaluated on.
"""

from __future__ import annotations

from dataclasses import dataclass

from twins_trt.models.twins import TwinsConfig

TASKS = ("cls", "seg")


@dataclass(frozen=True)
class Preprocessing:
    interpolation: str  # bicubic | bilinear | nearest | lanczos
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float | None  # None: no crop, the whole image stretched to the size

    def to_dict(self) -> dict:
        """The manifest's `preprocessing` entry."""
        return {"interpolation": self.interpolation, "crop_pct": self.crop_pct, "mean": self.mean, "std": self.std}


def classification(cfg: TwinsConfig) -> Preprocessing:
    return Preprocessing(cfg.interpolation, tuple(cfg.mean), tuple(cfg.std), cfg.crop_pct)


def segmentation(cfg: TwinsConfig) -> Preprocessing:
    return segmentation_with(cfg.mean, cfg.std)


def segmentation_with(mean, std) -> Preprocessing:
    """The segmentation preprocessing for a checkpoint's own normalisation statistics."""
    return Preprocessing("bilinear", tuple(mean), tuple(std), None)


def for_task(cfg: TwinsConfig, task: str = "cls") -> Preprocessing:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    return segmentation(cfg) if task == "seg" else classification(cfg)


__all__ = ["TASKS", "Preprocessing", "classification", "for_task", "segmentation", "segmentation_with"]
