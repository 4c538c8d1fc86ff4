"""twins-bench's library: PyTorch vs ONNX Runtime vs TensorRT in images/s, latency percentiles, a regression gate.

`run_benchmark(BenchOptions(...))` returns a result document (a dict: config, environment, method,
results, skipped); `write_reports` turns it into Markdown, JSON and a PNG; `gate.check_regression`
compares its speed ratios with a baseline. Timing and statistics: `bench.measure`; a run: `bench.run`;
segmentors (`--task seg`): `bench.seg`; the A/B gate (`--against REV`): `bench.ab`.
"""

from twins_trt.backends import BACKENDS, GROUPS, Backend, Capabilities, parse_backends, parse_batches, plan_run
from twins_trt.bench.gate import check_regression, enforce, make_baseline, parse_fraction, read_baseline
from twins_trt.bench.measure import latency_stats
from twins_trt.bench.report import format_markdown, format_table, write_reports
from twins_trt.bench.run import PAPER_FIGURES, PAPER_PROTOCOL, BenchOptions, run_benchmark

__all__ = ["BACKENDS", "GROUPS", "PAPER_FIGURES", "PAPER_PROTOCOL", "Backend", "BenchOptions", "Capabilities",
           "check_regression", "enforce", "format_markdown", "format_table", "latency_stats", "make_baseline",
           "parse_backends", "parse_batches", "parse_fraction", "plan_run", "read_baseline", "run_benchmark",
           "write_reports"]
