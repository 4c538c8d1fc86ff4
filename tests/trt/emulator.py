"""The TensorRT emulator (tools/trt_emulator) as a module object, for tests that pass `trt=` explicitly.

Each call loads a fresh copy under a private name, so TensorRT 10 and 11 can be emulated side by side
in one process without touching `sys.modules["tensorrt"]`. `installed(...)` puts one in place of
`tensorrt` for code that imports it (the CLIs), and takes it out again.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EMULATOR = ROOT / "tools" / "trt_emulator"
DEFAULT_VERSION = os.environ.get("TRT_EMULATOR_VERSION", "11")
_loaded: dict[str, object] = {}


def load(version: str | None = None):
    """The emulator module emulating TensorRT `version` (10 or 11; default: $TRT_EMULATOR_VERSION or 11)."""
    version = str(version or DEFAULT_VERSION)
    if version not in _loaded:
        old = os.environ.get("TRT_EMULATOR_VERSION")
        os.environ["TRT_EMULATOR_VERSION"] = version
        try:
            spec = importlib.util.spec_from_file_location(f"_trt_emulator_{version.replace('.', '_')}",
                                                          EMULATOR / "tensorrt" / "__init__.py")
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
        finally:
            if old is None:
                os.environ.pop("TRT_EMULATOR_VERSION", None)
            else:
                os.environ["TRT_EMULATOR_VERSION"] = old
        _loaded[version] = mod
    return _loaded[version]


@contextlib.contextmanager
def installed(version: str | None = None):
    """`import tensorrt` gives the emulator inside the block."""
    mod = load(version)
    saved = sys.modules.get("tensorrt", None)
    had = "tensorrt" in sys.modules
    sys.modules["tensorrt"] = mod
    try:
        yield mod
    finally:
        if had:
            sys.modules["tensorrt"] = saved
        else:
            sys.modules.pop("tensorrt", None)
