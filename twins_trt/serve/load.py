"""Load on a served model with tritonclient's asyncio clients, and the same runner timed in-process.

perf_analyzer is Triton's own load generator, but its PyPI wheels (2.58 and later) are built for glibc 2.38
(manylinux_2_38) and this machine has 2.36; pip finds only a 0.1.0 placeholder. So the load comes from
tritonclient's asyncio API (gRPC or HTTP): `concurrency` workers, each with one request in flight, until
`requests` have been sent. Every request sent ends in exactly one outcome, counted: an answer (checked
against the in-process answer for its sample when one is given), an error response from the server, or a
connection error (no server there, or it went away mid-request).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from twins_trt.runners.base import Runner


@dataclass
class LoadResult:
    label: str
    concurrency: int
    sent: int = 0
    answered: int = 0  # successful responses
    errors: int = 0  # error responses from the server
    connection_errors: int = 0  # no response: refused, reset, or the server died mid-request
    wrong: int = 0  # answers that differ from the in-process answer beyond the tolerance
    max_abs_diff: float = 0.0  # over all checked answers
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)  # of the answered requests
    error_messages: dict[str, int] = field(default_factory=dict)  # distinct messages (first 200 characters)

    @property
    def outcomes(self) -> int:
        return self.answered + self.errors + self.connection_errors

    @property
    def throughput(self) -> float:
        """Answered requests per second (one image each)."""
        return self.answered / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def to_dict(self) -> dict:
        return {"label": self.label, "concurrency": self.concurrency, "sent": self.sent, "answered": self.answered,
                "errors": self.errors, "connection_errors": self.connection_errors, "wrong": self.wrong,
                "max_abs_diff": self.max_abs_diff, "seconds": round(self.seconds, 3),
                "throughput": round(self.throughput, 2), "p50_ms": round(self.percentile(50), 2),
                "p90_ms": round(self.percentile(90), 2), "p99_ms": round(self.percentile(99), 2),
                "error_messages": dict(self.error_messages)}


@dataclass(frozen=True)
class Target:
    """Where the load goes: `url` is host:port of the gRPC or HTTP endpoint."""

    url: str
    model: str
    input_name: str
    output_name: str
    protocol: str = "grpc"  # grpc | http


def _note(result: LoadResult, message: str) -> None:
    key = " ".join(message.split())[:200]
    result.error_messages[key] = result.error_messages.get(key, 0) + 1


def _is_connection_error(e: BaseException) -> bool:
    """True when no response came back (refused, reset, unavailable), False for the server's error response."""
    from tritonclient.utils import InferenceServerException

    if isinstance(e, InferenceServerException):
        status = str(e.status() or "")
        text = str(e.message() or "")
        return ("UNAVAILABLE" in status or "CANCELLED" in status or "Socket closed" in text
                or "failed to connect" in text.lower())
    return True  # OSError, aiohttp.ClientError, asyncio.TimeoutError: no answer came


async def _drive(target: Target, samples: np.ndarray, expected: np.ndarray | None, concurrency: int, requests: int,
                 result: LoadResult, *, atol: float, timeout_s: float, poison_every: int, backoff_s: float,
                 on_outcome: Callable[[LoadResult], None] | None) -> None:
    if target.protocol == "grpc":
        import tritonclient.grpc.aio as client_mod
    elif target.protocol == "http":
        import tritonclient.http.aio as client_mod
    else:
        raise ValueError(f"protocol must be grpc or http, got {target.protocol!r}")
    poisoned = samples[:1].copy()
    poisoned[0].flat[0] = np.nan
    if target.protocol == "grpc":  # a channel of its own: gRPC's shared one would still back off from a dead server
        big = 2**31 - 1
        client = client_mod.InferenceServerClient(target.url, channel_args=[
            ("grpc.max_send_message_length", big), ("grpc.max_receive_message_length", big),
            ("grpc.use_local_subchannel_pool", 1)])
    else:
        client = client_mod.InferenceServerClient(target.url)
    next_index = 0

    async def one(i: int) -> None:
        poison = poison_every > 0 and i % poison_every == poison_every - 1
        x = poisoned if poison else samples[i % len(samples)][None]
        inp = client_mod.InferInput(target.input_name, list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        t0 = time.perf_counter()
        try:
            kwargs = {"client_timeout": timeout_s} if target.protocol == "grpc" else {}
            res = await asyncio.wait_for(client.infer(target.model, [inp], **kwargs), timeout_s + 1)
        except Exception as e:
            if _is_connection_error(e):
                result.connection_errors += 1
                _note(result, f"connection: {type(e).__name__}: {e}")
                await asyncio.sleep(backoff_s)
            else:
                result.errors += 1
                _note(result, str(e.message() if hasattr(e, "message") else e))
            return
        latency = (time.perf_counter() - t0) * 1000
        result.answered += 1
        result.latencies_ms.append(latency)
        out = res.as_numpy(target.output_name)
        if poison:  # a poisoned request must never be answered
            result.wrong += 1
            return
        if expected is not None:
            diff = float(np.max(np.abs(out[0] - expected[i % len(samples)]))) if out is not None else float("inf")
            result.max_abs_diff = max(result.max_abs_diff, diff)
            if not diff <= atol:
                result.wrong += 1

    async def worker() -> None:
        nonlocal next_index
        while next_index < requests:
            i = next_index
            next_index += 1
            result.sent += 1
            await one(i)
            if on_outcome is not None:
                on_outcome(result)

    start = time.perf_counter()
    try:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    finally:
        result.seconds = time.perf_counter() - start
        await client.close()


def run_load(target: Target, samples: np.ndarray, *, concurrency: int, requests: int,
             expected: np.ndarray | None = None, atol: float = 1e-3, timeout_s: float = 60.0, poison_every: int = 0,
             backoff_s: float = 0.05, label: str = "triton",
             on_outcome: Callable[[LoadResult], None] | None = None) -> LoadResult:
    """`requests` requests of one sample each (cycling through `samples`, shape [K, ...]) at `concurrency`.

    `expected` [K, ...]: each answer is compared with it (max |diff| <= atol, else counted wrong).
    `poison_every` N > 0: every Nth request carries a NaN and must get an error response (an answer is wrong).
    `on_outcome(result)` runs after each request's outcome (in the event loop: keep it short).
    """
    if concurrency < 1 or requests < 0:
        raise ValueError(f"concurrency must be >= 1 and requests >= 0, got {concurrency} and {requests}")
    result = LoadResult(label, concurrency)
    asyncio.run(_drive(target, samples, expected, concurrency, requests, result, atol=atol, timeout_s=timeout_s,
                       poison_every=poison_every, backoff_s=backoff_s, on_outcome=on_outcome))
    return result


def in_process(runner: Runner, input_name: str, samples: np.ndarray, requests: int, warmup: int = 3,
               label: str = "in-process") -> LoadResult:
    """The same requests (one sample each), one after another, on `runner` in this process."""
    result = LoadResult(label, 1)
    for i in range(warmup):
        runner.infer({input_name: samples[i % len(samples)][None]})
    start = time.perf_counter()
    for i in range(requests):
        t0 = time.perf_counter()
        runner.infer({input_name: samples[i % len(samples)][None]})
        result.latencies_ms.append((time.perf_counter() - t0) * 1000)
    result.seconds = time.perf_counter() - start
    result.sent = result.answered = requests
    return result


def reference_answers(runner: Runner, input_name: str, output_name: str, samples: np.ndarray) -> np.ndarray:
    """The runner's answer for each sample alone (batch 1): what the served answers are checked against."""
    return np.stack([runner.infer({input_name: s[None]})[output_name][0] for s in samples])


def samples_for(shape: tuple[int, ...], count: int = 8, seed: int = 0) -> np.ndarray:
    """`count` preprocessed-image-like inputs (standard normal, as normalised pixels are) of one sample's shape."""
    dims = tuple(1 if d < 0 else d for d in shape)
    return np.random.default_rng(seed).standard_normal((count, *dims)).astype(np.float32)
