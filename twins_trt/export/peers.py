"""`twins-export --compare-peers`: our graph beside timm's own Twins export and timm's Swin-T.

timm's models are exported as well as they export: fused attention switched off (the dynamo
exporter fails on SDPA over 5-D tensors), static shapes, the same opset. The point is what the
graphs are made of (pads, shape arithmetic, Swin's cyclic shift) and, optionally, ONNX Runtime
CPU throughput measured in the same process.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from twins_trt import artifacts
from twins_trt.errors import BackendUnavailableError, ExportError
from twins_trt.export.convert import quiet
from twins_trt.export.graph_report import GraphReport, report_graph
from twins_trt.models import resolve_variant
from twins_trt.runners import INPUT_NAME
from twins_trt.runners.ort_runner import OrtRunner

log = logging.getLogger(__name__)

SWIN = "swin_tiny_patch4_window7_224"
SWIN_ATTENTION_LAYERS = 12  # depths (2, 2, 6, 2)


@dataclass
class PeerResult:
    report: GraphReport
    onnx: Path
    img_per_s: float | None = None


def export_timm(name: str, path: Path, opset: int, size: tuple[int, int] = (224, 224)) -> Path:
    try:
        import timm
    except ImportError as e:
        raise BackendUnavailableError("--compare-peers needs timm: pip install 'twins-trt[test]' or pip install timm") from e
    model = timm.create_model(name, pretrained=False).eval()
    for m in model.modules():  # the dynamo exporter cannot take timm's fused SDPA path on these models
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    try:
        with quiet(), torch.no_grad():
            prog = torch.onnx.export(model, (torch.randn(1, 3, *size),), dynamo=True, opset_version=opset,
                                     input_names=[INPUT_NAME], output_names=["logits"], optimize=True)
    except Exception as e:
        raise ExportError(f"exporting timm's {name} failed: {type(e).__name__}: {str(e).splitlines()[-1][:300]}") from e
    with artifacts.atomic_path(path) as tmp:
        prog.save(str(tmp))
    return path


def ort_cpu_throughput(onnx_path: Path, iters: int = 20, batch: int = 1, threads: int | None = None) -> float:
    """img/s from the median of `iters` timed runs after 3 warm-up runs."""
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    with OrtRunner(onnx_path, "cpu", threads=threads) as r:
        r.prepare({INPUT_NAME: x})
        for _ in range(3):
            r.run_prepared()
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            r.run_prepared()
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def compare_peers(variant: str, ours: Path, out_dir: Path, opset: int, iters: int = 0) -> dict[str, PeerResult]:
    """Reports for ours, timm's export of the same variant and timm's Swin-T; img/s when iters > 0.

    Throughput is measured round-robin (one run of each model in turn), so that a noisy machine
    slows all three alike and the ratios stay meaningful.
    """
    cfg = resolve_variant(variant)
    peer_dir = artifacts.ensure_dir(Path(out_dir) / "peers")
    paths = {
        f"ours:{cfg.name}": ours,
        f"timm:{cfg.timm_name}": export_timm(cfg.timm_name, peer_dir / f"timm_{cfg.timm_name}.onnx", opset),
        f"timm:{SWIN}": export_timm(SWIN, peer_dir / f"timm_{SWIN}.onnx", opset),
    }
    expected = {f"ours:{cfg.name}": cfg.num_attention_layers, f"timm:{cfg.timm_name}": cfg.num_attention_layers,
                f"timm:{SWIN}": SWIN_ATTENTION_LAYERS}
    results = {k: PeerResult(report_graph(p, expected[k], name=k, static=True), p) for k, p in paths.items()}
    if iters > 0:
        samples: dict[str, list[float]] = {k: [] for k in paths}
        for _ in range(max(iters // 5, 1)):
            for k, p in paths.items():
                samples[k].append(ort_cpu_throughput(p, iters=5))
        for k in paths:
            results[k].img_per_s = statistics.median(samples[k])
    return results
