"""Segmentation evaluation (`twins-eval --task seg`): pixel agreement with PyTorch FP32, and mIoU.

Every backend runs the same preprocessed images: resized to one H x W (bilinear), normalised with
the variant's mean/std (mmseg's Twins configs use ImageNet's, 0..255 scaled). Per backend:
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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from twins_trt import artifacts
from twins_trt.data import find_images
from twins_trt.errors import CalibrationDataError
from twins_trt.models import resolve_variant

log = logging.getLogger(__name__)

BACKENDS = ("torch", "ort-fp32", "ort-fp16", "ort-int8")
IGNORE_INDEX = 255


def preprocess_seg(path: str | os.PathLike, size: tuple[int, int], mean, std) -> np.ndarray:
    """RGB, resized to `size` (H, W) bilinearly, normalised: CHW float32."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB").resize((size[1], size[0]), resample=Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.float32) / 255.0
    arr = (arr - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


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
class SegBackendResult:
    name: str
    status: str = "ok"
    reason: str | None = None
    artifact: str | None = None
    images: int = 0
    pixels: int = 0
    agree: int = 0
    seconds: float = 0.0
    miou: float | None = None
    pixel_accuracy: float | None = None

    @property
    def agreement(self) -> float | None:
        return self.agree / self.pixels if self.pixels else None


@dataclass
class SegEvalOptions:
    variant: str
    data: str | os.PathLike
    masks: str | os.PathLike | None = None
    head: str = "fpn"
    num_classes: int | None = None
    weights: str | None = None
    size: tuple[int, int] = (512, 512)
    backends: Sequence[str] = ("torch", "ort-fp32")
    export_dir: str = "export"
    limit: int | None = None
    reduce_zero_label: bool = False
    threads: int | None = None
    out_dir: str | os.PathLike | None = "eval"
    progress: bool = True

    def __post_init__(self) -> None:
        self.cfg = resolve_variant(self.variant)
        self.variant = self.cfg.name
        bad = [b for b in self.backends if b not in BACKENDS]
        if bad:
            raise ValueError(f"unknown segmentation backend(s) {', '.join(bad)}; expected some of {', '.join(BACKENDS)}")
        if "torch" not in self.backends:
            self.backends = ("torch", *self.backends)  # the reference


def _mask_for(image: Path, masks: Path) -> Path | None:
    for suffix in (".png", image.suffix):
        p = masks / (image.stem + suffix)
        if p.is_file():
            return p
    return None


def evaluate_seg(opts: SegEvalOptions, say: Callable[[str], None] | None = None) -> dict:
    """Run every backend over the folder; returns the report document (also written under out_dir)."""
    import torch
    from tqdm import tqdm

    from twins_trt.bench.seg import find_seg_onnx
    from twins_trt.models import RandomWeightsWarning
    from twins_trt.models.segmentor import create_segmentor
    from twins_trt.runners.ort_runner import OrtRunner

    say = say or log.info
    files = find_images(opts.data)[: opts.limit]
    masks = Path(opts.masks) if opts.masks else None
    if masks is not None and not masks.is_dir():
        raise CalibrationDataError(f"mask folder {masks} does not exist (give PNGs named like the images)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        model = create_segmentor(opts.variant, opts.head, opts.num_classes, opts.weights, "input", seed=0)
    k = model.num_classes
    results = {b: SegBackendResult(b) for b in opts.backends}
    runners: dict[str, object] = {}
    for b in opts.backends:
        if b == "torch":
            continue
        precision = b.split("-")[1]
        path = find_seg_onnx(opts.export_dir, opts.variant, opts.head, precision, opts.size, k, "input")
        if path is None:
            results[b].status = "skipped"
            flag = {"fp32": "", "fp16": " --fp16", "int8": " --int8 --calib-data DIR"}[precision]
            results[b].reason = (f"no {precision} ONNX of the {opts.head} segmentor for {opts.size[0]}x{opts.size[1]} "
                                 f"in {opts.export_dir}: twins-export --task seg --seg-head {opts.head} "
                                 f"--num-classes {k} --img-size {opts.size[0]}x{opts.size[1]}{flag}")
            say(f"{b}: skipped ({results[b].reason})")
            continue
        results[b].artifact = str(path)
        runners[b] = OrtRunner(path, "cpu", threads=opts.threads, name=b)
    confs = {b: np.zeros((k, k), np.int64) for b in opts.backends}
    with_gt = 0
    skipped: list[tuple[str, str]] = []
    try:
        for r in runners.values():
            r.activate()
        for f in tqdm(files, desc=f"eval seg {opts.variant}", unit="img", disable=not opts.progress):
            try:
                x = preprocess_seg(f, opts.size, opts.cfg.mean, opts.cfg.std)[None]
            except Exception as e:  # PIL raises many kinds on corrupt files
                skipped.append((str(f), f"{type(e).__name__}: {e}"))
                continue
            gt = None
            if masks is not None:
                mp = _mask_for(f, masks)
                if mp is not None:
                    gt = read_mask(mp, opts.size, opts.reduce_zero_label)
                    with_gt += 1
            t0 = time.perf_counter()
            with torch.no_grad():
                ref = model(torch.from_numpy(x)).numpy().argmax(1)[0]
            results["torch"].seconds += time.perf_counter() - t0
            preds = {"torch": ref}
            for b, r in runners.items():
                if results[b].status != "ok":
                    continue
                t0 = time.perf_counter()
                try:
                    preds[b] = r.infer({"input": x})["logits"].argmax(1)[0]
                except Exception as e:  # a backend failing must not hide the others' results
                    results[b].status, results[b].reason = "failed", f"{type(e).__name__}: {e}"
                    continue
                results[b].seconds += time.perf_counter() - t0
            for b, pred in preds.items():
                res = results[b]
                res.images += 1
                res.pixels += pred.size
                res.agree += int((pred == ref).sum())
                if gt is not None:
                    confs[b] += confusion(pred, gt, k)
    finally:
        for r in runners.values():
            r.deactivate()
    if results["torch"].images == 0:
        raise CalibrationDataError(f"none of the {len(files)} image(s) under {opts.data} could be read")
    if with_gt:
        for b, res in results.items():
            if res.images:
                res.miou, res.pixel_accuracy, _ = miou(confs[b])
    doc = {"kind": "twins-eval-seg", "variant": opts.variant, "head": opts.head, "num_classes": k,
           "size": list(opts.size), "weights": opts.weights, "images": results["torch"].images,
           "images_with_masks": with_gt, "skipped_images": skipped,
           "random_weights": opts.weights is None,
           "results": [{**asdict(r), "agreement": r.agreement} for r in results.values()]}
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


def main_from_cli(args) -> int:
    """`twins-eval --task seg`: the eval CLI's parsed arguments."""
    import sys

    from twins_trt.errors import TwinsError

    # twins-bench's names (twins-eval's) -> ours; segmentation runs on the CPU providers here
    names = {"torch": ("torch",), "ort-cpu": ("ort-fp32",), "ort-cpu-fp16": ("ort-fp16",), "ort-cpu-int8": ("ort-int8",),
             "cpu": BACKENDS, "auto": BACKENDS, **{b: (b,) for b in BACKENDS}}
    asked = [b.strip() for b in (args.backends or "").split(",") if b.strip()]
    for b in asked:
        if b not in names:
            print(f"[twins-eval] {b}: not available for --task seg (segmentation evaluates torch and ONNX Runtime "
                  f"CPU: {', '.join(BACKENDS)})", file=sys.stderr)
    backends = tuple(dict.fromkeys(n for b in asked for n in names.get(b, ())))
    try:
        opts = SegEvalOptions(variant=args.variant, data=args.data, masks=args.masks, head=args.seg_head,
                              num_classes=args.num_classes, weights=args.weights, size=args.seg_size,
                              backends=backends or ("torch", "ort-fp32"), export_dir=args.export_dir,
                              limit=args.limit, reduce_zero_label=args.reduce_zero_label, threads=args.threads,
                              out_dir=args.out_dir, progress=not args.no_progress)
        doc = evaluate_seg(opts, say=lambda m: print(f"[twins-eval] {m}", file=sys.stderr, flush=True))
    except (TwinsError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_seg_report(doc))
    if "path" in doc:
        print(f"[twins-eval] wrote {doc['path']}", file=sys.stderr)
    failed = [r for r in doc["results"] if r["status"] == "failed"]
    return 1 if failed else 0
