"""The accuracy budget of a quantized export (INT8 or FP8) and the held-out figures it is judged on.

The budget (`cosine>=0.995`, `agreement>=0.99`) is judged against FP32 on images held out of the
calibration set (and their mirrors), on ONNX Runtime CPU: `HeldOut` keeps the FP32 reference and
scores any graph of the same I/O, at the optimisation level its precision's Q/DQ need (`twins_trt.qdq.FORMATS`).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from twins_trt.device import cpu_is_x86, cpu_threads
from twins_trt.errors import AccuracyBudgetError
from twins_trt.metrics import agreement_rate, cosine_per_sample, cosine_spread, wilson
from twins_trt.qdq import FORMATS, quant_format
from twins_trt.runners.ort_runner import cpu_session, run_in_batches, session_infer

DEFAULT_INT8_BUDGET = "cosine>=0.99"
METRICS = {"cosine": "cosine", "agreement": "top1_agreement"}


@dataclass(frozen=True)
class Budget:
    metric: str  # "cosine" or "agreement" (top-1 agreement with FP32)
    bound: float

    def __str__(self) -> str:
        return f"{self.metric}>={self.bound:g}"

    @property
    def attribute(self) -> str:
        """The verify.Comparison attribute that holds this figure."""
        return METRICS[self.metric]


def parse_budget(text: str, precision: str = "int8") -> Budget:
    """`cosine>=0.995` or `agreement>=0.99` (also `agreement>=99%`); `precision` names it in the errors."""
    label = quant_format(precision).label
    m = re.fullmatch(r"\s*(cosine|agreement)\s*>=\s*([0-9]*\.?[0-9]+)\s*(%?)\s*", text or "")
    if not m:
        raise AccuracyBudgetError(f"{label} budget {text!r} is not understood: write cosine>=0.995 or agreement>=0.99 "
                                  f"(top-1 agreement with FP32); the default is {DEFAULT_INT8_BUDGET}")
    bound = float(m.group(2)) / (100 if m.group(3) else 1)
    if not 0 < bound <= 1:
        raise AccuracyBudgetError(f"{label} budget {text!r}: the bound must lie in (0, 1] (or (0, 100]%)")
    return Budget(m.group(1), bound)


# ---------------------------------------------------------------------------------------------- held-out figures


def split_holdout(n: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices (calibration, held-out): every k-th image held out, at least one each side."""
    if n < 2:
        raise AccuracyBudgetError(f"INT8 needs at least 2 readable calibration images (one to calibrate on, one "
                                  f"held out to verify on); found {n}: add images to --calib-data")
    if not 0 < fraction < 1:
        raise AccuracyBudgetError(f"held-out fraction must lie in (0, 1), got {fraction}")
    held = max(1, min(n - 1, round(n * fraction)))
    idx = np.linspace(0, n - 1, held + 2)[1:-1].round().astype(int) if held < n - 1 else np.arange(1, n)
    mask = np.zeros(n, bool)
    mask[np.unique(idx)] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


def heldout_samples(images: np.ndarray) -> np.ndarray:
    """Held-out images and their horizontal mirrors: twice the samples, none of them calibrated on."""
    return np.ascontiguousarray(np.concatenate([images, images[..., ::-1]]))


@dataclass
class Figures:
    """One graph's outputs against the FP32 reference on the held-out samples."""

    samples: int
    cosine: float  # mean per-sample cosine (the worst output's; with several input sizes, the worst size's)
    cosine_min: float
    cosine_p05: float
    cosine_median: float
    top1_agreement: float | None = None
    agreement_ci95: tuple[float, float] | None = None

    def value(self, budget: Budget) -> float:
        v = getattr(self, budget.attribute)
        if v is None:
            raise AccuracyBudgetError(f"budget {budget} needs class logits; this model's outputs have none: "
                                      f"use a cosine budget, e.g. cosine>=0.99")
        return float(v)

    def meets(self, budget: Budget) -> bool:
        return self.value(budget) >= budget.bound

    def line(self) -> str:
        s = (f"cosine {self.cosine:.5f} (per sample min {self.cosine_min:.4f}, 5th pct {self.cosine_p05:.4f}, "
             f"median {self.cosine_median:.5f})")
        if self.top1_agreement is not None:
            lo, hi = self.agreement_ci95
            s += f", top-1 agreement {self.top1_agreement:.1%} (95% CI {lo:.1%}-{hi:.1%})"
        return s + f" over {self.samples} held-out samples"

    def to_dict(self) -> dict:
        return asdict(self)


def figures(ref: dict[str, np.ndarray] | list[dict[str, np.ndarray]],
            out: dict[str, np.ndarray] | list[dict[str, np.ndarray]]) -> Figures:
    """Per-sample cosine of every output (the worst output counts) and top-1 agreement of `logits`.

    `ref`/`out` may be lists, one entry per input size (a dynamic-H/W export): the samples of every size
    are pooled.
    """
    refs, outs = (ref, out) if isinstance(ref, list) else ([ref], [out])
    worst, per = None, None
    for name in refs[0]:
        groups = [cosine_per_sample(r[name], o[name]) if np.isfinite(o[name]).all()
                  else np.full(len(r[name]), -1.0)  # an overflowed output agrees with nothing
                  for r, o in zip(refs, outs)]
        mean = min(float(g.mean()) for g in groups)  # the worst size's mean, as verification merges sizes
        if worst is None or mean < worst:
            worst, per = mean, np.concatenate(groups)
    n = len(per)
    fig = Figures(n, worst, **cosine_spread(per))
    if "logits" in refs[0]:  # classifier (B, K): one decision per sample; segmentor (B, K, H, W): one per pixel
        # each size's rate weighted by its samples, as verification merges sizes
        fig.top1_agreement = sum(agreement_rate(o["logits"], r["logits"]) * len(r["logits"])
                                 for r, o in zip(refs, outs)) / n
        # the interval counts images, not pixels: a segmentor's pixels are not independent (conservative)
        fig.agreement_ci95 = wilson(fig.top1_agreement * n, n)
    return fig


class HeldOut:
    """The held-out samples (one array per input size) with their FP32 reference outputs; scores any graph of
    the same I/O on ORT CPU, pooling the samples of every size. `precision` ("int8" | "fp8"): the quantized
    graphs it scores, run at the ONNX Runtime optimisation level their Q/DQ need."""

    def __init__(self, fp32: onnx.ModelProto, samples: np.ndarray | list[np.ndarray], precision: str = "int8"):
        self.groups = samples if isinstance(samples, list) else [samples]
        self.precision = precision
        self.optimization = quant_format(precision).ort_optimization
        self.reference = [run_onnx(fp32, g) for g in self.groups]
        self._weights: dict = {}  # quantized weights, shared by the trial graphs of one calibrated graph

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups)

    def score(self, model: onnx.ModelProto) -> Figures:
        # ONNX Runtime fuses no weight's DequantizeLinear into its consumer here (FP8 runs at the basic level; for
        # ModelOpt's signed INT8 only ARM builds do, QDQIsInt8Allowed): it is computed once too. At the "all" level
        # its results are fed as inputs, not put in as constants (see with_weights_quantized)
        basic = self.optimization == "basic"
        dequantized = basic or cpu_is_x86()
        fed: dict[str, np.ndarray] | None = None if basic or not dequantized else {}
        model = with_weights_quantized(model, self._weights, dequantized=dequantized, fed=fed)
        return figures(self.reference, [run_onnx(model, g, self.optimization, fed) for g in self.groups])


def with_weights_quantized(model: onnx.ModelProto, cache: dict | None = None, dequantized: bool = False,
                           fed: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """`model` with each QuantizeLinear of initializers alone (the weights', INT8 or FP8) replaced by its result,
    computed by ONNX Runtime's own QuantizeLinear kernel, as ONNX Runtime's constant folding computes it when a
    session opens. `dequantized`: the weights' DequantizeLinear too, by ONNX Runtime's own kernel, for a graph where
    nothing fuses it with its consumer and it runs at every inference: at the basic level (FP8: 91 of an svt_s
    96x96 sample's 209 ms), and for signed INT8 on x86 (below). `fed`: a dict that takes the weights'
    DequantizeLinear results instead, as graph inputs to feed at every run (`run_onnx(..., feeds=fed)`): at the
    "all" level ONNX Runtime gives constant FP32 weights other kernels (NCHWc convolutions, pre-packed GEMMs) and
    the outputs change, while a fed weight, like a DequantizeLinear's output, is computed as the graph has it. On
    x86 builds ONNX Runtime fuses no signed-INT8 weight's DequantizeLinear into its consumer (its QDQIsInt8Allowed is
    false; its QDQ transformers still rewrite the activations' pairs, left in the graph here), so an INT8 graph's
    DequantizeLinear of weights runs at every inference: 107 of a pcpvt_s 96x96 INT8 sample's 205 ms; fed, the
    held-out samples run 2.5-3 times faster, bit for bit the same (tested).

    The same outputs (tested), without that work at every session start: 0.45 s of a 0.8 s session of an svt_s
    INT8 graph, and the budget's trials each open one. `cache` keeps results between calls (the trial graphs of one
    calibrated graph share their weights); an entry is used only while the node's initializers are byte for byte
    the ones it was computed from."""
    cache = {} if cache is None else cache
    model = _fold_on_initializers(model, "QuantizeLinear", cache)
    return _fold_on_initializers(model, "DequantizeLinear", cache, fed) if dequantized else model


# ONNX Runtime's WeightBiasQuantization quantizes the float bias of these ops to INT32 (scale: the input's times the
# weight's) when their input and weight come from DequantizeLinear; a fed weight would leave the bias exact
BIASED = ("Conv", "ConvTranspose", "Gemm")


def _fold_on_initializers(model: onnx.ModelProto, op: str, cache: dict,
                          fed: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """`model` with each `op` node (QuantizeLinear, DequantizeLinear) of one-byte Q/DQ whose inputs are all
    initializers replaced by its result, computed by ONNX Runtime's own kernel (see `with_weights_quantized`): an
    initializer, or a graph input whose array goes into `fed`."""
    from onnx import helper

    one_byte = {t for f in FORMATS.values() for t in f.types}  # INT8, UINT8, FP8
    inits = {i.name: i for i in model.graph.initializer}
    nodes = list(model.graph.node)
    quantized_input = 2 if op == "QuantizeLinear" else 0  # the zero point's type, or the quantized data's
    at = [k for k, n in enumerate(nodes) if n.op_type == op and len(n.input) == 3
          and all(i in inits for i in n.input) and inits[n.input[quantized_input]].data_type in one_byte]
    if fed is not None:  # not a weight with a bias beside it: see BIASED
        biased = {n.input[1] for n in nodes if n.op_type in BIASED and len(n.input) > 2 and n.input[2]}
        at = [k for k in at if nodes[k].output[0] not in biased]
    if not at:
        return model
    # per node: its cache key (kind, inputs and attributes) and the initializers it was computed from
    keys = {k: (op, *nodes[k].input, *(a.SerializeToString() for a in nodes[k].attribute)) for k in at}
    sources = {k: tuple(inits[i].SerializeToString() for i in nodes[k].input) for k in at}
    todo = [k for k in at if cache.get(keys[k], (None,))[0] != sources[k]]
    out_type = {k: inits[nodes[k].input[2 if op == "QuantizeLinear" else 1]].data_type for k in at}
    if todo:
        made = [helper.make_node(op, list(nodes[k].input), [f"f{k}"], name=f"f{k}") for k in todo]
        for k, m in zip(todo, made):
            m.attribute.extend(nodes[k].attribute)
        graph = helper.make_graph(made, "weights", [], [helper.make_tensor_value_info(f"f{k}", out_type[k], None)
                                                        for k in todo],
                                  [inits[i] for i in dict.fromkeys(i for k in todo for i in nodes[k].input)])
        probe = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
        for k, value in zip(todo, cpu_session(probe, optimization="none").run(None, {})):
            cache[keys[k]] = (sources[k], value)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    folded = set(at)
    keep = [n for k, n in enumerate(nodes) if k not in folded]
    del out.graph.node[:]
    out.graph.node.extend(keep)
    used = {i for n in keep for i in n.input} | {o.name for o in model.graph.output}
    kept = [i for i in model.graph.initializer if i.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(kept)
    # ONNX Runtime hands FP8 back as its bytes (uint8): every type is written from its bytes
    for k in at:
        value = cache[keys[k]][1]
        if fed is not None:
            out.graph.input.append(helper.make_tensor_value_info(nodes[k].output[0], out_type[k], value.shape))
            fed[nodes[k].output[0]] = value
            continue
        out.graph.initializer.append(helper.make_tensor(nodes[k].output[0], out_type[k], value.shape, value.tobytes(),
                                                        raw=True))
    return out


def run_onnx(model: onnx.ModelProto, x: np.ndarray, optimization: str = "all",
             feeds: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """All samples through `model` on ONNX Runtime CPU (float32 out), in the graph's static batch if it has one;
    `optimization` as `runners.ort_runner.cpu_session` takes it; `feeds`: the graph's other inputs, if any. A static
    batch smaller than the samples runs as one one-thread session fed from `cpu_threads` threads at once
    (`padded_batches`): the same outputs bit for bit as one session of that many threads (tested), and the budget's
    trials at 224 px a third faster, since ONNX Runtime spreads one batch-1 inference over two threads poorly."""
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    static = dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None
    workers = (cpu_threads() or os.cpu_count() or 1) if static and static < len(x) else 1
    infer, batch = session_infer(cpu_session(model, optimization=optimization, threads=1 if workers > 1 else None),
                                 feeds)
    step = batch or len(x)
    return {n: np.asarray(v, np.float32) for n, v in run_in_batches(infer, x, step, step, workers).items()}
