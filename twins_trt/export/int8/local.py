"""Every region's local quantization error in one pass: the quick ranking of the budgeted search.

One run of a graph that computes every region's nodes twice, on the unquantized graph's own tensors: as the
calibrated graph has them (Q/DQ on their inputs) and without Q/DQ. Their difference is the error the region adds
by itself, before anything downstream amplifies or damps it; its energy ranks the regions.
A leave-one-out trial costs one ONNX Runtime session and one inference over the held-out samples per region
(166 regions on svt_s); this costs about two inferences, whatever the number of regions.
"""

from __future__ import annotations

import numpy as np
import onnx

from twins_trt.export.int8.regions import Region
from twins_trt.qdq import qdq_source
from twins_trt.runners.ort_runner import cpu_session, padded_batches, session_infer


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def local_errors(qdq: onnx.ModelProto, regions: dict[str, Region], x: np.ndarray, optimization: str = "all",
                 relative: bool = False) -> dict[str, float]:
    """Each region's own quantization error on the samples `x`, in one run: the squared difference between its
    nodes' outputs with and without Q/DQ on their inputs, both computed from the unquantized graph's tensors,
    summed over the region's nodes, per sample. `relative`: divided by the outputs' energy instead (an inverse
    signal-to-noise ratio); measured on svt_s, that ranks the attention `av` MatMuls first (their probabilities
    quantize coarsely) although leaving them out recovers little, while the absolute error ranks the residual
    stream, patch embeddings and PEG convs first, as leave-one-out does: absolute is the default."""
    src = qdq_source(qdq)
    out = _copy(qdq)
    owner = {n: name for name, r in regions.items() for n in r.nodes}
    nodes: list[onnx.NodeProto] = []
    pairs: dict[str, list[tuple[str, str]]] = {}
    for n in out.graph.node:
        nodes.append(n)
        if n.name not in owner or not any(t in src for t in n.input):
            continue
        local = onnx.NodeProto()
        local.CopyFrom(n)
        local.name = f"{n.name}/local"
        del local.output[:]
        local.output.extend([f"{n.output[0]}/local"] + [""] * (len(n.output) - 1))
        for j, t in enumerate(n.input):  # the node itself now takes the unquantized tensors
            if t in src:
                n.input[j] = src[t]
        nodes.append(local)
        pairs.setdefault(owner[n.name], []).append((n.output[0], local.output[0]))
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    expose = {t for p in pairs.values() for pair in p for t in pair}
    infer, batch = session_infer(cpu_session(out, optimization=optimization, expose=expose))
    step = batch or 1  # a symbolic batch one sample at a time: every region's tensors are outputs here
    err = dict.fromkeys(pairs, 0.0)
    ref = dict.fromkeys(pairs, 0.0)
    for got, n in padded_batches(infer, x, step, step):  # the padding of a short last batch is not counted
        for region, p in pairs.items():
            for fp, q in p:  # both cast to float64 before the difference, in one step
                err[region] += float((np.subtract(got[q][:n], got[fp][:n], dtype=np.float64) ** 2).sum())
                if relative:
                    ref[region] += float((got[fp][:n].astype(np.float64) ** 2).sum())
    if relative:
        return {r: (err[r] / ref[r] if ref[r] else 0.0) if r in err else 0.0 for r in regions}
    return {r: err.get(r, 0.0) / len(x) for r in regions}
