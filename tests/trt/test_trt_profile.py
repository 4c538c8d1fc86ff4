"""Optimization profiles from the ONNX: static, dynamic with metadata, CLI overrides, and the errors."""

from __future__ import annotations

import pytest
from onnx_tiny import make_onnx

from twins_trt.errors import ProfileError
from twins_trt.trt.profile import Profile, parse_range, profile_from_onnx

B = (3, 32, 32)


def test_static_onnx_gives_a_fixed_profile(static_onnx):
    assert profile_from_onnx(static_onnx) == {"input": Profile((4, *B), (4, *B), (4, *B))}
    assert profile_from_onnx(static_onnx, batch=4)["input"].is_static


def test_static_onnx_refuses_another_batch(static_onnx):
    with pytest.raises(ProfileError, match="static batch of 4"):
        profile_from_onnx(static_onnx, batch=8)


def test_dynamic_batch_from_metadata(dynamic_onnx):
    assert profile_from_onnx(dynamic_onnx) == {"input": Profile((1, *B), (8, *B), (64, *B))}


@pytest.mark.parametrize("kw, want", [({"batch": 16}, (16, 16, 16)), ({"profile": "2:4:32"}, (2, 4, 32)),
                                      ({"profile": "5"}, (5, 5, 5))])
def test_cli_overrides_the_metadata(dynamic_onnx, kw, want):
    p = profile_from_onnx(dynamic_onnx, **kw)["input"]
    assert (p.min[0], p.opt[0], p.max[0]) == want and p.min[1:] == B


@pytest.mark.parametrize("spec, match", [("8:1:64", "MIN <= OPT <= MAX"), ("1:64:8", "MIN <= OPT <= MAX"),
                                         ("0:1:2", ">= 1"), ("a:b:c", "integers"), ("1:2", "integers")])
def test_invalid_profiles(dynamic_onnx, spec, match):
    with pytest.raises(ProfileError, match=match):
        profile_from_onnx(dynamic_onnx, profile=spec)


def test_batch_and_profile_together_are_refused(dynamic_onnx):
    with pytest.raises(ProfileError, match="not both"):
        profile_from_onnx(dynamic_onnx, batch=2, profile="1:2:4")


def test_dynamic_batch_without_metadata_asks_for_a_flag(tmp_path):
    path = make_onnx(tmp_path / "m.onnx", meta={})
    with pytest.raises(ProfileError, match="--batch N or --profile"):
        profile_from_onnx(path)
    assert profile_from_onnx(path, batch=2)["input"].min == (2, *B)


def test_invalid_metadata_profile_names_the_file(tmp_path):
    path = make_onnx(tmp_path / "m.onnx", meta={"twins_trt.batch_profile": "64:8:1"})
    with pytest.raises(ProfileError, match="batch_profile in .*m.onnx"):
        profile_from_onnx(path)


def test_dynamic_height_width_from_metadata(tmp_path):
    meta = {"twins_trt.batch_profile": "1:2:4", "twins_trt.hw_profile": "224x224:256x320:384x384"}
    path = make_onnx(tmp_path / "m.onnx", hw=("height", "width"), meta=meta)
    assert profile_from_onnx(path)["input"] == Profile((1, 3, 224, 224), (2, 3, 256, 320), (4, 3, 384, 384))
    bad = make_onnx(tmp_path / "n.onnx", hw=("height", "width"), meta={"twins_trt.batch_profile": "1:2:4"})
    with pytest.raises(ProfileError, match="hw_profile"):
        profile_from_onnx(bad)


def test_other_dynamic_axes_are_refused(tmp_path):
    path = make_onnx(tmp_path / "m.onnx", hw=("h", 32), meta={"twins_trt.batch_profile": "1:2:4"})
    with pytest.raises(ProfileError, match="axis 2 is dynamic"):
        profile_from_onnx(path)


def test_parse_range():
    assert parse_range("1:8:64") == (1, 8, 64)
