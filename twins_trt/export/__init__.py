"""twins-export's library: PyTorch -> verified FP32/FP16/INT8 ONNX with a graph report and a manifest."""

from twins_trt.export.core import (
    PRECISIONS,
    ExportOptions,
    ExportResult,
    artifact_stem,
    export_variant,
    get_metadata,
    verification_shapes,
)
from twins_trt.export.graph_report import GraphReport, format_report, report_graph

__all__ = ["PRECISIONS", "ExportOptions", "ExportResult", "GraphReport", "artifact_stem", "export_variant",
           "format_report", "get_metadata", "report_graph", "verification_shapes"]
