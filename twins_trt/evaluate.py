"""twins-eval's library: top-1/top-5 on an ImageNet-style folder, for every backend, against PyTorch fp32.

The folder holds one subfolder per class (torchvision ImageFolder). Class indices come from a class
map (one folder name per line, or JSON {folder: index}) or, without one, from the sorted folder
names as ImageFolder assigns them. Every backend is driven through the runner interface on the
same preprocessed images, in chunks, so memory stays flat however large the folder. Besides
accuracy, each backend's top-1 is compared with PyTorch fp32's (agreement) and its logits too
(cosine): those two are meaningful even with random weights, accuracy is not.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twins_trt import artifacts
from twins_trt.data import IMAGE_SUFFIXES, load_images
from twins_trt.errors import BackendUnavailableError, CalibrationDataError, TwinsError
from twins_trt.models import resolve_variant

log = logging.getLogger(__name__)

BACKENDS = ("torch", "ort-fp32", "ort-fp16", "ort-int8", "trt-fp16", "trt-int8")
REFERENCE = "torch"
CHUNK = 64  # images preprocessed and held at once
RANDOM_WEIGHTS_WARNING = ("RANDOM WEIGHTS: no --weights given, so top-1/top-5 are meaningless (chance level); "
                          "agreement and cosine with PyTorch fp32 are still meaningful. "
                          "Pass --weights timm or --weights PATH for real accuracy.")


class DatasetError(CalibrationDataError):
    """An evaluation folder that is missing, empty, not one-subfolder-per-class, or disagrees with the class map."""


# ---------------------------------------------------------------------------------------------- dataset


@dataclass
class ImageFolder:
    root: Path
    class_to_idx: dict[str, int]
    samples: list[tuple[Path, int]]  # interleaved across classes, so --limit N samples every class
    mapping: str  # "sorted folder names" or the class map's path
    missing_classes: list[str] = field(default_factory=list)  # in the class map, no folder here (--partial-classes)

    @property
    def files(self) -> list[Path]:
        return [p for p, _ in self.samples]


def read_class_map(path: str | os.PathLike) -> dict[str, int]:
    """One class folder name per line (index = line number, blank and # lines skipped), or JSON {folder: index}."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise DatasetError(f"class map {path} does not exist") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"class map {path} cannot be read ({e})") from e
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise DatasetError(f"class map {path} is not valid JSON ({e})") from e
        if not isinstance(raw, dict) or not raw:
            raise DatasetError(f"class map {path} must be a JSON object {{folder: index}} with at least one entry")
        bad = {k: v for k, v in raw.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0}
        if bad:
            raise DatasetError(f"class map {path}: indices must be integers >= 0, got {dict(list(bad.items())[:5])}")
        mapping = {str(k): int(v) for k, v in raw.items()}
    else:
        names = [ln.strip() for ln in text.splitlines()]
        names = [n for n in names if n and not n.startswith("#")]
        if not names:
            raise DatasetError(f"class map {path} names no classes (expected one folder name per line)")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DatasetError(f"class map {path} names {len(dupes)} folder(s) twice: {', '.join(dupes[:5])}")
        mapping = {n: i for i, n in enumerate(names)}
    by_index: dict[int, list[str]] = {}
    for name, idx in mapping.items():
        by_index.setdefault(idx, []).append(name)
    shared = {i: ns for i, ns in by_index.items() if len(ns) > 1}
    if shared:
        i, ns = next(iter(shared.items()))
        raise DatasetError(f"class map {path} gives {len(shared)} index(es) to several folders, e.g. {i}: {ns}")
    return mapping


def image_folder(root: str | os.PathLike, class_map: str | os.PathLike | None = None, num_classes: int = 1000,
                 partial_classes: bool = False) -> ImageFolder:
    """Scan an ImageNet-style folder; every problem is reported with what was found."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"evaluation folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"--data {root} is a file; expected a folder with one subfolder per class")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        what = (f"{len(loose)} image(s) directly in it but no class subfolders" if loose
                else "nothing in it" if not any(root.iterdir()) else "no class subfolders in it")
        raise DatasetError(f"evaluation folder {root} has {what}; expected ImageNet layout "
                           f"{root}/<class>/<image>.jpg (one subfolder per class)")
    if class_map is None:
        mapping, how, missing = {name: i for i, name in enumerate(folders)}, "sorted folder names", []
    else:
        mapping, how = read_class_map(class_map), str(class_map)
        unmapped = [f for f in folders if f not in mapping]
        if unmapped:
            raise DatasetError(f"{len(unmapped)} class folder(s) under {root} are not in the class map {class_map}: "
                               f"{', '.join(unmapped[:10])}{' ...' if len(unmapped) > 10 else ''}")
        missing = [n for n in mapping if n not in folders]
        if missing and not partial_classes:
            raise DatasetError(
                f"class map {class_map} names {len(missing)} folder(s) missing under {root}: "
                f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}; pass --partial-classes if the folder "
                "is a subset on purpose (e.g. a 1000-line ImageNet map for a few classes)")
    too_big = {n: i for n, i in mapping.items() if i >= num_classes and n in folders}
    if too_big:
        raise DatasetError(f"class index(es) beyond the model's {num_classes} classes: "
                           f"{dict(list(too_big.items())[:5])}")
    per_class: list[list[tuple[Path, int]]] = []
    for name in folders:
        files = sorted(p for p in (root / name).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        per_class.append([(p, mapping[name]) for p in files])
    if not any(per_class):
        raise DatasetError(f"no images in the {len(folders)} class folder(s) under {root} "
                           f"(looked recursively for {', '.join(IMAGE_SUFFIXES)})")
    empty = [f for f, files in zip(folders, per_class, strict=True) if not files]
    if empty:
        log.warning("%d class folder(s) have no images: %s", len(empty), ", ".join(empty[:10]))
    samples = [c[i] for i in range(max(map(len, per_class))) for c in per_class if i < len(c)]  # round robin
    return ImageFolder(root, {f: mapping[f] for f in folders}, samples, how, missing)


# ---------------------------------------------------------------------------------------------- metrics


@dataclass
class BackendResult:
    name: str
    status: str = "ok"  # ok | skipped | failed
    reason: str | None = None
    artifact: str | None = None
    device: str | None = None
    images: int = 0
    seconds: float = 0.0
    top1: float | None = None
    top5: float | None = None
    top1_delta: float | None = None
    top5_delta: float | None = None
    agreement: float | None = None
    cosine_mean: float | None = None
    cosine_min: float | None = None
    # running sums, not reported
    _top1: int = 0
    _top5: int = 0
    _agree: int = 0
    _cos: list[np.ndarray] = field(default_factory=list)
    _argmax: list[np.ndarray] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(den > 0, (a * b).sum(axis=1) / np.maximum(den, 1e-300), 1.0)


def _accumulate(r: BackendResult, logits: np.ndarray, labels: np.ndarray, ref: np.ndarray) -> None:
    top5 = np.argsort(-logits, axis=1)[:, :5]
    r._top1 += int((top5[:, 0] == labels).sum())
    r._top5 += int((top5 == labels[:, None]).any(axis=1).sum())
    r._agree += int((top5[:, 0] == ref.argmax(axis=1)).sum())
    r._cos.append(cosine_rows(logits, ref))
    r.images += len(labels)


def _finish(r: BackendResult, ref: BackendResult | None) -> None:
    if r.status != "ok" or not r.images:
        return
    n = r.images
    r.top1, r.top5, r.agreement = 100.0 * r._top1 / n, 100.0 * r._top5 / n, 100.0 * r._agree / n
    cos = np.concatenate(r._cos)
    r.cosine_mean, r.cosine_min = float(cos.mean()), float(cos.min())
    if ref is not None and ref.top1 is not None:
        r.top1_delta, r.top5_delta = r.top1 - ref.top1, r.top5 - ref.top5


# ---------------------------------------------------------------------------------------------- artifacts


@dataclass
class EvalOptions:
    variant: str
    data: str | os.PathLike
    weights: str | os.PathLike | None = None
    backends: Sequence[str] = BACKENDS
    limit: int | None = None
    batch: int = 1
    class_map: str | os.PathLike | None = None
    partial_classes: bool = False
    export_dir: str | os.PathLike = "export"
    engine_dir: str | os.PathLike = "engines"
    calib_dir: str | os.PathLike | None = None
    calib_synthetic: bool = False
    calib_size: int = 64
    out_dir: str | os.PathLike | None = "eval"
    threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.cfg = resolve_variant(self.variant)
        self.variant = self.cfg.name
        self.backends = parse_backends(self.backends)
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if self.batch < 1:
            raise ValueError(f"--batch must be >= 1, got {self.batch}")
        if self.calib_dir is not None and self.calib_synthetic:
            raise ValueError("give --calib-data DIR or --calib-synthetic, not both")
        if self.calib_size < 1:
            raise ValueError(f"--calib-size must be >= 1, got {self.calib_size}")

    @property
    def dynamic_batch(self) -> tuple[int, int, int] | None:
        return (1, self.batch, self.batch) if self.batch > 1 else None


def parse_backends(backends: str | Sequence[str]) -> tuple[str, ...]:
    items = [b.strip().lower() for b in (backends.split(",") if isinstance(backends, str) else backends)]
    items = [b for b in items if b]
    unknown = [b for b in items if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(BACKENDS)}")
    if not items:
        raise ValueError(f"no backend given; choose from {', '.join(BACKENDS)}")
    # PyTorch fp32 is the reference every other backend is compared with: always run, always first
    return tuple(dict.fromkeys((REFERENCE, *items)))


def _weights_id(weights) -> tuple[str | None, str | None]:
    if weights is None:
        return None, None
    if str(weights) == "timm":
        return "timm", None
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    return str(weights), artifacts.sha256_file(path)


def calibration_source(opts: EvalOptions) -> str:
    return "synthetic" if opts.calib_synthetic else str(Path(opts.calib_dir or opts.data))


def manifest_mismatch(manifest: dict, opts: EvalOptions, precision: str, weights_sha: str | None) -> str | None:
    """Why an existing export cannot stand in for the one this evaluation needs (None: it can)."""
    if not manifest:
        return "no manifest"
    want_batch = ({"min": 1, "opt": opts.batch, "max": opts.batch} if opts.dynamic_batch else {"static": 1})
    checks = [
        ("variant", manifest.get("variant"), opts.variant),
        ("precision", manifest.get("precision"), precision),
        ("features", bool(manifest.get("features")), False),
        ("img_size", list(manifest.get("img_size") or []), list(opts.cfg.input_size[1:])),
        ("batch", manifest.get("batch"), want_batch),
    ]
    if weights_sha is not None:
        checks.append(("weights_sha256", manifest.get("weights_sha256"), weights_sha))
    else:
        checks.append(("weights", manifest.get("weights"), None if opts.weights is None else str(opts.weights)))
    if precision == "int8":
        src = (manifest.get("calibration") or {}).get("source")
        want = calibration_source(opts)
        same = src == want or (src not in (None, "synthetic") and want != "synthetic"
                               and Path(src).resolve() == Path(want).resolve())
        if not same:
            return f"calibration source is {src!r}, this run calibrates on {want!r}"
    for key, have, want in checks:
        if have != want:
            return f"{key} is {have!r}, need {want!r}"
    return None


def ensure_onnx(opts: EvalOptions, precisions: Sequence[str], say: Callable[[str], None]) -> dict[str, dict]:
    """ONNX per precision: reused from --export-dir when its manifest matches, else exported (once, together)."""
    from twins_trt.export import ExportOptions, artifact_stem, export_variant

    stem = artifact_stem(opts.variant, tuple(opts.cfg.input_size[1:]), 1, opts.dynamic_batch)
    _, weights_sha = _weights_id(opts.weights)
    out: dict[str, dict] = {}
    missing = []
    for p in precisions:
        path = Path(opts.export_dir) / f"{stem}.{p}.onnx"
        manifest = artifacts.read_manifest(path) if path.is_file() else {}
        why = "not there" if not path.is_file() else manifest_mismatch(manifest, opts, p, weights_sha)
        if why is None and manifest.get("sha256") and artifacts.sha256_file(path) != manifest["sha256"]:
            why = "file does not match its manifest's sha256"
        if why is None:
            say(f"reusing {path} (manifest matches)")
            out[p] = {"path": path, "manifest": manifest, "exported": False}
        else:
            log.info("%s: exporting anew (%s)", path, why)
            missing.append((p, why))
    if missing:
        precs = tuple(p for p, _ in missing)
        for p, why in missing:
            say(f"exporting {stem}.{p}.onnx ({why})")
        calib_dir = None
        if "int8" in precs and not opts.calib_synthetic:
            calib_dir = opts.calib_dir
            if calib_dir is None:
                calib_dir = opts.data
                warnings.warn(f"twins_trt: INT8 is calibrated on the evaluation folder itself ({opts.data}), which "
                              "flatters INT8 accuracy a little; pass --calib-data DIR with other images",
                              stacklevel=2)
        eo = ExportOptions(variant=opts.variant, out_dir=opts.export_dir, weights=opts.weights,
                           precisions=tuple(p for p in precs if p != "fp32") or ("fp32",),
                           dynamic_batch=opts.dynamic_batch, calib_dir=calib_dir,
                           calib_synthetic=opts.calib_synthetic and "int8" in precs,
                           calib_size=opts.calib_size, progress=opts.progress)
        res = export_variant(eo, on_step=say)
        for p in precs:
            out[p] = {"path": res.artifacts[p], "manifest": artifacts.read_manifest(res.artifacts[p]), "exported": True}
    return out


# ---------------------------------------------------------------------------------------------- runners


@dataclass
class _Slot:
    result: BackendResult
    runner: Any = None
    batch: tuple[int, int] = (1, 1 << 30)  # (min, max) batch the artifact takes
    static: bool = False


def _batch_range(manifest: dict) -> tuple[tuple[int, int], bool]:
    b = manifest.get("batch") or {}
    if "static" in b:
        return (int(b["static"]), int(b["static"])), True
    if "min" in b:
        return (int(b["min"]), int(b["max"])), False
    return (1, 1), True


def _trt_slot(name: str, precision: str, opts: EvalOptions, onnx: dict | None) -> _Slot:
    r = BackendResult(name)
    from twins_trt.trt import engine_paths, tensorrt_status

    ok, why = tensorrt_status()
    plan = (engine_paths(onnx["path"], opts.engine_dir)[0] if onnx
            else Path(opts.engine_dir) / f"{artifact_stem_for(opts)}.{precision}.plan")
    r.artifact = str(plan)
    if not ok:
        r.status, r.reason = "skipped", why
        return _Slot(r)
    if not plan.is_file():
        r.status, r.reason = "skipped", f"no engine {plan}; build it with: twins-build {onnx['path']}"
        return _Slot(r)
    try:
        from twins_trt.runners.trt_runner import TrtRunner

        runner = TrtRunner(plan, name=name)
        runner.activate()
    except BackendUnavailableError as e:
        r.status, r.reason = "skipped", str(e)
        return _Slot(r)
    except TwinsError as e:
        r.status, r.reason = "failed", str(e)
        return _Slot(r)
    prof = (runner.metadata.get("profile") or {})
    first = next(iter(prof.values()), {}) if prof and "min" not in prof else prof
    lo, hi = (first.get("min") or [1])[0], (first.get("max") or [1])[0]
    r.device = "cuda"
    return _Slot(r, runner, (int(lo), int(hi)), lo == hi)


def artifact_stem_for(opts: EvalOptions) -> str:
    from twins_trt.export import artifact_stem

    return artifact_stem(opts.variant, tuple(opts.cfg.input_size[1:]), 1, opts.dynamic_batch)


def _open_slots(opts: EvalOptions, model, say: Callable[[str], None]) -> list[_Slot]:
    from twins_trt.runners.ort_runner import OrtRunner
    from twins_trt.runners.torch_runner import TorchRunner

    want_onnx = [b.split("-")[1] for b in opts.backends if b.startswith("ort-")]
    if any(b.startswith("trt-") for b in opts.backends):
        from twins_trt.trt import tensorrt_status

        if tensorrt_status()[0]:  # engines are built from the same ONNX, so the eval needs them to exist
            want_onnx += [b.split("-")[1] for b in opts.backends if b.startswith("trt-")]
    onnx = ensure_onnx(opts, list(dict.fromkeys(want_onnx)), say) if want_onnx else {}
    slots = []
    for name in opts.backends:
        if name == "torch":
            r = BackendResult(name, device="cpu", artifact=str(opts.weights) if opts.weights else "random weights")
            slots.append(_Slot(r, TorchRunner(model, "cpu", name="torch")))
        elif name.startswith("ort-"):
            p = name.split("-")[1]
            r = BackendResult(name, device="cpu", artifact=str(onnx[p]["path"]))
            rng, static = _batch_range(onnx[p]["manifest"])
            slots.append(_Slot(r, OrtRunner(onnx[p]["path"], "cpu", threads=opts.threads, name=name), rng, static))
        else:
            p = name.split("-")[1]
            slots.append(_trt_slot(name, p, opts, onnx.get(p)))
    return slots


def _run_in_batches(slot: _Slot, x: np.ndarray, batch: int) -> np.ndarray:
    """Logits for `x`, fed in batches the artifact accepts (the last one padded, its padding dropped)."""
    lo, hi = slot.batch
    step = lo if slot.static else max(lo, min(batch, hi))
    outs = []
    for start in range(0, len(x), step):
        xb = x[start:start + step]
        n = len(xb)
        if n < lo:
            xb = np.concatenate([xb, np.repeat(xb[-1:], lo - n, axis=0)])
        outs.append(slot.runner.infer({"input": xb})["logits"][:n])
    return np.concatenate(outs)


# ---------------------------------------------------------------------------------------------- evaluation


@dataclass
class EvalReport:
    meta: dict[str, Any]
    results: list[BackendResult]
    skipped_images: list[tuple[Path, str]]
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def random_weights(self) -> bool:
        return bool(self.meta.get("random_weights"))

    @property
    def failed(self) -> list[BackendResult]:
        return [r for r in self.results if r.status == "failed"]

    def result(self, name: str) -> BackendResult:
        return next(r for r in self.results if r.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {**self.meta, "reference": REFERENCE,
                "skipped_images": [{"path": str(p), "reason": why} for p, why in self.skipped_images],
                "backends": [r.to_dict() for r in self.results]}

    def table(self) -> list[list[str]]:
        rows = [["backend", "status", "top-1 %", "top-5 %", "Δtop-1", "Δtop-5", "agree %", "cosine", "cos min",
                 "images", "s"]]
        for r in self.results:
            if r.status != "ok":
                rows.append([r.name, r.status, *["-"] * 9])
                continue
            rows.append([r.name, "ok", f"{r.top1:.2f}", f"{r.top5:.2f}", _delta(r.top1_delta), _delta(r.top5_delta),
                         f"{r.agreement:.2f}", f"{r.cosine_mean:.6f}", f"{r.cosine_min:.6f}", str(r.images),
                         f"{r.seconds:.1f}"])
        return rows

    def format_console(self) -> str:
        rows = self.table()
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines += self._notes()
        return "\n".join(lines)

    def format_markdown(self) -> str:
        m = self.meta
        out = [f"# twins-eval: {m['variant']} on {m['data']['root']}", ""]
        if self.random_weights:
            out += [f"> **WARNING — {RANDOM_WEIGHTS_WARNING}**", ""]
        out += [f"Weights: `{m['weights'] or 'random'}`; images: {m['data']['images_used']} of "
                f"{m['data']['images_found']} in {m['data']['classes']} class folder(s) (mapping: "
                f"{m['data']['mapping']}); skipped unreadable: {len(self.skipped_images)}; "
                "reference: PyTorch fp32.", ""]
        rows = self.table()
        out.append("| " + " | ".join(rows[0]) + " |")
        out.append("|" + "|".join("---" if i < 2 else "---:" for i in range(len(rows[0]))) + "|")
        out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        notes = [n.removeprefix("  ") for n in self._notes(markdown=True)]
        return "\n".join(out + ([""] + notes if notes else [])) + "\n"

    def _notes(self, markdown: bool = False) -> list[str]:
        out = []
        for r in self.results:
            if r.status != "ok":
                out.append(f"{'- ' if markdown else ''}{r.name} {r.status}: {r.reason}")
        if self.skipped_images:
            p, why = self.skipped_images[0]
            out.append(f"{'- ' if markdown else ''}skipped {len(self.skipped_images)} unreadable image(s), e.g. "
                       f"{p} ({why})")
        if self.random_weights and not markdown:
            bar = "!" * 100
            out += [bar, f"!! {RANDOM_WEIGHTS_WARNING}", bar]
        return out

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        out_dir = artifacts.ensure_dir(out_dir)
        base = out_dir / self.meta["stem"]
        self.paths = {"json": artifacts.write_json_atomic(base.with_name(base.name + ".eval.json"), self.to_dict()),
                      "markdown": artifacts.write_bytes_atomic(base.with_name(base.name + ".eval.md"),
                                                               self.format_markdown().encode())}
        return self.paths


def _delta(v: float | None) -> str:
    return "-" if v is None else f"{v:+.2f}"


def evaluate(opts: EvalOptions, on_step: Callable[[str], None] | None = None) -> EvalReport:
    """Run every backend in `opts` over the folder; skipped backends say why. See the module docstring."""
    from tqdm import tqdm

    from twins_trt.models import RandomWeightsWarning, create_model

    say = on_step or (lambda msg: log.info(msg))
    ds = image_folder(opts.data, opts.class_map, num_classes=opts.cfg.num_classes,
                      partial_classes=opts.partial_classes)
    if opts.out_dir is not None:
        artifacts.ensure_dir(opts.out_dir)  # fail before the long part, not after
    weights, _ = _weights_id(opts.weights)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)  # said once, louder, in the report
        model = create_model(opts.variant, weights=opts.weights, seed=0)
    slots = _open_slots(opts, model, say)
    for s in slots:
        if s.result.status == "skipped":
            say(f"{s.result.name}: skipped ({s.result.reason})")
    live = [s for s in slots if s.result.status == "ok"]
    for s in live:
        try:
            s.runner.activate()
        except BackendUnavailableError as e:
            s.result.status, s.result.reason = "skipped", str(e)
    live = [s for s in live if s.result.status == "ok"]

    size = tuple(opts.cfg.input_size[1:])
    samples = ds.samples
    want = len(samples) if opts.limit is None else min(opts.limit, len(samples))
    skipped: list[tuple[Path, str]] = []
    done = 0
    bar = tqdm(total=want, desc=f"eval {opts.variant}", unit="img", disable=not opts.progress)
    pos = 0
    try:
        while done < want and pos < len(samples):
            chunk = samples[pos:pos + min(CHUNK, want - done)]
            pos += len(chunk)
            label_of = dict(chunk)
            try:
                loaded = load_images([p for p, _ in chunk], opts.cfg, size, progress=False)
            except CalibrationDataError:  # every file of this chunk unreadable
                skipped += [(p, "unreadable") for p, _ in chunk]
                continue
            skipped += loaded.skipped
            labels = np.array([label_of[p] for p in loaded.files])
            ref_logits = None
            for s in live:
                if s.result.status != "ok":
                    continue
                t0 = time.perf_counter()
                try:
                    logits = _run_in_batches(s, loaded.array, opts.batch)
                except Exception as e:  # a backend that breaks mid-run must not hide the others' results
                    s.result.status, s.result.reason = "failed", f"{type(e).__name__}: {e}"
                    log.error("%s failed: %s", s.result.name, s.result.reason)
                    continue
                s.result.seconds += time.perf_counter() - t0
                if ref_logits is None:
                    ref_logits = logits  # torch is first
                _accumulate(s.result, logits, labels, ref_logits)
            done += len(labels)
            bar.update(len(labels))
    finally:
        bar.close()
        for s in live:
            s.runner.deactivate()
    if done == 0:
        raise DatasetError(f"none of the {len(samples)} image(s) under {opts.data} could be read "
                           f"(first error: {skipped[0][1] if skipped else '?'})")
    ref = slots[0].result
    for s in slots:
        _finish(s.result, ref if s.result is not ref else None)
    ref.top1_delta = ref.top5_delta = 0.0 if ref.top1 is not None else None
    onnx_meta = {s.result.name: s.result.artifact for s in slots}
    meta = {
        "kind": "eval",
        "variant": opts.variant,
        "timm_name": opts.cfg.timm_name,
        "stem": artifact_stem_for(opts),
        "weights": weights,
        "random_weights": opts.weights is None,
        "warning": RANDOM_WEIGHTS_WARNING if opts.weights is None else None,
        "data": {"root": str(ds.root), "classes": len(ds.class_to_idx), "mapping": ds.mapping,
                 "class_to_idx": ds.class_to_idx, "missing_classes": ds.missing_classes,
                 "images_found": len(samples), "images_used": done, "limit": opts.limit},
        "batch": opts.batch,
        "calibration": calibration_source(opts) if any(b.endswith("int8") for b in opts.backends) else None,
        "artifacts": onnx_meta,
        "preprocessing": {"interpolation": opts.cfg.interpolation, "crop_pct": opts.cfg.crop_pct,
                          "mean": opts.cfg.mean, "std": opts.cfg.std, "size": list(size)},
        "created": artifacts.now_iso(),
        "versions": artifacts.tool_versions(),
    }
    report = EvalReport(meta, [s.result for s in slots], skipped)
    if opts.out_dir is not None:
        report.write(opts.out_dir)
    return report


__all__ = ["BACKENDS", "BackendResult", "DatasetError", "EvalOptions", "EvalReport", "ImageFolder", "evaluate",
           "image_folder", "manifest_mismatch", "parse_backends", "read_class_map"]
