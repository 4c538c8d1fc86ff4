"""What the served model does with one batch of requests: check each, run the good ones together, and answer
each request on its own.

Triton checks names, dtypes, dims and the batch bound before a request reaches the model; `answer` checks
them again (a direct caller has no Triton in front) and adds what Triton cannot know: every value finite.
A request that fails a check, or on which the runner raises, gets its own error; the other requests of the
same batch are answered. When the runner raises on the merged batch, each request is rerun alone, so the
one that caused it is the only one that fails.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from twins_trt.errors import one_line
from twins_trt.runners.base import Runner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RequestError:
    """The answer to a request that cannot be served: what was wrong, in one line."""

    message: str


def pad_sizes(max_batch: int, preferred: Sequence[int] = ()) -> tuple[int, ...]:
    """Batch sizes a runner that compiles per shape (OpenVINO) is run at: 1, the preferred sizes (the profile's
    OPT and MAX, as `triton.batching` chose them) and MAX; a merged batch is padded up to the next one."""
    if max_batch < 1:
        return ()
    return tuple(sorted({1, max_batch, *(b for b in preferred if 1 <= b <= max_batch)}))


class Executor:
    """One runner, one input: per-request checks, one merged run, per-request answers.

    `sample_shape`: the input's dims without the batch (-1 where free); `max_batch`: 0 when the artifact
    takes one static batch (then requests carry the whole static shape). `padded`: pad a merged batch up to
    the next of `pad_sizes(max_batch, preferred)` (the compiled shapes), repeating its last sample; the
    padding is dropped from the answers.
    """

    def __init__(self, runner: Runner, input_name: str, sample_shape: Sequence[int], max_batch: int,
                 padded: bool = False, preferred: Sequence[int] = ()):
        self.runner = runner
        self.input_name = input_name
        self.sample_shape = tuple(int(d) for d in sample_shape)
        self.max_batch = int(max_batch)
        self.sizes = pad_sizes(self.max_batch, preferred) if padded else ()

    def warm_up(self) -> list[int]:
        """Run every batch size the server will run (each compiled shape once); returns those sizes."""
        sizes = list(self.sizes) or ([1] if self.max_batch else [])
        base = tuple(1 if d < 0 else d for d in self.sample_shape)
        for b in sizes or [None]:
            shape = (b, *base) if b else base
            self.runner.infer({self.input_name: np.zeros(shape, np.float32)})
        return sizes

    # ------------------------------------------------------------------------------------------ checks

    def check(self, x: np.ndarray | None) -> str | None:
        """Why `x` cannot be served, or None."""
        name = self.input_name
        if x is None:
            return f"input {name!r} is missing; send one FP32 tensor named {name!r}"
        if x.dtype != np.float32:
            return f"input {name!r} has data type {x.dtype}; expected float32 (Triton FP32)"
        want = (-1, *self.sample_shape) if self.max_batch else self.sample_shape
        if x.ndim != len(want) or any(w not in (-1, g) for w, g in zip(want, x.shape)):
            return f"input {name!r} has shape {list(x.shape)}; expected {list(want)} (-1: the batch)"
        if self.max_batch and not 1 <= x.shape[0] <= self.max_batch:
            return f"input {name!r} has batch {x.shape[0]}; this model takes 1 to {self.max_batch}"
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        if bad:
            return (f"input {name!r} has {bad} non-finite value(s) (NaN or Inf) out of {x.size}; send finite "
                    "preprocessed pixels")
        return None

    # ------------------------------------------------------------------------------------------ running

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        n = x.shape[0] if self.max_batch else None
        if n is not None and self.sizes:
            target = next(s for s in self.sizes if s >= n)
            if target > n:
                x = np.concatenate([x, np.repeat(x[-1:], target - n, axis=0)])
        out = self.runner.infer({self.input_name: x})
        return {k: np.ascontiguousarray(v[:n]) if n is not None else v for k, v in out.items()}

    def _failed(self, e: BaseException) -> RequestError:
        return RequestError(f"runner {self.runner.name} failed on this request: {one_line(e)}")

    def answer(self, inputs: Sequence[np.ndarray | None]) -> list[dict[str, np.ndarray] | RequestError]:
        """One answer per request, in order: its outputs, or a RequestError."""
        answers: list[dict[str, np.ndarray] | RequestError | None] = [None] * len(inputs)
        good: list[int] = []
        for i, x in enumerate(inputs):
            why = self.check(x)
            if why:
                answers[i] = RequestError(why)
            else:
                good.append(i)
        if not good:
            return answers  # type: ignore[return-value]
        groups: list[list[int]] = []
        total = 0
        for i in good:  # static batch: one request per run; else merged up to MAX (Triton's batcher keeps to it)
            n = inputs[i].shape[0] if self.max_batch else self.max_batch + 1
            if not groups or total + n > self.max_batch:
                groups.append([])
                total = 0
            groups[-1].append(i)
            total += n
        for group in groups:
            try:
                if len(group) == 1:
                    answers[group[0]] = self._run(inputs[group[0]])
                    continue
                merged = self._run(np.concatenate([inputs[i] for i in group]))
            except Exception as e:  # the merged batch failed: rerun each request alone, so only its culprit fails
                if len(group) == 1:
                    answers[group[0]] = self._failed(e)
                    continue
                log.warning("batch of %d requests failed (%s); running each alone", len(group), one_line(e))
                for i in group:
                    try:
                        answers[i] = self._run(inputs[i])
                    except Exception as e1:
                        answers[i] = self._failed(e1)
                continue
            start = 0
            for i in group:
                n = inputs[i].shape[0]
                answers[i] = {k: v[start:start + n] for k, v in merged.items()}
                start += n
        return answers  # type: ignore[return-value]
