"""What the served model does with a batch of requests (`serve.execute.Executor`), without a server: each
request is answered on its own, a bad request or a runner exception fails that request only."""

from __future__ import annotations

import numpy as np
import pytest

from twins_trt.runners.base import Runner
from twins_trt.serve.execute import Executor, RequestError, pad_sizes

POISON = 777.0  # a first pixel this runner refuses, as a runner would refuse an input it cannot run


class PoolRunner(Runner):
    """A real Runner (logits = spatial mean @ W) that raises on a poisoned sample and records the shapes it ran."""

    name = "pool"

    def __init__(self):
        self.w = np.arange(15, dtype=np.float32).reshape(5, 3) / 10
        self.shapes: list[tuple[int, ...]] = []

    @property
    def input_names(self):
        return ["input"]

    @property
    def output_names(self):
        return ["logits"]

    def infer(self, feed):
        x = feed["input"]
        if x.ndim != 4:
            raise ValueError(f"expected [N,3,H,W], got {x.shape}")
        if (x[:, 0, 0, 0] == POISON).any():
            raise RuntimeError("cannot run a poisoned sample")
        self.shapes.append(x.shape)
        return {"logits": x.mean(axis=(2, 3)) @ self.w.T}


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)


def alone(x: np.ndarray) -> np.ndarray:
    return PoolRunner().infer({"input": x})["logits"]


def test_merged_batch_answers_each_request_as_alone():
    runner = PoolRunner()
    ex = Executor(runner, "input", (3, 8, 8), max_batch=16)
    reqs = [images(1, 0), images(3, 1), images(2, 2)]
    answers = ex.answer(reqs)
    assert runner.shapes == [(6, 3, 8, 8)]  # one run for the whole batch
    for x, a in zip(reqs, answers, strict=True):
        np.testing.assert_allclose(a["logits"], alone(x), rtol=1e-6)


def test_runner_exception_fails_only_its_request():
    runner = PoolRunner()
    ex = Executor(runner, "input", (3, 8, 8), max_batch=16)
    bad = images(2, 3)
    bad[1, 0, 0, 0] = POISON
    reqs = [images(1, 0), bad, images(2, 2)]
    answers = ex.answer(reqs)
    assert isinstance(answers[1], RequestError)
    assert answers[1].message == "runner pool failed on this request: RuntimeError: cannot run a poisoned sample"
    for i in (0, 2):
        np.testing.assert_allclose(answers[i]["logits"], alone(reqs[i]), rtol=1e-6)


@pytest.mark.parametrize("request_, says", [
    (np.full((1, 3, 8, 8), np.nan, np.float32), "has 192 non-finite value(s) (NaN or Inf) out of 192"),
    (np.zeros((1, 3, 8, 8), np.float64), "has data type float64; expected float32"),
    (np.zeros((1, 3, 8, 9), np.float32), "has shape [1, 3, 8, 9]; expected [-1, 3, 8, 8]"),
    (np.zeros((17, 3, 8, 8), np.float32), "has batch 17; this model takes 1 to 16"),
    (None, "input 'input' is missing"),
])
def test_bad_request_fails_alone(request_, says):
    ex = Executor(PoolRunner(), "input", (3, 8, 8), max_batch=16)
    good = images(2, 5)
    answers = ex.answer([good, request_, good])
    assert isinstance(answers[1], RequestError) and says in answers[1].message
    assert all(not isinstance(answers[i], RequestError) for i in (0, 2))
    np.testing.assert_allclose(answers[2]["logits"], alone(good), rtol=1e-6)


def test_padded_runs_at_compiled_sizes_and_drops_the_padding():
    runner = PoolRunner()
    ex = Executor(runner, "input", (3, 8, 8), max_batch=16, padded=True, preferred=(4, 16))
    assert ex.warm_up() == [1, 4, 16]
    runner.shapes.clear()
    reqs = [images(2, 0), images(3, 1)]
    answers = ex.answer(reqs)
    assert runner.shapes == [(16, 3, 8, 8)]  # 5 samples, padded to the next compiled size
    assert [a["logits"].shape for a in answers] == [(2, 5), (3, 5)]
    np.testing.assert_allclose(answers[1]["logits"], alone(reqs[1]), rtol=1e-6)


def test_pad_sizes_are_one_the_preferred_and_max():
    assert pad_sizes(16, (4, 16)) == (1, 4, 16)
    assert pad_sizes(8, (8,)) == (1, 8)
    assert pad_sizes(0) == ()


def test_requests_past_max_are_split_into_runs_within_it():
    runner = PoolRunner()
    ex = Executor(runner, "input", (3, 8, 8), max_batch=4)
    answers = ex.answer([images(3, 0), images(3, 1)])
    assert runner.shapes == [(3, 3, 8, 8), (3, 3, 8, 8)]
    assert all(not isinstance(a, RequestError) for a in answers)
