"""Which existing artifacts a run may reuse (pure manifest checks)."""

from __future__ import annotations

from twins_trt.bench.resolve import candidate_stems, engine_covers, manifest_mismatch, wanted_shape

MANIFEST = {"variant": "svt_s", "precision": "int8", "features": False, "img_size": [224, 224], "weights": None,
            "batch": {"min": 1, "opt": 8, "max": 64}, "calibration": {"source": "synthetic"}}


def check(manifest=MANIFEST, **kw):
    args = dict(variant="svt_s", precision="int8", img_size=(224, 224), batches=[1, 8], weights=None)
    args.update(kw)
    return manifest_mismatch(manifest, **args)


def test_matching_manifest_is_reused():
    assert check() is None
    assert check(manifest={**MANIFEST, "batch": {"static": 8}}, batches=[8]) is None


def test_mismatches_say_what_differs():
    assert "batch range 1..64" in check(batches=[1, 128])
    assert "precision" in check(precision="fp16")
    assert "img_size" in check(img_size=(256, 256))
    assert "weights" in check(weights="timm")
    assert "calibrated on 'synthetic'" in check(calib_dir="/data/imagenet")
    assert check({}) == "no manifest"


def test_shapes_and_stems():
    assert wanted_shape([8]) == {"batch": 8}
    assert wanted_shape([1, 8]) == {"dynamic_batch": (1, 8, 8)}
    assert candidate_stems("svt_s", (224, 224), [1]) == ["svt_s", "svt_s_bdyn"]
    assert candidate_stems("svt_s", (224, 224), [1, 8]) == ["svt_s_bdyn"]


def test_engine_profile_coverage():
    meta = {"profile": {"input": {"min": [1, 3, 224, 224], "opt": [64, 3, 224, 224], "max": [64, 3, 224, 224]}}}
    assert engine_covers(meta, [1, 8, 64])
    assert not engine_covers(meta, [128])
    assert not engine_covers({}, [1])
