"""twins-export's library: PyTorch -> verified FP32/FP16/INT8 ONNX with a graph report and a manifest.

    options       ExportOptions, artifact names, ONNX metadata
    convert       torch -> ONNX FP32, FP16 (ModelOpt AutoCast), INT8 (ModelOpt PTQ, cached scales)
    calibration   the calibration images
    int8/         the INT8 budget: held-out figures, sensitivity, the FP16 fallback search, the report
    overflow      the FP16 overflow check
    verify        artifact vs PyTorch fp32: the harness, the figures, the verdict
    graph_report  what the graph is made of (attention chains, forbidden ops)
    openvino_check  every artifact verified on OpenVINO too
    pipeline      export_variant: every precision converted, checked and named, with its manifest
    peers         --compare-peers: our graph beside timm's
"""

from twins_trt.export.graph_report import GraphReport, format_report, report_graph
from twins_trt.export.options import PRECISIONS, ExportOptions, artifact_stem, get_metadata
from twins_trt.export.pipeline import ExportResult, export_variant
from twins_trt.export.verify import verification_shapes

__all__ = ["PRECISIONS", "ExportOptions", "ExportResult", "GraphReport", "artifact_stem", "export_variant",
           "format_report", "get_metadata", "report_graph", "verification_shapes"]
