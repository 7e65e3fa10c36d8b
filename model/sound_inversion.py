"""E_a, the sound inversion encoder (Sound-guided Semantic Video Generation, ECCV 2022, eq. 1).

A log-mel segment becomes a latent *offset* in StyleGAN's W+ space::

    ŵ_a = E_a(x_a) + w        # w: the current base latent (seed, prompt latent, previous step)

A ResNet trunk (shared design with F_a) pools the spectrogram to a feature vector; one small
MLP head per W+ layer group (coarse / mid / fine) writes that group's rows of ΔW+, so coarse
and fine layers can react to different things. The heads' last layers start near zero, so an
untrained E_a barely moves the picture.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from model.audio_encoder import ResNetTrunk, as_image, check_stage_channels
from model.formats import load_network, save_network
from model.latent_rnn import default_layer_groups, validate_layer_groups

log = logging.getLogger(__name__)


@dataclass
class SoundInversionConfig:
    """Hyperparameters of E_a; saved next to its weights."""

    n_mels: int = 128  # Mel bins of the input (must match the bundle's MelConfig).
    num_ws: int = 16  # W+ layers of the generator.
    w_dim: int = 512  # Width of each w.
    channels: tuple[int, ...] = (64, 128, 256, 512)  # Trunk channels per stage.
    blocks_per_stage: int = 2  # Basic blocks per stage.
    in_channels: int = 1  # Spectrogram channels.
    norm: str = "batch"  # "batch" or "group".
    head_hidden: int = 512  # Hidden width of each group head.
    groups: tuple[tuple[int, int], ...] = ()  # [start, stop) W+ ranges; () = default_layer_groups(num_ws).
    out_init_gain: float = 0.01  # Scale of the heads' last layer at init (≈0: untrained ΔW ≈ 0).

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        for name in ("n_mels", "num_ws", "w_dim", "in_channels", "head_hidden"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"SoundInversionConfig.{name} must be a positive int, got {v!r}")
        check_stage_channels(self.channels, self.blocks_per_stage, self.norm, "SoundInversionConfig")
        self.groups = default_layer_groups(self.num_ws) if not self.groups else validate_layer_groups(
            self.groups, self.num_ws
        )
        if not self.out_init_gain >= 0:
            raise ValueError(f"SoundInversionConfig.out_init_gain must be >= 0, got {self.out_init_gain!r}")


class GroupHead(nn.Module):
    """Feature ``[B, C]`` → one group's offsets ``[B, n_ws, w_dim]`` (2-layer MLP)."""

    def __init__(self, in_features: int, hidden: int, n_ws: int, w_dim: int, out_init_gain: float) -> None:
        super().__init__()
        self.n_ws, self.w_dim = n_ws, w_dim
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, n_ws * w_dim)
        with torch.no_grad():
            self.fc2.weight.mul_(out_init_gain)
            self.fc2.bias.zero_()

    def extra_repr(self) -> str:
        return f"n_ws={self.n_ws}, w_dim={self.w_dim}"

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.fc1(feat), 0.2)
        return self.fc2(h).view(feat.shape[0], self.n_ws, self.w_dim)


class SoundInversionEncoder(nn.Module):
    """E_a: mel ``[B, n_mels, T]`` (T >= 1) → ΔW+ ``[B, num_ws, w_dim]``."""

    def __init__(self, config: SoundInversionConfig) -> None:
        super().__init__()
        self.config = config
        self.trunk = ResNetTrunk(config.in_channels, config.channels, config.blocks_per_stage, config.norm)
        self.groups = config.groups
        self.heads = nn.ModuleList(
            GroupHead(self.trunk.out_channels, config.head_hidden, stop - start, config.w_dim, config.out_init_gain)
            for start, stop in self.groups
        )

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    @property
    def w_dim(self) -> int:
        return self.config.w_dim

    def extra_repr(self) -> str:
        c = self.config
        return f"n_mels={c.n_mels}, num_ws={c.num_ws}, w_dim={c.w_dim}, groups={self.groups}"

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = as_image(mel, self.config.n_mels, self.config.in_channels, "SoundInversionEncoder")
        feat = self.trunk(x)  # [B, C]
        return torch.cat([head(feat) for head in self.heads], dim=1)  # [B, num_ws, w_dim]

    def invert(self, mel: torch.Tensor, w: torch.Tensor, gain: float | torch.Tensor = 1.0) -> torch.Tensor:
        """ŵ_a = gain · E_a(mel) + w; ``w`` is ``[B, num_ws, w_dim]`` or ``[B, w_dim]`` (broadcast).

        ``gain`` (a float or a ``[B]`` tensor) scales the change, e.g. by loudness (Sound2Scene).
        """
        delta = self(mel)  # [B, num_ws, w_dim]
        if w.dim() == 2:
            w = w.unsqueeze(1)
        if w.dim() != 3 or w.shape[-1] != self.w_dim or w.shape[1] not in (1, self.num_ws):
            raise ValueError(
                f"SoundInversionEncoder.invert: w must be [B, {self.num_ws}, {self.w_dim}] or [B, {self.w_dim}], "
                f"got {tuple(w.shape)}"
            )
        if isinstance(gain, torch.Tensor) and gain.dim() == 1:
            gain = gain.view(-1, 1, 1)
        return w + gain * delta


KIND = "sound_inversion"


def save_sound_inversion(
    path: str | Path, model: SoundInversionEncoder, metadata: Mapping[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write E_a as PATH.safetensors + PATH.json (kind 'sound_inversion')."""
    return save_network(path, model, model.config, KIND, metadata)


def load_sound_inversion(path: str | Path, device: str | torch.device = "cpu") -> SoundInversionEncoder:
    """Load E_a (eval mode); raises CheckpointError on any problem."""
    model, _, _ = load_network(path, SoundInversionConfig, SoundInversionEncoder, KIND, device)
    return model
