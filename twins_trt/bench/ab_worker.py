"""One side of an A/B speed comparison: runs ONE revision's twins_trt in its own process.

`twins-bench --against REV` starts two of these, one on the code under test and one on a checkout
of REV, and drives them over a line protocol (one JSON object per line, on stdin and on the
original stdout; anything else a library prints goes to stderr). Only one of the two measures at a
time; the other waits on its stdin.

What comes from the revision: the PyTorch model (`create_model`), its exporter (the ONNX its own
`ensure_onnx` writes), its runners (`make_runner`) and its inputs. What does not: the loop below
that times `prepare / run_prepared / synchronize` (the runner interface every revision keeps), so
both sides are clocked the same way.

This file runs *inside* the other revision's package, so it imports nothing of the code under test:
it is started by path with that revision's checkout first on sys.path.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

PROTOCOL = os.fdopen(os.dup(1), "w", buffering=1)  # the parent's channel; fd 1 now goes to stderr
os.dup2(2, 1)
sys.stdout = sys.stderr
ROOT = os.environ["TWINS_AB_ROOT"]
sys.path[:] = [ROOT] + [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]


def reply(**obj) -> None:
    PROTOCOL.write(json.dumps(obj) + "\n")


def _import_api():
    """The revision's model, resolver, runner factory and backend table (their places have moved over time)."""
    import twins_trt

    where = os.path.dirname(os.path.abspath(twins_trt.__file__))
    if not where.startswith(os.path.abspath(ROOT) + os.sep):
        raise RuntimeError(f"twins_trt imported from {where}, not from the revision's checkout {ROOT}")
    from twins_trt import create_model

    try:  # since the one-house layout: the backend table and runner factory below bench/, one resolver
        from twins_trt.artifacts.resolve import ensure_engine, ensure_onnx
        from twins_trt.backends import BACKENDS, make_runner
    except ImportError:  # earlier revisions
        from twins_trt.bench.backends import BACKENDS
        from twins_trt.bench.core import make_runner
        from twins_trt.bench.resolve import ensure_engine, ensure_onnx
    try:
        from twins_trt.data import random_inputs
    except ImportError:  # pragma: no cover - every revision so far has it
        random_inputs = None
    return create_model, BACKENDS, ensure_onnx, ensure_engine, make_runner, random_inputs, where


class Side:
    def __init__(self) -> None:
        self.runners: dict[tuple[str, str], object] = {}
        self.inputs: dict[int, object] = {}
        self.visits: dict[tuple[str, str, int], int] = {}

    def setup(self, req: dict) -> dict:
        import warnings

        import numpy as np
        import torch

        create_model, backends, ensure_onnx, ensure_engine, make_runner, random_inputs, where = _import_api()
        torch.set_num_threads(req["threads"])
        batches, img_size = req["batches"], tuple(req["img_size"])
        wanted = [backends[n] for n in req["backends"]]
        artifacts: dict[str, dict[str, str]] = {}
        for variant in req["variants"]:
            model = None
            if any(b.runtime == "torch" for b in wanted):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = create_model(variant, weights=None, seed=0, attn_impl=req["torch_attn"])
            precisions = list(dict.fromkeys(b.precision for b in wanted if b.needs_onnx))
            onnx = {}
            if precisions:
                onnx = ensure_onnx(variant, precisions, batches, img_size=img_size, export_dir=req["export_dir"],
                                   calib_synthetic=True, progress=False, say=lambda m: print(m, file=sys.stderr))
            engines = {p: ensure_engine(onnx[p], batches, req["engines_dir"], say=lambda m: print(m, file=sys.stderr))
                       for p in dict.fromkeys(b.precision for b in wanted if b.needs_engine)}
            artifacts[variant] = {p: str(path) for p, path in onnx.items()}
            for b in wanted:
                r = make_runner(b, model=model, device=req["device"], onnx=onnx, engines=engines,
                                threads=req["threads"])
                r.__enter__()
                self.runners[(variant, b.name)] = r
        for batch in batches:
            if random_inputs is not None:
                self.inputs[batch] = random_inputs(batch, img_size, seed=req["seed"] + batch)
            else:  # pragma: no cover
                rng = np.random.default_rng(req["seed"] + batch)
                self.inputs[batch] = rng.standard_normal((batch, 3, *img_size), dtype=np.float32)
        return {"twins_trt": where, "onnx": artifacts}

    def measure(self, req: dict) -> dict:
        runner = self.runners[(req["variant"], req["backend"])]
        key = (req["variant"], req["backend"], req["batch"])
        n_warm = req["warmup"] if self.visits.get(key, 0) == 0 else min(req["warmup"], 1)
        self.visits[key] = self.visits.get(key, 0) + 1
        runner.prepare({"input": self.inputs[req["batch"]]})
        runner.synchronize()
        for _ in range(n_warm):
            runner.run_prepared()
        runner.synchronize()
        lat = []
        for _ in range(req["iters"]):
            t0 = time.perf_counter()
            runner.run_prepared()
            runner.synchronize()
            lat.append(time.perf_counter() - t0)
        return {"latencies_s": lat, "warmup": n_warm}

    def close(self) -> None:
        for r in self.runners.values():
            try:
                r.__exit__(None, None, None)
            except Exception:  # pragma: no cover - closing is best effort
                pass


def main() -> None:
    side = Side()
    for line in sys.stdin:
        req = json.loads(line)
        cmd = req.pop("cmd")
        if cmd == "quit":
            break
        try:
            out = side.setup(req) if cmd == "setup" else side.measure(req)
        except BaseException as e:  # reported to the parent, which decides what to do
            text = str(e).strip().splitlines()
            reply(ok=False, error=f"{type(e).__name__}: {text[-1] if text else ''}".rstrip(": "),
                  traceback=traceback.format_exc())
            if isinstance(e, KeyboardInterrupt):
                break
            continue
        reply(ok=True, **out)
    side.close()


if __name__ == "__main__":
    main()
