"""Sensitivity (leave-one-out, or local errors confirmed by leave-one-out) and the FP16 fallback search.

Two methods rank the regions (`METHODS`):

- `local` (the default): one pass measures every region's own quantization error (`local.local_errors`), then
  the `confirm` regions with the largest are measured leave-one-out; those lead the ranking in that order, the
  rest follow by local error per share of the MACs they would take out of INT8 (regions without MACs first). It
  costs about `confirm` + 2 inferences instead of one per region.
- `loo`: every region measured leave-one-out (one session and one held-out inference per region).

Sensitivity is measured *leave-one-out*: calibrate once, then for each region remove the Q/DQ pairs
that feed its nodes from the calibrated graph, which is exactly "this region in FP16, everything
else INT8 with the same scales", and score it on the held-out samples. Leave-one-out was chosen over
"only this region quantized" because it measures what the fallback search does: it starts from
all-INT8 and takes regions out, so a region's recovery when left out ranks it directly (NNCF's
accuracy control ranks the same way). The search then keeps the most sensitive regions in FP16,
greedily in that order, until the budget is met; the artifact written is the graph the search measured
(ModelOpt's calibrated graph with those regions' Q/DQ removed, `export.quantized`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx

from twins_trt.export.int8.budget import Budget, Figures, HeldOut
from twins_trt.export.int8.local import local_errors
from twins_trt.export.int8.regions import Region
from twins_trt.qdq import without_qdq

METHODS = ("local", "loo")
CONFIRM = 8  # local: regions measured leave-one-out after the local pass


@dataclass
class RegionScore:
    region: str
    kind: str
    nodes: int
    mac_share: float
    figures: Figures | None  # left out alone, on the held-out samples (None: not measured)
    local_error: float | None = None  # its own quantization error (`local.local_errors`), when measured

    def to_dict(self) -> dict:
        return {"region": self.region, "kind": self.kind, "nodes": self.nodes, "mac_share": self.mac_share,
                "local_error": self.local_error, **(self.figures.to_dict() if self.figures else {})}


def sensitivity(qdq: onnx.ModelProto, regions: dict[str, Region], heldout: HeldOut,
                progress: bool = True) -> list[RegionScore]:
    """Each region left out of INT8 (or FP8: `heldout.precision`) alone (same scales elsewhere), scored on the
    held-out samples."""
    from tqdm import tqdm

    total = sum(r.macs for r in regions.values()) or 1
    scores = []
    for r in tqdm(list(regions.values()), desc=f"{heldout.precision} sensitivity", unit="region",
                  disable=not progress, leave=False):
        scores.append(RegionScore(r.name, r.kind, len(r.nodes), r.macs / total,
                                  heldout.score(without_qdq(qdq, set(r.nodes)))))
    return scores


def local_sensitivity(qdq: onnx.ModelProto, regions: dict[str, Region], heldout: HeldOut, confirm: int = CONFIRM,
                      progress: bool = True) -> list[RegionScore]:
    """Every region's local error from one pass over the held-out samples (their first input size), then the
    `confirm` regions with the largest left out of INT8 (FP8) one at a time, as `sensitivity` does."""
    from tqdm import tqdm

    total = sum(r.macs for r in regions.values()) or 1
    errors = local_errors(qdq, regions, heldout.groups[0], heldout.optimization)
    scores = [RegionScore(r.name, r.kind, len(r.nodes), r.macs / total, None, errors[r.name])
              for r in regions.values()]
    top = sorted(scores, key=lambda s: -s.local_error)[:confirm]
    for s in tqdm(top, desc=f"{heldout.precision} sensitivity (confirm)", unit="region", disable=not progress,
                  leave=False):
        s.figures = heldout.score(without_qdq(qdq, set(regions[s.region].nodes)))
    return scores


def rank(scores: list[RegionScore], budget: Budget) -> list[RegionScore]:
    """Most sensitive first: the regions measured left out (all of them with `loo`), by the largest recovery of the
    budget's figure, then by cosine; then the others (`local`) by their local error per share of the MACs they would
    take out of INT8 (the search's cost): those holding no MatMul/Conv MACs first, by local error."""
    def key(s: RegionScore):
        if s.figures is None:
            err = s.local_error or 0.0
            return (1, 0, -err) if s.mac_share <= 0 else (1, 1, -err / s.mac_share)
        v = s.figures.top1_agreement if budget.metric == "agreement" else s.figures.cosine
        return (0, -(v if v is not None else 0.0), -s.figures.cosine)

    return sorted(scores, key=key)


def spearman(a: list[str], b: list[str]) -> float:
    """Spearman's rank correlation of two orderings of the same regions (1: the same order, -1: reversed)."""
    if set(a) != set(b) or len(a) < 2:
        raise ValueError("two orderings of the same (at least two) regions are needed")
    pos = {r: i for i, r in enumerate(b)}
    d = sum((i - pos[r]) ** 2 for i, r in enumerate(a))
    n = len(a)
    return 1 - 6 * d / (n * (n * n - 1))


@dataclass
class SearchResult:
    budget: Budget
    all_int8: Figures
    fp16_regions: list[str]
    figures: Figures
    met: bool
    trials: list[dict]
    seconds: float = 0.0
    forward: list[str] | None = None  # the greedy prefix that first met the budget (None: not met, or met by all-INT8)
    returned: list[str] = field(default_factory=list)  # regions of that prefix the backward pass put back in INT8

    def to_dict(self) -> dict:
        return {"budget": str(self.budget), "all_int8": self.all_int8.to_dict(), "fp16_regions": self.fp16_regions,
                "figures": self.figures.to_dict(), "met": self.met, "trials": self.trials,
                "forward": self.forward, "returned": self.returned, "seconds": round(self.seconds, 1)}


def search(qdq: onnx.ModelProto, ranked: list[RegionScore], regions: dict[str, Region], heldout: HeldOut,
           budget: Budget, all_int8: Figures, progress: bool = True, backward: bool = True) -> SearchResult:
    """Keep the k most sensitive regions in FP16 for the smallest k that meets the budget (`all_int8`: the figures
    of the all-quantized graph, INT8 or FP8).

    Greedy in sensitivity order; k is found by doubling (1, 2, 4, ...) then bisecting, so the search
    costs about 2*log2(regions) evaluations rather than one per region (k=1 costs none when the first region was
    measured left out alone: that is the same graph, and its figures are taken as they are; `trials` lists the
    graphs scored here). Without the budget met even
    with every region in FP16, the best figures reached are returned with met=False.

    Then a backward pass (unless `backward` is False): the chosen regions that hold MACs, the largest first, are each
    returned to INT8 (FP8) on trial and stay there when the budget still holds. The greedy order is only a
    ranking, so its prefix can hold a region the others make unnecessary; this takes it back, trial-checked,
    so the budget is still met and the share of MACs in low precision only grows (one trial per such region).
    """
    from tqdm import tqdm

    order = [s.region for s in ranked]
    trials: list[dict] = []
    cache: dict[int, Figures] = {0: all_int8}
    if ranked and ranked[0].figures is not None:  # k=1 is the first region's own leave-one-out graph: measured
        cache[1] = ranked[0].figures
    bar = tqdm(desc="fp16 fallback search", unit="trial", disable=not progress, leave=False)

    def score_without(names: list[str]) -> Figures:  # these regions out of INT8 (FP8), the rest as calibrated
        return heldout.score(without_qdq(qdq, {n for name in names for n in regions[name].nodes}))

    def trial(k: int) -> Figures:
        if k not in cache:
            cache[k] = score_without(order[:k])
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
    chosen, best, returned = order[:hi], cache[hi], []
    share = {s.region: s.mac_share for s in ranked}
    for name in sorted((r for r in chosen if backward and share[r] > 0), key=lambda r: -share[r]):
        keep = [r for r in chosen if r != name]
        fig = score_without(keep)
        trials.append({"fp16_regions": len(keep), "returned": name, **fig.to_dict()})
        bar.update(1)
        bar.set_postfix_str(f"back to {heldout.precision}: {name} {budget.metric} {fig.value(budget):.4f}")
        if fig.meets(budget):
            chosen, best = keep, fig
            returned.append(name)
    bar.close()
    return SearchResult(budget, all_int8, chosen, best, True, trials, forward=order[:hi], returned=returned)
