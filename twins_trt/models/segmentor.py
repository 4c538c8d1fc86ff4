"""Twins segmentors: backbone + (neck) + decode head, mmseg-compatible weights, export-ready forward."""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from twins_trt.errors import WeightsError
from twins_trt.models import RandomWeightsWarning, create_model, resolve_variant
from twins_trt.models.heads import ConvModule, FPNHead, FPNNeck, MLPHead, UPerHead, resize
from twins_trt.models.mmseg import is_segmentor, split_segmentor
from twins_trt.models.weights import read_state_dict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadConfig:
    """One head as mmseg's Twins ADE20K configs (and our MLP head) build it."""

    name: str
    channels: int  # the head's working width
    neck_channels: int | None = None  # FPN neck output width; None: no neck
    pool_scales: tuple[int, ...] = ()
    marker: str = ""  # a key only this head's state dict has


HEADS: dict[str, HeadConfig] = {
    h.name: h
    for h in (
        HeadConfig("fpn", channels=128, neck_channels=256, marker="scale_heads."),
        HeadConfig("uper", channels=512, pool_scales=(1, 2, 3, 6), marker="psp_modules."),
        HeadConfig("mlp", channels=256, marker="linear_c."),
    )
}
OUTPUTS = ("input", "stride4")
DEFAULT_NUM_CLASSES = 150  # ADE20K, the dataset of mmseg's Twins configs


class TwinsSegmentor(nn.Module):
    """Image (B, 3, H, W) -> class logits (B, K, H, W), or (B, K, H/4, W/4) with output='stride4'.

    output='input' resizes bilinearly to the input as mmseg's 'whole' test mode does. channels and
    neck_channels override the head's widths in HEADS (a checkpoint trained at another width).
    """

    def __init__(self, backbone: nn.Module, head: str, num_classes: int, output: str = "input",
                 channels: int | None = None, neck_channels: int | None = None):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"unknown segmentation head {head!r}; expected one of {', '.join(HEADS)}")
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        self.cfg = backbone.cfg
        hc = HEADS[head]
        if neck_channels is not None and not hc.neck_channels:
            raise ValueError(f"the {head} head has no neck; neck_channels must be None, got {neck_channels}")
        self.head_cfg = hc = replace(hc, channels=channels or hc.channels, neck_channels=neck_channels or hc.neck_channels)
        self.num_classes, self.output = num_classes, output
        self.backbone = backbone
        dims = list(backbone.cfg.embed_dims)
        self.neck = FPNNeck(dims, hc.neck_channels) if hc.neck_channels else None
        if head == "fpn":
            self.decode_head: nn.Module = FPNHead([hc.neck_channels] * 4, hc.channels, num_classes)
        elif head == "uper":
            self.decode_head = UPerHead(dims, hc.channels, num_classes, hc.pool_scales)
        else:
            self.decode_head = MLPHead(dims, hc.channels, num_classes)

    def set_attn_impl(self, impl) -> TwinsSegmentor:
        self.backbone.set_attn_impl(impl)
        return self

    @property
    def features_only(self) -> bool:  # read by code that handles backbones and segmentors alike
        return False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        if self.neck is not None:
            feats = self.neck(feats)
        logits = self.decode_head(feats)
        return resize(logits, x.shape[2:]) if self.output == "input" else logits

    def fold_batchnorm(self) -> TwinsSegmentor:
        """BatchNorm folded into the preceding convs (for export); outputs unchanged in eval mode."""
        for m in self.modules():
            if isinstance(m, ConvModule):
                m.fold_batchnorm()
        return self


def _head_of(sd: dict[str, torch.Tensor]) -> str | None:
    return next((h.name for h in HEADS.values() if any(k.startswith(h.marker) for k in sd)), None)


def _widths_of(head: str, parts: dict[str, dict[str, torch.Tensor]]) -> dict[str, int]:
    """The head's widths as the checkpoint was trained (mmseg's configs allow any), the way num_classes is
    read: the classifier's input is the head's `channels`, the FPN neck's lateral outputs its `out_channels`.
    A width the checkpoint lacks keeps HEADS' default (a strict load then names the missing keys)."""
    widths = {}
    seg = parts["decode_head"].get("conv_seg.weight")
    if seg is not None and seg.ndim == 4:
        widths["channels"] = int(seg.shape[1])
    lateral = parts["neck"].get("lateral_convs.0.conv.weight")
    if HEADS[head].neck_channels and lateral is not None and lateral.ndim == 4:
        widths["neck_channels"] = int(lateral.shape[0])
    return widths


def _load_strict(module: nn.Module, sd: dict[str, torch.Tensor], what: str, source: object) -> None:
    own = module.state_dict()
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    bad = [f"{k}: {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or bad:
        parts = [f"{source}: the {what} does not fit"]
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", bad)):
            if keys:
                parts.append(f"{label} {len(keys)}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}")
        raise WeightsError("; ".join(parts))
    module.load_state_dict(sd, strict=True)


def create_segmentor(
    variant: str,
    head: str = "fpn",
    num_classes: int | None = None,
    weights: str | os.PathLike | None = None,
    output: str = "input",
    seed: int | None = None,
    flavor: str | None = None,
) -> TwinsSegmentor:
    """A Twins segmentor in eval mode.

    weights: an mmseg segmentor checkpoint (``backbone.``/``neck.``/``decode_head.``; its training-only
    ``auxiliary_head.`` is dropped), or a backbone alone (mmseg's or timm's names; the head is then
    random), or None (all random, with a warning). num_classes: None takes it from the checkpoint's
    head, else 150 (ADE20K); the head's widths (its channels, the FPN neck's out_channels) are the
    checkpoint's too, else those of HEADS. flavor: the backbone's forward ('timm'/'mmseg'); None follows the
    checkpoint, and 'mmseg' without one (the heads are mmseg's).
    """
    cfg = resolve_variant(variant)
    if head not in HEADS:
        raise ValueError(f"unknown segmentation head {head!r}; expected one of {', '.join(HEADS)}")
    parts, widths = None, {}
    if weights is not None:
        sd = read_state_dict(weights)
        if is_segmentor(sd):
            parts = split_segmentor(sd)
            found = _head_of(parts["decode_head"])
            if found and found != head:
                raise WeightsError(
                    f"{weights} holds a {found!r} decode head, not {head!r}: use head={found!r} (--seg-head {found})"
                )
            seg = parts["decode_head"].get("conv_seg.weight")
            if seg is not None:
                if num_classes is not None and num_classes != seg.shape[0]:
                    raise WeightsError(
                        f"{weights} classifies {seg.shape[0]} classes, not {num_classes}: "
                        f"pass num_classes={seg.shape[0]} (--num-classes {seg.shape[0]}) or leave it out"
                    )
                num_classes = int(seg.shape[0])
            widths = _widths_of(head, parts)
            defaults = {k: getattr(HEADS[head], k) for k in widths}
            if widths != defaults:
                log.info("%s head widths from the checkpoint: %s (defaults %s)", head, widths, defaults)
            if parts["auxiliary_head"]:
                log.info("dropping the training-only auxiliary_head (%d keys)", len(parts["auxiliary_head"]))
    num_classes = DEFAULT_NUM_CLASSES if num_classes is None else num_classes
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RandomWeightsWarning)
        backbone = create_model(cfg.name, weights=weights, features=True, seed=seed,
                                flavor=flavor if (flavor or weights is not None) else "mmseg")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = TwinsSegmentor(backbone, head, num_classes, output, **widths)
    if parts is not None:
        if model.neck is not None:
            _load_strict(model.neck, parts["neck"], "neck", weights)
        _load_strict(model.decode_head, parts["decode_head"], f"{head} decode head", weights)
    else:
        warnings.warn(
            f"twins_trt: the {head} head of {cfg.name} has RANDOM weights"
            + ("" if weights is not None else " and so has its backbone")
            + "; its outputs are meaningless for accuracy (pass an mmseg segmentor checkpoint)",
            RandomWeightsWarning,
            stacklevel=2,
        )
    return model.eval()
