"""Reading checkpoints safely and fitting them to a variant.

Nothing here executes a file's content: ``.pth``/``.pt`` load with ``weights_only=True`` and
``.safetensors`` with safetensors. timm's published weights come from the Hugging Face Hub cache.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
from pathlib import Path

import torch

from twins_trt.errors import WeightsError
from twins_trt.models.twins import VARIANTS, TwinsConfig

log = logging.getLogger(__name__)

WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
PREFIXES = ("module.", "backbone.", "model.")
# Keys the official release and PVT-derived training code are known to carry that no Twins uses:
# PVT's absolute position tables and cls token (deleted by CPVTV2 but present in early dumps) and
# DeiT's distillation head. Dropped one by one, by name, never in bulk.
KNOWN_EXTRA = re.compile(r"^(cls_token|pos_embeds\.\d+|head_dist\.(weight|bias))$")
# A backbone (features=True) has no final norm nor classifier; a classifier checkpoint's are dropped.
BACKBONE_EXTRA = re.compile(r"^(norm|head)\.(weight|bias)$")
HUB_HOST = ("huggingface.co", 443)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors from a .pth/.pt (weights_only) or .safetensors file, wrappers unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist (give a .pth, .pt or .safetensors file, or 'timm')")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        elif suffix in (".pth", ".pt", ".bin"):
            # DeiT-style training dumps carry their argparse.Namespace: plain data, allowed by name.
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
        else:
            raise WeightsError(f"weights file {path} has suffix {suffix!r}; expected .pth, .pt or .safetensors")
    except WeightsError:
        raise
    except Exception as e:  # pickle refusal, truncated file, not a zip...
        raise WeightsError(
            f"cannot read {path} as a {suffix} checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
            "only plain tensor checkpoints are loaded (torch.load weights_only=True) or .safetensors"
        ) from e
    return unwrap(obj, path)


def unwrap(obj, source: object = "checkpoint") -> dict[str, torch.Tensor]:
    """`{'model': sd}`, `{'state_dict': sd}`, `{'state_dict_ema': sd}` -> sd; prefixes stripped."""
    for key in WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            log.info("using %r from %s", key, source)
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(
            f"{source} holds no state dict: expected a mapping of names to tensors, "
            f"optionally under one of {', '.join(WRAPPER_KEYS)}"
        )
    for prefix in PREFIXES:
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def filter_checkpoint(sd: dict[str, torch.Tensor], features: bool = False) -> dict[str, torch.Tensor]:
    """Drop, by name, the keys known to be extra. Returns the input itself when nothing needs dropping."""
    drop = [k for k in sd if KNOWN_EXTRA.match(k) or (features and BACKBONE_EXTRA.match(k))]
    if not drop:
        return sd
    log.info("dropping %d known extra key(s): %s", len(drop), ", ".join(drop))
    return {k: v for k, v in sd.items() if k not in drop}


def guess_variant(sd: dict[str, torch.Tensor]) -> TwinsConfig | None:
    """The variant whose embedding widths, depths and attention kind match the checkpoint."""
    try:
        dims = tuple(int(sd[f"patch_embeds.{i}.proj.weight"].shape[0]) for i in range(4))
    except KeyError:
        return None
    depths = tuple(
        len({k.split(".")[2] for k in sd if k.startswith(f"blocks.{i}.")}) for i in range(4)
    )
    svt = any(".attn.qkv." in k for k in sd)
    for cfg in VARIANTS.values():
        if cfg.embed_dims == dims and cfg.depths == depths and (cfg.family == "svt") == svt:
            return cfg
    return None


def load_into(model: torch.nn.Module, sd: dict[str, torch.Tensor], source: object = "checkpoint") -> None:
    """Strict load with an error that lists what is missing, unexpected or of the wrong shape."""
    cfg: TwinsConfig = model.cfg
    sd = filter_checkpoint(sd, features=model.features_only)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    mismatched = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own if k in sd and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")

        parts = [f"{source} does not fit variant {cfg.name} ({cfg.timm_name})"]
        if missing:
            parts.append(f"missing {len(missing)} key(s): {show(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {show(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es): {show(mismatched)}")
        guess = guess_variant(sd)
        if guess is not None and guess.name != cfg.name:
            parts.append(f"the checkpoint looks like variant {guess.name!r} ({guess.timm_name}): use --variant {guess.name}")
        elif mismatched and any(k.startswith("head.") for k in sd) and "head.weight" in sd:
            parts.append(f"the checkpoint's head has {sd['head.weight'].shape[0]} classes: pass num_classes to match")
        raise WeightsError("; ".join(parts))
    model.load_state_dict(sd, strict=True)


def timm_weights_path(cfg: TwinsConfig, timeout: float = 3.0) -> Path:
    """timm's published weights for `cfg`, from the Hugging Face cache or downloaded when online."""
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError as e:  # pragma: no cover - huggingface_hub ships with timm and modelopt
        raise WeightsError("weights='timm' needs huggingface_hub: pip install huggingface_hub") from e
    repo, fname = f"timm/{cfg.timm_name}.in1k", "model.safetensors"
    cached = try_to_load_from_cache(repo, fname)
    if isinstance(cached, str):
        return Path(cached)
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    if not offline:
        try:
            socket.create_connection(HUB_HOST, timeout=timeout).close()
        except OSError:
            offline = True
    if offline:
        raise WeightsError(
            f"timm weights for {cfg.name} ({repo}/{fname}) are not in the Hugging Face cache and the hub "
            f"cannot be reached from here; download them on a machine online (huggingface-cli download {repo} "
            f"{fname}) and pass the file with --weights PATH"
        )
    log.info("downloading %s/%s", repo, fname)
    return Path(hf_hub_download(repo, fname))
