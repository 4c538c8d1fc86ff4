"""An engine against ONNX Runtime and PyTorch fp32 on the same seeded inputs, with the export's tolerances.

The verdict is Polygraphy's (`SimpleCompareFunc` for fp32, `CosineSimilarityCompareFunc` for
fp16/int8); the one line per output also states the measured max |diff| and cosine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twins_trt.errors import InputFileError, VerificationError
from twins_trt.export.verify import TOLERANCES  # the export's tolerances, one table
from twins_trt.metrics import mean_cosine  # the export's cosine: per-sample mean
from twins_trt.runners import INPUT_NAME, Runner


@dataclass(frozen=True)
class Comparison:
    reference: str
    candidate: str
    output: str
    max_abs: float
    cosine: float
    metric: str
    threshold: float
    passed: bool

    def line(self) -> str:
        bound = f"max |diff| <= {self.threshold:g}" if self.metric == "max_abs" else f"cosine >= {self.threshold:g}"
        return (f"{'PASS' if self.passed else 'FAIL'} {self.candidate} vs {self.reference} [{self.output}]: "
                f"max |diff| {self.max_abs:.3g}, cosine {self.cosine:.6f} (need {bound})")

    def shortfall(self) -> str:
        """What missed, with the figure and the bound: `cosine 0.912345 < 0.999`."""
        if self.metric == "max_abs":
            return f"max |diff| {self.max_abs:.3g} > {self.threshold:g}"
        return f"cosine {self.cosine:.6f} < {self.threshold:g}"


def compare_outputs(reference: str, ref: dict[str, np.ndarray], candidate: str, cand: dict[str, np.ndarray],
                    precision: str) -> list[Comparison]:
    """One Comparison per output; Polygraphy's comparator decides pass/fail."""
    from polygraphy.comparator import (
        Comparator,
        CosineSimilarityCompareFunc,
        IterationResult,
        RunResults,
        SimpleCompareFunc,
    )

    if precision not in TOLERANCES:
        raise VerificationError(f"unknown precision {precision!r}; expected one of {', '.join(TOLERANCES)}")
    missing = sorted(set(ref) - set(cand))
    if missing:
        raise VerificationError(f"{candidate} lacks output(s) {missing} that {reference} has")
    metric, threshold = TOLERANCES[precision]
    func = (SimpleCompareFunc(atol=threshold, rtol=0.0, check_error_stat="max") if metric == "max_abs"
            else CosineSimilarityCompareFunc(cosine_similarity_threshold=threshold))
    rr = RunResults([(reference, [IterationResult(dict(ref), runner_name=reference)]),
                     (candidate, [IterationResult({k: cand[k] for k in ref}, runner_name=candidate)])])
    verdict = Comparator.compare_accuracy(rr, compare_func=func)[0][(reference, candidate)][0]
    out = []
    for name in ref:
        a, b = np.asarray(ref[name], np.float32), np.asarray(cand[name], np.float32)
        max_abs = float(np.max(np.abs(a - b))) if a.shape == b.shape else float("inf")
        out.append(Comparison(reference, candidate, name, max_abs, mean_cosine(a, b) if a.shape == b.shape else 0.0,
                              metric, threshold, bool(verdict[name])))
    return out


def seeded_input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


def run_all(runners: list[Runner], x: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    outs = {}
    for r in runners:
        with r:
            outs[r.name] = r.infer({INPUT_NAME: x})
    return outs


def check_engine_metadata(engine_path: str | os.PathLike, onnx_given: bool = False) -> dict:
    """The engine's metadata, refused with one clear line when it cannot drive a verification."""
    from twins_trt.trt.engine_meta import metadata_path, read_engine_metadata

    meta = read_engine_metadata(engine_path)
    where = metadata_path(engine_path)
    missing = [k for k in ("profile", *(() if onnx_given else ("onnx",))) if not meta.get(k)]
    if missing:
        raise InputFileError(f"engine metadata {where} lacks {' and '.join(map(repr, missing))}; rebuild the engine "
                             f"with twins-build, which records both{' (or pass --onnx)' if 'onnx' in missing else ''}")
    prof = meta["profile"]
    first = next(iter(prof.values()), None) if isinstance(prof, dict) else None
    if not isinstance(first, dict) or not all(isinstance(first.get(k), list) and first[k] for k in ("min", "opt", "max")):
        raise InputFileError(f"engine metadata {where}: 'profile' must map the input name to min/opt/max shapes, "
                             f"got {str(prof)[:120]}; rebuild the engine with twins-build")
    return meta


def reference_model_args(onnx_path: str | os.PathLike, engine_meta: dict, weights: str | None = None) -> dict:
    """create_model() arguments for the PyTorch model the export was made from: its variant, `features` flag,
    weights and seed, read from the ONNX manifest (then the ONNX metadata, then the engine's). `weights`
    given by the user wins."""
    from twins_trt.artifacts.manifest import Manifest
    from twins_trt.trt.profile import read_onnx_info

    info = read_onnx_info(onnx_path)
    manifest = Manifest.read(onnx_path)
    variant = (manifest.variant if manifest else None) or info.variant or engine_meta.get("variant")
    if not variant:
        raise VerificationError(f"{onnx_path} has no twins_trt.variant metadata, so the PyTorch model is unknown")
    if manifest is not None:
        features = manifest.features
    else:
        features = info.metadata.get("twins_trt.features") == "true" or bool(engine_meta.get("features"))
    return {"name": variant, "weights": weights or (manifest.weights if manifest else None), "features": bool(features),
            "seed": int(manifest.get("seed", 0) if manifest else 0)}  # twins-export seeds random weights with 0


def verify_engine(engine_path: str | os.PathLike, onnx_path: str | os.PathLike | None = None,
                  weights: str | None = None, batch: int | None = None, seed: int = 0) -> list[Comparison]:
    """Engine vs ONNX Runtime (same ONNX) and vs PyTorch fp32, all at the engine's precision tolerance.

    The PyTorch reference is the model the export was made from (see reference_model_args); `seed` seeds
    the random input.
    """
    from twins_trt.device import cuda_available
    from twins_trt.models import create_model
    from twins_trt.runners.ort_runner import OrtRunner
    from twins_trt.runners.torch_runner import TorchRunner
    from twins_trt.trt.engine_meta import batch_range
    from twins_trt.trt.profile import read_onnx_info
    from twins_trt.trt.runner import TrtRunner

    meta = check_engine_metadata(engine_path, onnx_given=onnx_path is not None)
    onnx_path = Path(onnx_path or meta["onnx"])
    info = read_onnx_info(onnx_path)
    precision = info.metadata.get("twins_trt.precision") or meta.get("precision") or "fp32"
    model_args = reference_model_args(onnx_path, meta, weights)
    prof = next(iter(meta["profile"].values()))
    shape = list(prof["opt"])
    if batch is not None:
        lo, hi = batch_range(meta)
        if not lo <= batch <= hi:
            raise VerificationError(f"--batch {batch} is outside the engine's batch range {lo}..{hi}")
        shape[0] = batch
    x = seeded_input(tuple(shape), seed)
    trt_runner = TrtRunner(engine_path)
    gpu = cuda_available() and not trt_runner.emulated
    runners: list[Runner] = [
        trt_runner,
        OrtRunner(onnx_path, provider="cuda" if gpu else "cpu", name="onnxruntime"),
        TorchRunner(create_model(**model_args), device="cuda" if gpu else "cpu", name="torch-fp32"),
    ]
    outs = run_all(runners, x)
    info = trt_runner.describe()
    trt_name = trt_runner.name + (f" (emulated, perturbed: {info['perturbed']})" if info.get("perturbed")
                                  else " (emulated)" if trt_runner.emulated else "")
    return (compare_outputs("onnxruntime", outs["onnxruntime"], trt_name, outs[trt_runner.name], precision)
            + compare_outputs("torch-fp32", outs["torch-fp32"], trt_name, outs[trt_runner.name], precision))
