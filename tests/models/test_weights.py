"""Checkpoints: safe loading, wrappers, known extra keys, and errors that say what to do."""

from __future__ import annotations

import pickle

import pytest
import timm
import torch
from safetensors.torch import save_file

from twins_trt import create_model
from twins_trt.errors import WeightsError
from twins_trt.models.weights import guess_variant


@pytest.fixture(scope="module")
def timm_svt_s():
    torch.manual_seed(0)
    return timm.create_model("twins_svt_small", pretrained=False).eval()


def same_weights(model, ref) -> bool:
    ours = model.state_dict()
    return all(torch.equal(v, ours[k]) for k, v in ref.state_dict().items())


@pytest.mark.parametrize("wrapper", [None, "model", "state_dict", "state_dict_ema"])
def test_pth_round_trip_with_wrappers_and_prefix(tmp_path, timm_svt_s, wrapper):
    sd = {f"module.{k}": v for k, v in timm_svt_s.state_dict().items()}
    obj = {wrapper: sd, "epoch": 300} if wrapper else sd
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    assert same_weights(create_model("svt_s", weights=path), timm_svt_s)


def test_official_style_training_dump_with_namespace_loads(tmp_path, timm_svt_s):
    import argparse

    path = tmp_path / "alt_gvt_small.pth"
    torch.save({"model": timm_svt_s.state_dict(), "args": argparse.Namespace(lr=1e-3)}, path)
    assert same_weights(create_model("alt_gvt_small", weights=path), timm_svt_s)


def test_safetensors_round_trip(tmp_path, timm_svt_s):
    path = tmp_path / "svt_s.safetensors"
    save_file({k: v.contiguous() for k, v in timm_svt_s.state_dict().items()}, str(path))
    model = create_model("twins_svt_small", weights=path)
    assert same_weights(model, timm_svt_s)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert (model(x) - timm_svt_s(x)).abs().max() <= 1e-5


def test_known_extra_keys_are_dropped_by_name(tmp_path, timm_svt_s):
    sd = dict(timm_svt_s.state_dict())
    sd["cls_token"] = torch.zeros(1, 1, 512)
    sd["pos_embeds.0"] = torch.zeros(1, 3136, 64)
    path = tmp_path / "official.pth"
    torch.save(sd, path)
    assert same_weights(create_model("svt_s", weights=path), timm_svt_s)


def test_unknown_extra_and_missing_keys_are_listed(tmp_path, timm_svt_s):
    sd = dict(timm_svt_s.state_dict())
    sd.pop("head.bias")
    sd["blocks.0.0.attn.relative_position_bias_table"] = torch.zeros(3)
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match=r"missing 1 key\(s\): head.bias.*unexpected 1 key\(s\): blocks.0.0.attn.rel"):
        create_model("svt_s", weights=path)


def test_checkpoint_of_another_variant_names_it(tmp_path):
    torch.manual_seed(0)
    pcpvt = timm.create_model("twins_pcpvt_small", pretrained=False)
    path = tmp_path / "which.pth"
    torch.save(pcpvt.state_dict(), path)
    with pytest.raises(WeightsError, match="looks like variant 'pcpvt_s'.*--variant pcpvt_s"):
        create_model("svt_s", weights=path)
    assert guess_variant(pcpvt.state_dict()).name == "pcpvt_s"


def test_head_with_other_class_count_is_explained(tmp_path):
    torch.manual_seed(0)
    ref = timm.create_model("twins_svt_small", pretrained=False, num_classes=10)
    path = tmp_path / "ten.pth"
    torch.save(ref.state_dict(), path)
    with pytest.raises(WeightsError, match="head has 10 classes"):
        create_model("svt_s", weights=path)
    create_model("svt_s", weights=path, num_classes=10)


def test_backbone_drops_classifier_keys(tmp_path, timm_svt_s):
    path = tmp_path / "cls.pth"
    torch.save(timm_svt_s.state_dict(), path)
    model = create_model("svt_s", weights=path, features=True)
    assert "head.weight" not in model.state_dict() and "norm.weight" not in model.state_dict()


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": Evil()}, f)
    with pytest.raises(WeightsError, match="weights_only=True"):
        create_model("svt_s", weights=path)


@pytest.mark.parametrize("name,content,match", [
    ("missing.pth", None, "does not exist"),
    ("weights.txt", b"hello", "expected .pth, .pt or .safetensors"),
    ("trunc.safetensors", b"\x00\x01", "cannot read"),
    ("list.pth", "list", "holds no state dict"),
])
def test_unreadable_files_get_clear_errors(tmp_path, name, content, match):
    path = tmp_path / name
    if content == "list":
        torch.save([torch.zeros(1)], path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(WeightsError, match=match):
        create_model("svt_s", weights=path)


def test_timm_weights_offline_without_cache_is_an_error_not_a_hang(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(WeightsError, match="not in the Hugging Face cache.*--weights PATH"):
        create_model("svt_s", weights="timm")


def test_a_checkpoint_is_loaded_without_initialising_first(tmp_path, timm_svt_s, monkeypatch):
    """The strict load replaces every parameter, so the random initialisation is skipped (it was 78 s of the
    suite's CPU); the model holds the checkpoint exactly. Without weights the initialisation still runs."""
    import twins_trt.models.twins as twins

    calls = []
    real = twins._init_weights
    monkeypatch.setattr(twins, "_init_weights", lambda m: calls.append(m) or real(m))
    path = tmp_path / "ckpt.pth"
    torch.save(timm_svt_s.state_dict(), path)
    assert same_weights(create_model("svt_s", weights=path), timm_svt_s) and calls == []
    with pytest.warns(UserWarning, match="RANDOM"):
        random = create_model("svt_s", seed=0)
    assert calls and not same_weights(random, timm_svt_s)
    assert 0.015 < float(random.blocks[0][0].mlp.fc1.weight.std()) < 0.025  # timm's trunc_normal(std=0.02)
