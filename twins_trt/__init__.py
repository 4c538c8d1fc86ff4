"""twins-trt: Twins vision transformers from PyTorch to ONNX and TensorRT, verified and benchmarked."""

from twins_trt.models import VARIANTS, TwinsConfig, create_model, list_variants, resolve_variant
from twins_trt.models.segmentor import create_segmentor

__version__ = "0.1.0"
__all__ = ["VARIANTS", "TwinsConfig", "create_model", "create_segmentor", "list_variants", "resolve_variant", "__version__"]
