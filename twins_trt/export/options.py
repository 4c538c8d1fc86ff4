"""What an export is asked for (`ExportOptions`), what its artifacts are named, and what their ONNX metadata says."""

from __future__ import annotations

import os
from dataclasses import dataclass

import onnx

from twins_trt.artifacts.manifest import BatchRange
from twins_trt.data import Calibration
from twins_trt.errors import AccuracyBudgetError, CalibrationDataError, ExportError, InputSizeError
from twins_trt.export.int8 import budget  # budget.DEFAULT_INT8_BUDGET read when options are made (tests patch it)
from twins_trt.models import check_input_size, resolve_variant
from twins_trt.models.preprocessing import Preprocessing, for_task
from twins_trt.qdq import FORMATS

PRECISIONS = ("fp32", "fp16", "int8", "fp8")
QUANTIZED = tuple(FORMATS)  # int8, fp8: calibrated on images, judged on held-out ones against a budget
MIN_OPSET, INT8_MIN_OPSET = 18, 19  # ModelOpt's INT8 and FP8 Q/DQ both need opset >= 19
DEFAULT_OPSET = 20  # GELU as one Gelu node; LayerNormalization since 17
META = "twins_trt."


@dataclass
class ExportOptions:
    variant: str
    out_dir: str | os.PathLike = "export"
    weights: str | os.PathLike | None = None
    precisions: tuple[str, ...] = ("fp32",)
    batch: int = 1
    dynamic_batch: tuple[int, int, int] | None = None  # (min, opt, max)
    img_size: tuple[int, int] = (224, 224)
    dynamic_shape: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] | None = None  # (min, opt, max) HxW
    features: bool = False
    opset: int = DEFAULT_OPSET
    calib_dir: str | os.PathLike | None = None
    calib_method: str = "entropy"
    calib_size: int = 64
    calib_synthetic: bool = False
    fp16_io: bool = False  # keep fp32 inputs/outputs unless asked
    verify_samples: int = 4
    progress: bool = True
    # task "seg": a segmentor (twins_trt.models.segmentor) whose one output is "logits" (B, K, H, W)
    task: str = "cls"
    seg_head: str = "fpn"
    num_classes: int | None = None  # seg: None takes it from the checkpoint (else 150)
    seg_output: str = "input"  # seg: logits resized to the input ("input") or at stride 4 ("stride4")
    int8_budget: str | None = None  # "cosine>=0.995" / "agreement>=0.99"; None = budget.DEFAULT_INT8_BUDGET
    fp8_budget: str | None = None  # the same for FP8; None = budget.DEFAULT_INT8_BUDGET
    fp8_attention: bool = False  # FP8 Q/DQ on the attention MatMuls and Softmax too (ModelOpt's MHA placement), not
    # only on the linear layers and convolutions; measured in README "FP8", which says why linear-only is the default
    int8_sensitivity: bool = False  # always write the per-region sensitivity report
    int8_fallback: bool = True  # budget missed: search for FP16 regions (False: write all-INT8 or fail verification)
    int8_regions: str = "layer"  # sensitivity regions: one per block and sub-layer ("layer") or per kind ("kind")
    sensitivity_method: str = "local"  # how regions are ranked (int8 and fp8): one local-error pass confirmed by a
    # few leave-one-out trials ("local"), or leave-one-out for every region ("loo", slower); see export.int8.search
    holdout: float = 0.25  # share of the calibration images held out to verify INT8 on (never calibrated on)
    fp16_data_max: float = 512.0  # AutoCast's data_max: nodes whose I/O exceeds it on the images stay FP32
    trace_cache: str | os.PathLike | None = None  # folder of traced graphs; None: $TWINS_TRT_CACHE or ~/.cache; "off"

    def __post_init__(self) -> None:
        self.cfg = resolve_variant(self.variant)
        self.variant = self.cfg.name
        if self.task not in ("cls", "seg"):
            raise ValueError(f"task must be 'cls' or 'seg', got {self.task!r}")
        if self.task == "seg":
            if self.features:
                raise ValueError("--task seg exports a whole segmentor; --features is for the backbone alone")
        self.precisions = tuple(dict.fromkeys(("fp32", *self.precisions)))  # fp32 first: the others derive from it
        unknown = [p for p in self.precisions if p not in PRECISIONS]
        if unknown:
            raise ValueError(f"unknown precision(s) {unknown}; expected some of {', '.join(PRECISIONS)}")
        if self.opset < MIN_OPSET:
            raise ExportError(f"opset {self.opset} is too old: use {MIN_OPSET} or newer (the exporter writes 18 natively)")
        quantized = [p for p in QUANTIZED if p in self.precisions]
        for p in quantized:
            if self.opset < INT8_MIN_OPSET:
                raise ExportError(f"{p.upper()} needs opset >= {INT8_MIN_OPSET} for ModelOpt's Q/DQ; got --opset "
                                  f"{self.opset}")
        if self.calib_method not in ("entropy", "max"):
            raise ValueError(f"calibration method must be 'entropy' or 'max', got {self.calib_method!r}")
        if quantized and self.calib_dir is None and not self.calib_synthetic:
            raise CalibrationDataError(
                f"--{quantized[0]} needs real calibration images: pass --calib-data DIR (a folder of jpg/png/webp, "
                f"searched recursively); --calib-synthetic calibrates on random data instead, which gives a poor "
                f"{quantized[0].upper()} model"
            )
        self.budgets = {p: budget.parse_budget(getattr(self, f"{p}_budget") or budget.DEFAULT_INT8_BUDGET, p)
                        for p in QUANTIZED}
        self.budget = self.budgets["int8"]
        for p in quantized:
            b = self.budgets[p]
            if b.metric == "agreement" and self.features:
                raise AccuracyBudgetError(f"--{p}-budget {b}: a backbone (--features) has no class logits to "
                                          "agree on; use a cosine budget, e.g. cosine>=0.99")
        if self.int8_regions not in ("layer", "kind"):
            raise ValueError(f"sensitivity regions must be 'layer' or 'kind', got {self.int8_regions!r}")
        if self.sensitivity_method not in ("local", "loo"):
            raise ValueError(f"sensitivity method must be 'local' or 'loo', got {self.sensitivity_method!r}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.dynamic_batch is not None:
            lo, opt, hi = self.dynamic_batch
            if not 1 <= lo <= opt <= hi:
                raise ValueError(f"dynamic batch must satisfy 1 <= MIN <= OPT <= MAX, got {lo}:{opt}:{hi}")
        check_input_size(*self.img_size, what="--img-size")
        if self.dynamic_shape is not None:
            for hw in self.dynamic_shape:
                check_input_size(*hw, what="--dynamic-shape")
            (h0, w0), (h1, w1), (h2, w2) = self.dynamic_shape
            if not (h0 <= h1 <= h2 and w0 <= w1 <= w2):
                raise InputSizeError(f"dynamic shape must satisfy MIN <= OPT <= MAX, got {self.dynamic_shape}")
            self.img_size = self.dynamic_shape[1]

    @property
    def stem(self) -> str:
        return artifact_stem(self.variant, self.img_size, self.batch, self.dynamic_batch, self.dynamic_shape,
                             self.features, self.seg_head if self.task == "seg" else None)

    @property
    def batch_range(self) -> BatchRange:
        """The batches the artifact takes, as its manifest records them."""
        return BatchRange.profile(*self.dynamic_batch) if self.dynamic_batch else BatchRange.fixed(self.batch)

    @property
    def calibration(self) -> Calibration:
        """Where INT8's (and FP8's) images come from, as one value (a folder wins over --calib-synthetic, as the loader does)."""
        return Calibration(self.calib_dir, self.calib_synthetic and self.calib_dir is None, self.calib_size)

    @property
    def preprocessing(self) -> Preprocessing:
        """How calibration and verification images are prepared: the task's one preprocessing (for a segmentor,
        the whole image resized, no crop: exactly what twins-eval --task seg feeds it)."""
        return for_task(self.cfg, self.task)

    def segmentation(self) -> dict | None:
        """What a segmentation artifact's manifest and metadata say about its head (None for cls)."""
        if self.task != "seg":
            return None
        return {"head": self.seg_head, "num_classes": self.num_classes, "output": self.seg_output}


def artifact_stem(variant: str, img_size=(224, 224), batch: int = 1, dynamic_batch=None, dynamic_shape=None,
                  features: bool = False, seg_head: str | None = None) -> str:
    """`svt_s` for the default (224, batch 1, classifier); suffixes name every departure from it."""
    parts = [resolve_variant(variant).name]
    if features:
        parts.append("feat")
    if seg_head:
        parts.append(f"seg{seg_head}")
    if dynamic_shape is not None:
        parts.append("dynhw")
    elif tuple(img_size) != (224, 224):
        parts.append(f"{img_size[0]}x{img_size[1]}")
    if dynamic_batch is not None:
        parts.append("bdyn")
    elif batch != 1:
        parts.append(f"b{batch}")
    return "_".join(parts)


def set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    """Write `values` as the graph's twins_trt.* metadata, replacing what it had; other keys are kept."""
    keep = {p.key: p.value for p in model.metadata_props if not p.key.startswith(META)}
    keep.update({META + k: str(v) for k, v in values.items()})
    del model.metadata_props[:]
    for k, v in keep.items():
        model.metadata_props.add(key=k, value=v)


def get_metadata(model: onnx.ModelProto | str | os.PathLike) -> dict[str, str]:
    """The graph's twins_trt.* metadata, without the prefix (a path is read without its external data)."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    return {p.key[len(META):]: p.value for p in model.metadata_props if p.key.startswith(META)}


def metadata_for(opts: ExportOptions, precision: str) -> dict[str, str]:
    """What an artifact of `precision` says about itself in its metadata (`set_metadata`)."""
    meta = {"variant": opts.variant, "precision": precision, "features": str(opts.features).lower(),
            "img_size": f"{opts.img_size[0]}x{opts.img_size[1]}"}
    if opts.dynamic_batch:
        meta["batch_profile"] = ":".join(map(str, opts.dynamic_batch))
    if opts.dynamic_shape:
        meta["hw_profile"] = ":".join(f"{h}x{w}" for h, w in opts.dynamic_shape)
    if opts.segmentation():
        meta.update(task="seg", **{f"seg_{k}": v for k, v in opts.segmentation().items()})
    return meta


def windows_divide(opts: ExportOptions) -> bool:
    """True when every LSA feature map divides by its window: then the graph needs no Pad at all."""
    if opts.cfg.wss is None:
        return True
    h, w = opts.img_size
    return all((h // (4 << k)) % ws == 0 and (w // (4 << k)) % ws == 0 for k, ws in enumerate(opts.cfg.wss))
