"""`twins-serve --load`: the runner in-process, then the served model with dynamic batching on and off, at
each concurrency; one table, one JSON, one plot.

The in-process figure is the runner called one request after another (batch 1) in this process; a served
figure's ratio is its throughput over that one, so the cost (or the gain, with batching) of serving shows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from twins_trt.serve.load import LoadResult, Target, in_process, reference_answers, run_load, samples_for
from twins_trt.serve.python_model import executor_from_parameters
from twins_trt.serve.server import ServeOptions, Server

log = logging.getLogger(__name__)

CONCURRENCIES = (1, 4, 16)


def load_test(opts: ServeOptions, concurrencies: Sequence[int] = CONCURRENCIES, requests: int = 200,
              protocol: str = "grpc", progress: bool = True) -> list[LoadResult]:
    """In-process, then Triton with dynamic batching on, then off; servers on free loopback ports."""
    from tqdm import tqdm

    probe = Server(opts)
    params = probe.parameters()
    name, out_name = probe.spec.inputs[0].name, probe.spec.outputs[0].name
    samples = samples_for(probe.spec.inputs[0].shape[1:], count=8)  # one sample: a static batch must be 1
    ex = executor_from_parameters(params, probe.batching.max_batch_size, list(probe.batching.preferred))
    with ex.runner:
        expected = reference_answers(ex.runner, name, out_name, samples)
        results = [in_process(ex.runner, name, samples, requests, label=f"in-process {probe.backend.name}")]
    modes = (True, False) if probe.batching.max_batch_size else (False,)  # a static batch: Triton cannot batch
    bar = tqdm(total=len(modes) * len(concurrencies), desc="load", disable=not progress, unit="run")
    for dyn in modes:
        with Server(replace(opts, dynamic_batching=dyn).with_free_ports()) as server:
            url = server.endpoints["grpc" if protocol == "grpc" else "http"].removeprefix("http://")
            target = Target(url, server.name, name, out_name, protocol)
            run_load(target, samples, concurrency=max(concurrencies), requests=2 * max(concurrencies))  # warm-up
            for c in concurrencies:
                label = f"triton dynamic batching {'on' if dyn else 'off'}"
                results.append(run_load(target, samples, concurrency=c, requests=requests, expected=expected,
                                        label=label))
                bar.update()
    bar.close()
    return results


def table(results: Sequence[LoadResult]) -> str:
    """Markdown: one row per run; ratio = throughput / the in-process throughput."""
    base = next((r.throughput for r in results if r.label.startswith("in-process")), 0.0)
    rows = ["| run | concurrency | req/s | p50 ms | p90 ms | p99 ms | vs in-process | sent | answered | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ratio = f"{r.throughput / base:.2f}x" if base else "-"
        rows.append(f"| {r.label} | {r.concurrency} | {r.throughput:.1f} | {r.percentile(50):.1f} | "
                    f"{r.percentile(90):.1f} | {r.percentile(99):.1f} | {ratio} | {r.sent} | {r.answered} | "
                    f"{r.errors + r.connection_errors + r.wrong} |")
    return "\n".join(rows)


def plot(results: Sequence[LoadResult], path: Path) -> Path:
    """Throughput and p99 by concurrency, dynamic batching on vs off, the in-process figure as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from twins_trt.artifacts.files import atomic_path

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for label in dict.fromkeys(r.label for r in results if not r.label.startswith("in-process")):
        rs = [r for r in results if r.label == label]
        a.plot([r.concurrency for r in rs], [r.throughput for r in rs], "o-", label=label)
        b.plot([r.concurrency for r in rs], [r.percentile(99) for r in rs], "o-", label=label)
    for r in results:
        if r.label.startswith("in-process"):
            a.axhline(r.throughput, color="grey", ls="--", label=r.label)
            b.axhline(r.percentile(99), color="grey", ls="--", label=r.label)
    a.set(xlabel="concurrency", ylabel="requests/s (1 image each)", xscale="log", title="throughput")
    b.set(xlabel="concurrency", ylabel="ms", xscale="log", title="p99 latency")
    a.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
