"""PyTorch Twins: six variants, weight-compatible with timm and the official release."""

from __future__ import annotations

import logging
import os
import warnings

import torch

from twins_trt.models.twins import (
    VARIANTS,
    AttnImpl,
    Twins,
    TwinsConfig,
    check_input_size,
    list_variants,
    resolve_variant,
)
from twins_trt.models.weights import load_into, read_state_dict, timm_weights_path

__all__ = ["VARIANTS", "Twins", "TwinsConfig", "check_input_size", "create_model", "list_variants",
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
) -> Twins:
    """A Twins model in eval mode.

    weights: a .pth/.pt/.safetensors path, "timm" for timm's published ImageNet weights, or None
    for random initialisation (with a loud warning). features=True gives the four-stage backbone.
    seed makes a random initialisation reproducible without touching the caller's RNG.
    """
    cfg = resolve_variant(name)
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        model = Twins(cfg, num_classes=num_classes, features=features).set_attn_impl(attn_impl)
    if weights is None:
        warnings.warn(
            f"twins_trt: {cfg.name} has RANDOM weights; its outputs are meaningless for accuracy "
            "(pass weights=PATH or weights='timm' for real ones)",
            RandomWeightsWarning,
            stacklevel=2,
        )
    else:
        path = timm_weights_path(cfg) if str(weights) == "timm" else weights
        load_into(model, read_state_dict(path), source=str(path))
    return model.eval()
