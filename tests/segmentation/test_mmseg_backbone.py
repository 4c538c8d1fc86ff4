"""mmsegmentation Twins checkpoints load strictly and our backbone then matches mmseg's own."""

from __future__ import annotations

import mmseg_ref
import pytest
import torch

from twins_trt import create_model
from twins_trt.errors import WeightsError
from twins_trt.models.mmseg import mmseg_to_timm
from twins_trt.models.twins import TIMM_FORWARD, _window_pad_mask

VARIANTS = ["svt_s", "pcpvt_s"]


@pytest.fixture(scope="module", params=VARIANTS)
def pair(request, tmp_path_factory):
    """(variant, mmseg's backbone, ours loaded from mmseg's state dict saved as a segmentor would be)."""
    ref = mmseg_ref.backbone(request.param)
    path = tmp_path_factory.mktemp("mmseg") / f"{request.param}_segmentor.pth"
    sd = {f"backbone.{k}": v for k, v in ref.state_dict().items()}
    sd["decode_head.conv_seg.weight"] = torch.zeros(19, 128, 1, 1)
    sd["neck.lateral_convs.0.conv.weight"] = torch.zeros(256, 64, 1, 1)
    torch.save({"meta": {"iter": 80000}, "state_dict": sd}, path)
    return request.param, ref, create_model(request.param, weights=path, features=True)


@pytest.mark.parametrize("size", [(512, 512), (224, 448)])  # 1024x1024: checked once, ~20 s each
def test_features_match_mmseg(pair, size):
    """512: every stage pads its windows (128, 64, 32, 16 vs 7); 224x448: only W pads (mmseg's mask is void)."""
    variant, ref, ours = pair
    torch.manual_seed(1)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    for i, (e, g) in enumerate(zip(expected, got)):
        assert g.shape == e.shape
        assert (g - e).abs().max().item() <= 1e-4, f"{variant} stage {i} at {size}"


def test_mmseg_checkpoint_selects_mmseg_forward(pair):
    variant, _, ours = pair
    assert ours.options.flavor == "mmseg" and ours.options.lsa_pad_mask
    assert ours.blocks[0][0].norm1.eps == 1e-5
    assert hasattr(ours, "norm_list") == (variant == "svt_s")


def test_timm_forward_differs_where_mmseg_masks(pair):
    """The options matter: the timm forward on the same weights is far off once windows pad (SVT)."""
    variant, ref, ours = pair
    if variant != "svt_s":
        pytest.skip("PCPVT has no windows; only eps differs (checked above)")
    sd = {k: v for k, v in ours.state_dict().items() if not k.startswith("norm_list.")}
    timm_like = create_model(variant, features=True)
    timm_like.load_state_dict(sd)
    assert timm_like.options == TIMM_FORWARD
    x = torch.randn(1, 3, 512, 512)
    with torch.no_grad():
        assert (timm_like(x)[0] - ref(x)[0]).abs().max() > 1e-2


def test_backbone_alone_without_prefix_loads(tmp_path):
    ref = mmseg_ref.backbone("svt_s")
    path = tmp_path / "svt_backbone.pth"
    torch.save(ref.state_dict(), path)
    ours = create_model("svt_s", weights=path, features=True)
    assert ours.options.norm_after_stage


def test_mmseg_checkpoint_as_classifier_is_refused(tmp_path):
    path = tmp_path / "pcpvt_backbone.pth"
    torch.save(mmseg_ref.backbone("pcpvt_s").state_dict(), path)
    with pytest.raises(WeightsError, match="features=True"):
        create_model("pcpvt_s", weights=path)


def test_wrong_variant_is_named(tmp_path):
    path = tmp_path / "pcpvt_backbone.pth"
    torch.save(mmseg_ref.backbone("pcpvt_s").state_dict(), path)
    with pytest.raises(WeightsError, match="looks like variant 'pcpvt_s'"):
        create_model("pcpvt_b", weights=path, features=True)


def test_gsa_in_proj_is_split_into_q_and_kv():
    w = torch.arange(12.0).view(6, 2)
    out = mmseg_to_timm({"layers.0.1.attn.attn.in_proj_weight": w, "layers.0.1.attn.attn.out_proj.bias": torch.ones(2)})
    assert torch.equal(out["blocks.0.1.attn.q.weight"], w[:2])
    assert torch.equal(out["blocks.0.1.attn.kv.weight"], w[2:])
    assert "blocks.0.1.attn.proj.bias" in out


def test_timm_names_pass_through_unchanged():
    sd = {"blocks.0.0.attn.qkv.weight": torch.ones(1)}
    assert mmseg_to_timm(sd) is sd


@pytest.mark.parametrize("hw", [(16, 16), (14, 16), (16, 14), (14, 14)])
def test_pad_mask_follows_mmseg_quirk(hw):
    """mmseg's mask acts only when both sides pad; then it separates padded from real tokens."""
    H, W = hw
    mask = _window_pad_mask(H, W, 7, torch.device("cpu"))
    if H % 7 == 0 or W % 7 == 0:
        assert mask is None
        return
    assert mask.shape == (9, 49, 49)
    # window 0 (top-left) has no padding; the last window's last token is padding
    assert (mask[0] == 0).all()
    assert mask[-1, 0, -1] == -1000.0 and mask[-1, -1, -1] == 0.0


def test_a_static_mask_is_a_constant_tiled_to_the_scores_layout():
    """With a static batch the mask comes as (batch*windows, 1, N, N), equal to the per-window mask repeated."""
    per_window = _window_pad_mask(16, 16, 7, torch.device("cpu"))
    tiled = _window_pad_mask(16, 16, 7, torch.device("cpu"), batch=2)
    assert tiled.shape == (18, 1, 49, 49) and torch.equal(tiled[:, 0], per_window.repeat(2, 1, 1))
    assert set(per_window.unique().tolist()) == {0.0, -1000.0}


def test_sdpa_applies_the_same_mask():
    """The PyTorch baseline may run SDPA; with mmseg's mask it must give the export form's numbers."""
    model = create_model("svt_s", features=True, flavor="mmseg", seed=0)
    x = torch.randn(1, 3, 256, 256)  # 64, 32, 16, 8 per stage: every LSA stage pads both sides
    with torch.no_grad():
        explicit = model.set_attn_impl("explicit")(x)
        sdpa = model.set_attn_impl("sdpa")(x)
    assert all((a - b).abs().max() <= 1e-4 for a, b in zip(explicit, sdpa))
