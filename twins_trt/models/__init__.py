"""PyTorch Twins: six variants, weight-compatible with timm and the official release."""

from __future__ import annotations

import logging
import os
import warnings

import torch

from twins_trt.errors import WeightsError
from twins_trt.models.mmseg import backbone_from_checkpoint
from twins_trt.models.twins import (
    TIMM_FORWARD,
    VARIANTS,
    AttnImpl,
    ForwardOptions,
    Twins,
    TwinsConfig,
    check_input_size,
    list_variants,
    resolve_variant,
)
from twins_trt.models.weights import load_into, read_state_dict, timm_weights_path

__all__ = ["VARIANTS", "ForwardOptions", "Twins", "TwinsConfig", "check_input_size", "create_model", "list_variants",
           "resolve_variant", "RandomWeightsWarning"]

log = logging.getLogger(__name__)


class RandomWeightsWarning(UserWarning):
    """Shown when a model is built without weights: its outputs mean nothing for accuracy."""


def create_model(
    name: str,
    weights: str | os.PathLike | None = None,
    num_classes: int = 1000,
    features: bool = False,
    attn_impl: AttnImpl = "explicit",
    seed: int | None = None,
    flavor: str | None = None,
) -> Twins:
    """A Twins model in eval mode.

    weights: a .pth/.pt/.safetensors path, "timm" for timm's published ImageNet weights, or None
    for random initialisation (with a loud warning). features=True gives the four-stage backbone.
    An mmsegmentation checkpoint (a segmentor's, whose backbone is used, or a backbone's alone)
    is recognised by its names and needs features=True.
    seed makes a random initialisation reproducible without touching the caller's RNG.
    flavor: "timm" or "mmseg" forward (ForwardOptions); None takes it from the checkpoint (timm
    without one).
    """
    cfg = resolve_variant(name)
    if flavor not in (None, "timm", "mmseg"):
        raise ValueError(f"flavor must be 'timm', 'mmseg' or None (from the checkpoint), got {flavor!r}")
    sd, source = None, None
    if weights is not None:
        source = timm_weights_path(cfg) if str(weights) == "timm" else weights
        sd, found = backbone_from_checkpoint(read_state_dict(source))
        if found == "mmseg" and not features:
            raise WeightsError(
                f"{source} is an mmsegmentation backbone (no classifier head): load it with features=True "
                "(--features), or as a segmentor with create_segmentor / --task seg"
            )
        if flavor is None:
            flavor = found
        elif flavor != found:
            log.warning("%s looks like a %s checkpoint but the %s forward was asked for", source, found, flavor)
    options = TIMM_FORWARD
    if flavor == "mmseg":
        options = ForwardOptions.mmseg(cfg, None if sd is None else any(k.startswith("norm_list.") for k in sd))
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        # a checkpoint replaces every parameter (`load_into` is strict): no initialisation to overwrite
        model = Twins(cfg, num_classes=num_classes, features=features, options=options,
                      init=sd is None).set_attn_impl(attn_impl)
    if weights is None:
        warnings.warn(
            f"twins_trt: {cfg.name} has RANDOM weights; its outputs are meaningless for accuracy "
            "(pass weights=PATH or weights='timm' for real ones)",
            RandomWeightsWarning,
            stacklevel=2,
        )
    else:
        load_into(model, sd, source=str(source))
    return model.eval()
