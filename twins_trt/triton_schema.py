"""Triton's own ModelConfig schema (`model_config.proto`, as tritonclient ships it): every config.pbtxt this
package writes or serves is parsed with it."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def model_config_pb2():
    """Triton's ModelConfig protobuf module from tritonclient, or None when it is not installed.

    Loaded from its file: `tritonclient.grpc`'s package import needs grpcio, the schema does not.
    """
    try:
        spec = importlib.util.find_spec("tritonclient")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        f = Path(base) / "grpc" / "model_config_pb2.py"
        if f.is_file():
            mspec = importlib.util.spec_from_file_location("twins_trt_triton_model_config_pb2", f)
            module = importlib.util.module_from_spec(mspec)
            try:
                mspec.loader.exec_module(module)
            except Exception as e:  # a protobuf runtime too old for the generated code
                log.debug("cannot load %s: %s", f, e)
                return None
            return module
    return None


_PB2 = None


def parse_config(text: str):
    """Parse config.pbtxt text with Triton's schema; None when tritonclient is not installed."""
    global _PB2
    if _PB2 is None:
        _PB2 = model_config_pb2() or False
    if not _PB2:
        return None
    from google.protobuf import text_format

    return text_format.Parse(text, _PB2.ModelConfig())

