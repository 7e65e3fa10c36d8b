"""The semantic scene: where the sound's meaning takes the picture, on the generator's manifold.

Each model step, F_a embeds the newest audio segment in CLIP space; :class:`model.atlas.AtlasSteering`
turns that query into a target ``w`` blended from atlas latents the generator draws well. The
scene glides toward it, and the picture shows the scene as far as the sound is loud::

    meaning = held(F_a(newest segment))                              what the sound is, debounced
    target  = atlas(meaning, near the base)                          in W (one w for every layer)
    scene  += glide · loud^k · (target − scene)                      per model step: louder, faster
    shown   = base + level · strength · group_gain · (scene − base)  level: the scene's loudness envelope

so a quiet sound moves the picture a little toward its scene and a loud one all the way, silence
leaves the base (seed or prompt) picture, and a change of sound glides to the new scene in a few
steps. The meaning is *held* (:class:`MeaningTracker`): the class the sound is nearest to changes
only when another class's smoothed score overtakes it by a margin, and within a held class the
query drifts slowly, so a steady groove (whose half-second windows alternate between two
neighbouring meanings with the beat) keeps one scene and the beat's pulses stand out, while a real
change of sound is followed at once. The same functions serve the live pipeline (one step at a time) and the offline rollouts of
the evaluation and training (batched), so what is measured is what plays.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SceneDynamics:
    """How the scene follows the atlas target (per model step) and how far it is shown.

    Loudness acts twice, as a VJ expects: the **speed** of the glide is ``glide · loud^speed_exponent``
    (``loud`` the loudness on the show's level scale, -60..-30 dBFS), so a tenth of the amplitude moves
    the picture far less; the **distance** shown is the level on the scene's own scale (-55..-25 dBFS:
    the quietest classes of sound, around -33 dBFS, are still shown most of the way, while a tenth of
    a loud sound's amplitude is shown about half as far), held ``release`` per step when the sound
    falls, so a storm does not vanish between two claps of thunder. The held meaning
    (:class:`MeaningTracker`) changes class after about three steps of a new sound, and then the
    scene jumps ``switch_glide`` of the way at once. Chosen with the eval's independent judge on
    held-out clips, with the beat benchmark's kick loops (README).
    """

    glide: float = 0.45  # share of the way to the new target per model step at full loudness
    switch_glide: float = 1.0  # ... on the step the held meaning changes to another class (1: a cut)
    strength: float = 1.0  # at full level, the share of the way from the base picture to the scene
    speed_exponent: float = 4.0  # glide speed = glide * loud ** this
    quiet_db: float = -55.0  # scene level 0 at and below (RMS dBFS)
    loud_db: float = -25.0  # scene level 1 at and above
    release: float = 0.95  # per-step smoothing of the scene level as the sound falls (10 steps/s: ~1.4 s to half)
    # the held meaning (:class:`MeaningTracker`)
    class_smoothing: float = 0.3  # per step, the share of the way the class scores move to the newest
    hysteresis: float = 0.3  # another class takes over when its smoothed score beats the held one's by this
    settle: float = 0.1  # within a held class, the share of the way the query moves to the newest per step
    class_temperature: float = 0.01  # softmax temperature of the class scores over cosine similarities

    def __post_init__(self) -> None:
        if not (0.0 < self.glide <= 1.0) or not (0.0 < self.switch_glide <= 1.0) or not (0.0 <= self.strength <= 1.0) or self.speed_exponent < 0 \
                or not (0.0 <= self.release < 1.0) or not self.quiet_db < self.loud_db \
                or not (0.0 < self.class_smoothing <= 1.0) or not (0.0 <= self.settle <= 1.0) \
                or self.hysteresis < 0.0 or self.class_temperature <= 0.0:
            raise ValueError(f"bad scene dynamics {self}")

    def speed(self, loud: float | torch.Tensor, switched: bool | torch.Tensor = False) -> float | torch.Tensor:
        """Glide per step for ``loud`` in [0, 1] (the show's level scale); ``switched``: the held
        meaning changed on this step (a bool, or a bool tensor shaped like ``loud``)."""
        if isinstance(switched, torch.Tensor):
            glide = torch.where(switched, self.switch_glide, self.glide)
        else:
            glide = self.switch_glide if switched else self.glide
        return glide * loud ** self.speed_exponent


class MeaningTracker:
    """What the sound *is*, held against the flicker of short windows (batched ``[B, ...]``).

    Each step the newest F_a query scores the class prompts (softmax of cosine similarity); the
    scores are smoothed; the held class changes when another's smoothed score exceeds the held
    one's by ``hysteresis``, and then the query is taken as it is (a change of sound is followed at
    once). While the class holds, the query moves ``settle`` of the way to the newest one per step,
    so the scene within a class follows slow changes (a storm building) and not every window's.
    Without class prompts the query passes through unchanged.
    """

    def __init__(self, dynamics: SceneDynamics, anchors: torch.Tensor | None) -> None:
        self.dynamics = dynamics
        self.anchors = None if anchors is None else F.normalize(anchors.float(), dim=-1)
        self.reset()

    def reset(self) -> None:
        self.scores: torch.Tensor | None = None  # [B, K] smoothed class scores
        self.held: torch.Tensor | None = None  # [B] held class
        self.query: torch.Tensor | None = None  # [B, D] the held query (unit)

    def step(self, query: torch.Tensor, heard: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``(query to steer by [B, D], held class [B] or None, switched [B])`` after the newest
        ``query`` ``[B, D]``; ``switched``: the held class changed on this step. ``heard`` ``[B]``
        (bool, optional): rows that heard nothing (silence) keep their meaning as it was."""
        q = F.normalize(query.float(), dim=-1)
        none = torch.zeros(q.shape[0], dtype=torch.bool, device=q.device)
        if self.anchors is None:
            return q, None, none
        d = self.dynamics
        p = torch.softmax(q @ self.anchors.to(q.device).T / d.class_temperature, dim=-1)  # [B, K]
        if self.scores is None or self.held is None or self.query is None or self.scores.shape != p.shape:
            self.scores, self.held, self.query = p, p.argmax(dim=-1), q
            return q, self.held, none
        on = torch.ones_like(none) if heard is None else heard.to(q.device).bool()
        scores = self.scores + d.class_smoothing * (p - self.scores)
        self.scores = torch.where(on[:, None], scores, self.scores)
        best = self.scores.argmax(dim=-1)
        lead = self.scores.gather(1, best[:, None])[:, 0] - self.scores.gather(1, self.held[:, None])[:, 0]
        switch = on & (best != self.held) & (lead > d.hysteresis)  # [B]
        self.held = torch.where(switch, best, self.held)
        drifted = F.normalize(self.query + d.settle * (q - self.query), dim=-1)
        self.query = torch.where(switch[:, None], q, torch.where(on[:, None], drifted, self.query))
        return self.query, self.held, switch


def scene_step(scene: torch.Tensor, target: torch.Tensor, glide: float | torch.Tensor) -> torch.Tensor:
    """One glide step of ``[B, C]`` scenes toward ``[B, C]`` targets (glide a float or ``[B, 1]``)."""
    return scene + glide * (target - scene)


def scene_rollout(targets: torch.Tensor, start: torch.Tensor, glide: float | torch.Tensor) -> torch.Tensor:
    """Scenes after each step ``[B, N, C]`` for targets ``[B, N, C]`` from ``start`` ``[B, C]``;
    ``glide`` a float or per step ``[B, N]``."""
    out = []
    scene = start
    for j in range(targets.shape[1]):
        g = glide[:, j:j + 1] if isinstance(glide, torch.Tensor) else glide
        scene = scene_step(scene, targets[:, j], g)
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
