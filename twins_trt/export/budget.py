"""INT8 under an accuracy budget: held-out figures, per-region sensitivity, and the FP16 fallback search.

The budget (`cosine>=0.995`, `agreement>=0.99`) is judged against FP32 on images held out of the
calibration set. Sensitivity is measured *leave-one-out*: calibrate once, then for each region (one
Twins sub-layer, e.g. `blocks.2.3 gsa.kv`) remove the Q/DQ pairs that feed its MatMul/Conv nodes from
the calibrated graph, which is exactly "this region in FP16, everything else INT8 with the same
scales", and score it on ONNX Runtime. Leave-one-out was chosen over "only this region quantized"
because it measures what the fallback search does: it starts from all-INT8 and takes regions out,
so a region's recovery when left out ranks it directly (NNCF's accuracy control ranks the same way).
The search then keeps the most sensitive regions in FP16, greedily in that order, until the budget
is met; the final artifact is made by ModelOpt with `nodes_to_exclude` and the cached scales.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from twins_trt.errors import AccuracyBudgetError
from twins_trt.metrics import agreement_rate, cosine_per_sample

log = logging.getLogger(__name__)

DEFAULT_INT8_BUDGET = "cosine>=0.99"
METRICS = {"cosine": "cosine", "agreement": "top1_agreement"}
COMPUTE_OPS = ("MatMul", "Conv", "Gemm")


# ---------------------------------------------------------------------------------------------- budget


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


def parse_budget(text: str) -> Budget:
    """`cosine>=0.995` or `agreement>=0.99` (also `agreement>=99%`)."""
    m = re.fullmatch(r"\s*(cosine|agreement)\s*>=\s*([0-9]*\.?[0-9]+)\s*(%?)\s*", text or "")
    if not m:
        raise AccuracyBudgetError(f"INT8 budget {text!r} is not understood: write cosine>=0.995 or agreement>=0.99 "
                                  f"(top-1 agreement with FP32); the default is {DEFAULT_INT8_BUDGET}")
    bound = float(m.group(2)) / (100 if m.group(3) else 1)
    if not 0 < bound <= 1:
        raise AccuracyBudgetError(f"INT8 budget {text!r}: the bound must lie in (0, 1] (or (0, 100]%)")
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


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion k/n (k may be fractional: a mean agreement times n)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


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
    fig = Figures(n, worst, float(per.min()), float(np.percentile(per, 5)), float(np.median(per)))
    if "logits" in refs[0]:  # classifier (B, K): one decision per sample; segmentor (B, K, H, W): one per pixel
        # each size's rate weighted by its samples, as verification merges sizes
        fig.top1_agreement = sum(agreement_rate(o["logits"], r["logits"]) * len(r["logits"])
                                 for r, o in zip(refs, outs)) / n
        # the interval counts images, not pixels: a segmentor's pixels are not independent (conservative)
        fig.agreement_ci95 = wilson(fig.top1_agreement * n, n)
    return fig


class HeldOut:
    """The held-out samples (one array per input size) with their FP32 reference outputs; scores any graph of
    the same I/O on ORT CPU, pooling the samples of every size."""

    def __init__(self, fp32: onnx.ModelProto, samples: np.ndarray | list[np.ndarray]):
        self.groups = samples if isinstance(samples, list) else [samples]
        self.reference = [run_onnx(fp32, g) for g in self.groups]

    def __len__(self) -> int:
        return sum(len(g) for g in self.groups)

    def score(self, model: onnx.ModelProto) -> Figures:
        return figures(self.reference, [run_onnx(model, g) for g in self.groups])


def run_onnx(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    """All samples through `model` on ONNX Runtime CPU, in the graph's static batch if it has one."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    b = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else len(x)
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    names = [o.name for o in sess.get_outputs()]
    outs: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for start in range(0, len(x), b):
        xb = x[start:start + b]
        if len(xb) < b:  # a static batch: pad the last chunk, drop the padding after
            xb = np.concatenate([xb, np.repeat(xb[-1:], b - len(xb), 0)])
        for n, o in zip(names, sess.run(None, {inp.name: xb.astype(dtype)})):
            outs[n].append(np.asarray(o, np.float32))
    return {n: np.concatenate(v)[: len(x)] for n, v in outs.items()}


# ---------------------------------------------------------------------------------------------- regions


@dataclass
class Region:
    name: str  # e.g. "blocks.2.3 gsa.kv", "patch_embeds.0 patch_embed", "head"
    scope: str  # the module: "blocks.2.3", "patch_embeds.0", "" for the head
    kind: str  # sub-layer kind: patch_embed, lsa.qkv, gsa.q, gsa.kv, gsa.sr, *.qk, *.av, *.proj, mlp.fc1/2, peg, head
    # (and for a segmentor: neck, decode_head, with its classifier conv_seg as head)
    nodes: list[str] = field(default_factory=list)
    macs: int = 0


_ATTN = {"LocallyGroupedAttn": "lsa", "GlobalSubSampleAttn": "gsa"}
SEG_PARTS = ("neck", "decode_head")  # twins_trt.models.segmentor.TwinsSegmentor's modules after its backbone


def _namespace(node: onnx.NodeProto) -> list[tuple[str, str]]:
    """torch.onnx's `namespace` metadata as (module path, class) pairs, root first, the op last."""
    ns = next((p.value for p in node.metadata_props if p.key == "namespace"), "")
    pairs = []
    for seg in ns.split("/"):
        name, _, cls = seg.partition(": ")
        pairs.append((name, cls.rsplit(".", 1)[-1]))
    return pairs


def classify(node: onnx.NodeProto, attn_matmuls: dict[str, int]) -> tuple[str, str]:
    """(scope, kind) of a MatMul/Conv/Gemm node from the module it was traced in; the node name otherwise."""
    pairs = _namespace(node)
    mods = [(n, c) for n, c in pairs[1:-1] if n]
    if not mods:
        return node.name, node.op_type.lower()
    path, cls = mods[-1]
    parts = path.split(".")
    if parts[0] == "backbone" and len(parts) > 1:  # a segmentor's backbone is a Twins: the same regions
        parts = parts[1:]
    if parts[0] in SEG_PARTS:  # a segmentor's neck / decode head: one region per conv module
        if parts[-1] == "conv_seg":
            return "decode_head.conv_seg", "head"
        return ".".join(parts[:-1] if parts[-1] == "conv" and len(parts) > 1 else parts), parts[0]
    if node.op_type not in COMPUTE_OPS:  # Q/DQ on the residual stream (Add, LayerNorm inputs) or inside attention
        attn = next((_ATTN[c] for _, c in mods if c in _ATTN), None)
        is_stream = node.op_type in ("Add", "LayerNormalization") or attn is None
        kind = "residual" if is_stream else f"{attn}.{node.op_type.lower()}"
        scope = "norm" if parts[0] == "norm" else ".".join(parts[:3] if parts[0] == "blocks" else parts[:2])
        return scope, kind
    if parts[0] == "patch_embeds":
        return ".".join(parts[:2]), "patch_embed"
    if parts[0] == "pos_block":
        return ".".join(parts[:2]), "peg"
    if parts[0] == "head":
        return "", "head"
    if parts[0] == "blocks" and len(parts) >= 3:
        scope = ".".join(parts[:3])
        attn = next((_ATTN[c] for _, c in mods if c in _ATTN), None)
        if cls in _ATTN:  # the bare attention MatMuls: first q@k^T, then attn@v
            seen = attn_matmuls[scope] = attn_matmuls.get(scope, 0) + 1
            return scope, f"{_ATTN[cls]}.{'qk' if seen == 1 else 'av'}"
        leaf = parts[-1]
        if leaf in ("fc1", "fc2"):
            return scope, f"mlp.{leaf}"
        return scope, f"{attn}.{leaf}" if attn else leaf
    return path, parts[-1] if cls else node.op_type.lower()


def _at_static_shape(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph with its symbolic input dims fixed: batch 1, and H x W at the OPT size of its H/W profile
    (the export's `hw_profile` metadata), so shape inference gives every MatMul/Conv its real size."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if all(d.HasField("dim_value") for d in dims):
        return model
    fixed = [d.dim_value if d.HasField("dim_value") else 1 for d in dims]
    profile = next((p.value for p in model.metadata_props if p.key == "twins_trt.hw_profile"), None)
    if profile and len(fixed) == 4:
        fixed[2:] = map(int, profile.split(":")[1].split("x"))
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.value_info[:]
    for d, v in zip(out.graph.input[0].type.tensor_type.shape.dim, fixed):
        d.Clear()
        d.dim_value = v
    return out


def node_macs(model: onnx.ModelProto) -> dict[str, int]:
    """Multiply-accumulates of every MatMul/Conv/Gemm at the graph's own shapes (a dynamic graph: batch 1 at
    the OPT size of its H/W profile); 0 where a size stays unknown.

    Shapes come from ONNX shape inference; where it cannot follow a dynamic graph (reshapes computed from
    Shape ops), from one ONNX Runtime run at that size with those tensors exposed.
    """
    static = _at_static_shape(model)
    inferred = onnx.shape_inference.infer_shapes(static, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    compute = [n for n in model.graph.node if n.op_type in COMPUTE_OPS]
    unknown = {t for n in compute for t in (*n.input[:2], n.output[0]) if t and t not in shapes}
    if unknown:
        shapes.update(_run_shapes(static, unknown))
    out = {}
    for n in compute:
        a, w, y = shapes.get(n.input[0]), shapes.get(n.input[1]), shapes.get(n.output[0])
        if not (a and w and y):
            out[n.name] = 0
        elif n.op_type == "Conv":  # output elements x (Cin / groups) x kernel
            out[n.name] = int(np.prod(y)) * int(np.prod(w[1:]))
        elif n.op_type == "Gemm":
            trans_a = next((at.i for at in n.attribute if at.name == "transA"), 0)
            out[n.name] = int(np.prod(y)) * (a[0] if trans_a else a[-1])
        else:
            out[n.name] = int(np.prod(y)) * a[-1]
    return out


def _run_shapes(static: onnx.ModelProto, names: set[str]) -> dict[str, list[int]]:
    """The shapes of `names` in one ONNX Runtime run of a static-input graph on a zero input."""
    from twins_trt.export.overflow import exposed_session

    sess = exposed_session(static, names)
    inp = sess.get_inputs()[0]
    x = np.zeros(inp.shape, np.float16 if inp.type == "tensor(float16)" else np.float32)
    outs = sess.run(None, {inp.name: x})
    return {o.name: list(v.shape) for o, v in zip(sess.get_outputs(), outs) if o.name in names}


def find_regions(fp32: onnx.ModelProto, qdq: onnx.ModelProto | None = None, by: str = "layer") -> dict[str, Region]:
    """Every MatMul/Conv/Gemm, and every other node the calibrated graph `qdq` feeds through Q/DQ (ModelOpt
    also quantizes residual Adds and LayerNorm inputs), grouped into regions: one per block and sub-layer
    kind (`layer`), or one per kind across all blocks (`kind`, a coarse and quick view). Node names are
    those ModelOpt keeps, so a region's nodes are valid `nodes_to_exclude`."""
    if by not in ("layer", "kind"):
        raise ValueError(f"regions are grouped by 'layer' or 'kind', got {by!r}")
    macs = node_macs(fp32)
    quantized = set()
    if qdq is not None:
        dq = {n.output[0] for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
        quantized = {n.name for n in qdq.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
                     and any(i in dq for i in n.input)}
    regions: dict[str, Region] = {}
    seen: dict[str, int] = {}
    for n in fp32.graph.node:
        if n.op_type not in COMPUTE_OPS and n.name not in quantized:
            continue
        scope, kind = classify(n, seen)
        if by == "kind":
            scope = ""
        name = f"{scope} {kind}".strip()
        r = regions.setdefault(name, Region(name, scope, kind))
        r.nodes.append(n.name)
        r.macs += macs.get(n.name, 0)
    return regions


# ---------------------------------------------------------------------------------------------- Q/DQ surgery


def _qdq_source(model: onnx.ModelProto) -> dict[str, str]:
    """DequantizeLinear output -> the high-precision tensor its QuantizeLinear took."""
    q_in = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    return {n.output[0]: q_in[n.input[0]] for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] in q_in}


def int8_nodes(model: onnx.ModelProto) -> set[str]:
    """Compute nodes whose two operands both arrive through Q/DQ (what TensorRT runs in INT8)."""
    src = _qdq_source(model)
    return {n.name for n in model.graph.node if n.op_type in COMPUTE_OPS and all(i in src for i in n.input[:2])}


def without_qdq(model: onnx.ModelProto, nodes: set[str]) -> onnx.ModelProto:
    """A copy of the calibrated graph in which `nodes` take their inputs straight from the high-precision
    tensors (no Q/DQ in between): those nodes run in FP16, the rest INT8 with unchanged scales."""
    src = _qdq_source(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for n in out.graph.node:
        if n.name in nodes:
            for i, name in enumerate(n.input):
                if name in src:
                    n.input[i] = src[name]
    used = {i for n in out.graph.node for i in n.input} | {o.name for o in out.graph.output}
    keep = [n for n in out.graph.node if not (n.op_type == "DequantizeLinear" and n.output[0] not in used)]
    used = {i for n in keep for i in n.input} | {o.name for o in out.graph.output}
    keep = [n for n in keep if not (n.op_type == "QuantizeLinear" and n.output[0] not in used)]
    del out.graph.node[:]
    out.graph.node.extend(keep)
    return out


def int8_mac_share(model: onnx.ModelProto, macs: dict[str, int]) -> float:
    total = sum(macs.values())
    return sum(macs.get(n, 0) for n in int8_nodes(model)) / total if total else 0.0


# ---------------------------------------------------------------------------------------------- search


@dataclass
class RegionScore:
    region: str
    kind: str
    nodes: int
    mac_share: float
    figures: Figures

    def to_dict(self) -> dict:
        return {"region": self.region, "kind": self.kind, "nodes": self.nodes, "mac_share": self.mac_share,
                **self.figures.to_dict()}


def sensitivity(qdq: onnx.ModelProto, regions: dict[str, Region], heldout: HeldOut,
                progress: bool = True) -> list[RegionScore]:
    """Each region left out of INT8 alone (same scales elsewhere), scored on the held-out samples."""
    from tqdm import tqdm

    total = sum(r.macs for r in regions.values()) or 1
    scores = []
    for r in tqdm(list(regions.values()), desc="int8 sensitivity", unit="region", disable=not progress, leave=False):
        scores.append(RegionScore(r.name, r.kind, len(r.nodes), r.macs / total,
                                  heldout.score(without_qdq(qdq, set(r.nodes)))))
    return scores


def rank(scores: list[RegionScore], budget: Budget) -> list[RegionScore]:
    """Most sensitive first: the largest recovery of the budget's figure when left out, then by cosine."""
    def key(s: RegionScore):
        v = s.figures.top1_agreement if budget.metric == "agreement" else s.figures.cosine
        return (-(v if v is not None else 0.0), -s.figures.cosine)

    return sorted(scores, key=key)


@dataclass
class SearchResult:
    budget: Budget
    all_int8: Figures
    fp16_regions: list[str]
    figures: Figures
    met: bool
    trials: list[dict]
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"budget": str(self.budget), "all_int8": self.all_int8.to_dict(), "fp16_regions": self.fp16_regions,
                "figures": self.figures.to_dict(), "met": self.met, "trials": self.trials,
                "seconds": round(self.seconds, 1)}


def search(qdq: onnx.ModelProto, ranked: list[RegionScore], regions: dict[str, Region], heldout: HeldOut,
           budget: Budget, all_int8: Figures, progress: bool = True) -> SearchResult:
    """Keep the k most sensitive regions in FP16 for the smallest k that meets the budget.

    Greedy in sensitivity order; k is found by doubling (1, 2, 4, ...) then bisecting, so the search
    costs about 2*log2(regions) evaluations rather than one per region. Without the budget met even
    with every region in FP16, the best figures reached are returned with met=False.
    """
    from tqdm import tqdm

    order = [s.region for s in ranked]
    trials: list[dict] = []
    cache: dict[int, Figures] = {0: all_int8}
    bar = tqdm(desc="fp16 fallback search", unit="trial", disable=not progress, leave=False)

    def trial(k: int) -> Figures:
        if k not in cache:
            nodes = {n for name in order[:k] for n in regions[name].nodes}
            cache[k] = heldout.score(without_qdq(qdq, nodes))
            trials.append({"fp16_regions": k, **cache[k].to_dict()})
            bar.update(1)
            bar.set_postfix_str(f"k={k} {budget.metric} {cache[k].value(budget):.4f}")
        return cache[k]

    if all_int8.meets(budget):
        bar.close()
        return SearchResult(budget, all_int8, [], all_int8, True, trials)
    lo, hi = 0, 1  # lo: largest k known to miss; hi: candidate that meets
    while hi < len(order) and not trial(hi).meets(budget):
        lo, hi = hi, min(2 * hi, len(order))
    if not trial(hi).meets(budget):
        bar.close()
        best = max(cache, key=lambda k: cache[k].value(budget))
        return SearchResult(budget, all_int8, order[:best], cache[best], False, trials)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if trial(mid).meets(budget):
            hi = mid
        else:
            lo = mid
    bar.close()
    return SearchResult(budget, all_int8, order[:hi], cache[hi], True, trials)


# ---------------------------------------------------------------------------------------------- report


def format_table(scores: list[RegionScore], all_int8: Figures, budget: Budget) -> str:
    rows = [("region", "kind", "MACs", "cosine", "min cos", "top-1", "rank")]
    rows.append(("(none: all INT8)", "", "", f"{all_int8.cosine:.5f}", f"{all_int8.cosine_min:.4f}",
                 "-" if all_int8.top1_agreement is None else f"{all_int8.top1_agreement:.1%}", ""))
    position = {s.region: i + 1 for i, s in enumerate(rank(scores, budget))}
    for s in scores:
        f = s.figures
        rows.append((s.region, s.kind, f"{s.mac_share:.1%}", f"{f.cosine:.5f}", f"{f.cosine_min:.4f}",
                     "-" if f.top1_agreement is None else f"{f.top1_agreement:.1%}", str(position[s.region])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    head = "figures with ONLY that region left out of INT8 (kept FP16), vs FP32, on held-out samples:"
    return head + "\n" + "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def write_report(json_path, png_path, scores: list[RegionScore], all_int8: Figures, budget: Budget,
                 extra: dict | None = None) -> None:
    """The sensitivity JSON and bar plot, each written atomically."""
    from twins_trt import artifacts

    artifacts.write_json_atomic(json_path, {
        "method": "leave-one-out: each region's Q/DQ removed from the calibrated graph (same scales elsewhere)",
        "budget": str(budget), "all_int8": all_int8.to_dict(),
        "ranking": [s.region for s in rank(scores, budget)],
        "regions": [s.to_dict() for s in scores], **(extra or {}),
    })
    with artifacts.atomic_path(png_path) as tmp:
        plot(scores, all_int8, budget, tmp)


def plot(scores: list[RegionScore], all_int8: Figures, budget: Budget, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    use_agree = budget.metric == "agreement"
    vals = [(s.figures.top1_agreement if use_agree else s.figures.cosine) or 0.0 for s in scores]
    base = (all_int8.top1_agreement if use_agree else all_int8.cosine) or 0.0
    fig, ax = plt.subplots(figsize=(max(6, 0.18 * len(scores) + 2), 4.5))
    colors = ["tab:red" if v >= budget.bound else "tab:blue" for v in vals]
    ax.bar(range(len(scores)), vals, color=colors)
    ax.axhline(base, color="k", lw=1, ls="--", label=f"all INT8 ({base:.4f})")
    ax.axhline(budget.bound, color="tab:green", lw=1, label=f"budget {budget}")
    lo = min(vals + [base, budget.bound])
    ax.set_ylim(lo - 0.1 * (1 - lo) - 1e-4, min(1.0, max(vals + [budget.bound]) + 0.1 * (1 - lo)) + 1e-4)
    ax.set_xticks(range(len(scores)), [s.region for s in scores], rotation=90, fontsize=6)
    ax.set_ylabel(("top-1 agreement" if use_agree else "cosine") + " vs FP32 (held out)")
    ax.set_title("INT8 sensitivity: figure with only that region kept in FP16")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


def exclude_patterns(nodes: list[str]) -> list[str]:
    """ModelOpt's nodes_to_exclude are regexes matched at the start: anchor and escape each name."""
    return [f"^{re.escape(n)}$" for n in nodes]

