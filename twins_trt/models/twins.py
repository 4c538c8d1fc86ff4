"""Twins-PCPVT and Twins-SVT with an export-ready forward.

Paper: "Twins: Revisiting the Design of Spatial Attention in Vision Transformers", Chu et al.,
NeurIPS 2021 (https://arxiv.org/abs/2104.13840). Architecture and parameter names follow the
official release (Meituan-AutoML/Twins, Apache-2.0) and timm's ``timm/models/twins.py``
(Apache-2.0), so both sets of published weights load unchanged. Written anew for deployment:

* attention is explicit ``MatMul -> Softmax -> MatMul`` unless ``attn_impl="sdpa"`` (eager only);
* q/k/v are separated with one ``Split`` instead of ``unbind`` (no Gather/Slice+Squeeze chains);
* the batch dimension is always written as ``-1`` in reshapes, so a dynamic-batch export keeps
  constant reshape shapes (no Shape -> Gather -> Concat chains);
* window padding is emitted only when a feature map does not divide by the window, with static
  amounts; under symbolic H/W (dynamic-shape export) it is always emitted, so a graph traced at 224
  still pads correctly at 256.

mmsegmentation trained its Twins with a slightly different forward (``ForwardOptions``): LSA masks
padded keys with -1000 instead of letting zero-padded tokens take part, the blocks' LayerNorm eps
is 1e-5, and SVT normalises each stage's output. ``TIMM_FORWARD`` is the default; loading an
mmseg checkpoint selects ``ForwardOptions.mmseg(cfg)``.

Reading order: blocks -> model -> variant table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from twins_trt.errors import InputSizeError, UnknownVariantError

AttnImpl = Literal["explicit", "sdpa"]
Size = tuple[int, int]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STRIDE = 32  # total downsampling; feature mode needs inputs that divide by it


def _is_static(*dims) -> bool:
    return all(isinstance(d, int) for d in dims)


@dataclass(frozen=True)
class ForwardOptions:
    """Where training codebases' forwards differ; weights only reproduce their numbers with their own.

    lsa_pad_mask: LSA adds -1000 to the scores of padded keys (mmseg). mmseg builds its mask with
        ``mask[:, -pad_b:, :]`` and ``mask[:, :, -pad_r:]``, which with a zero pad select the whole
        map and so cancel the mask; its mask therefore acts only when both H and W need padding.
        Reproduced as is, since that is the forward mmseg's checkpoints were trained with.
    block_norm_eps: the blocks' LayerNorm epsilon (timm 1e-6, mmseg 1e-5).
    norm_after_stage: a LayerNorm on each stage's output (``norm_list``; mmseg's SVT).
    """

    lsa_pad_mask: bool = False
    block_norm_eps: float = 1e-6
    norm_after_stage: bool = False

    @classmethod
    def mmseg(cls, cfg: TwinsConfig, norm_after_stage: bool | None = None) -> ForwardOptions:
        """mmseg's forward; norm_after_stage defaults to the variant's mmseg config."""
        nas = cfg.mmseg_norm_after_stage if norm_after_stage is None else norm_after_stage
        return cls(lsa_pad_mask=True, block_norm_eps=1e-5, norm_after_stage=nas)

    @property
    def flavor(self) -> str:
        return "timm" if self == TIMM_FORWARD else "mmseg"


TIMM_FORWARD = ForwardOptions()
PAD_MASK = -1000.0  # mmseg's additive score for padded keys


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, impl: AttnImpl,
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v over the last two dims, as plain matmuls unless SDPA is asked for.

    mask, if given, is added to the scores as it is: (B*G, 1, N, N) for q of shape (B*G, heads, N, d), one
    additive mask per window, so that the scores keep TensorRT's fused-MHA form (no Reshape before the Softmax).
    """
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    attn = (q * scale) @ k.transpose(-2, -1)
    if mask is not None:
        attn = attn + mask
    return attn.softmax(dim=-1) @ v


def _windows(n, ws: int):
    """ceil(n / ws) windows along a side of n tokens. Written as one floor division so that the padded size
    (windows * ws) is a multiple of ws by construction: under symbolic sizes torch.export need not prove it
    through nested Mods, which made a dynamic-H/W export several times slower."""
    return (n + ws - 1) // ws


def _static_pad_mask(H: int, W: int, ws: int, batch: int | None) -> torch.Tensor:
    """The mask of a static size, built in NumPy: a real tensor even while torch.export traces (never cache it
    across calls: one made during a trace would be a fake tensor)."""
    gh, gw = _windows(H, ws), _windows(W, ws)
    pad = ((np.arange(gh * ws) >= H)[:, None] | (np.arange(gw * ws) >= W)[None, :]).astype(np.float32)
    pad = pad.reshape(gh, ws, gw, ws).transpose(0, 2, 1, 3).reshape(gh * gw, ws * ws)
    mask = np.abs(pad[:, None, :] - pad[:, :, None]) * np.float32(PAD_MASK)
    if batch is not None:
        mask = np.tile(mask, (batch, 1, 1))[:, None]
    return torch.from_numpy(np.ascontiguousarray(mask))


def _window_pad_mask(H, W, ws: int, device: torch.device, batch=None) -> torch.Tensor | None:
    """mmseg's LSA mask, (gh*gw, ws*ws, ws*ws): PAD_MASK where exactly one of query and key is padding; with
    `batch`, tiled to the scores' (batch*gh*gw, 1, ws*ws, ws*ws).

    Static sizes give None when mmseg's mask would be void (see ForwardOptions.lsa_pad_mask), else a constant
    built outside the traced graph (with a static batch too, an export holds it as an initializer, and ModelOpt
    quantizes the attention MatMuls it is added to). Under symbolic sizes (dynamic-shape export) it is computed
    in the graph, so one graph serves every size.
    """
    gh, gw = _windows(H, ws), _windows(W, ws)
    Hp, Wp = gh * ws, gw * ws
    if _is_static(H, W):
        if not (Hp > H and Wp > W):
            return None
        if batch is None or isinstance(batch, int):
            return _static_pad_mask(H, W, ws, batch).to(device)
        mask = _static_pad_mask(H, W, ws, None).to(device)
    else:
        rows = torch.arange(Hp, device=device) >= H
        cols = torch.arange(Wp, device=device) >= W
        pad = rows.unsqueeze(1) | cols.unsqueeze(0)  # (Hp, Wp)
        pad = pad & (rows[-1] & cols[-1])  # the last row/column is padding exactly when that side pads at all
        pad = pad.view(gh, ws, gw, ws).transpose(1, 2).reshape(gh * gw, ws * ws)
        # |pad_q - pad_k| is 1 where exactly one is padding; on floats, as TensorRT's parser takes no BOOL Equal/Where
        pad = pad.to(torch.float32)
        mask = (pad.unsqueeze(1) - pad.unsqueeze(2)).abs() * PAD_MASK
    return mask if batch is None else mask.repeat(batch, 1, 1).unsqueeze(1)


class LocallyGroupedAttn(nn.Module):
    """LSA: self-attention inside non-overlapping ws x ws windows (no shift, ever)."""

    def __init__(self, dim: int, num_heads: int, ws: int, pad_mask: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must divide by num_heads {num_heads}")
        self.dim, self.num_heads, self.ws = dim, num_heads, ws
        self.pad_mask = pad_mask
        self.scale = (dim // num_heads) ** -0.5
        self.attn_impl: AttnImpl = "explicit"
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        _, N, C = x.shape
        H, W = size
        ws, nh = self.ws, self.num_heads
        gh, gw = _windows(H, ws), _windows(W, ws)
        pad_r, pad_b = gw * ws - W, gh * ws - H
        x = x.view(-1, H, W, C)
        padded = not _is_static(H, W) or pad_r > 0 or pad_b > 0
        if padded:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        # (B, gh, ws, gw, ws, C) -> one row per window: (B*gh*gw, ws*ws, C)
        x = x.view(-1, gh, ws, gw, ws, C).transpose(2, 3).reshape(-1, ws * ws, C)
        qkv = self.qkv(x).view(-1, ws * ws, 3 * nh, C // nh).transpose(1, 2)
        q, k, v = qkv.split(nh, dim=1)
        mask = _window_pad_mask(H, W, ws, x.device, batch=x.shape[0] // (gh * gw)) if self.pad_mask and padded else None
        x = _attention(q, k, v, self.scale, self.attn_impl, mask)  # (B*G, nh, ws*ws, hd)
        x = x.transpose(1, 2).reshape(-1, gh, gw, ws, ws, C).transpose(2, 3).reshape(-1, gh * ws, gw * ws, C)
        if padded:
            x = x[:, :H, :W, :]
        return self.proj(x.reshape(-1, N, C))


class GlobalSubSampleAttn(nn.Module):
    """GSA: every token attends to a strided-conv summary of the map (PCPVT's only attention)."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} must divide by num_heads {num_heads}")
        self.dim, self.num_heads, self.sr_ratio = dim, num_heads, sr_ratio
        self.scale = (dim // num_heads) ** -0.5
        self.attn_impl: AttnImpl = "explicit"
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)
        else:
            self.sr = None
            self.norm = None

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        _, N, C = x.shape
        H, W = size
        nh = self.num_heads
        q = self.q(x).view(-1, N, nh, C // nh).transpose(1, 2)
        if self.sr is not None:
            x = self.sr(x.transpose(1, 2).reshape(-1, C, H, W)).flatten(2).transpose(1, 2)
            x = self.norm(x)
            M = (H // self.sr_ratio) * (W // self.sr_ratio)
        else:
            M = N
        k, v = self.kv(x).view(-1, M, 2 * nh, C // nh).transpose(1, 2).split(nh, dim=1)
        x = _attention(q, k, v, self.scale, self.attn_impl)  # (B, nh, N, hd)
        return self.proj(x.transpose(1, 2).reshape(-1, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, sr_ratio: int, ws: int,
                 opts: ForwardOptions = TIMM_FORWARD):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=opts.block_norm_eps)
        if ws == 1:
            self.attn: nn.Module = GlobalSubSampleAttn(dim, num_heads, sr_ratio)
        else:
            self.attn = LocallyGroupedAttn(dim, num_heads, ws, pad_mask=opts.lsa_pad_mask)
        self.norm2 = nn.LayerNorm(dim, eps=opts.block_norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), size)
        return x + self.mlp(self.norm2(x))


class PosConv(nn.Module):
    """PEG (CPVT): depthwise 3x3 conv on the token map, added back. Gives position without a table."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim))

    def forward(self, x: torch.Tensor, size: Size) -> torch.Tensor:
        C = x.shape[2]
        feat = x.transpose(1, 2).reshape(-1, C, *size)
        return (self.proj(feat) + feat).flatten(2).transpose(1, 2)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Size]:
        H, W = x.shape[-2:]
        x = self.norm(self.proj(x).flatten(2).transpose(1, 2))
        return x, (H // self.patch_size, W // self.patch_size)


@dataclass(frozen=True)
class TwinsConfig:
    """One variant: architecture plus the preprocessing its published weights expect (timm `_cfg`)."""

    name: str
    timm_name: str
    official_name: str
    embed_dims: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    mlp_ratios: tuple[float, float, float, float]
    depths: tuple[int, int, int, int]
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    wss: tuple[int, int, int, int] | None = None  # None: PCPVT (GSA everywhere); else SVT's LSA window
    patch_size: int = 4
    input_size: tuple[int, int, int] = (3, 224, 224)
    interpolation: str = "bicubic"
    crop_pct: float = 0.9
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_classes: int = 1000
    mmseg_norm_after_stage: bool = False  # mmseg's configs: True for SVT, False for PCPVT

    @property
    def family(self) -> str:
        return "pcpvt" if self.wss is None else "svt"

    @property
    def num_attention_layers(self) -> int:
        return sum(self.depths)

    def window(self, stage: int, block: int) -> int:
        """1 means GSA; anything else is the LSA window. SVT alternates LSA, GSA, LSA, ..."""
        return 1 if self.wss is None or block % 2 == 1 else self.wss[stage]


_PCPVT = dict(embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4))
_SVT = dict(mlp_ratios=(4, 4, 4, 4), wss=(7, 7, 7, 7), mmseg_norm_after_stage=True)

VARIANTS: dict[str, TwinsConfig] = {
    c.name: c
    for c in (
        TwinsConfig("pcpvt_s", "twins_pcpvt_small", "pcpvt_small_v0", depths=(3, 4, 6, 3), **_PCPVT),
        TwinsConfig("pcpvt_b", "twins_pcpvt_base", "pcpvt_base_v0", depths=(3, 4, 18, 3), **_PCPVT),
        TwinsConfig("pcpvt_l", "twins_pcpvt_large", "pcpvt_large_v0", depths=(3, 8, 27, 3), **_PCPVT),
        TwinsConfig("svt_s", "twins_svt_small", "alt_gvt_small", embed_dims=(64, 128, 256, 512),
                    num_heads=(2, 4, 8, 16), depths=(2, 2, 10, 4), **_SVT),
        TwinsConfig("svt_b", "twins_svt_base", "alt_gvt_base", embed_dims=(96, 192, 384, 768),
                    num_heads=(3, 6, 12, 24), depths=(2, 2, 18, 2), **_SVT),
        TwinsConfig("svt_l", "twins_svt_large", "alt_gvt_large", embed_dims=(128, 256, 512, 1024),
                    num_heads=(4, 8, 16, 32), depths=(2, 2, 18, 2), **_SVT),
    )
}
_ALIASES = {alias: c.name for c in VARIANTS.values() for alias in (c.name, c.timm_name, c.official_name)}


def list_variants() -> list[str]:
    return list(VARIANTS)


def resolve_variant(name: str) -> TwinsConfig:
    """Our name, timm's (`twins_svt_small`) or the official one (`alt_gvt_small`)."""
    key = _ALIASES.get(name.strip().lower().removesuffix(".in1k"))
    if key is None:
        raise UnknownVariantError(
            f"unknown Twins variant {name!r}; expected one of {', '.join(VARIANTS)} "
            f"(timm and official names are accepted too: {', '.join(sorted(set(_ALIASES) - set(VARIANTS)))})"
        )
    return VARIANTS[key]


def check_input_size(height: int, width: int, what: str = "input") -> None:
    """Feature maps must come out whole at stride 32; name the nearest sizes that do."""
    bad = [d for d in (height, width) if d <= 0 or d % STRIDE]
    if bad:
        def near(d: int) -> str:
            lo = max(STRIDE, d // STRIDE * STRIDE)
            return str(lo) if lo == d + (STRIDE - d % STRIDE) else f"{lo} or {lo + STRIDE}"
        raise InputSizeError(
            f"{what} size {height}x{width} is not a multiple of {STRIDE}; "
            f"nearest valid: height {near(height) if height % STRIDE else height}, "
            f"width {near(width) if width % STRIDE else width}"
        )


class Twins(nn.Module):
    """Twins classifier, or with ``features=True`` a backbone returning four NCHW maps (strides 4..32)."""

    def __init__(self, cfg: TwinsConfig, num_classes: int = 1000, features: bool = False, in_chans: int = 3,
                 options: ForwardOptions = TIMM_FORWARD, init: bool = True):
        """`init`: timm's initialisation (truncated normal Linear weights, ...); False where a checkpoint replaces
        every parameter next, as `create_model` loads one strictly (trunc_normal_ was 78 s of the suite's CPU)."""
        super().__init__()
        self.cfg = cfg
        self.options = options
        self.features_only = features
        self.num_classes = 0 if features else num_classes
        self.embed_dims = cfg.embed_dims
        self.patch_embeds = nn.ModuleList()
        prev, patch = in_chans, cfg.patch_size
        for dim in cfg.embed_dims:
            self.patch_embeds.append(PatchEmbed(patch, prev, dim))
            prev, patch = dim, 2
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                Block(cfg.embed_dims[k], cfg.num_heads[k], cfg.mlp_ratios[k], cfg.sr_ratios[k], cfg.window(k, i), options)
                for i in range(cfg.depths[k])
            )
            for k in range(4)
        )
        self.pos_block = nn.ModuleList(PosConv(dim) for dim in cfg.embed_dims)
        if options.norm_after_stage:
            self.norm_list = nn.ModuleList(nn.LayerNorm(dim) for dim in cfg.embed_dims)
        self.norm = nn.LayerNorm(cfg.embed_dims[-1], eps=1e-6)
        self.head = nn.Linear(cfg.embed_dims[-1], num_classes) if self.num_classes > 0 else nn.Identity()
        if features:  # a backbone has neither; published classifier weights drop them by name
            del self.norm
            self.head = nn.Identity()
        if init:
            self.apply(_init_weights)

    def set_attn_impl(self, impl: AttnImpl) -> Twins:
        if impl not in ("explicit", "sdpa"):
            raise ValueError(f"attn_impl must be 'explicit' or 'sdpa', got {impl!r}")
        for m in self.modules():
            if isinstance(m, (LocallyGroupedAttn, GlobalSubSampleAttn)):
                m.attn_impl = impl
        return self

    @property
    def attn_impl(self) -> AttnImpl:
        return self.blocks[0][0].attn.attn_impl

    def _run(self, x: torch.Tensor, maps: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Four stages; returns the last stage's tokens and, if given a list, fills it with NCHW maps."""
        H, W = x.shape[-2:]
        if _is_static(H, W):
            check_input_size(H, W)
        last = len(self.blocks) - 1
        for i, (embed, blocks, peg) in enumerate(zip(self.patch_embeds, self.blocks, self.pos_block)):
            x, size = embed(x)
            for j, blk in enumerate(blocks):
                x = blk(x, size)
                if j == 0:
                    x = peg(x, size)  # PEG after the first block of every stage
            if self.options.norm_after_stage:
                x = self.norm_list[i](x)
            if i < last or maps is not None:
                fmap = x.transpose(1, 2).reshape(-1, x.shape[2], *size)
                if maps is not None:
                    maps.append(fmap)
                if i < last:
                    x = fmap
        return x

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stage maps, NCHW at strides 4, 8, 16, 32 (the last one before the final norm)."""
        maps: list[torch.Tensor] = []
        self._run(x, maps)
        return maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self._run(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor):
        if self.features_only:
            return tuple(self.forward_intermediates(x))
        return self.forward_head(self.forward_features(x))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
