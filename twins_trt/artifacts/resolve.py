"""The one resolver: find (or make) the ONNX artifacts and TensorRT engines a run needs, once per run.

A run says what it wants with two values: a `Request` (variant, task, batches, image size, weights,
and for a segmentor its head) and a `Calibration` (where INT8's images come from). A `Resolver`
made from them answers `find(precision)`, `onnx(precisions)` and `engine(onnx, batches)`, and
remembers every answer, so a run that asks twice (the plan, then the measurement) resolves once.

An existing artifact is reused when its `Manifest` says it is what the request needs:

- classifier: variant, precision, no --features, image size, a batch range covering every batch,
  weights; for INT8 the calibration folder when the run names one;
- segmentor: variant, precision, head, output mode, class count (when given), an H/W profile
  covering the size (a dynamic-H/W export first) or that static size, batch 1.

What is missing is exported in one go (a segmentor's INT8 only when the run names calibration images).
An engine is reused only while it is current (see `engine_reuse_problem`).

Each precision stands on its own (`Resolver.artifacts`): when the export fails, what it finished is
used, each precision still missing gets its own reason, and a quantized export (INT8, FP8) that
misses its accuracy bound is *kept* for this run only, in the resolver's temporary `scratch` folder
(never under the export folder, so it is never mistaken for a verified artifact), flagged
`below_bound` with its figures and the twins-export command that makes one within the budget:
speed does not depend on accuracy, and twins-eval exists to measure exactly that loss.
This module sits above export/ and trt/ (it calls both); nothing below it imports it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twins_trt.artifacts.manifest import Manifest
from twins_trt.data import Calibration
from twins_trt.errors import one_line
from twins_trt.export import ExportOptions, artifact_stem, export_variant
from twins_trt.export.options import QUANTIZED

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """What a run wants of an artifact, whatever its precision."""

    variant: str
    batches: tuple[int, ...] = (1,)
    img_size: tuple[int, int] = (224, 224)
    weights: str | None = None
    task: str = "cls"  # "cls": a classifier; "seg": a segmentor (head, classes, output below)
    seg_head: str = "fpn"
    num_classes: int | None = None
    seg_output: str = "input"
    export_dir: str = "export"

    def __post_init__(self) -> None:
        object.__setattr__(self, "batches", tuple(dict.fromkeys(int(b) for b in self.batches)))
        object.__setattr__(self, "img_size", tuple(self.img_size))
        object.__setattr__(self, "weights", None if self.weights is None else str(self.weights))
        object.__setattr__(self, "export_dir", str(self.export_dir))
        if self.task not in ("cls", "seg"):
            raise ValueError(f"task must be 'cls' or 'seg', got {self.task!r}")

    def stems(self) -> list[str]:
        """The stems that might hold a usable export, in the order they are tried."""
        if self.task == "seg":
            return [artifact_stem(self.variant, self.img_size, dynamic_shape=True, seg_head=self.seg_head),
                    artifact_stem(self.variant, self.img_size, seg_head=self.seg_head)]
        return candidate_stems(self.variant, self.img_size, list(self.batches))

    def mismatch(self, manifest: Manifest | None, precision: str, calibration: Calibration | None = None) -> str | None:
        """None when the artifact `manifest` describes serves this request in `precision`; else what differs."""
        if manifest is None:
            return "no manifest"
        if self.task == "seg":
            seg = manifest.segmentation or {}
            if manifest.precision != precision or seg.get("head") != self.seg_head or \
                    seg.get("output") != self.seg_output or \
                    (self.num_classes is not None and seg.get("num_classes") != self.num_classes):
                return "another precision, head, class count or output"
            if not manifest.covers_size(self.img_size):
                return f"its size range does not cover {self.img_size[0]}x{self.img_size[1]}"
        else:
            checks = (("variant", manifest.variant, self.variant), ("precision", manifest.precision, precision),
                      ("features", manifest.features, False), ("img_size", list(manifest.img_size), list(self.img_size)),
                      ("weights", manifest.weights, self.weights))
            for what, have, want in checks:
                if have != want:
                    return f"{what} is {have!r}, need {want!r}"
        if not manifest.takes(self.batches):
            have = f"{manifest.batch.min}..{manifest.batch.max}" if manifest.batch else "(none recorded)"
            return f"batch range {have} does not cover {list(self.batches)}"
        if precision in QUANTIZED and calibration is not None:  # INT8, FP8: calibrated on the run's images
            return calibration.mismatch(manifest.calibration_source)
        return None

    def export_options(self, precisions: Sequence[str], calibration: Calibration, progress: bool) -> ExportOptions:
        """What twins-export is asked to make for the precisions this request misses."""
        common = dict(variant=self.variant, out_dir=self.export_dir, weights=self.weights,
                      precisions=tuple(precisions), img_size=self.img_size, progress=progress)
        # no FP16-fallback search: a run measures the all-quantized graph (kept even below its bound, see artifacts)
        calib = dict(calib_dir=calibration.dir, calib_synthetic=calibration.synthetic, calib_size=calibration.size,
                     int8_fallback=False)
        if self.task == "seg":
            return ExportOptions(**common, **calib, task="seg", seg_head=self.seg_head, num_classes=self.num_classes,
                                 seg_output=self.seg_output, verify_samples=1)
        return ExportOptions(**common, **calib, **wanted_shape(list(self.batches)))

    def export_command(self, precision: str, calibration: Calibration, budget: str) -> str:
        """The twins-export command that writes a `precision` artifact this request reuses, held to `budget`
        (with its FP16 fallback: the regions that lose accuracy stay FP16)."""
        parts = ["twins-export", "--variant", self.variant]
        if self.task == "seg":
            parts += ["--task", "seg", "--seg-head", self.seg_head]
            parts += ["--num-classes", str(self.num_classes)] if self.num_classes is not None else []
            parts += ["--seg-output", self.seg_output] if self.seg_output != "input" else []
        parts += ["--weights", self.weights] if self.weights else []
        parts += ["--img-size", f"{self.img_size[0]}x{self.img_size[1]}"] if self.img_size != (224, 224) else []
        shape = wanted_shape(list(self.batches)) if self.task == "cls" else {"batch": 1}
        if "dynamic_batch" in shape:
            parts += ["--dynamic-batch", ":".join(map(str, shape["dynamic_batch"]))]
        elif shape["batch"] != 1:
            parts += ["--batch", str(shape["batch"])]
        parts += [f"--{precision}", *(["--calib-data", str(calibration.dir)] if calibration.dir else
                                      ["--calib-synthetic"]), f"--{precision}-budget", f'"{budget}"']
        return " ".join(parts)


@dataclass
class Artifact:
    """An ONNX a run uses. `below_bound`: a quantized export that missed its accuracy bound, kept for this run only
    in a temporary folder: {precision, metric, value, bound, budget, samples, inputs, artifact, hint}."""

    path: Path
    manifest: Manifest | None
    below_bound: dict | None = None

    @classmethod
    def at(cls, path: str | os.PathLike) -> Artifact:
        return cls(Path(path), Manifest.read(path))


@dataclass
class Resolver:
    """Resolves each artifact of one run once. `exportable`: precisions it may export when none is found."""

    request: Request
    calibration: Calibration = field(default_factory=Calibration)
    say: Callable[[str], None] = print
    progress: bool = True
    exportable: tuple[str, ...] = ("fp32", "fp16", "int8", "fp8")
    scratch: str | os.PathLike | None = None  # where a quantized export below its bound is kept (None: refused)
    _found: dict[str, Path | None] = field(default_factory=dict, repr=False)
    _why_not: dict[str, str] = field(default_factory=dict, repr=False)
    _engines: dict[tuple[str, tuple[int, ...]], Path] = field(default_factory=dict, repr=False)

    def find(self, precision: str) -> Path | None:
        """An existing artifact that serves the request, or None (each precision looked up once per run)."""
        if precision not in self._found:
            self._found[precision] = self._look(precision)
        return self._found[precision]

    def _look(self, precision: str) -> Path | None:
        stems = self.request.stems()
        if self.request.task == "cls":  # twins-export's default (static batch 1): said why not, when it is there
            stems.append(artifact_stem(self.request.variant, self.request.img_size))
        for stem in dict.fromkeys(stems):
            path = Path(self.request.export_dir) / f"{stem}.{precision}.onnx"
            if not path.is_file():
                continue
            why = self.request.mismatch(Manifest.read(path), precision, self.calibration)
            if why is None:
                return path
            self._why_not.setdefault(precision, f"{path}: {why}")
            log.info("not reusing %s: %s", path, why)
        return None

    def forget(self, precisions: Iterable[str]) -> None:
        """Look again next time (after an export that may have written some of them before it failed)."""
        for p in precisions:
            self._found.pop(p, None)

    def onnx(self, precisions: Sequence[str]) -> dict[str, Path]:
        """Precision -> ONNX for every precision asked that exists or may be exported; the missing ones are
        exported in one call (an export failure is raised as it is)."""
        found = {p: path for p in precisions if (path := self.find(p)) is not None}
        missing = [p for p in precisions if p not in found and p in self.exportable]
        for p in precisions:
            if p in found:
                self.say(f"reusing {found[p]} ({p})")
        if missing:
            opts = self.request.export_options(missing, self.calibration, self.progress)
            what = (f"{self.request.seg_head} segmentor at {self.request.img_size[0]}x{self.request.img_size[1]} "
                    if self.request.task == "seg" else "")
            why = next((self._why_not[p] for p in missing if p in self._why_not), None)
            self.say(f"exporting {self.request.variant} {what}{', '.join(opts.precisions)} to "
                     f"{self.request.export_dir}/{opts.stem}.*.onnx (no matching artifact to reuse"
                     f"{'; not ' + why if why else ''})")
            res = export_variant(opts, below_bound_dir=self.scratch)
            for p in missing:
                self._found[p] = found[p] = res.artifacts[p]
        return {p: found[p] for p in precisions if p in found}

    def artifacts(self, precisions: Sequence[str]) -> tuple[dict[str, Artifact], dict[str, str]]:
        """(precision -> artifact, precision -> why there is none), each precision on its own (module docstring).

        One export call makes every missing precision; when it fails, whatever it finished is reused, a quantized
        precision that missed its bound is taken from `scratch` (flagged), one the export never reached is tried
        alone, and the rest carry the export's error. A precision neither found nor exportable is in neither.
        """
        try:
            return {p: Artifact.at(path) for p, path in self.onnx(precisions).items()}, {}
        except Exception as e:
            first = e
            self.say(f"export failed: {one_line(e)}; going on with what it finished")
        self.forget(precisions)  # the export may have written some before it failed
        out: dict[str, Artifact] = {}
        failed: dict[str, str] = {}
        for p in precisions:
            if (path := self.find(p)) is not None:
                out[p] = Artifact.at(path)
            elif (kept := self._below_bound(p)) is not None:
                out[p] = kept
            elif p not in self.exportable:
                continue
            elif f".{p}." in str(first) or p == "fp32":
                failed[p] = f"ONNX export failed: {one_line(first)}"
            else:  # the export stopped before this precision: try it on its own
                alone, why = self.artifacts([p])
                out.update(alone)
                failed.update(why)
        return out, failed

    def _below_bound(self, precision: str) -> Artifact | None:
        """The quantized export of `precision` the export kept in `scratch` after it missed its bound, flagged."""
        if self.scratch is None or precision not in self.exportable:
            return None
        stem = self.request.export_options(("fp32",), self.calibration, False).stem  # the stem of every precision
        path = Path(self.scratch) / f"{stem}.{precision}.BELOW-BOUND.onnx"
        manifest = Manifest.read(path) if path.is_file() else None
        ver = (manifest.verification or {}) if manifest else {}
        if not ver or ver.get("passed", True):
            return None
        metric = "agreement" if ver["metric"] == "top1_agreement" else ver["metric"]
        budget = f"{metric}>={ver['bound']:g}"
        flag = {"precision": precision, "metric": ver["metric"], "value": ver["worst"], "bound": ver["bound"],
                "budget": budget, "samples": ver.get("samples"), "inputs": ver.get("inputs"),
                "artifact": "temporary file (deleted after this run; nothing written to the export folder)",
                "hint": self.request.export_command(precision, self.calibration, budget)}
        self.say(f"{precision}: below its bound ({ver['metric']} {ver['worst']:.4f} < {ver['bound']:g}); used anyway, "
                 f"for this run only, from a temporary file ({path}); within the budget: {flag['hint']}")
        self._found[precision] = None  # never reused as a verified artifact
        return Artifact(path, manifest, flag)

    def engine(self, onnx_path: str | os.PathLike, engines_dir: str | os.PathLike = "engines", trt=None,
               batches: Sequence[int] | None = None) -> Path:
        """The current engine for `onnx_path` (reused or built, with a message), once per run."""
        batches = tuple(batches or self.request.batches)
        key = (str(onnx_path), batches)
        if key not in self._engines:
            self._engines[key] = ensure_engine(onnx_path, list(batches), engines_dir, say=self.say, trt=trt)
        return self._engines[key]


# ---------------------------------------------------------------------------------------------- classifier naming


def wanted_shape(batches: list[int]) -> dict:
    """ExportOptions batch arguments for these batches: static for one, (1, max, max) for several."""
    if len(batches) == 1:
        return {"batch": batches[0]}
    hi = max(batches)
    return {"dynamic_batch": (1, hi, hi)}


def candidate_stems(variant: str, img_size: tuple[int, int], batches: list[int]) -> list[str]:
    """Stems that might hold a usable export: the dynamic-batch one, and the static one for a single batch."""
    out = [artifact_stem(variant, img_size, dynamic_batch=(1, 2, 2))]
    if len(batches) == 1:
        out.insert(0, artifact_stem(variant, img_size, batch=batches[0]))
    return out


def manifest_mismatch(manifest: dict | Manifest | None, *, variant: str, precision: str, img_size: tuple[int, int],
                      batches: list[int], weights: str | os.PathLike | None,
                      calib_dir: str | os.PathLike | None = None) -> str | None:
    """`Request.mismatch` for a classifier, from plain arguments (a manifest as JSON or as `Manifest`)."""
    if isinstance(manifest, dict):
        manifest = Manifest.from_json(manifest) if manifest else None
    return Request(variant, tuple(batches), img_size, weights).mismatch(
        manifest, precision, Calibration(dir=calib_dir) if calib_dir is not None else None)


def ensure_onnx(variant: str, precisions: list[str], batches: list[int], *, img_size=(224, 224),
                export_dir: str | os.PathLike = "export", weights=None, calib_dir=None, calib_synthetic: bool = False,
                calib_size: int = 16, progress: bool = True, say: Callable[[str], None] = print) -> dict[str, Path]:
    """A one-off `Resolver(...).onnx(precisions)` (the A/B worker's contract with every revision)."""
    resolver = Resolver(Request(variant, tuple(batches), tuple(img_size), weights, export_dir=str(export_dir)),
                        Calibration(calib_dir, calib_synthetic, calib_size), say=say, progress=progress)
    return resolver.onnx(precisions)


# ---------------------------------------------------------------------------------------------- engines


def engine_covers(metadata: dict, batches: list[int]) -> bool:
    """True when the engine takes every batch in `batches` and, for a dynamic-batch engine, has a profile tuned
    for each (OPT == that batch), so each batch is measured on kernels chosen for it."""
    from twins_trt.trt.engine_meta import batch_range as engine_batch_range
    from twins_trt.trt.engine_meta import engine_profiles, opt_batches

    if not engine_profiles(metadata):
        return False
    lo, hi = engine_batch_range(metadata)
    if not all(lo <= b <= hi for b in batches):
        return False
    return lo == hi or set(batches) <= set(opt_batches(metadata))


def engine_reuse_problem(plan: str | os.PathLike, onnx_path: str | os.PathLike, batches: list[int], trt_version: str,
                         device: dict[str, str]) -> str | None:
    """None when `plan` can be reused for `onnx_path` and `batches` here; else why it must be (re)built: missing,
    built from another ONNX (sha256), by another TensorRT or for another device, or not tuned for these batches."""
    from twins_trt.trt.engine_meta import read_engine_metadata, stale_reason

    why = stale_reason(plan, onnx_path, trt_version, device)
    if why is not None:
        return why
    if not engine_covers(read_engine_metadata(plan), batches):
        return f"its optimization profiles are not tuned for batch{'es' * (len(batches) > 1)} {batches}"
    return None


def ensure_engine(onnx_path: str | os.PathLike, batches: list[int], engines_dir: str | os.PathLike = "engines",
                  say: Callable[[str], None] = print, trt=None) -> Path:
    """`engines/<onnx stem>.plan` for `onnx_path`, reused only when it is current, else (re)built with a message.

    Current: built from this very ONNX (its recorded sha256), by this TensorRT, for this device, with a profile
    for every batch. A dynamic-batch engine gets one profile per batch, OPT at that batch (range min..max of
    `batches`), as trtexec measures each batch on kernels tuned for it. Needs TensorRT (or its emulator).
    """
    from twins_trt.trt import engine_paths, load_tensorrt
    from twins_trt.trt.build import build_engine
    from twins_trt.trt.engine_meta import device_info

    trt = load_tensorrt(trt)
    plan, _ = engine_paths(onnx_path, engines_dir)
    why = engine_reuse_problem(plan, onnx_path, batches, str(trt.__version__), device_info(trt))
    if why is None:
        say(f"reusing {plan} (same ONNX, TensorRT and device; tuned for batch {', '.join(map(str, batches))})")
        return plan
    batches = sorted(set(batches))
    manifest = Manifest.read(onnx_path)
    static = manifest is not None and manifest.batch is not None and manifest.batch.static
    profile = None if static else f"{batches[0]}:{batches[0]}:{batches[-1]}"
    opt = None if static or len(batches) == 1 else batches
    say(f"{'rebuilding' if plan.is_file() else 'building'} {plan} from {onnx_path} ({why}; profile "
        f"{'static' if static else profile}{', OPT at each of ' + ','.join(map(str, opt)) if opt else ''})")
    return build_engine(onnx_path, engines_dir, profile=profile, opt_batches=opt, trt=trt).plan_path


__all__ = ["Artifact", "Calibration", "Request", "Resolver", "candidate_stems", "engine_covers", "engine_reuse_problem",
           "ensure_engine", "ensure_onnx", "manifest_mismatch", "wanted_shape"]
