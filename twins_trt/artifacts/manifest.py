"""`Manifest`: the one record that sits beside every exported ONNX as `<stem>.<precision>.json`.

The export writes it (`Manifest(...).write(artifact)`); every reader (the resolver, twins-eval,
twins-triton, the OpenVINO runner, engine verification) reads it with `Manifest.read(artifact)`
and asks it typed questions (`batch`, `task`, `calibration_source`, `covers_size`, ...) instead of
parsing the JSON on its own. The JSON keeps the keys it has always had; keys this type does not
name (`graph`, `int8`, `fp16`, `openvino`, ...) travel in `extra`, in order.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twins_trt.artifacts.files import manifest_path, write_json_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchRange:
    """The batch sizes an artifact takes: one static size, or a MIN..MAX profile tuned at OPT."""

    min: int
    opt: int
    max: int
    static: bool

    @classmethod
    def fixed(cls, batch: int) -> BatchRange:
        return cls(batch, batch, batch, True)

    @classmethod
    def profile(cls, lo: int, opt: int, hi: int) -> BatchRange:
        return cls(lo, opt, hi, False)

    @classmethod
    def from_json(cls, value: Any) -> BatchRange | None:
        """`{"static": 8}` or `{"min": 1, "opt": 8, "max": 64}`; None for anything else."""
        if not isinstance(value, dict):
            return None
        try:
            if "static" in value:
                return cls.fixed(int(value["static"]))
            if {"min", "max"} <= set(value):
                return cls.profile(int(value["min"]), int(value.get("opt", value["max"])), int(value["max"]))
        except (TypeError, ValueError):
            return None
        return None

    def to_json(self) -> dict[str, int]:
        return {"static": self.min} if self.static else {"min": self.min, "opt": self.opt, "max": self.max}

    def covers(self, batches) -> bool:
        return all(self.min <= b <= self.max for b in batches)

    def __str__(self) -> str:
        return f"{self.min}" if self.static else f"{self.min}..{self.max}"


@dataclass
class Manifest:
    """What went into an artifact and what came out. Field order is the JSON's key order."""

    variant: str
    precision: str
    batch: BatchRange | None  # None: not recorded (a manifest from elsewhere)
    img_size: tuple[int, int]
    kind: str = "onnx"
    file: str | None = None
    timm_name: str | None = None
    task: str = "cls"  # "cls" (classifier or backbone) or "seg" (segmentor)
    features: bool = False
    inputs: list[dict] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    hw_profile: list[list[int]] | None = None  # [[minH, minW], [optH, optW], [maxH, maxW]] with a dynamic H/W
    opset: int | None = None
    sha256: str | None = None
    weights: str | None = None
    weights_sha256: str | None = None
    preprocessing: dict | None = None
    segmentation: dict | None = None  # {"head", "num_classes", "output"} for a segmentor
    graph: dict | None = None
    verification: dict | None = None
    export_seconds: float | None = None
    created: str | None = None
    versions: dict | None = None
    calibration: dict | None = None  # INT8: method, samples, source, files, held-out split, scale cache
    extra: dict[str, Any] = field(default_factory=dict)  # every other key (int8, fp16, openvino, ...)

    # ------------------------------------------------------------------------------------------ JSON

    _KEYS = ("kind", "file", "variant", "timm_name", "task", "precision", "features", "inputs", "outputs", "batch",
             "img_size", "hw_profile", "opset", "sha256", "weights", "weights_sha256", "preprocessing",
             "segmentation", "graph", "verification", "export_seconds", "created", "versions", "calibration")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self._KEYS:
            value = getattr(self, key)
            if key == "batch":
                value = value.to_json() if value is not None else None
            elif key == "img_size":
                value = list(value)
            elif key == "calibration" and value is None:
                continue  # only INT8 artifacts record one
            out[key] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        """Any manifest this project ever wrote; `task` is inferred for those written before it was recorded."""
        known = {k: data[k] for k in cls._KEYS if k in data}
        seg = known.get("segmentation")
        batch = BatchRange.from_json(known.pop("batch", None))
        img = known.pop("img_size", None) or [0, 0]
        return cls(variant=str(known.pop("variant", "")), precision=str(known.pop("precision", "")), batch=batch,
                   img_size=(int(img[0]), int(img[1])), **{**known, "task": known.get("task") or ("seg" if seg else "cls")},
                   extra={k: v for k, v in data.items() if k not in cls._KEYS})

    @classmethod
    def read(cls, artifact: str | os.PathLike) -> Manifest | None:
        """The manifest beside `artifact`; None when there is none or it cannot be read (the reason is logged)."""
        path = manifest_path(artifact)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log.info("manifest %s cannot be read (%s); treating %s as undescribed", path, e, Path(artifact).name)
            return None
        if not isinstance(data, dict):
            log.info("manifest %s is not a JSON object; treating %s as undescribed", path, Path(artifact).name)
            return None
        return cls.from_json(data)

    def write(self, artifact: str | os.PathLike) -> Path:
        """Atomically, as `<artifact stem>.json` beside it."""
        return write_json_atomic(manifest_path(artifact), self.to_json())

    # ------------------------------------------------------------------------------------------ questions

    @property
    def calibration_source(self) -> str | None:
        """Where an INT8 artifact's scales came from: a folder, "synthetic", or None (not calibrated)."""
        return (self.calibration or {}).get("source")

    @property
    def verified(self) -> bool | None:
        """The export's verdict against PyTorch on ONNX Runtime (None when not recorded)."""
        return (self.verification or {}).get("passed")

    def covers_size(self, size: tuple[int, int]) -> bool:
        """True when the artifact takes an H x W input of `size`: inside its H/W profile, or its static size."""
        if self.hw_profile:
            (h0, w0), _, (h2, w2) = self.hw_profile
            return h0 <= size[0] <= h2 and w0 <= size[1] <= w2
        return tuple(self.img_size) == tuple(size)

    def takes(self, batches) -> bool:
        """True when every batch in `batches` is within the recorded batch range."""
        return self.batch is not None and self.batch.covers(batches)

    def get(self, key: str, default: Any = None) -> Any:
        """A key of the JSON by name, for the keys this type keeps in `extra` (`int8`, `openvino`, ...)."""
        return self.to_json().get(key, default)


__all__ = ["BatchRange", "Manifest"]
