"""Segmentors: mmseg FPN/UPerNet weights load and match mmseg's own heads; pooling and BN folding."""

from __future__ import annotations

import copy

import mmseg_ref
import pytest
import torch
import torch.nn.functional as F

from twins_trt import create_segmentor
from twins_trt.errors import WeightsError
from twins_trt.models.heads import adaptive_avg_pool

NUM_CLASSES = 19


def _save_segmentor(path, backbone, neck, head, aux: bool = False):
    sd = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    if neck is not None:
        sd.update({f"neck.{k}": v for k, v in neck.state_dict().items()})
    sd.update({f"decode_head.{k}": v for k, v in head.state_dict().items()})
    if aux:  # UPerNet configs train an FCN auxiliary head; it is dropped at inference
        sd["auxiliary_head.conv_seg.weight"] = torch.zeros(NUM_CLASSES, 256, 1, 1)
    torch.save({"meta": {"CLASSES": tuple(str(i) for i in range(NUM_CLASSES))}, "state_dict": sd}, path)
    return path


@pytest.fixture(scope="module", params=[(v, h) for v in ("svt_s", "pcpvt_s") for h in ("fpn", "uper")],
                ids=lambda p: "-".join(p))
def pair(request, tmp_path_factory):
    variant, head = request.param
    backbone = mmseg_ref.backbone(variant)
    neck, dec = mmseg_ref.heads(variant, head, NUM_CLASSES)
    path = _save_segmentor(tmp_path_factory.mktemp("seg") / f"{variant}_{head}.pth", backbone, neck, dec, aux=head == "uper")
    return (backbone, neck, dec), create_segmentor(variant, head=head, weights=path), path


def test_logits_match_mmseg_whole_mode(pair):
    """512x512: every LSA stage pads (mask active); logits resized to the input as mmseg's 'whole' mode."""
    ref, ours, _ = pair
    torch.manual_seed(2)
    x = torch.randn(1, 3, 512, 512)
    with torch.no_grad():
        expected = mmseg_ref.segment(*ref, x)
        got = ours(x)
    assert got.shape == expected.shape == (1, NUM_CLASSES, 512, 512)
    assert expected.abs().max() > 0.1  # not a degenerate comparison
    assert (got - expected).abs().max().item() <= 1e-4


def test_batchnorm_folds_without_changing_logits(pair):
    _, ours, _ = pair
    folded = copy.deepcopy(ours).fold_batchnorm()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(1, 3, 256, 320)
    with torch.no_grad():
        assert (folded(x) - ours(x)).abs().max().item() <= 1e-4


def test_checkpoint_head_kind_and_classes_are_checked(pair):
    _, ours, path = pair
    other = "uper" if ours.head_cfg.name == "fpn" else "fpn"
    with pytest.raises(WeightsError, match=f"use head='{ours.head_cfg.name}'"):
        create_segmentor(ours.cfg.name, head=other, weights=path)
    with pytest.raises(WeightsError, match=f"pass num_classes={NUM_CLASSES}"):
        create_segmentor(ours.cfg.name, head=ours.head_cfg.name, num_classes=150, weights=path)


@pytest.mark.parametrize("hw", [(16, 16), (17, 23), (5, 7), (32, 64), (1, 3)])
@pytest.mark.parametrize("bins", [1, 2, 3, 6])
def test_adaptive_avg_pool_matches_torch(hw, bins):
    x = torch.randn(2, 4, *hw)
    assert torch.allclose(adaptive_avg_pool(x, bins), F.adaptive_avg_pool2d(x, bins), atol=1e-6)


def test_uper_head_exports_with_a_dynamic_size_and_pools_right_at_every_size():
    """UPerHead alone (the pyramid pooling is what a fixed-size export gets wrong) through torch's exporter with
    symbolic H/W, then ONNX Runtime against PyTorch at sizes whose pooling bins overlap differently."""
    import numpy as np
    import onnxruntime as ort

    from twins_trt.models.heads import UPerHead

    dims = (64, 128, 256, 512)
    torch.manual_seed(0)
    head = UPerHead(list(dims), 64, 5, (1, 2, 3, 6)).eval()

    class Wrap(torch.nn.Module):  # four feature maps at strides 4..32 of one image size
        def __init__(self):
            super().__init__()
            self.head = head

        def forward(self, f4, f8, f16, f32):
            return self.head([f4, f8, f16, f32])

    h32, w32 = torch.export.Dim("h32", min=2, max=8), torch.export.Dim("w32", min=2, max=8)
    feats = [torch.randn(1, c, 5 * 8 // s, 6 * 8 // s) for c, s in zip(dims, (1, 2, 4, 8))]
    spec = [{2: h32 * (8 // s), 3: w32 * (8 // s)} for s in (1, 2, 4, 8)]
    with torch.no_grad():
        prog = torch.onnx.export(Wrap().eval(), tuple(feats), dynamo=True, dynamic_shapes=spec, opset_version=20,
                                 verbose=False)
    ops = {n.op_type for n in prog.model_proto.graph.node}
    assert "AveragePool" not in ops and "GlobalAveragePool" not in ops  # no pooling window fixed at trace time
    sess = ort.InferenceSession(prog.model_proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for h, w in ((2, 2), (5, 7), (8, 3)):  # the stride-32 map: bins 3 and 6 overlap unevenly on 5 and 7 rows
        x = [torch.randn(1, c, h * 8 // s, w * 8 // s) for c, s in zip(dims, (1, 2, 4, 8))]
        with torch.no_grad():
            ref = head(x).numpy()
        got = sess.run(None, {i.name: t.numpy() for i, t in zip(sess.get_inputs(), x)})[0]
        assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4, (h, w)


def test_mlp_head_shapes_and_stride4_output():
    seg = create_segmentor("svt_s", head="mlp", num_classes=5, output="stride4", seed=0)
    with torch.no_grad():
        out = seg(torch.randn(1, 3, 128, 192))
    assert out.shape == (1, 5, 32, 48)


def test_unknown_head_is_refused():
    with pytest.raises(ValueError, match="expected one of fpn, uper, mlp"):
        create_segmentor("svt_s", head="deeplab")
