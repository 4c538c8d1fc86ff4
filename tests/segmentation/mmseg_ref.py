"""mmsegmentation's own Twins backbone, FPN neck and FPN/UPer heads, imported without its package.

mmseg's package ``__init__`` files import every model, and some of those need mmcv's compiled ops
(absent from mmcv-lite) or extra packages (ftfy for its CLIP tokenizer). The files we compare
against import only ``mmcv.cnn``, ``mmengine`` and a few mmseg siblings, so each is executed on its
own from the installed mmseg, with its parent packages replaced by empty modules and the handful
of mmseg names it imports (registry, loss builder, pixel sampler, type aliases) given by stubs
that refuse to be used for anything but building the modules. Nothing of mmseg is copied here.

The stubs live in ``sys.modules`` only while the files execute; the loaded classes keep their own
references, so the rest of the test session never sees a fake ``mmseg``.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
import types
from pathlib import Path

import pytest


class _Registry:
    """Stands in for mmseg's MODELS: registration is a no-op, building is refused."""

    def register_module(self, *args, **kwargs):
        if args and isinstance(args[0], type):  # used as a bare decorator
            return args[0]
        return lambda cls: cls

    def build(self, cfg):
        raise RuntimeError(f"the mmseg reference loader builds classes directly; MODELS.build({cfg!r}) is not supported")


class _NoLoss:
    """What the stubbed build_loss returns: the reference is for inference, never for a loss."""

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"loss {self.cfg!r} is not available in the mmseg reference loader (inference only)")


def _build_loss(cfg):
    if not isinstance(cfg, dict) or "type" not in cfg:
        raise TypeError(f"build_loss expects a config dict with a 'type', got {cfg!r}")
    return _NoLoss(cfg)


def _build_pixel_sampler(cfg, **kwargs):
    raise RuntimeError("pixel samplers are training-only; pass sampler=None to the reference heads")


def _accuracy(*args, **kwargs):
    raise RuntimeError("accuracy() is training-only; not available in the mmseg reference loader")


def _package(name: str, path: Path | None = None) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__path__ = [str(path)] if path else []  # a package, so relative imports resolve
    return mod


def _exec_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@functools.lru_cache(maxsize=1)
def load() -> types.SimpleNamespace:
    """PCPVT, SVT, FPN, FPNHead and UPerHead from the installed mmsegmentation (skips if absent)."""
    spec = importlib.util.find_spec("mmseg")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("mmsegmentation is not installed (pip install -e .[test])")
    pytest.importorskip("mmengine")
    pytest.importorskip("mmcv.cnn", reason="mmcv-lite provides mmcv.cnn")
    root = Path(spec.submodule_search_locations[0])
    models = root / "models"

    saved = {k: v for k, v in sys.modules.items() if k == "mmseg" or k.startswith("mmseg.")}
    for k in saved:
        del sys.modules[k]
    added: list[str] = []

    def put(name: str, mod: types.ModuleType) -> types.ModuleType:
        sys.modules[name] = mod
        added.append(name)
        return mod

    try:
        import mmcv.cnn  # noqa: F401  (real; mmcv-lite has it)

        put("mmseg", _package("mmseg", root))
        put("mmseg.registry", types.ModuleType("mmseg.registry")).MODELS = _Registry()
        put("mmseg.structures", types.ModuleType("mmseg.structures")).build_pixel_sampler = _build_pixel_sampler
        utils_top = put("mmseg.utils", types.ModuleType("mmseg.utils"))
        for alias in ("ConfigType", "OptConfigType", "MultiConfig", "OptMultiConfig", "SampleList", "OptSampleList"):
            setattr(utils_top, alias, object)
        put("mmseg.models", _package("mmseg.models", models))
        put("mmseg.models.builder", types.ModuleType("mmseg.models.builder")).build_loss = _build_loss
        put("mmseg.models.losses", types.ModuleType("mmseg.models.losses")).accuracy = _accuracy
        mutils = put("mmseg.models.utils", _package("mmseg.models.utils", models / "utils"))
        for sub in ("embed", "shape_convert", "wrappers"):
            m = _exec_file(f"mmseg.models.utils.{sub}", models / "utils" / f"{sub}.py")
            added.append(m.__name__)
            for k, v in vars(m).items():
                if not k.startswith("_"):
                    setattr(mutils, k, v)
        put("mmseg.models.backbones", _package("mmseg.models.backbones", models / "backbones"))
        put("mmseg.models.necks", _package("mmseg.models.necks", models / "necks"))
        put("mmseg.models.decode_heads", _package("mmseg.models.decode_heads", models / "decode_heads"))
        loaded = {}
        for name in ("backbones.mit", "backbones.twins", "necks.fpn", "decode_heads.decode_head",
                     "decode_heads.psp_head", "decode_heads.fpn_head", "decode_heads.uper_head"):
            loaded[name] = _exec_file(f"mmseg.models.{name}", models / (name.replace(".", "/") + ".py"))
            added.append(f"mmseg.models.{name}")
    finally:
        for k in added:
            sys.modules.pop(k, None)
        sys.modules.update(saved)

    return types.SimpleNamespace(
        PCPVT=loaded["backbones.twins"].PCPVT,
        SVT=loaded["backbones.twins"].SVT,
        FPN=loaded["necks.fpn"].FPN,
        FPNHead=loaded["decode_heads.fpn_head"].FPNHead,
        UPerHead=loaded["decode_heads.uper_head"].UPerHead,
        resize=loaded["decode_heads.fpn_head"].resize,
    )


# The backbone arguments of mmseg's configs/_base_/models/twins_pcpvt-s_*.py and configs/twins/twins_svt-s_*.py
BACKBONE_ARGS = {
    "pcpvt_s": dict(embed_dims=[64, 128, 320, 512], num_heads=[1, 2, 5, 8], mlp_ratios=[8, 8, 4, 4],
                    depths=[3, 4, 6, 3], sr_ratios=[8, 4, 2, 1], norm_after_stage=False),
    "svt_s": dict(embed_dims=[64, 128, 256, 512], num_heads=[2, 4, 8, 16], mlp_ratios=[4, 4, 4, 4],
                  depths=[2, 2, 10, 4], sr_ratios=[8, 4, 2, 1], windiow_sizes=[7, 7, 7, 7], norm_after_stage=True),
}


def backbone(variant: str, seed: int = 0):
    """mmseg's backbone for `variant` as its ADE20K configs build it, randomly initialised, in eval mode."""
    import torch

    ref = load()
    cls = ref.SVT if variant.startswith("svt") else ref.PCPVT
    torch.manual_seed(seed)
    model = cls(in_channels=3, patch_sizes=[4, 2, 2, 2], strides=[4, 2, 2, 2], qkv_bias=True,
                drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0, **BACKBONE_ARGS[variant])
    model.init_weights()
    _randomize_norms(model)
    return model.eval()


def _randomize_norms(model) -> None:
    """Init leaves LayerNorm/BatchNorm at identity and zero biases; random values make parity meaningful."""
    import torch

    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, (torch.nn.LayerNorm, torch.nn.BatchNorm2d)):
            with torch.no_grad():
                m.weight.copy_(1 + 0.1 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(1 + 0.2 * torch.rand(m.running_var.shape, generator=g))
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and m.bias is not None:
            with torch.no_grad():
                m.bias.copy_(0.02 * torch.randn(m.bias.shape, generator=g))


def heads(variant: str, head: str, num_classes: int = 19, seed: int = 0, channels: int | None = None,
          neck_channels: int | None = None):
    """(neck or None, decode head) as mmseg's Twins ADE20K configs build them, BN instead of SyncBN;
    channels / neck_channels (FPN's out_channels) replace the configs' widths when given."""
    import torch

    ref = load()
    dims = BACKBONE_ARGS[variant]["embed_dims"]
    bn = dict(type="BN", requires_grad=True)
    common = dict(in_index=[0, 1, 2, 3], dropout_ratio=0.1, num_classes=num_classes, norm_cfg=bn,
                  align_corners=False, loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))
    torch.manual_seed(seed)
    if head == "fpn":
        width = neck_channels or 256
        neck = ref.FPN(in_channels=list(dims), out_channels=width, num_outs=4)
        dec = ref.FPNHead(in_channels=[width] * 4, feature_strides=[4, 8, 16, 32], channels=channels or 128, **common)
    elif head == "uper":
        neck = None
        dec = ref.UPerHead(in_channels=list(dims), pool_scales=(1, 2, 3, 6), channels=channels or 512, **common)
    else:
        raise ValueError(f"mmseg has no {head!r} head to compare with; expected 'fpn' or 'uper'")
    for m in (neck, dec):
        if m is not None:
            _randomize_norms(m)
            m.eval()
    return neck, dec


def segment(backbone_model, neck, dec, x):
    """mmseg's EncoderDecoder in 'whole' test mode: logits resized (bilinear) to the input size."""
    feats = backbone_model(x)
    if neck is not None:
        feats = neck(feats)
    logits = dec(feats)
    return load().resize(logits, size=x.shape[2:], mode="bilinear", align_corners=False)
