"""Segmentor checkpoints trained at head widths other than the Twins configs' load and match mmseg.

mmseg's configs allow any width (an UPerNet at channels=256 is common); the widths are read from the
checkpoint as num_classes is. Each width is set to a non-default value and the whole segmentor is
compared with mmseg's own neck and heads (the MLP head, which mmseg lacks, with the module that
wrote the checkpoint). svt_s only: the backbone's parity is test_mmseg_backbone.py's job.
"""

from __future__ import annotations

import json

import mmseg_ref
import pytest
import torch

from twins_trt import create_segmentor
from twins_trt.models.heads import MLPHead
from twins_trt.models.segmentor import HEADS, TwinsSegmentor

VARIANT, NUM_CLASSES, SIZE = "svt_s", 7, (96, 128)  # 96x128: stride-4 map 24x32 pads SVT's 7x7 windows
# (head, channels, FPN neck out_channels): none of them the configs' (fpn 128/256, uper 512)
CASES = [("fpn", 64, 96), ("uper", 256, None)]


def _save(path, backbone_sd, neck, head) -> str:
    sd = {f"backbone.{k}": v for k, v in backbone_sd.items()}
    if neck is not None:
        sd.update({f"neck.{k}": v for k, v in neck.state_dict().items()})
    sd.update({f"decode_head.{k}": v for k, v in head.state_dict().items()})
    torch.save({"meta": {"iter": 160000}, "state_dict": sd}, path)
    return str(path)


@pytest.fixture(scope="module")
def mmseg_backbone():
    return mmseg_ref.backbone(VARIANT)


@pytest.fixture(scope="module")
def image():
    return torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(3))


@pytest.fixture(scope="module", params=CASES, ids=lambda c: f"{c[0]}-c{c[1]}-n{c[2]}")
def mmseg_case(request, mmseg_backbone, tmp_path_factory):
    head, channels, neck_channels = request.param
    neck, dec = mmseg_ref.heads(VARIANT, head, NUM_CLASSES, channels=channels, neck_channels=neck_channels)
    path = _save(tmp_path_factory.mktemp("widths") / f"{head}.pth", mmseg_backbone.state_dict(), neck, dec)
    return request.param, (mmseg_backbone, neck, dec), path


def test_widths_come_from_the_checkpoint_and_logits_match_mmseg(mmseg_case, image):
    (head, channels, neck_channels), ref, path = mmseg_case
    assert channels != HEADS[head].channels
    assert neck_channels is None or neck_channels != HEADS[head].neck_channels
    ours = create_segmentor(VARIANT, head=head, weights=path)
    assert ours.head_cfg.channels == channels and ours.head_cfg.neck_channels == neck_channels
    assert ours.decode_head.conv_seg.in_channels == channels
    if neck_channels:
        assert ours.neck.fpn_convs[0].conv.out_channels == neck_channels
    with torch.no_grad():
        expected = mmseg_ref.segment(*ref, image)
        got = ours(image)
    assert got.shape == expected.shape == (1, NUM_CLASSES, *SIZE)
    assert expected.abs().max() > 0.1  # not a degenerate comparison
    diff = (got - expected).abs().max().item()
    print(f"{head} channels={channels} neck_channels={neck_channels}: max|diff| vs mmseg {diff:.3g}")
    assert diff <= 1e-4


def test_mlp_head_width_comes_from_the_checkpoint(mmseg_backbone, image, tmp_path):
    """mmseg has no MLP head: the reference is the head module that wrote the checkpoint, on mmseg's backbone."""
    channels = 48
    assert channels != HEADS["mlp"].channels
    torch.manual_seed(5)
    writer = MLPHead(mmseg_ref.BACKBONE_ARGS[VARIANT]["embed_dims"], channels, NUM_CLASSES)
    mmseg_ref._randomize_norms(writer)
    writer.eval()
    path = _save(tmp_path / "mlp.pth", mmseg_backbone.state_dict(), None, writer)
    ours = create_segmentor(VARIANT, head="mlp", weights=path)
    assert ours.head_cfg.channels == channels and ours.decode_head.fuse.conv.out_channels == channels
    with torch.no_grad():
        expected = mmseg_ref.segment(mmseg_backbone, None, writer, image)
        got = ours(image)
    assert expected.abs().max() > 0.1
    diff = (got - expected).abs().max().item()
    print(f"mlp channels={channels}: max|diff| vs reference {diff:.3g}")
    assert diff <= 1e-4


def test_random_head_keeps_the_default_widths():
    seg = create_segmentor(VARIANT, head="fpn", num_classes=NUM_CLASSES, seed=0)
    assert (seg.head_cfg.channels, seg.head_cfg.neck_channels) == (128, 256)
    with pytest.raises(ValueError, match="no neck"):
        TwinsSegmentor(seg.backbone, "uper", NUM_CLASSES, neck_channels=64)


@pytest.mark.slow
def test_export_of_a_narrow_uper_checkpoint_verifies(tmp_path, capsys):
    """twins-export --task seg on an UPerNet at channels=64: the graph is written and verifies against PyTorch."""
    from twins_trt.cli import export as export_cli

    neck, dec = mmseg_ref.heads(VARIANT, "uper", NUM_CLASSES, channels=64)
    path = _save(tmp_path / "uper64.pth", mmseg_ref.backbone(VARIANT).state_dict(), neck, dec)
    out = tmp_path / "export"
    rc = export_cli.main(["--variant", VARIANT, "--task", "seg", "--seg-head", "uper", "--weights", path,
                          "--img-size", "64x96", "--verify-samples", "2", "--no-build", "-q", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err[-2000:]
    (manifest_path,) = out.glob("*.fp32.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["segmentation"]["num_classes"] == NUM_CLASSES
    print(f"export {manifest_path.name}: verification {manifest['verification']}")
    assert manifest["verification"]["passed"]
