"""twins-eval's library: top-1/top-5 on an ImageNet-style folder for every backend, against PyTorch fp32.

    dataset   the folder, its class map, images in chunks
    metrics   per-backend sums -> top-1/top-5, agreement, cosine (the project's one cosine)
    backends  shared names, resolver and runners; each backend on its own; INT8 below the bound
    report    rows, notes, console / JSON / Markdown
    core      EvalOptions and evaluate(), the steps in order
"""

from twins_trt.errors import DatasetError
from twins_trt.eval.core import EvalOptions, evaluate
from twins_trt.eval.dataset import ImageFolder, image_folder, read_class_map
from twins_trt.eval.metrics import BackendResult
from twins_trt.eval.report import RANDOM_WEIGHTS_WARNING, EvalReport

__all__ = ["RANDOM_WEIGHTS_WARNING", "BackendResult", "DatasetError", "EvalOptions", "EvalReport", "ImageFolder",
           "evaluate", "image_folder", "read_class_map"]
