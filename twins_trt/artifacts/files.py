"""Writing artifacts so that nothing half-written ever sits under a final name.

Every artifact (ONNX, engine, report) is written to a temporary file in the destination folder and
renamed over the final name only when complete; a JSON manifest beside it says what went in and
what came out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from twins_trt.errors import OutputDirError

# Every final name this process has written, in order: lets a CLI say truthfully, after Ctrl-C, whether
# anything complete was written before the interrupt (half-written files never reach a final name).
_WRITTEN: list[Path] = []

TOOL_PACKAGES = ("twins-trt", "torch", "onnx", "onnxruntime-gpu", "onnxruntime", "nvidia-modelopt", "timm",
                 "polygraphy", "openvino", "tensorrt", "tensorrt-cu12-bindings", "tensorrt-cu13-bindings")


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and prove it is writable, with an error that says which folder failed."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise OutputDirError(f"output folder {path} is not writable ({e.strerror or e}); choose another with -o DIR") from e
    return path


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it over `final` only if the block succeeds.

    Any exception (KeyboardInterrupt included) removes the temporary file and leaves `final` as it was.
    """
    final = Path(final)
    ensure_dir(final.parent)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, final)
        _WRITTEN.append(final)
    finally:
        tmp_path.unlink(missing_ok=True)
        # torch/onnx may write external data beside the temporary file
        for extra in final.parent.glob(f"{tmp_path.name}*"):
            extra.unlink(missing_ok=True)


def journal_mark() -> int:
    """A bookmark in the record of final names written by this process (see `written_since`)."""
    return len(_WRITTEN)


def written_since(mark: int) -> list[Path]:
    """Final names written (complete, by rename) since `journal_mark()` returned `mark`."""
    return list(dict.fromkeys(_WRITTEN[mark:]))


def write_bytes_atomic(final: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def write_json_atomic(final: str | os.PathLike, obj: Any) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")
    return Path(final)


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "__dict__"):
        return vars(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def tool_versions() -> dict[str, str]:
    """Versions of the packages that shaped an artifact (only those installed)."""
    out = {"python": platform.python_version()}
    for pkg in TOOL_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd or Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def manifest_path(artifact: str | os.PathLike) -> Path:
    """`export/svt_s.fp16.onnx` -> `export/svt_s.fp16.json`; `engines/x.plan` -> `engines/x.json`."""
    return Path(artifact).with_suffix(".json")


def read_manifest(artifact: str | os.PathLike) -> dict[str, Any]:
    path = manifest_path(artifact)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
