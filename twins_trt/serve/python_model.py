"""The Triton Python-backend model twins-serve writes: `model.py` in its repository is one line that imports
`TritonPythonModel` from here.

Triton's Python backend runs it in its stub process with this interpreter (PyTriton's server puts it on
PATH). The model's parameters (config.pbtxt) name the artifact and the backend; the runner comes from the one
runner factory (`backends.make_runner`). Each request gets its own response: outputs, or an error naming
what was wrong with that request (`execute.Executor`), so one bad request never fails its batch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from twins_trt.backends import BACKENDS, make_runner
from twins_trt.serve.execute import Executor, RequestError

log = logging.getLogger(__name__)

# config.pbtxt parameters (all strings, as Triton keeps them)
P_ARTIFACT, P_BACKEND, P_THREADS, P_INPUT, P_SAMPLE_SHAPE = "artifact", "backend", "threads", "input", "sample_shape"


def executor_from_parameters(params: dict[str, str], max_batch: int, preferred: list[int] | None = None) -> Executor:
    """The runner and its Executor that a served model's parameters describe (also used in-process by tests)."""
    backend = BACKENDS[params[P_BACKEND]]
    artifact = Path(params[P_ARTIFACT])
    threads = int(params[P_THREADS]) if params.get(P_THREADS) else None
    runner = make_runner(backend, model=None, device="cpu", onnx={backend.precision: artifact},
                         engines={backend.precision: artifact}, threads=threads)
    runner.activate()
    return Executor(runner, params[P_INPUT], json.loads(params[P_SAMPLE_SHAPE]), max_batch,
                    padded=backend.runtime == "openvino", preferred=preferred or ())


class TritonPythonModel:
    """Triton's Python-backend interface: initialize, execute, finalize."""

    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.outputs = [o["name"] for o in config["output"]]
        preferred = config.get("dynamic_batching", {}).get("preferred_batch_size", [])
        self.executor = executor_from_parameters(params, int(config.get("max_batch_size", 0)), preferred)
        sizes = self.executor.warm_up()
        log.info("twins-serve model ready: %s on %s, warmed at batch sizes %s", params[P_ARTIFACT],
                 params[P_BACKEND], sizes)

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        inputs = []
        for r in requests:
            t = pb_utils.get_input_tensor_by_name(r, self.executor.input_name)
            inputs.append(None if t is None else t.as_numpy())
        responses = []
        for answer in self.executor.answer(inputs):
            if isinstance(answer, RequestError):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(answer.message)))
            else:
                responses.append(pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor(name, np.ascontiguousarray(answer[name], dtype=np.float32))
                    for name in self.outputs]))
        return responses

    def finalize(self) -> None:
        self.executor.runner.deactivate()
