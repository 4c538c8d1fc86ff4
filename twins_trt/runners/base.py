"""One runner interface for PyTorch, ONNX Runtime, OpenVINO and TensorRT.

Verification, evaluation and benchmarks drive a `Runner` and never care which backend is behind
it. A runner is a context manager; `infer(feed)` takes and returns host (NumPy) arrays by name.
For timing, `prepare(feed)` stages inputs on the device once, `run_prepared()` runs one inference
with no host copies, and `synchronize()` waits for the device, so the clock sees only inference.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path

import numpy as np

INPUT_NAME = "input"


def output_names(features: bool) -> list[str]:
    """`logits` for a classifier; one map per stride for a backbone."""
    return [f"feat_s{s}" for s in (4, 8, 16, 32)] if features else ["logits"]


Feed = Mapping[str, np.ndarray]


class Runner(abc.ABC):
    name: str = "runner"
    device: str = "cpu"

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def activate(self) -> None:  # load sessions / engines; cheap to call twice
        pass

    def deactivate(self) -> None:
        pass

    @property
    @abc.abstractmethod
    def input_names(self) -> list[str]: ...

    @property
    @abc.abstractmethod
    def output_names(self) -> list[str]: ...

    @abc.abstractmethod
    def infer(self, feed: Feed) -> dict[str, np.ndarray]:
        """Host arrays in, host float32 arrays out, keyed by output name."""

    def prepare(self, feed: Feed) -> None:
        """Stage `feed` for `run_prepared` (on the device for GPU backends)."""
        self._prepared = dict(feed)

    def run_prepared(self) -> None:
        self.infer(self._prepared)

    def synchronize(self) -> None:
        pass

    def peak_memory_bytes(self) -> int | None:
        """Peak device memory for GPU runners; None where the process RSS is the right figure."""
        return None

    def describe(self) -> dict:
        return {"name": self.name, "device": self.device}


def single_input(feed: Feed | np.ndarray) -> np.ndarray:
    if isinstance(feed, np.ndarray):
        return feed
    if len(feed) != 1:
        raise ValueError(f"Twins takes one input ({INPUT_NAME!r}), got {sorted(feed)}")
    return next(iter(feed.values()))


def existing_onnx(path) -> Path:
    """The ONNX file a runner is asked to open, refused at once when it is not there."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist; create it with twins-export")
    return path
