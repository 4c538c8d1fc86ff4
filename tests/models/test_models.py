"""The model zoo against timm, the reference implementation: same weights, same outputs."""

from __future__ import annotations

import pytest
import timm
import torch

from twins_trt import VARIANTS, create_model, list_variants, resolve_variant
from twins_trt.errors import InputSizeError, UnknownVariantError
from twins_trt.models import RandomWeightsWarning


def timm_and_ours(name: str, features: bool = False):
    cfg = VARIANTS[name]
    torch.manual_seed(0)
    ref = timm.create_model(cfg.timm_name, pretrained=False).eval()
    ours = create_model(name, features=features)
    sd = ref.state_dict()
    if features:
        sd = {k: v for k, v in sd.items() if not k.startswith(("head.", "norm."))}
    ours.load_state_dict(sd, strict=True)
    return ref, ours


@pytest.mark.parametrize("name", list(VARIANTS))
def test_logits_match_timm_at_224(name):
    ref, ours = timm_and_ours(name)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        diff = (ref(x) - ours(x)).abs().max().item()
    assert diff <= 1e-5, f"{name}: max |timm - ours| = {diff:.3g} > 1e-5"


@pytest.mark.parametrize("name,size", [("svt_s", 224), ("svt_s", 320), ("pcpvt_s", 224), ("pcpvt_s", 320)])
def test_features_match_timm_intermediates(name, size):
    ref, ours = timm_and_ours(name, features=True)
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = ref.forward_intermediates(x, intermediates_only=True)
        got = ours(x)
    assert [tuple(t.shape) for t in got] == [
        (1, c, size // s, size // s) for c, s in zip(VARIANTS[name].embed_dims, (4, 8, 16, 32))
    ]
    for w, g in zip(want, got):
        assert (w - g).abs().max().item() <= 1e-5


def test_non_divisible_size_needs_padding_and_matches_timm():
    ref, ours = timm_and_ours("svt_s")
    x = torch.randn(1, 3, 320, 448, generator=torch.Generator().manual_seed(3))  # 80x112: 80 % 7 != 0
    with torch.no_grad():
        assert (ref(x) - ours(x)).abs().max().item() <= 1e-5


def test_sdpa_and_explicit_attention_agree():
    _, ours = timm_and_ours("svt_s")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        a = ours.set_attn_impl("explicit")(x)
        b = ours.set_attn_impl("sdpa")(x)
    assert ours.attn_impl == "sdpa"
    assert (a - b).abs().max().item() <= 1e-5
    with pytest.raises(ValueError, match="explicit"):
        ours.set_attn_impl("flash")


@pytest.mark.parametrize("name", list(VARIANTS))
def test_configs_match_the_paper(name):
    cfg = VARIANTS[name]
    with torch.device("meta"):  # the structure alone: no weights computed (svt_l's initialisation took seconds)
        model = create_model(name)
    lsa = sum(type(b.attn).__name__ == "LocallyGroupedAttn" for stage in model.blocks for b in stage)
    if cfg.family == "svt":  # LSA and GSA alternate, LSA first, window 7
        assert lsa == sum((d + 1) // 2 for d in cfg.depths)
        assert all(model.blocks[k][0].attn.ws == 7 for k in range(4))
    else:
        assert lsa == 0
    assert [len(s) for s in model.blocks] == list(cfg.depths)
    assert cfg.input_size == (3, 224, 224) and cfg.interpolation == "bicubic" and cfg.crop_pct == 0.9
    assert not model.training


def test_aliases_resolve_to_one_variant():
    assert list_variants() == ["pcpvt_s", "pcpvt_b", "pcpvt_l", "svt_s", "svt_b", "svt_l"]
    for alias in ("svt_s", "twins_svt_small", "alt_gvt_small", "twins_svt_small.in1k", "ALT_GVT_SMALL"):
        assert resolve_variant(alias).name == "svt_s"
    assert resolve_variant("pcpvt_large_v0").name == "pcpvt_l"


def test_unknown_variant_lists_the_valid_names():
    with pytest.raises(UnknownVariantError, match="svt_s.*alt_gvt_small"):
        create_model("swin_t")


def test_random_weights_warn_loudly():
    with pytest.warns(RandomWeightsWarning, match="RANDOM weights"):
        create_model("svt_s")


def test_seeded_random_init_is_reproducible():
    a, b = create_model("svt_s", seed=3), create_model("svt_s", seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("size,nearest", [((225, 224), "224 or 256"), ((224, 300), "288 or 320")])
def test_size_not_multiple_of_32_names_nearest_valid(size, nearest):
    model = create_model("svt_s", features=True)
    with pytest.raises(InputSizeError, match=nearest):
        model(torch.randn(1, 3, *size))
