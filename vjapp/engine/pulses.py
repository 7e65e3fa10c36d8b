"""The rhythm layer's hands: band onsets push W+ layer groups along the generator's own directions.

**Directions** (after GANSpace, Härkönen et al. 2020): the principal directions of ``w`` sampled
from the generator's mapping network. Along them the generator changes in ways it learned (layout,
zoom, lighting, texture), so a pulse reads as the scene breathing, not as noise. They are computed
once per generator (a fixed seed: deterministic), cached beside the bundle in
``cache/directions-<hash>.safetensors`` (else in the user's cache folder), keyed by a hash of the
mapping network's weights, and recomputed when the generator changes.

**Pulses**: each band (low, mid, high) has an envelope with attack and release driven by its
onset strength times the fast loudness (so quiet sound pulses less), a gain, and a target layer
group (defaults low -> coarse, mid -> mid, high -> fine; remappable). At frame time the offset

    Δw[group(b)] += env_b · gain_b · amount · σ_b · d_b

is added to the interpolated W+ (``d_b`` the band's principal direction, ``σ_b`` the spread of
sampled ``w`` along it), from the newest audio, not behind the model's interpolation delay.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from model.latent_cache import module_hash, read_cache, write_cache

log = logging.getLogger(__name__)

__all__ = ["LatentDirections", "principal_directions", "mapping_hash", "directions_for", "PulseEnvelopes",
           "pulse_offset", "BAND_DIRECTION"]

DIRECTION_SAMPLES = 4096
DIRECTION_COUNT = 8
DIRECTION_SEED = 20_221_023
BAND_DIRECTION = (0, 1, 2)  # which principal direction each band pushes along (low, mid, high)


@dataclass
class LatentDirections:
    """Unit principal directions ``[K, w_dim]`` of sampled w and the spread ``[K]`` along each."""

    directions: torch.Tensor
    std: torch.Tensor
    key: str

    def to(self, device: torch.device | str) -> "LatentDirections":
        return LatentDirections(self.directions.to(device), self.std.to(device), self.key)


def mapping_hash(mapping: torch.nn.Module) -> str:
    """A stable hash of the mapping network's weights (and w_avg): the cache key of its directions."""
    return module_hash([mapping])


@torch.no_grad()
def principal_directions(
    mapping: Callable[[torch.Tensor], torch.Tensor],
    z_dim: int,
    samples: int = DIRECTION_SAMPLES,
    count: int = DIRECTION_COUNT,
    seed: int = DIRECTION_SEED,
    batch: int = 512,
    key: str = "",
) -> LatentDirections:
    """PCA of ``samples`` mapped latents (z from a fixed seed): the top ``count`` directions.

    ``mapping(z)`` returns w as ``[N, w_dim]`` or W+ ``[N, num_ws, w_dim]`` (its first layer is used).
    Each direction's sign is fixed (largest component positive), so the result is deterministic.
    """
    gen = torch.Generator().manual_seed(seed)
    ws = []
    for start in range(0, samples, batch):
        z = torch.randn(min(batch, samples - start), z_dim, generator=gen)
        w = mapping(z)
        ws.append((w[:, 0] if w.ndim == 3 else w).float().cpu())
    w = torch.cat(ws).double()
    centred = w - w.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    count = min(count, vh.shape[0])
    dirs = vh[:count]
    signs = torch.sign(dirs.gather(1, dirs.abs().argmax(1, keepdim=True)))
    dirs = dirs * signs
    std = s[:count] / math.sqrt(max(1, w.shape[0] - 1))
    return LatentDirections(dirs.float(), std.float(), key)


def directions_for(generator: torch.nn.Module, bundle_root: Path | None = None) -> LatentDirections:
    """The generator's principal directions: from the cache when its hash matches, else computed
    (about a second) and cached beside the bundle (or in the user cache when that is read-only)."""
    mapping = generator.mapping  # type: ignore[attr-defined]
    key = mapping_hash(mapping)
    name = f"directions-{key}.safetensors"
    hit = read_cache(name, bundle_root)
    if hit is not None and {"directions", "std"} <= set(hit[0]):
        return LatentDirections(hit[0]["directions"], hit[0]["std"], key)
    was_training = mapping.training
    mapping.eval()
    device = next(mapping.parameters()).device
    try:
        dirs = principal_directions(lambda z: mapping(z.to(device), truncation_psi=1.0),
                                    int(generator.z_dim), key=key)  # type: ignore[attr-defined]
    finally:
        mapping.train(was_training)
    path = write_cache(name, bundle_root, {"directions": dirs.directions, "std": dirs.std})
    if path is not None:
        log.info("cached the generator's principal directions in %s", path)
    return dirs


class PulseEnvelopes:
    """Attack/release envelopes of the three bands, stepped per analysis hop."""

    def __init__(self) -> None:
        self.value = np.zeros(3)

    def step(self, target: Sequence[float], dt: float, attack_s: float, release_s: float) -> None:
        tgt = np.asarray(target, dtype=np.float64)
        a_att = math.exp(-dt / attack_s) if attack_s > 0 else 0.0
        a_rel = math.exp(-dt / release_s) if release_s > 0 else 0.0
        a = np.where(tgt > self.value, a_att, a_rel)
        self.value = a * self.value + (1.0 - a) * tgt

    def decay(self, dt: float, release_s: float) -> None:
        """No new audio for ``dt``: let the envelopes fall."""
        if release_s > 0:
            self.value *= math.exp(-dt / release_s)
        else:
            self.value[:] = 0.0

    def reset(self) -> None:
        self.value[:] = 0.0


def pulse_offset(
    envelopes: Sequence[float],
    gains: Sequence[float],
    groups: Sequence[int],
    amount: float,
    directions: LatentDirections,
    masks: torch.Tensor,
    band_direction: Sequence[int] = BAND_DIRECTION,
) -> torch.Tensor:
    """The W+ offset ``[num_ws, w_dim]`` of the pulses (see the module docstring).

    ``groups[b]`` is the layer group (0 coarse, 1 mid, 2 fine) band ``b`` moves; ``masks`` are the
    group masks ``[3, num_ws, 1]``.
    """
    out = torch.zeros(masks.shape[1], directions.directions.shape[1], device=masks.device)
    for b in range(3):
        size = float(envelopes[b]) * float(gains[b]) * amount
        if size <= 0.0:
            continue
        k = band_direction[b] % directions.directions.shape[0]
        d = directions.directions[k] * directions.std[k]  # [C]
        out += masks[int(groups[b])] * (size * d)
    return out
