"""Synthetic twins-bench result documents for the report, statistics and gate tests."""

from __future__ import annotations

from twins_trt.bench.measure import add_speedups, latency_stats


def make_doc(p50_ms: dict[tuple[str, int], list[float]], variant: str = "svt_s", threads: int = 2) -> dict:
    """A result document whose cells have the given per-round p50 latencies (ms); all derived figures filled in."""
    results = []
    for (backend, batch), rounds in p50_ms.items():
        lat_s = [x / 1e3 for x in rounds]
        results.append({"variant": variant, "backend": backend, "runtime": backend.split("-")[0],
                        "precision": "fp32", "batch": batch, "status": "ok", **latency_stats(lat_s, batch),
                        "rounds": len(rounds), "round_p50_ms": list(rounds), "warmup_iterations": 1,
                        "warmup_seconds": 0.1, "peak_memory_bytes": 2**30, "memory_kind": "host_peak_rss",
                        "runner": {"name": backend}, "artifact": None})
    add_speedups(results)
    return {"kind": "twins-bench", "format": 1,
            "config": {"variants": [variant], "backends": sorted({b for b, _ in p50_ms}),
                       "batches": sorted({b for _, b in p50_ms}), "img_size": [224, 224], "warmup": 1, "iters": 2,
                       "min_seconds": None, "rounds": 3, "threads": threads, "torch_device": "cpu",
                       "torch_attn": "sdpa"},
            "method": {"throughput": "img/s = batch / mean latency", "speedup": "median of ratios"},
            "env": {"date": "2026-11-20T10:00:00+00:00", "cpu": "Test CPU", "cores": 2, "usable_cores": 2,
                    "threads": {"torch": threads, "ort_intra_op": threads}, "gpu": {"name": None},
                    "versions": {"torch": "2.x"}, "git_commit": "abc1234"},
            "results": results,
            "skipped": [{"variant": variant, "backend": "trt-fp16", "status": "skipped",
                         "reason": "TensorRT is not importable here"}]}
