"""Package data: TensorRT 10's ONNX operator table (trt10_onnx_operators.json; see twins_trt.export.trt_table)."""
