"""FP8 (E4M3) as ModelOpt writes it: what its PTQ is asked for, and INT8's calibration read as FP8 scales.

ModelOpt's FP8 PTQ (`quantize_mode="fp8"`) calibrates exactly as its INT8 PTQ does (ONNX Runtime's
symmetric entropy or max calibrators), then rewrites every Q/DQ pair to FLOAT8E4M3FN with its scale
multiplied by 448/127 (`modelopt.onnx.quantization.fp8.int8_to_fp8`). So INT8 activation scales
calibrated on the same FP32 graph, images and method *are* the FP8 scales, times 448/127: an INT8
calibration cache serves an FP8 export (`scales_from_int8`) as well as its own.

Attention: ModelOpt quantizes the two attention MatMuls (and so the Softmax output feeding the second)
in FP8 where the chain matches TensorRT's FP8 fused-MHA pattern and the head dim lies in (8, 256];
`disable_mha_qdq` keeps every attention MatMul in FP16, FP8 then covering the linear layers and
convolutions only. `ExportOptions.fp8_attention` chooses; README "FP8" gives the measured accuracy of both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twins_trt.export.options import ExportOptions

INT8_TO_FP8_SCALE = 448.0 / 127.0  # ModelOpt's int8_to_fp8: FP8 scale = INT8 scale * 448 / 127
MHA_ACCUMULATION = "fp16"  # ModelOpt's default: the attention MatMuls' FP16 accumulation, as TensorRT's FP8 MHA runs


def quantize_options(precision: str, opts: ExportOptions) -> dict:
    """ModelOpt `quantize()` keyword arguments that depend on the precision: for FP8, whether attention is FP8."""
    if precision != "fp8":
        return {}
    return {"disable_mha_qdq": not opts.fp8_attention, "mha_accumulation_dtype": MHA_ACCUMULATION}


def describe(opts: ExportOptions) -> dict:
    """The manifest's word on an FP8 artifact's placement."""
    return {"attention": "fp8" if opts.fp8_attention else "fp16",
            "modelopt": quantize_options("fp8", opts), "scale_from_int8": INT8_TO_FP8_SCALE}


def scales_from_int8(scales: dict[str, float]) -> dict[str, float]:
    """INT8 activation scales (an INT8 calibration cache) as the FP8 scales ModelOpt derives from the same calibration."""
    return {name: value * INT8_TO_FP8_SCALE for name, value in scales.items()}


__all__ = ["INT8_TO_FP8_SCALE", "MHA_ACCUMULATION", "describe", "quantize_options", "scales_from_int8"]
