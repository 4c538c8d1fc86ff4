"""PyTorch eager (fp32 / fp16 autocast) and torch.compile."""

from __future__ import annotations

import numpy as np
import torch

from twins_trt.device import require_cuda
from twins_trt.runners.base import INPUT_NAME, Feed, Runner, output_names, single_input


class TorchRunner(Runner):
    def __init__(self, model: torch.nn.Module, device: str = "cpu", fp16: bool = False, compile: bool = False,
                 name: str | None = None):
        if device.startswith("cuda"):
            require_cuda(f"PyTorch on {device}")
        if fp16 and not device.startswith("cuda"):
            raise ValueError("fp16 PyTorch runs on CUDA only; on the CPU use fp32")
        self.model = model.eval().to(device)
        self.device = device
        self.fp16 = fp16
        self.compile = compile
        self.name = name or ("torch-compile" if compile else "torch-fp16" if fp16 else "torch")
        self._fn = None
        self._x: torch.Tensor | None = None
        self._features = bool(getattr(model, "features_only", False))

    def activate(self) -> None:
        if self._fn is None:
            self._fn = torch.compile(self.model) if self.compile else self.model

    @property
    def input_names(self) -> list[str]:
        return [INPUT_NAME]

    @property
    def output_names(self) -> list[str]:
        return output_names(self._features)

    def _forward(self, x: torch.Tensor):
        self.activate()
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16, enabled=self.fp16):
            out = self._fn(x)
        return out if isinstance(out, (tuple, list)) else (out,)

    def infer(self, feed: Feed | np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(single_input(feed), dtype=np.float32)).to(self.device)
        outs = self._forward(x)
        return {n: o.float().cpu().numpy() for n, o in zip(self.output_names, outs)}

    def prepare(self, feed: Feed | np.ndarray) -> None:
        self._x = torch.from_numpy(np.ascontiguousarray(single_input(feed), dtype=np.float32)).to(self.device)

    def run_prepared(self) -> None:
        self._forward(self._x)

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def peak_memory_bytes(self) -> int | None:
        if self.device.startswith("cuda"):
            return int(torch.cuda.max_memory_allocated())
        return None

    def describe(self) -> dict:
        return {"name": self.name, "device": self.device, "fp16": self.fp16, "compile": self.compile,
                "threads": torch.get_num_threads()}
