"""The evaluation set: an ImageNet-style folder, its class map, and the images in chunks.

The folder holds one subfolder per class (torchvision ImageFolder). Class indices come from a class
map (one folder name per line, or JSON {folder: index}) or, without one, from the sorted folder
names as ImageFolder assigns them. Samples are interleaved across classes, so `--limit N` sees
every class; images are preprocessed CHUNK at a time, so memory stays flat however large the folder.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from twins_trt.data import IMAGE_SUFFIXES, load_images
from twins_trt.errors import CalibrationDataError, DatasetError
from twins_trt.models.twins import TwinsConfig

log = logging.getLogger(__name__)

CHUNK = 64  # images preprocessed and held at once



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


@dataclass
class Chunk:
    images: np.ndarray  # (n, 3, H, W) float32, preprocessed
    labels: np.ndarray  # (n,) class indices
    files: list[Path]


def iter_chunks(ds: ImageFolder, cfg: TwinsConfig, size: tuple[int, int], limit: int | None,
                skipped: list[tuple[Path, str]]) -> Iterator[Chunk]:
    """Readable images of `ds` (at most `limit`), CHUNK at a time; unreadable ones are appended to `skipped`."""
    want = len(ds.samples) if limit is None else min(limit, len(ds.samples))
    done = pos = 0
    while done < want and pos < len(ds.samples):
        chunk = ds.samples[pos:pos + min(CHUNK, want - done)]
        pos += len(chunk)
        label_of = dict(chunk)
        try:
            loaded = load_images([p for p, _ in chunk], cfg, size, progress=False)
        except CalibrationDataError:  # every file of this chunk unreadable
            skipped += [(p, "unreadable") for p, _ in chunk]
            continue
        skipped += loaded.skipped
        done += len(loaded.files)
        yield Chunk(loaded.array, np.array([label_of[p] for p in loaded.files]), loaded.files)


__all__ = ["CHUNK", "Chunk", "DatasetError", "ImageFolder", "image_folder", "iter_chunks", "read_class_map"]
