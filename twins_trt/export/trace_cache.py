"""Traced FP32 graphs kept between exports: torch.onnx.export runs once per model, size and exporter.

Tracing is the one export step that does not depend on what is asked after it (precisions, calibration, budgets),
and a user tuning a budget or a calibration set exports the same model again and again. The graph torch's dynamo
exporter wrote (before twins-export stamps its metadata) is kept under a key that covers everything it depends on:

- the model: every parameter and buffer (names, dtypes, shapes, bytes), and the code of every module class's
  `forward` in it (a method patched at run time is new code, so a new key);
- twins-trt's model and export code (the source files of `twins_trt.models` and `export/convert.py`);
- the exporter: torch, onnx and onnxscript versions;
- what shapes the trace: task, head, classes, output, features, image size, batch, dynamic dims, opset. A
  dynamic batch is traced over one range whatever the profile (`traced_batch`): the graph is the same for every
  profile (checked on svt_s: 1:8:8, 1:4:16 and 1:1:1 gave the same nodes, weights and shapes), so the exports of
  one model at several batch profiles share one trace.

Where: `$TWINS_TRT_CACHE` (a folder, or `off`), else `$XDG_CACHE_HOME/twins-trt/traces` (`~/.cache/twins-trt/traces`);
twins-export's
`--no-trace-cache` turns it off for one run. Entries are written atomically (two exports may race; both write the same
graph), the least recently used go once the folder passes `$TWINS_TRT_CACHE_MAX_GB` (default 2), and an entry that
does not load is traced again and replaced. A reused graph is verified against PyTorch like a fresh one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import logging
import marshal
import os
from pathlib import Path

import onnx
import torch

from twins_trt import artifacts

log = logging.getLogger(__name__)

ENV, MAX_ENV = "TWINS_TRT_CACHE", "TWINS_TRT_CACHE_MAX_GB"
DEFAULT_MAX_GB = 2.0
TRACED = ("task", "seg_head", "num_classes", "seg_output", "features", "img_size", "batch", "dynamic_batch",
          "dynamic_shape", "opset")  # the ExportOptions the trace depends on (the variant is the model itself)
TRACED_BATCH_MAX = 1 << 16  # a dynamic batch is traced over 1..this (or the profile's max where that is larger)


def traced_batch(opts) -> tuple[int, int, int] | None:
    """(example, min, max) of the batch torch.export traces a dynamic-batch export with; None for a static batch.
    The example is 2: torch.export specialises a dim whose example is 0 or 1."""
    if opts.dynamic_batch is None:
        return None
    return 2, 1, max(TRACED_BATCH_MAX, opts.dynamic_batch[2])


def cache_dir(setting: str | os.PathLike | None = None) -> Path | None:
    """The folder traces are kept in: `setting` (a folder or "off"), else $TWINS_TRT_CACHE, else the user's cache."""
    chosen = str(setting) if setting is not None else os.environ.get(ENV)
    if chosen is not None and chosen.strip().lower() in ("off", "0", "none", ""):
        return None
    if chosen:
        return Path(chosen).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "twins-trt" / "traces"


@functools.cache
def _code_digest() -> str:
    """twins-trt's model code and the exporter call: a change to either makes every key new."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for f in sorted((root / "models").rglob("*.py")) + [root / "export" / "convert.py"]:
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    for pkg in ("torch", "onnx", "onnxscript"):
        try:
            h.update(f"{pkg}=={importlib.metadata.version(pkg)}".encode())
        except importlib.metadata.PackageNotFoundError:
            h.update(f"{pkg} absent".encode())
    return h.hexdigest()


def trace_key(model: torch.nn.Module, opts) -> str:
    """The key of `model` traced as `opts` asks (see the module docstring for what it covers)."""
    h = hashlib.sha256(_code_digest().encode())
    fields = {k: getattr(opts, k, None) for k in TRACED}
    if opts.dynamic_batch is not None:  # the profile does not shape the graph: the range it is traced over does
        fields.update(batch=None, dynamic_batch=traced_batch(opts))
    h.update(json.dumps(fields, default=list).encode())
    for cls in sorted({type(m) for m in model.modules()}, key=lambda c: f"{c.__module__}.{c.__qualname__}"):
        h.update(f"{cls.__module__}.{cls.__qualname__}".encode())
        code = getattr(getattr(cls, "forward", None), "__code__", None)
        if code is not None:
            h.update(marshal.dumps(code))
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.numel():
            h.update(memoryview(t.view(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def load(folder: Path | None, key: str) -> onnx.ModelProto | None:
    """The graph kept under `key`, or None (no cache, no entry, or an entry that does not load: traced again)."""
    if folder is None:
        return None
    path = folder / f"{key}.onnx"
    try:
        proto = onnx.load(str(path))
    except FileNotFoundError:
        return None
    except Exception as e:  # a truncated or foreign file: the trace runs again and replaces it
        log.warning("trace cache entry %s does not load (%s); tracing again", path, type(e).__name__)
        return None
    with contextlib.suppress(OSError):  # a read-only cache is still read
        os.utime(path)  # recently used: kept longest
    return proto


def store(folder: Path | None, key: str, proto: onnx.ModelProto) -> None:
    """Keep `proto` under `key` (atomically), then trim the folder to its size limit. A full disk or a read-only
    folder costs the next export its trace, never this one its artifact."""
    if folder is None or proto.ByteSize() >= 2**31 - 1:  # one protobuf file only: > 2 GB needs external data
        return
    try:
        with artifacts.atomic_path(folder / f"{key}.onnx") as tmp:
            onnx.save(proto, str(tmp))
        trim(folder)
    except OSError as e:
        log.warning("trace cache %s not written: %s", folder, e)


def max_gb() -> float:
    """The folder's size limit: $TWINS_TRT_CACHE_MAX_GB, or the default (with a warning) where it is not a number."""
    setting = os.environ.get(MAX_ENV)
    if setting is None:
        return DEFAULT_MAX_GB
    try:
        return float(setting)
    except ValueError:
        log.warning("%s=%r is not a number of GB; the trace cache keeps at most %g GB (set it to e.g. 4)", MAX_ENV,
                    setting, DEFAULT_MAX_GB)
        return DEFAULT_MAX_GB


def trim(folder: Path, max_bytes: int | None = None) -> list[Path]:
    """Remove the least recently used entries until the folder holds at most `max_bytes`; the removed paths."""
    if max_bytes is None:
        max_bytes = int(max_gb() * 2**30)
    entries = []
    for p in folder.glob("*.onnx"):
        try:
            st = p.stat()
        except FileNotFoundError:  # another process trimmed it
            continue
        entries.append((st.st_mtime, st.st_size, p))
    total, removed = sum(e[1] for e in entries), []
    for _, size, p in sorted(entries):
        if total <= max_bytes:
            break
        p.unlink(missing_ok=True)
        total -= size
        removed.append(p)
    return removed
