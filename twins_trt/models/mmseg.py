"""mmsegmentation checkpoints: recognise them, split a segmentor, rename its backbone to timm's names.

mmseg (``mmseg/models/backbones/twins.py``) builds the same network with other module names; the
table below is what its modules are called against ours (mmseg's
``tools/model_converters/twins2mmseg.py`` states the intent). PCPVT's GSA uses
``nn.MultiheadAttention``, whose ``in_proj`` is our ``q`` and ``kv`` stacked in that order.

    ours (timm / official)        mmseg
    patch_embeds.i.proj           patch_embeds.i.projection
    blocks.i.j                    layers.i.j
    blocks.i.j.attn.q + .kv       layers.i.j.attn.attn.in_proj_weight / in_proj_bias  (GSA)
    blocks.i.j.attn.proj          layers.i.j.attn.attn.out_proj                       (GSA)
    blocks.i.j.mlp.fc1 / fc2      layers.i.j.ffn.layers.0.0 / ffn.layers.1
    pos_block.i.proj.0            position_encodings.i.proj
    norm_list.i                   norm_list.i  (SVT's norm after each stage; timm has none)

A segmentor's state dict carries ``backbone.``, ``neck.``, ``decode_head.`` and, for training
only, ``auxiliary_head.`` prefixes; ``split_segmentor`` separates them.
"""

from __future__ import annotations

import logging
import re

import torch

from twins_trt.errors import WeightsError

log = logging.getLogger(__name__)

SEGMENTOR_PARTS = ("backbone", "neck", "decode_head", "auxiliary_head")
_MMSEG_MARKERS = re.compile(r"^(layers\.\d|position_encodings\.\d|patch_embeds\.\d\.projection\.)")

# (mmseg pattern, our replacement), applied in order to each backbone key; GSA's in_proj is split apart.
_RENAMES = (
    (re.compile(r"^patch_embeds\.(\d)\.projection\."), r"patch_embeds.\1.proj."),
    (re.compile(r"^position_encodings\.(\d)\.proj\."), r"pos_block.\1.proj.0."),
    (re.compile(r"^layers\.(\d+)\.(\d+)\.attn\.attn\.out_proj\."), r"blocks.\1.\2.attn.proj."),
    (re.compile(r"^layers\.(\d+)\.(\d+)\.ffn\.layers\.0\.0\."), r"blocks.\1.\2.mlp.fc1."),
    (re.compile(r"^layers\.(\d+)\.(\d+)\.ffn\.layers\.1\."), r"blocks.\1.\2.mlp.fc2."),
    (re.compile(r"^layers\.(\d+)\.(\d+)\."), r"blocks.\1.\2."),
)
_IN_PROJ = re.compile(r"^layers\.(\d+)\.(\d+)\.attn\.attn\.in_proj_(weight|bias)$")


def is_segmentor(sd: dict[str, torch.Tensor]) -> bool:
    """A whole segmentor (backbone plus neck/heads), as mmseg's EncoderDecoder saves it."""
    return any(k.startswith("backbone.") for k in sd) and any(
        k.startswith(("decode_head.", "neck.")) for k in sd
    )


def split_segmentor(sd: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """{'backbone': ..., 'neck': ..., 'decode_head': ..., 'auxiliary_head': ...}, prefixes removed."""
    parts: dict[str, dict[str, torch.Tensor]] = {p: {} for p in SEGMENTOR_PARTS}
    stray = []
    for k, v in sd.items():
        part, _, rest = k.partition(".")
        if part in parts and rest:
            parts[part][rest] = v
        else:
            stray.append(k)
    if stray:
        raise WeightsError(
            f"segmentor checkpoint has {len(stray)} key(s) outside {', '.join(SEGMENTOR_PARTS)}: "
            f"{', '.join(stray[:6])}{' ...' if len(stray) > 6 else ''}"
        )
    return parts


def is_mmseg_backbone(sd: dict[str, torch.Tensor]) -> bool:
    return any(_MMSEG_MARKERS.match(k) for k in sd)


def mmseg_to_timm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An mmseg Twins backbone state dict under our (timm's) names; the input itself if not mmseg's."""
    if not is_mmseg_backbone(sd):
        return sd
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        m = _IN_PROJ.match(k)
        if m:
            i, j, kind = m.groups()
            dim = v.shape[0] // 3
            if v.shape[0] != 3 * dim:
                raise WeightsError(f"{k} has {v.shape[0]} rows; mmseg's in_proj stacks q, k, v (a multiple of 3)")
            out[f"blocks.{i}.{j}.attn.q.{kind}"] = v[:dim].clone()
            out[f"blocks.{i}.{j}.attn.kv.{kind}"] = v[dim:].clone()
            continue
        for pattern, repl in _RENAMES:
            new, n = pattern.subn(repl, k)
            if n:
                k = new
                break
        out[k] = v
    return out


def backbone_from_checkpoint(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    """(backbone state dict under our names, 'mmseg' or 'timm') from a segmentor or a backbone alone."""
    if is_segmentor(sd):
        parts = split_segmentor(sd)
        heads = [p for p in SEGMENTOR_PARTS[1:] if parts[p]]
        log.info("segmentor checkpoint: using its backbone (%s left to the segmentor)", ", ".join(heads))
        sd = parts["backbone"]
    if is_mmseg_backbone(sd):
        return mmseg_to_timm(sd), "mmseg"
    return sd, "timm"
