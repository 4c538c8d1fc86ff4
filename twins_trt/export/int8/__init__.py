"""INT8 (and FP8) under an accuracy budget: held-out figures, per-region sensitivity, the FP16 fallback search, the
report. One machinery for both quantized precisions, parametrised by `precision` ("int8" | "fp8",
`twins_trt.qdq.FORMATS`); the export stage that drives it is `twins_trt.export.quantized`.

    budget   the budget (`cosine>=0.995`, `agreement>=0.99`), the held-out split and the figures it is judged on
    regions  the graph's MatMul/Conv/Gemm nodes grouped by Twins sub-layer, with their MACs
    local    every region's own quantization error in one pass (the quick ranking)
    search   sensitivity (local, confirmed leave-one-out; or leave-one-out throughout) and the greedy FP16 search
    report   the sensitivity table, JSON and plot

The Q/DQ structure itself (which nodes are INT8, a graph without some of its Q/DQ) is `twins_trt.qdq`.
"""

from twins_trt.export.int8.budget import (
    DEFAULT_INT8_BUDGET,
    Budget,
    Figures,
    HeldOut,
    figures,
    heldout_samples,
    parse_budget,
    run_onnx,
    split_holdout,
)
from twins_trt.export.int8.local import local_errors
from twins_trt.export.int8.regions import Region, classify, find_regions, mac_share, node_macs
from twins_trt.export.int8.report import format_table, plot, write_report
from twins_trt.export.int8.search import (
    METHODS,
    RegionScore,
    SearchResult,
    local_sensitivity,
    rank,
    search,
    sensitivity,
    spearman,
)
from twins_trt.qdq import int8_nodes, quantized_nodes, without_qdq

__all__ = ["DEFAULT_INT8_BUDGET", "METHODS", "Budget", "Figures", "HeldOut", "Region", "RegionScore", "SearchResult",
           "classify", "figures", "find_regions", "format_table", "heldout_samples", "int8_nodes", "local_errors",
           "local_sensitivity", "mac_share", "node_macs", "parse_budget", "plot", "quantized_nodes", "rank", "run_onnx",
           "search", "sensitivity", "spearman", "split_holdout", "without_qdq", "write_report"]
