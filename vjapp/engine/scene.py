"""The semantic scene: where the sound's meaning takes the picture, on the generator's manifold.

Each model step, F_a embeds the newest audio segment in CLIP space; :class:`model.atlas.AtlasSteering`
turns that query into a target ``w`` blended from atlas latents the generator draws well. The
scene glides toward it, and the picture shows the scene as far as the sound is loud::

    target  = atlas(F_a(newest segment), near the base)            in W (one w for every layer)
    scene  += glide · (target − scene)                               per model step
    shown   = base + level^k · strength · group_gain · (scene − base)  level: the loudness envelope

so a quiet sound moves the picture a little toward its scene and a loud one all the way, silence
leaves the base (seed or prompt) picture, and a change of sound glides to the new scene in a few
steps. The same functions serve the live pipeline (one step at a time) and the offline rollouts of
the evaluation and training (batched), so what is measured is what plays.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SceneDynamics:
    """How the scene follows the atlas target (per model step) and how far it is shown."""

    glide: float = 0.45  # share of the way to the new target per model step (10 steps/s: ~0.2 s to half-way)
    strength: float = 1.0  # at full loudness, the share of the way from the base picture to the scene
    loudness_exponent: float = 3.0  # the scene is shown at level ** this (on top of the loudness control's
    # own exponent): a tenth of the amplitude shows far less of it (measured with the eval's judge:
    # motion at 0.1 amplitude 0.48 of full scale, against 0.70 with exponent 1)

    def __post_init__(self) -> None:
        if not (0.0 < self.glide <= 1.0) or not (0.0 <= self.strength <= 1.0) or self.loudness_exponent <= 0:
            raise ValueError(f"glide must be in (0, 1] and strength in [0, 1], got {self}")


def scene_step(scene: torch.Tensor, target: torch.Tensor, glide: float) -> torch.Tensor:
    """One glide step of ``[B, C]`` scenes toward ``[B, C]`` targets."""
    return scene + glide * (target - scene)


def scene_rollout(targets: torch.Tensor, start: torch.Tensor, glide: float) -> torch.Tensor:
    """Scenes after each step ``[B, N, C]`` for targets ``[B, N, C]`` from ``start`` ``[B, C]``."""
    out = []
    scene = start
    for j in range(targets.shape[1]):
        scene = scene_step(scene, targets[:, j], glide)
        out.append(scene)
    return torch.stack(out, dim=1)


def shown_scene_offset(base: torch.Tensor, scene: torch.Tensor, amount: torch.Tensor,
                       layer_gain: torch.Tensor | None = None) -> torch.Tensor:
    """The W+ offset that shows the scene: ``amount · layer_gain · (scene − base)``.

    Args:
        base: raw base latents ``[..., L, C]``.
        scene: scene ``w`` ``[..., C]`` (broadcast over the L layers).
        amount: ``level · strength`` ``[...]``.
        layer_gain: optional per-layer gain ``[L, 1]`` (the performer's coarse/mid/fine gains).
    """
    delta = scene.unsqueeze(-2) - base  # [..., L, C]
    if layer_gain is not None:
        delta = delta * layer_gain
    return amount[..., None, None] * delta
