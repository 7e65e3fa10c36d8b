"""F_a, the CLIP-space audio encoder (Sound-guided Semantic Image Manipulation, CVPR 2022).

A ResNet-18-style CNN reads a log-mel spectrogram as a one-channel image and pools it to a
vector of CLIP's embedding width, L2-normalised, so that training can pull it towards the CLIP
image embedding of the matching video frames and the CLIP text embedding of its label
(symmetric InfoNCE; the losses live in ``training``). Global pooling makes it accept any
number of frames, so the live app can feed one short segment at a time.

Also here: the shared ResNet trunk (used by E_a too) and :func:`spec_augment`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from model.formats import load_network, save_network

log = logging.getLogger(__name__)

NORMS = ("batch", "group")


def check_stage_channels(channels: tuple[int, ...], blocks_per_stage: int, norm: str, owner: str) -> None:
    """Validate a ResNet trunk's stage channels, block count and norm kind (ValueError naming ``owner``)."""
    if not channels or any(isinstance(c, bool) or not isinstance(c, int) or c <= 0 for c in channels):
        raise ValueError(f"{owner}.channels must be a non-empty tuple of positive ints, got {channels!r}")
    if isinstance(blocks_per_stage, bool) or not isinstance(blocks_per_stage, int) or blocks_per_stage < 1:
        raise ValueError(f"{owner}.blocks_per_stage must be a positive int, got {blocks_per_stage!r}")
    if norm not in NORMS:
        raise ValueError(f"{owner}.norm must be one of {NORMS}, got {norm!r}")
    if norm == "group" and any(c % 8 for c in channels):
        raise ValueError(f"{owner}: norm='group' needs channels divisible by 8, got {channels}")


def make_norm(kind: str, channels: int) -> nn.Module:
    """BatchNorm (the papers' ResNet-18) or GroupNorm(8) (batch-size independent)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(8, channels)
    raise ValueError(f"unknown norm {kind!r}; expected one of {NORMS}")


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs + identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = make_norm(norm, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.norm2 = make_norm(norm, out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                make_norm(norm, out_channels),
            )
        self.stride = stride

    def extra_repr(self) -> str:
        return f"stride={self.stride}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, H, W]
        y = F.relu(self.norm1(self.conv1(x)), inplace=True)
        y = self.norm2(self.conv2(y))
        return F.relu(y + self.shortcut(x), inplace=True)


class ResNetTrunk(nn.Module):
    """Stem (7x7/2 conv + 3x3/2 max-pool) and stages of basic blocks, then global average pool.

    ``[B, in_channels, n_mels, T] → [B, channels[-1]]``. Strides 1, 2, 2, 2... per stage as in
    ResNet-18; every conv is padded, so any spectrogram of at least 1x1 passes through.
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...], blocks_per_stage: int, norm: str) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], 7, stride=2, padding=3, bias=False),
            make_norm(norm, channels[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages = []
        prev = channels[0]
        for i, ch in enumerate(channels):
            blocks = [BasicBlock(prev, ch, 1 if i == 0 else 2, norm)]
            blocks += [BasicBlock(ch, ch, 1, norm) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            prev = ch
        self.stages = nn.Sequential(*stages)
        self.out_channels = prev
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))  # [B, C, h, w]
        return x.mean(dim=(-2, -1))  # [B, C]


def as_image(mel: torch.Tensor, n_mels: int, in_channels: int, owner: str) -> torch.Tensor:
    """Check a spectrogram batch and shape it ``[B, in_channels, n_mels, T]``."""
    if not isinstance(mel, torch.Tensor):
        raise TypeError(f"{owner} expects a torch.Tensor, got {type(mel).__name__}")
    if mel.dim() == 3 and in_channels == 1:
        mel = mel.unsqueeze(1)
    if mel.dim() != 4 or mel.shape[1] != in_channels or mel.shape[2] != n_mels:
        want = "[B, n_mels, T]" if in_channels == 1 else f"[B, {in_channels}, n_mels, T]"
        raise ValueError(f"{owner} expects a mel spectrogram {want} with n_mels={n_mels}, got {tuple(mel.shape)}")
    if mel.shape[0] < 1 or mel.shape[-1] < 1:
        raise ValueError(f"{owner} got an empty spectrogram of shape {tuple(mel.shape)}")
    if not mel.is_floating_point():
        raise TypeError(f"{owner} expects a floating-point spectrogram, got {mel.dtype}")
    return mel


@dataclass
class AudioEncoderConfig:
    """Hyperparameters of F_a; saved next to its weights."""

    n_mels: int = 128  # Mel bins of the input (must match the bundle's MelConfig).
    embed_dim: int = 512  # Output width = CLIP's joint embedding width.
    channels: tuple[int, ...] = (64, 128, 256, 512)  # Channels per stage (ResNet-18).
    blocks_per_stage: int = 2  # Basic blocks per stage (ResNet-18: 2).
    in_channels: int = 1  # Spectrogram channels.
    norm: str = "batch"  # "batch" (papers) or "group".

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        for name in ("n_mels", "embed_dim", "in_channels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"AudioEncoderConfig.{name} must be a positive int, got {v!r}")
        check_stage_channels(self.channels, self.blocks_per_stage, self.norm, "AudioEncoderConfig")


class AudioEncoder(nn.Module):
    """F_a: mel ``[B, n_mels, T]`` (T >= 1) → unit-length embedding ``[B, embed_dim]``."""

    def __init__(self, config: AudioEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.trunk = ResNetTrunk(config.in_channels, config.channels, config.blocks_per_stage, config.norm)
        self.proj = nn.Linear(self.trunk.out_channels, config.embed_dim)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def extra_repr(self) -> str:
        return f"n_mels={self.config.n_mels}, embed_dim={self.config.embed_dim}"

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = as_image(mel, self.config.n_mels, self.config.in_channels, "AudioEncoder")
        feat = self.trunk(x)  # [B, C]
        return F.normalize(self.proj(feat), dim=-1)  # [B, embed_dim]


def _mask_along(
    mel: torch.Tensor, dim: int, count: int, max_width: int, value: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Zero out (set to ``value``) ``count`` random bands of width 0..max_width along ``dim``."""
    size = mel.shape[dim]
    width_cap = min(max_width, size)
    if count <= 0 or width_cap <= 0:
        return mel
    batch = mel.shape[0]
    dev = mel.device
    widths = torch.randint(0, width_cap + 1, (batch, count), generator=generator, device="cpu").to(dev)
    starts = (torch.rand((batch, count), generator=generator, device="cpu").to(dev) * (size - widths + 1)).floor()
    pos = torch.arange(size, device=dev).view(1, 1, size)  # [1, 1, size]
    hit = (pos >= starts.unsqueeze(-1)) & (pos < (starts + widths).unsqueeze(-1))  # [B, count, size]
    hit = hit.any(dim=1)  # [B, size]
    shape = [batch] + [1] * (mel.dim() - 1)
    shape[dim] = size
    return mel.masked_fill(hit.view(shape), value)


def spec_augment(
    mel: torch.Tensor,
    time_masks: int = 2,
    time_width: int = 20,
    freq_masks: int = 2,
    freq_width: int = 16,
    value: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SpecAugment masking (no time warp) for training: ``[B, n_mels, T] → [B, n_mels, T]``.

    Each item gets ``time_masks`` time bands of random width 0..``time_width`` frames and
    ``freq_masks`` mel bands of width 0..``freq_width`` bins set to ``value`` (0.0 = the floor of
    the normalised log-mel, i.e. silence). Returns a new tensor; the input is unchanged. Pass a
    ``generator`` (on the CPU) for reproducible masks.
    """
    if not isinstance(mel, torch.Tensor) or mel.dim() != 3:
        raise ValueError(f"spec_augment expects a tensor [B, n_mels, T], got {getattr(mel, 'shape', type(mel))}")
    for name, v in (("time_masks", time_masks), ("time_width", time_width),
                    ("freq_masks", freq_masks), ("freq_width", freq_width)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"spec_augment: {name} must be a non-negative int, got {v!r}")
    out = _mask_along(mel, 2, time_masks, time_width, value, generator)
    out = _mask_along(out, 1, freq_masks, freq_width, value, generator)
    return out if out is not mel else mel.clone()


KIND = "audio_encoder"


def save_audio_encoder(path: str | Path, model: AudioEncoder, metadata: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write F_a as PATH.safetensors + PATH.json (kind 'audio_encoder')."""
    return save_network(path, model, model.config, KIND, metadata)


def load_audio_encoder(path: str | Path, device: str | torch.device = "cpu") -> AudioEncoder:
    """Load F_a (eval mode); raises CheckpointError on any problem."""
    model, _, _ = load_network(path, AudioEncoderConfig, AudioEncoder, KIND, device)
    return model
