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

Speed does not depend on accuracy: a revision whose resolver keeps each precision on its own
(`Resolver.artifacts`) times a quantized export that missed its accuracy bound from a temporary
folder of this process, and the setup reply names it under `below_bound` ({variant: {precision:
figures and hint}}). Older revisions export through their `ensure_onnx`, as they always did; one that
has twins-eval's `below_bound_int8` quantizes such an INT8 again into that folder and times it too.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
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


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _onnx(ensure_onnx, variant: str, precisions: list[str], batches: list[int], img_size, export_dir: str,
          scratch: str) -> tuple[dict, dict]:
    """(precision -> ONNX path, precision -> below-bound flag) from the revision's resolver (module docstring)."""
    try:
        from twins_trt.artifacts.resolve import Calibration, Request, Resolver
        each = hasattr(Resolver, "artifacts") and "scratch" in getattr(Resolver, "__dataclass_fields__", {})
    except ImportError:  # revisions before the one resolver
        Resolver = None  # noqa: N806
        each = False
    if each:  # since the per-precision resolver: a failed precision fails the setup, one below its bound is timed
        resolver = Resolver(Request(variant, tuple(batches), tuple(img_size), None, export_dir=export_dir),
                            Calibration(None, True, 16), say=_say, progress=False, scratch=scratch)
        arts, failed = resolver.artifacts(precisions)
        if failed:
            raise RuntimeError("; ".join(f"{p}: {why}" for p, why in failed.items()))
        return {p: a.path for p, a in arts.items()}, {p: a.below_bound for p, a in arts.items() if a.below_bound}
    kw = dict(img_size=img_size, export_dir=export_dir, calib_synthetic=True, progress=False, say=_say)
    try:
        return ensure_onnx(variant, precisions, batches, **kw), {}
    except Exception as e:
        if Resolver is None or "int8" not in precisions or ".int8." not in str(e) or \
                "Verification" not in type(e).__name__:
            raise
        try:  # revisions whose twins-eval quantizes an INT8 below its bound into a temporary folder
            from twins_trt.eval.backends import below_bound_int8
        except ImportError:
            raise e from None
    onnx = ensure_onnx(variant, [p for p in precisions if p != "int8"] or ["fp32"], batches, **kw)
    from types import SimpleNamespace

    from twins_trt import create_model

    opts = SimpleNamespace(variant=variant, img_size=tuple(img_size), weights=None, calib_synthetic=True,
                           calib_source_dir=None, progress=False)
    resolver = Resolver(Request(variant, tuple(batches), tuple(img_size), None, export_dir=export_dir),
                        Calibration(None, True, 16), say=_say, progress=False)
    art = below_bound_int8(opts, resolver, onnx["fp32"], create_model(variant, weights=None, seed=0), scratch, _say)
    onnx["int8"] = art.path
    return {p: onnx[p] for p in precisions}, ({"int8": art.below_bound} if art.below_bound else {})


class Side:
    def __init__(self) -> None:
        self.runners: dict[tuple[str, str], object] = {}
        self.inputs: dict[int, object] = {}
        self.visits: dict[tuple[str, str, int], int] = {}
        self.scratch = tempfile.TemporaryDirectory(prefix="below-bound-", dir=".")  # quantized, below its bound

    def setup(self, req: dict) -> dict:
        import warnings

        import numpy as np
        import torch

        create_model, backends, ensure_onnx, ensure_engine, make_runner, random_inputs, where = _import_api()
        torch.set_num_threads(req["threads"])
        batches, img_size = req["batches"], tuple(req["img_size"])
        wanted = [backends[n] for n in req["backends"]]
        artifacts: dict[str, dict[str, str]] = {}
        below: dict[str, dict[str, dict]] = {}
        for variant in req["variants"]:
            model = None
            if any(b.runtime == "torch" for b in wanted):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = create_model(variant, weights=None, seed=0, attn_impl=req["torch_attn"])
            precisions = list(dict.fromkeys(b.precision for b in wanted if b.needs_onnx))
            onnx, flags = {}, {}
            if precisions:
                onnx, flags = _onnx(ensure_onnx, variant, precisions, batches, img_size, req["export_dir"],
                                    self.scratch.name)
            engines = {p: ensure_engine(onnx[p], batches, self.scratch.name if p in flags else req["engines_dir"],
                                        say=_say)
                       for p in dict.fromkeys(b.precision for b in wanted if b.needs_engine)}
            artifacts[variant] = {p: str(path) for p, path in onnx.items()}
            if flags:
                below[variant] = flags
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
        return {"twins_trt": where, "onnx": artifacts, "below_bound": below}

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
        self.scratch.cleanup()


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
