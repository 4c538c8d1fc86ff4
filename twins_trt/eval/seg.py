"""Segmentation evaluation (`twins-eval --task seg`): pixel agreement with PyTorch FP32, and mIoU.

Every backend runs the same preprocessed images: the task's one preprocessing
(`models.preprocessing.for_task(cfg, "seg")`: resized to one H x W bilinearly, normalised with the
variant's mean/std). Backends are the project's vocabulary (`twins_trt.backends`; former names such
as ``ort-fp32`` still work and name their row as given), their runners come from the one factory
and their ONNX from the one resolver, which only reuses here: a missing segmentor export is a
skipped row with the twins-export command that makes it. Per backend:
- agreement: the share of pixels whose argmax class equals PyTorch FP32's (meaningful with random
  weights too);
- with ground-truth masks (a folder of PNGs named like the images, one class index per pixel,
  ``ignore_index`` skipped; resized nearest to the same H x W): mIoU (mean over classes that occur
  in prediction or truth, as mmseg's nanmean) and pixel accuracy (mmseg's aAcc).
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from twins_trt import artifacts
from twins_trt.artifacts.resolve import Request, Resolver
from twins_trt.backends import ALIASES, Capabilities, torch_device
from twins_trt.data import find_images, preprocess
from twins_trt.errors import BackendUnavailableError, CalibrationDataError
from twins_trt.eval.backends import Slot, close, eval_backends, skip_unrunnable, start_runner
from twins_trt.eval.results import Row
from twins_trt.models import resolve_variant
from twins_trt.models.preprocessing import for_task, segmentation_with
from twins_trt.runners import INPUT_NAME

log = logging.getLogger(__name__)

IGNORE_INDEX = 255
EXPORT_FLAGS = {"fp32": "", "fp16": " --fp16", "int8": " --int8 --calib-data DIR"}


def preprocess_seg(path: str | os.PathLike, size: tuple[int, int], mean, std) -> np.ndarray:
    """`data.preprocess` with the segmentation preprocessing for this mean/std: CHW float32."""
    return preprocess(path, segmentation_with(mean, std), size)


def read_mask(path: str | os.PathLike, size: tuple[int, int], reduce_zero_label: bool = False) -> np.ndarray:
    """Class index per pixel (H, W) int64, resized nearest; reduce_zero_label: 0 -> ignore, k -> k-1 (ADE20K)."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("L", "P", "I", "I;16"):
            raise CalibrationDataError(f"mask {path} has mode {im.mode}; expected one class index per pixel (L or P PNG)")
        m = np.asarray(im.resize((size[1], size[0]), resample=Image.Resampling.NEAREST)).astype(np.int64)
    if reduce_zero_label:
        m = np.where(m == 0, IGNORE_INDEX, m - 1)
    return m


def confusion(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(K, K) counts, rows = truth, columns = prediction, over pixels whose truth is a valid class."""
    valid = (gt != ignore_index) & (gt >= 0) & (gt < num_classes)
    idx = gt[valid] * num_classes + pred[valid]
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def miou(conf: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(mIoU, pixel accuracy, per-class IoU with NaN where a class is absent from both)."""
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
    total = conf.sum()
    return (float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            float(inter.sum() / total) if total else float("nan"), iou)


@dataclass
class SegBackendResult(Row):
    images: int = 0
    pixels: int = 0
    agree: int = 0
    seconds: float = 0.0
    miou: float | None = None
    pixel_accuracy: float | None = None

    @property
    def agreement(self) -> float | None:
        return self.agree / self.pixels if self.pixels else None


def row_names(text: str | Sequence[str]) -> dict[str, str]:
    """Canonical backend -> the name its row is reported under: as the user spelt it when that is a former name."""
    tokens = text.split(",") if isinstance(text, str) else text
    out: dict[str, str] = {}
    for tok in (t.strip().lower() for t in tokens):
        if tok in ALIASES:
            out.setdefault(ALIASES[tok], tok)
    return out


@dataclass
class SegEvalOptions:
    variant: str
    data: str | os.PathLike
    masks: str | os.PathLike | None = None
    head: str = "fpn"
    num_classes: int | None = None
    weights: str | None = None
    size: tuple[int, int] = (512, 512)
    backends: str | Sequence[str] = "torch,ort-cpu"  # twins-bench's names and groups; torch is always the reference
    export_dir: str = "export"
    limit: int | None = None
    reduce_zero_label: bool = False
    threads: int | None = None
    device: str = "auto"  # PyTorch backends: auto (cuda when visible) | cpu | cuda
    out_dir: str | os.PathLike | None = "eval"
    progress: bool = True
    caps: Capabilities | None = field(default=None, repr=False)  # what this machine offers (None: detect)

    def __post_init__(self) -> None:
        self.cfg = resolve_variant(self.variant)
        self.variant = self.cfg.name
        self.caps = self.caps or Capabilities.detect()
        self.backend_list = eval_backends(self.backends, self.caps.cuda)
        self.names = row_names(self.backends)


def _mask_for(image: Path, masks: Path) -> Path | None:
    for suffix in (".png", image.suffix):
        p = masks / (image.stem + suffix)
        if p.is_file():
            return p
    return None


def open_seg_slots(opts: SegEvalOptions, model, k: int, say: Callable[[str], None]) -> list[Slot]:
    """A Slot per backend, the reference first: runnable ones with an active runner, the rest with their reason."""
    slots = [Slot(b, SegBackendResult(opts.names.get(b.name, b.name))) for b in opts.backend_list]
    live = skip_unrunnable(slots, opts.caps, opts.device)
    resolver = Resolver(Request(opts.variant, (1,), tuple(opts.size), opts.weights, task="seg", seg_head=opts.head,
                                num_classes=k, seg_output="input", export_dir=str(opts.export_dir)),
                        say=say, progress=opts.progress, exportable=())  # reused only: exporting is twins-export's
    onnx = resolver.onnx(list(dict.fromkeys(s.backend.precision for s in live if s.backend.needs_onnx)))
    device = torch_device(opts.device, opts.caps)
    for s in live:
        b, r = s.backend, s.result
        if b.needs_engine:
            r.drop("skipped", "twins-eval --task seg builds no TensorRT engine (ort-trt runs the ONNX on TensorRT)")
        elif b.needs_onnx and b.precision not in onnx:
            h, w = opts.size
            r.drop("skipped", f"no {b.precision} ONNX of the {opts.head} segmentor for {h}x{w} in {opts.export_dir}: "
                              f"twins-export --task seg --seg-head {opts.head} --num-classes {k} --img-size {h}x{w}"
                              f"{EXPORT_FLAGS[b.precision]}")
        else:
            r.artifact = str(onnx[b.precision]) if b.needs_onnx else None
            start_runner(s, model=model, device=device, onnx=onnx, engines={}, threads=opts.threads)
    for s in slots:
        if not s.result.ok:
            say(f"{s.result.name}: {s.result.status} ({s.result.reason})")
    if not slots[0].result.ok:
        raise BackendUnavailableError(f"the PyTorch fp32 reference cannot run: {slots[0].result.reason}")
    return slots


def evaluate_seg(opts: SegEvalOptions, say: Callable[[str], None] | None = None) -> dict:
    """Run every backend over the folder; returns the report document (also written under out_dir)."""
    from tqdm import tqdm

    from twins_trt.models import RandomWeightsWarning
    from twins_trt.models.segmentor import create_segmentor

    say = say or log.info
    files = find_images(opts.data)[: opts.limit]
    masks = Path(opts.masks) if opts.masks else None
    if masks is not None and not masks.is_dir():
        raise CalibrationDataError(f"mask folder {masks} does not exist (give PNGs named like the images)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        model = create_segmentor(opts.variant, opts.head, opts.num_classes, opts.weights, "input", seed=0)
    k = model.num_classes
    prep = for_task(opts.cfg, "seg")
    slots = open_seg_slots(opts, model, k, say)
    ref = slots[0]
    confs = {id(s): np.zeros((k, k), np.int64) for s in slots}
    with_gt = 0
    skipped: list[tuple[str, str]] = []
    try:
        for f in tqdm(files, desc=f"eval seg {opts.variant}", unit="img", disable=not opts.progress):
            try:
                x = preprocess(f, prep, opts.size)[None]
            except Exception as e:  # PIL raises many kinds on corrupt files
                skipped.append((str(f), f"{type(e).__name__}: {e}"))
                continue
            gt = None
            if masks is not None:
                mp = _mask_for(f, masks)
                if mp is not None:
                    gt = read_mask(mp, opts.size, opts.reduce_zero_label)
                    with_gt += 1
            preds: dict[int, tuple[Slot, np.ndarray]] = {}
            for s in slots:
                if not s.result.ok:
                    continue
                t0 = time.perf_counter()
                try:
                    preds[id(s)] = s, s.runner.infer({INPUT_NAME: x})["logits"].argmax(1)[0]
                except Exception as e:  # a backend failing must not hide the others' results
                    if s is ref:
                        raise
                    s.result.drop("failed", f"{type(e).__name__}: {e}")
                    continue
                s.result.seconds += time.perf_counter() - t0
            truth = preds[id(ref)][1]
            for s, pred in preds.values():
                res = s.result
                res.images += 1
                res.pixels += pred.size
                res.agree += int((pred == truth).sum())
                if gt is not None:
                    confs[id(s)] += confusion(pred, gt, k)
    finally:
        close(slots)
    if ref.result.images == 0:
        raise CalibrationDataError(f"none of the {len(files)} image(s) under {opts.data} could be read")
    if with_gt:
        for s in slots:
            if s.result.images:
                s.result.miou, s.result.pixel_accuracy, _ = miou(confs[id(s)])
    doc = {"kind": "twins-eval-seg", "variant": opts.variant, "head": opts.head, "num_classes": k,
           "size": list(opts.size), "weights": opts.weights, "images": ref.result.images,
           "images_with_masks": with_gt, "skipped_images": skipped,
           "random_weights": opts.weights is None,
           "results": [{**asdict(s.result), "agreement": s.result.agreement} for s in slots]}
    if opts.out_dir is not None:
        name = f"{opts.variant}_seg{opts.head}_{opts.size[0]}x{opts.size[1]}.eval.json"
        doc["path"] = str(artifacts.write_json_atomic(artifacts.ensure_dir(opts.out_dir) / name, doc))
    return doc


def format_seg_report(doc: dict) -> str:
    rows = [["backend", "status", "pixel agreement", "mIoU", "aAcc", "s/img"]]
    for r in doc["results"]:
        ok = r["status"] == "ok" and r["images"]
        rows.append([r["name"], r["status"], f"{r['agreement']:.4%}" if ok else "-",
                     f"{r['miou']:.4f}" if r["miou"] is not None else "-",
                     f"{r['pixel_accuracy']:.4f}" if r["pixel_accuracy"] is not None else "-",
                     f"{r['seconds'] / r['images']:.2f}" if ok else "-"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = [f"{doc['variant']} {doc['head']} segmentor, {doc['num_classes']} classes, {doc['images']} image(s) at "
           f"{doc['size'][0]}x{doc['size'][1]}, {doc['images_with_masks']} with masks"]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    out += [f"{r['name']} {r['status']}: {r['reason']}" for r in doc["results"] if r["reason"]]
    if doc["random_weights"]:
        out.append("RANDOM WEIGHTS: mIoU is meaningless; pixel agreement with PyTorch FP32 still is")
    return "\n".join(out)


__all__ = ["IGNORE_INDEX", "SegBackendResult", "SegEvalOptions", "confusion", "evaluate_seg", "format_seg_report",
           "miou", "preprocess_seg", "read_mask"]
