"""Runners: one interface (`base.Runner`) for PyTorch, ONNX Runtime and OpenVINO here, and TensorRT in
`twins_trt.trt.runner`. Host arrays in, host arrays out; `prepare`/`run_prepared`/`synchronize` for timing."""

from twins_trt.runners.base import INPUT_NAME, Feed, Runner, output_names, single_input

__all__ = ["INPUT_NAME", "Feed", "Runner", "output_names", "single_input"]
