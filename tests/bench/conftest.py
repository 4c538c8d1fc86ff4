"""Fixtures for the twins-bench tests: result documents made by hand, and one fp32 ONNX exported once."""

from __future__ import annotations

import warnings

import pytest

from twins_trt.bench.core import add_speedups, latency_stats


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


@pytest.fixture
def doc() -> dict:
    """torch 100 ms, ort-cpu 80 ms (1.25x) at batch 1 and 8, three rounds each."""
    return make_doc({("torch", 1): [100.0, 101.0, 99.0], ("ort-cpu", 1): [80.0, 81.0, 79.0],
                     ("torch", 8): [700.0, 690.0, 710.0], ("ort-cpu", 8): [500.0, 505.0, 495.0]})


@pytest.fixture(scope="module")
def svt_export(tmp_path_factory):
    """export/svt_s.fp32.onnx (batch 1, 224x224) in a temporary folder, exported once per module (~10 s)."""
    from twins_trt.export import ExportOptions, export_variant

    out = tmp_path_factory.mktemp("export")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = export_variant(ExportOptions(variant="svt_s", out_dir=out, img_size=(224, 224), verify_samples=1,
                                           progress=False))
    return res.artifacts["fp32"]
