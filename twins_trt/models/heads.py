"""Decode heads for Twins segmentors: mmseg's FPN neck + FPNHead, UPerHead, and a light all-MLP head.

The FPN and UPer modules are written anew after mmsegmentation 1.2.2 (``mmseg/models/necks/fpn.py``,
``decode_heads/fpn_head.py``, ``uper_head.py``, ``psp_head.py``; Apache-2.0) and keep its module
names (``lateral_convs.i.conv``, ``psp_modules.i.1.bn``, ``conv_seg``...), so an mmseg segmentor's
``neck.`` and ``decode_head.`` weights load as they are. Only the inference path is here: no loss,
no dropout (identity in eval), no training-time auxiliary head.

Export: every resize is bilinear (FPN neck: nearest) to a size read from a tensor, so one graph
serves every H x W; UPerNet's pyramid pooling is written with matmuls (``adaptive_avg_pool``) because
``adaptive_avg_pool2d`` has no ONNX form valid for sizes unknown at export.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def resize(x: torch.Tensor, size, mode: str = "bilinear") -> torch.Tensor:
    """mmseg's resize with align_corners=False, the setting of all its Twins configs."""
    return F.interpolate(x, size=size, mode=mode, align_corners=None if mode == "nearest" else False)


def _bin_weights(n, bins: int, like: torch.Tensor) -> torch.Tensor:
    """(bins, n) averaging weights of adaptive pooling along one axis: bin i covers
    [floor(i*n/bins), ceil((i+1)*n/bins)), each row sums to 1. n may be symbolic (dynamic export)."""
    idx = torch.arange(n, device=like.device)
    i = torch.arange(bins, device=like.device).unsqueeze(1)
    start = (i * n) // bins
    end = ((i + 1) * n + bins - 1) // bins
    w = ((idx >= start) & (idx < end)).to(like.dtype)
    return w / w.sum(dim=1, keepdim=True)


def adaptive_avg_pool(x: torch.Tensor, bins: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, bins)`` as ops valid for any H x W once exported.

    Bins of 1 are a ReduceMean. Otherwise the bin averages are two small matmuls, P_h @ x @ P_w^T,
    with P built from ``arange`` of the map's own size (Range/Div/Less in ONNX), so the bins follow
    the input at run time. A pooling kernel and stride fixed at export would be right only at
    the traced size; overlapping bins (H not a multiple of ``bins``) are covered exactly.
    """
    if bins == 1:
        return x.mean(dim=(2, 3), keepdim=True)
    H, W = x.shape[-2:]
    ph, pw = _bin_weights(H, bins, x), _bin_weights(W, bins, x)
    return ph @ (x @ pw.transpose(0, 1))


class ConvModule(nn.Module):
    """Conv -> optional BatchNorm -> optional ReLU, named as mmcv's ConvModule (conv, bn)."""

    def __init__(self, cin: int, cout: int, k: int, norm: bool = True, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=not norm)
        self.bn = nn.BatchNorm2d(cout) if norm else nn.Identity()
        self.act = nn.ReLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))

    def fold_batchnorm(self) -> None:
        """Fold an eval-mode BatchNorm into the conv (export); a no-op when folded or absent."""
        if isinstance(self.bn, nn.BatchNorm2d):
            self.conv = torch.nn.utils.fusion.fuse_conv_bn_eval(self.conv.eval(), self.bn.eval())
            self.bn = nn.Identity()


class FPNNeck(nn.Module):
    """mmseg FPN (no norm, no activation, nearest top-down), one output per input level."""

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256):
        super().__init__()
        self.lateral_convs = nn.ModuleList(ConvModule(c, out_channels, 1, norm=False, act=False) for c in in_channels)
        self.fpn_convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 3, norm=False, act=False) for _ in in_channels
        )

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:], mode="nearest")
        return [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)]


class _Up2(nn.Module):
    """mmseg's Upsample(scale_factor=2, bilinear): a resize to twice the size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize(x, (x.shape[2] * 2, x.shape[3] * 2))


class FPNHead(nn.Module):
    """mmseg FPNHead (Panoptic FPN's semantic branch): every level upsampled to stride 4 and summed."""

    def __init__(self, in_channels: Sequence[int], channels: int, num_classes: int,
                 strides: Sequence[int] = (4, 8, 16, 32)):
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for i, stride in enumerate(strides):
            layers: list[nn.Module] = []
            for k in range(max(1, (stride // strides[0]).bit_length() - 1)):
                layers.append(ConvModule(in_channels[i] if k == 0 else channels, channels, 3))
                if stride != strides[0]:
                    layers.append(_Up2())
            self.scale_heads.append(nn.Sequential(*layers))
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        out = self.scale_heads[0](feats[0])
        for i in range(1, len(self.scale_heads)):
            out = out + resize(self.scale_heads[i](feats[i]), out.shape[2:])
        return self.conv_seg(out)


class PPMBranch(nn.Sequential):
    """One pyramid-pooling branch, laid out as mmseg's (index 0 pools, index 1 is the ConvModule)."""

    def __init__(self, bins: int, cin: int, channels: int):
        super().__init__(nn.Identity(), ConvModule(cin, channels, 1))
        self.bins = bins

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self[1](adaptive_avg_pool(x, self.bins))


class UPerHead(nn.Module):
    """mmseg UPerHead: PPM on the last level, FPN top-down, all levels fused at stride 4."""

    def __init__(self, in_channels: Sequence[int], channels: int, num_classes: int,
                 pool_scales: Sequence[int] = (1, 2, 3, 6)):
        super().__init__()
        self.psp_modules = nn.ModuleList(PPMBranch(s, in_channels[-1], channels) for s in pool_scales)
        self.bottleneck = ConvModule(in_channels[-1] + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        top = feats[-1]
        psp = [top] + [resize(branch(top), top.shape[2:]) for branch in self.psp_modules]
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)] + [self.bottleneck(torch.cat(psp, 1))]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        size = outs[0].shape[2:]
        outs = [outs[0]] + [resize(o, size) for o in outs[1:]]
        return self.conv_seg(self.fpn_bottleneck(torch.cat(outs, 1)))


class MLPHead(nn.Module):
    """A light all-MLP head after the paper's HD-map segmenter ("linear-scale and concatenate"):
    each stage projected to one width by a 1x1 conv, resized to stride 4, concatenated, fused by a
    1x1 conv + BN + ReLU, classified. For users who train their own; mmseg has no weights for it."""

    def __init__(self, in_channels: Sequence[int], channels: int, num_classes: int):
        super().__init__()
        self.linear_c = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.fuse = ConvModule(len(in_channels) * channels, channels, 1)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[2:]
        outs = [proj(f) for proj, f in zip(self.linear_c, feats)]
        outs = [outs[0]] + [resize(o, size) for o in outs[1:]]
        return self.conv_seg(self.fuse(torch.cat(outs, 1)))
