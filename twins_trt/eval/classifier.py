"""twins-eval's pipeline: top-1/top-5 on an ImageNet-style folder for every backend, against PyTorch fp32.

`evaluate` reads as its steps: scan the folder, build the reference model, open every backend
(each on its own; see `backends`), run the images through all of them chunk by chunk, turn the
sums into figures, and write the report.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twins_trt import artifacts
from twins_trt.backends import Backend, Capabilities, torch_device
from twins_trt.errors import DatasetError, one_line
from twins_trt.eval import backends as eval_backends
from twins_trt.eval.dataset import ImageFolder, image_folder, iter_chunks
from twins_trt.eval.report import RANDOM_WEIGHTS_WARNING, EvalReport
from twins_trt.eval.results import accumulate, finish
from twins_trt.export.options import QUANTIZED
from twins_trt.models import resolve_variant
from twins_trt.models.preprocessing import classification

log = logging.getLogger(__name__)


@dataclass
class EvalOptions:
    variant: str
    data: str | os.PathLike
    weights: str | os.PathLike | None = None
    backends: str | Sequence[str] = eval_backends.DEFAULT_BACKENDS  # the shared names of twins-bench (ort-fp16 etc. as aliases)
    limit: int | None = None
    batch: int = 1
    class_map: str | os.PathLike | None = None
    partial_classes: bool = False
    export_dir: str | os.PathLike = "export"
    engines_dir: str | os.PathLike = "engines"
    calib_dir: str | os.PathLike | None = None
    calib_synthetic: bool = False
    calib_size: int = 64
    out_dir: str | os.PathLike | None = "eval"
    threads: int | None = None
    device: str = "auto"  # PyTorch backends: auto (cuda when visible) | cpu | cuda
    progress: bool = True
    caps: Capabilities | None = field(default=None, repr=False)  # what this machine offers (None: detect)

    def __post_init__(self) -> None:
        self.cfg = resolve_variant(self.variant)
        self.variant = self.cfg.name
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if self.batch < 1:
            raise ValueError(f"--batch must be >= 1, got {self.batch}")
        if self.calib_dir is not None and self.calib_synthetic:
            raise ValueError("give --calib-data DIR or --calib-synthetic, not both")
        if self.calib_size < 1:
            raise ValueError(f"--calib-size must be >= 1, got {self.calib_size}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")
        self.caps = self.caps or Capabilities.detect()
        self.requested: list[str] = eval_backends.requested_names(self.backends, self.caps.cuda)
        self.backend_list: list[Backend] = eval_backends.eval_backends(self.backends, self.caps.cuda)

    @property
    def img_size(self) -> tuple[int, int]:
        return tuple(self.cfg.input_size[1:])  # type: ignore[return-value]

    @property
    def calib_source_dir(self) -> str | None:
        """Where INT8 is calibrated: --calib-data, else the evaluation folder itself (None: synthetic)."""
        if self.calib_synthetic:
            return None
        return str(self.calib_dir if self.calib_dir is not None else self.data)

    @property
    def stem(self) -> str:
        from twins_trt.export import artifact_stem

        return artifact_stem(self.variant, self.img_size, 1, (1, self.batch, self.batch) if self.batch > 1 else None)


# ---------------------------------------------------------------------------------------------- steps


def reference_model(opts: EvalOptions):
    from twins_trt.models import RandomWeightsWarning, create_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # said once, louder, in the report
        return create_model(opts.variant, weights=opts.weights, seed=0)


def warn_calibration_source(opts: EvalOptions) -> None:
    if opts.calib_dir is None and not opts.calib_synthetic and any(b.precision in QUANTIZED for b in opts.backend_list):
        warnings.warn(f"twins_trt: INT8 (and FP8) is calibrated on the evaluation folder itself ({opts.data}) unless an "
                      "existing artifact is reused, which flatters INT8 accuracy; pass --calib-data DIR with "
                      "other images", stacklevel=3)


def run_images(opts: EvalOptions, ds: ImageFolder, slots: list[eval_backends.Slot]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every readable image through every live backend; a backend that breaks is marked failed, the rest go on."""
    from tqdm import tqdm

    skipped: list[tuple[Path, str]] = []
    used: list[Path] = []
    want = len(ds.samples) if opts.limit is None else min(opts.limit, len(ds.samples))
    with tqdm(total=want, desc=f"eval {opts.variant}", unit="img", disable=not opts.progress) as bar:
        for chunk in iter_chunks(ds, opts.cfg, opts.img_size, opts.limit, skipped):
            ref_logits = None
            for s in slots:
                if not s.result.ok:
                    continue
                t0 = time.perf_counter()
                try:
                    logits = eval_backends.run_in_batches(s, chunk.images, opts.batch)
                except Exception as e:  # a backend that breaks mid-run must not hide the others' results
                    s.result.drop("failed", f"failed mid-run: {one_line(e)}")
                    log.error("%s failed: %s", s.result.name, s.result.reason)
                    continue
                s.result.seconds += time.perf_counter() - t0
                if ref_logits is None:
                    ref_logits = logits  # the reference is first
                accumulate(s.result, logits, chunk.labels, ref_logits)
            used += chunk.files
            bar.update(len(chunk.files))
    if not used:
        raise DatasetError(f"none of the {len(ds.samples)} image(s) under {opts.data} could be read "
                           f"(first error: {skipped[0][1] if skipped else '?'})")
    return used, skipped


def summarize(slots: list[eval_backends.Slot], used: list[Path]) -> None:
    """Figures from the running sums (deltas against the reference); INT8 rows say what they were calibrated on."""
    ref = slots[0].result
    for s in slots:
        finish(s.result, None if s.result is ref else ref)
        if s.manifest is not None and s.backend.precision in QUANTIZED:
            s.result.calibration = eval_backends.calibration_info(s.manifest, used)


def describe(opts: EvalOptions, ds: ImageFolder, used: list[Path], slots: list[eval_backends.Slot]) -> dict:
    weights = None if opts.weights is None else "timm" if str(opts.weights) == "timm" else str(opts.weights)
    return {
        "kind": "eval",
        "variant": opts.variant,
        "timm_name": opts.cfg.timm_name,
        "stem": opts.stem,
        "weights": weights,
        "random_weights": opts.weights is None,
        "warning": RANDOM_WEIGHTS_WARNING if opts.weights is None else None,
        "reference": "torch",
        "requested": opts.requested,
        "data": {"root": str(ds.root), "classes": len(ds.class_to_idx), "mapping": ds.mapping,
                 "class_to_idx": ds.class_to_idx, "missing_classes": ds.missing_classes,
                 "images_found": len(ds.samples), "images_used": len(used), "limit": opts.limit},
        "batch": opts.batch,
        "calibration_source": (("synthetic" if opts.calib_synthetic else opts.calib_source_dir)
                               if any(s.backend.precision in QUANTIZED for s in slots) else None),
        "artifacts": {s.result.name: s.result.artifact for s in slots},
        "preprocessing": {**classification(opts.cfg).to_dict(), "size": list(opts.img_size)},
        "created": artifacts.now_iso(),
        "versions": artifacts.tool_versions(),
    }


def evaluate(opts: EvalOptions, on_step: Callable[[str], None] | None = None) -> EvalReport:
    """Every backend in `opts` over the folder; those that cannot run say why. See the module docstring."""
    say = on_step or (lambda msg: log.info(msg))
    ds = image_folder(opts.data, opts.class_map, num_classes=opts.cfg.num_classes,
                      partial_classes=opts.partial_classes)
    if opts.out_dir is not None:
        artifacts.ensure_dir(opts.out_dir)  # fail before the long part, not after
    warn_calibration_source(opts)
    model = reference_model(opts)
    device = torch_device(opts.device, opts.caps)
    with tempfile.TemporaryDirectory(prefix="twins-eval-") as scratch:  # an INT8 below the bound lives here only
        slots = eval_backends.open_slots(opts, opts.backend_list, opts.caps, model, device, Path(scratch), say)
        for s in slots:
            if not s.result.ok:
                say(f"{s.result.name}: {s.result.status} ({s.result.reason})")
        try:
            used, skipped = run_images(opts, ds, [s for s in slots if s.result.ok])
        finally:
            eval_backends.close(slots)
    summarize(slots, used)
    report = EvalReport(describe(opts, ds, used, slots), [s.result for s in slots], skipped)
    if opts.out_dir is not None:
        report.write(opts.out_dir)
    return report


__all__ = ["EvalOptions", "evaluate"]
