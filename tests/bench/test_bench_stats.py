"""Statistics and the measurement loop on synthetic data and fake runners (no timing assertions)."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from bench_docs import make_doc

from twins_trt.backends import BACKENDS
from twins_trt.bench.measure import latency_stats, measure, median_ratio, percentile, time_iterations
from twins_trt.bench.run import BenchOptions


def test_percentiles_match_numpy_linear():
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile(values, 90) == pytest.approx(90.1)
    assert percentile(values, 99) == pytest.approx(99.01)
    rng = np.random.default_rng(0)
    x = list(rng.exponential(10, 57))
    for q in (50, 90, 99):
        assert percentile(x, q) == pytest.approx(float(np.percentile(x, q)))
    with pytest.raises(ValueError):
        percentile([], 50)


def test_latency_stats_throughput_is_batch_over_mean():
    lat = [0.010, 0.020, 0.030, 0.040]  # seconds
    s = latency_stats(lat, batch=8)
    assert s["latency_ms"]["mean"] == pytest.approx(25.0)
    assert s["latency_ms"]["p50"] == pytest.approx(25.0)
    assert s["latency_ms"]["stdev"] == pytest.approx(statistics.stdev([10, 20, 30, 40]))
    assert s["latency_ms"]["min"] == pytest.approx(10.0) and s["latency_ms"]["max"] == pytest.approx(40.0)
    assert s["img_s"] == pytest.approx(8 / 0.025)
    assert s["img_s"] == pytest.approx(len(lat) * 8 / sum(lat))  # the same number, said the other way
    assert s["iterations"] == 4
    assert latency_stats([0.5], 1)["latency_ms"]["stdev"] == 0.0
    with pytest.raises(ValueError):
        latency_stats([], 1)


def test_median_ratio_is_robust_to_one_bad_round():
    # round 2 hit by a noisy neighbour on the backend only: the median ignores it
    assert median_ratio([100, 100, 100], [50, 90, 50]) == pytest.approx(2.0)
    assert median_ratio([100, 100], [50]) == pytest.approx(2.0)  # unequal rounds: ratio of medians


def test_speedups_vs_torch_and_best_torch():
    d = make_doc({("torch", 1): [100.0], ("torch-compile", 1): [80.0], ("ort-cpu", 1): [50.0]})
    by = {r["backend"]: r for r in d["results"]}
    assert by["ort-cpu"]["speedup_vs_torch"] == pytest.approx(2.0)
    assert by["ort-cpu"]["best_torch"] == "torch-compile"
    assert by["ort-cpu"]["speedup_vs_best_torch"] == pytest.approx(1.6)
    assert by["torch"]["speedup_vs_torch"] == pytest.approx(1.0)


class FakeRunner:
    device = "cpu"

    def __init__(self, name, log):
        self.name, self.log, self.calls = name, log, 0

    def prepare(self, feed):
        self.log.append((self.name, "prepare", feed["input"].shape[0]))

    def run_prepared(self):
        self.calls += 1

    def synchronize(self):
        pass

    def peak_memory_bytes(self):
        return None


def test_time_iterations_counts():
    r = FakeRunner("x", [])
    assert len(time_iterations(r, iters=5)) == 5 and r.calls == 5
    r = FakeRunner("y", [])
    assert len(time_iterations(r, min_seconds=1e-9, min_iters=3)) == 3


def test_measure_alternates_rounds_and_counts_warmup():
    log: list = []
    runners = {"torch": FakeRunner("torch", log), "ort-cpu": FakeRunner("ort-cpu", log)}
    cfg = BenchOptions(variants=["svt_s"], backends=[BACKENDS["torch"], BACKENDS["ort-cpu"]], batches=[1, 2],
                      img_size=(32, 32), warmup=3, iters=2, rounds=3, progress=False)
    cells = measure(runners, BACKENDS, "svt_s", [1, 2], cfg)
    order = [(n, b) for n, what, b in log if what == "prepare"]
    assert order[:4] == [("torch", 1), ("ort-cpu", 1), ("torch", 2), ("ort-cpu", 2)]
    assert order[4:8] == [("ort-cpu", 1), ("torch", 1), ("ort-cpu", 2), ("torch", 2)]  # reversed on odd rounds
    c = cells[("torch", 1)]
    assert c.warmup_iterations == 3 + 1 + 1  # full warm-up once, one re-warm per later round
    assert len(c.latencies) == 6 and len(c.round_p50_ms) == 3
    assert runners["torch"].calls == 2 * (5 + 6)
    assert c.memory_kind == "host_peak_rss" and c.peak_memory_bytes > 0


def test_measure_reports_a_failing_backend_and_goes_on():
    class Broken(FakeRunner):
        def run_prepared(self):
            raise RuntimeError("kernel exploded\nat line 3")

    runners = {"torch": FakeRunner("torch", []), "ort-cpu": Broken("ort-cpu", [])}
    cfg = BenchOptions(variants=["svt_s"], backends=[], batches=[1], img_size=(32, 32), warmup=1, iters=2,
                      progress=False)
    cells = measure(runners, BACKENDS, "svt_s", [1], cfg)
    assert cells[("ort-cpu", 1)].error == "failed at batch 1: RuntimeError: at line 3"
    res = cells[("torch", 1)].result({"name": "torch"}, None)
    assert res["status"] == "ok" and res["iterations"] == 2


@pytest.mark.parametrize("kw", [dict(iters=0), dict(iters=None), dict(rounds=0), dict(warmup=-1), dict(threads=0),
                                dict(iters=None, min_seconds=-1.0)])
def test_config_rejects_bad_values(kw):
    with pytest.raises(ValueError):
        BenchOptions(variants=["svt_s"], backends=[], batches=[1], **kw)
