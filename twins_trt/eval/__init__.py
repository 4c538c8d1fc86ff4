"""twins-eval's library: every backend against PyTorch fp32, for classifiers (top-1/top-5 on an
ImageNet-style folder) and segmentors (`seg`: pixel agreement, mIoU).

    dataset     the folder, its class map, images in chunks
    results     per-backend rows and sums -> top-1/top-5, agreement, cosine (the project's one cosine)
    backends    shared names, the run's resolver and runners; each backend on its own; INT8 below the bound
    report      rows, notes, console / JSON / Markdown
    classifier  EvalOptions and evaluate(), the steps of a classifier evaluation in order
    seg         SegEvalOptions and evaluate_seg(): the --task seg side, on the same backends and resolver
"""

from twins_trt.errors import DatasetError
from twins_trt.eval.classifier import EvalOptions, evaluate
from twins_trt.eval.dataset import ImageFolder, image_folder, read_class_map
from twins_trt.eval.report import RANDOM_WEIGHTS_WARNING, EvalReport
from twins_trt.eval.results import BackendResult

__all__ = ["RANDOM_WEIGHTS_WARNING", "BackendResult", "DatasetError", "EvalOptions", "EvalReport", "ImageFolder",
           "evaluate", "image_folder", "read_class_map"]
