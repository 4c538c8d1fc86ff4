"""Twins segmentors: FPN, UPerNet (mmsegmentation-compatible) and a light all-MLP head."""

from twins_trt.segmentation.heads import adaptive_avg_pool
from twins_trt.segmentation.model import HEADS, OUTPUTS, HeadConfig, TwinsSegmentor, create_segmentor

__all__ = ["HEADS", "OUTPUTS", "HeadConfig", "TwinsSegmentor", "adaptive_avg_pool", "create_segmentor"]
