"""Latent sequences for sound: ours (E_a + recurrent predictor, as live) and latent-walk baselines.

Every method turns ``T`` audio segments and a base latent into a W+ sequence
``[B, T, num_ws, w_dim]`` (raw, untruncated: truncation is applied when rendering, as live), so
the evaluation renders, embeds and scores all of them by one code path with the same audio and
the same base latents (ECCV 2022, Table 3a compares against such walks):

* **ours** — :func:`sound_rollout`: E_a on each live audio window, one predictor step per window,
  and the live pipeline's offset dynamics (loudness scale, leak, smoothing, offset bound) of
  :class:`vjapp.engine.pipeline.SoundToLatent`, written batched and differentiable. Training
  (``vjapp-train sound2video``) unrolls exactly this function, so what is trained is what plays.
* **random walk** — a random unit direction in W per segment, a fixed step size.
* **linear interpolation** — a straight line from the base latent to another random latent.
* **loudness walk** — a random walk whose step size is proportional to the segment's loudness
  (the simplest audio-reactive visualiser: it hears *how loud*, not *what*).

Live, the model steps at ``model_rate`` Hz on a window of the newest ``segment_seconds`` of
audio, so windows overlap when ``segment_seconds * model_rate > 1``. :func:`live_windows` cuts
the same windows from a sequence of consecutive segments: ``substeps`` model steps per segment,
the step at the end of segment ``t`` reads exactly segment ``t``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from model.audio_features import LogMel, rms_loudness
from vjapp.engine.controls import Controls
from vjapp.engine.pipeline import PipelineConfig
from vjapp.engine.scene import MeaningTracker, SceneDynamics, scene_rollout, shown_scene_offset

if TYPE_CHECKING:
    from model.atlas import AtlasSteering

log = logging.getLogger(__name__)

METHODS = ("ours", "random_walk", "linear_interpolation", "loudness_walk")


class SequenceShapeError(ValueError):
    """An audio or latent sequence of the wrong shape."""


@dataclass(frozen=True)
class LiveDynamics:
    """The live pipeline's per-step offset dynamics (see :mod:`vjapp.engine.pipeline`).

    Defaults are the live defaults (``PipelineConfig()`` and ``Controls()``), so training and the
    evaluation see the sound-to-latent step as a show does with untouched controls.
    """

    gain: float = 1.0  # Controls.gain: overall reactivity
    loudness_reactivity: float = 1.0  # Controls.loudness_reactivity: exponent of the loudness scale
    smoothing: float = 0.5  # Controls.smoothing: o = s*o + (1-s)*o'
    leak: float = 0.04  # PipelineConfig.leak: pull of the offset back to the base
    quiet_db: float = -55.0  # PipelineConfig.quiet_db: loudness 0 at and below
    loud_db: float = -10.0  # PipelineConfig.loud_db: loudness 1 at and above
    max_offset: float = 8.0  # PipelineConfig.max_offset: per-w L2 bound of the offset
    group_gains: tuple[float, ...] = (1.0, 1.0, 1.0)  # Controls.group_gains (coarse, mid, fine)
    level_quiet_db: float = -60.0  # PipelineConfig.level_quiet_db: offset not shown at and below
    level_loud_db: float = -30.0  # PipelineConfig.level_loud_db: offset shown in full at and above
    level_attack: float = 0.3  # PipelineConfig.level_attack: smoothing of the level as it rises
    level_release: float = 0.8  # PipelineConfig.level_release: ... and as it falls

    @classmethod
    def live(cls, pipeline: PipelineConfig | None = None, controls: Controls | None = None) -> "LiveDynamics":
        """The dynamics of a live show with these settings (defaults: the app's defaults)."""
        p = pipeline or PipelineConfig()
        c = controls or Controls()
        g = c.group_gains
        return cls(
            gain=c.gain, loudness_reactivity=c.loudness_reactivity, smoothing=c.smoothing, leak=p.leak,
            quiet_db=p.quiet_db, loud_db=p.loud_db, max_offset=p.max_offset * c.semantic_reach,
            group_gains=(g.coarse, g.mid, g.fine),
            level_quiet_db=p.level_quiet_db, level_loud_db=p.level_loud_db, level_attack=p.level_attack,
            level_release=p.level_release,
        )


def substeps_per_segment(segment_seconds: float, model_rate: float) -> int:
    """Live model steps per segment of audio (at least 1)."""
    if not (segment_seconds > 0 and model_rate > 0):
        raise ValueError(f"segment_seconds and model_rate must be > 0, got {segment_seconds}, {model_rate}")
    return max(1, int(round(segment_seconds * model_rate)))


def live_windows(audio: torch.Tensor, substeps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut the live model's audio windows from consecutive segments.

    Args:
        audio: ``[B, T, S]`` — ``T`` consecutive segments of ``S`` samples each.
        substeps: model steps per segment (``segment_seconds * model_rate``).

    Returns:
        windows ``[B, N, S]`` with ``N = 1 + (T - 1) * substeps``: window ``j`` ends at sample
        ``S + round(j * S / substeps)`` of the joined audio, as the live engine's newest window;
        segment_steps ``[T]``: the step whose window is exactly segment ``t`` (``t * substeps``).
    """
    if not isinstance(audio, torch.Tensor) or audio.dim() != 3 or min(audio.shape) < 1:
        raise SequenceShapeError(f"audio must be [B, T, S] segments, got {tuple(getattr(audio, 'shape', ()))}")
    if isinstance(substeps, bool) or not isinstance(substeps, int) or substeps < 1:
        raise ValueError(f"substeps must be a positive int, got {substeps!r}")
    b, t, s = audio.shape
    joined = audio.reshape(b, t * s)  # [B, T*S]
    n = 1 + (t - 1) * substeps
    starts = torch.tensor([int(round(j * s / substeps)) for j in range(n)], device=audio.device)  # [N]
    index = starts[:, None] + torch.arange(s, device=audio.device)[None, :]  # [N, S]
    windows = joined[:, index]  # [B, N, S]
    return windows, torch.arange(t, device=audio.device) * substeps


def loudness_units(windows: torch.Tensor, quiet_db: float = -55.0, loud_db: float = -10.0) -> torch.Tensor:
    """RMS loudness of each window mapped to [0, 1] as live (``db_to_unit``): ``[..., S] → [...]``."""
    db = rms_loudness(windows.float(), db=True)  # [...]
    return ((db - quiet_db) / (loud_db - quiet_db)).clamp(0.0, 1.0).nan_to_num(0.0)


def clamp_rows(x: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Scale each w (last axis) down to L2 norm ``max_norm`` if longer; differentiable."""
    norms = x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return x * (max_norm / norms).clamp(max=1.0)


def _group_gain_mask(groups: Sequence[tuple[int, int]], gains: Sequence[float], num_ws: int,
                     like: torch.Tensor) -> torch.Tensor:
    mask = like.new_ones(1, num_ws, 1)
    for (start, stop), g in zip(groups, gains):
        mask[:, start:stop] = float(g)
    return mask  # [1, L, 1]


def sound_rollout(
    inversion: nn.Module,
    predictor: nn.Module,
    mels: torch.Tensor,
    base: torch.Tensor,
    loudness: torch.Tensor,
    dynamics: LiveDynamics = LiveDynamics(),
) -> torch.Tensor:
    """Ours: the live sound-to-latent steps over a sequence, batched and differentiable.

    For each step ``j`` (as :meth:`SoundToLatent.step` with one source)::

        Δ       = E_a(mel_j)
        ŵ, h    = RNN(h, (base + o) + Δ)
        t_j     = loud_j^r                                   (0 in silence)
        o'      = clamp((o + gain·√t_j·group_gain·(ŵ − (base + o))) · (1 − leak))
        o       = s·o + (1 − s)·o'
        level   = a·level + (1 − a)·t_j                      a: attack if t_j rises above level, else release
        shown   = base + level·o

    Args:
        inversion: E_a, mel ``[N, n_mels, F]`` → ΔW+ ``[N, num_ws, w_dim]``.
        predictor: the :class:`~model.latent_rnn.LatentRNN`.
        mels: ``[B, N, n_mels, F]`` log-mel of each step's window.
        base: raw base latents ``[B, num_ws, w_dim]``.
        loudness: ``[B, N]`` window loudness in [0, 1] on the scene scale (:func:`loudness_units` with
            ``level_quiet_db`` / ``level_loud_db``).
        dynamics: the live offset dynamics.

    Returns:
        raw latents ``base + level·o`` shown after each step, ``[B, N, num_ws, w_dim]`` (truncate to render).
    """
    if mels.dim() != 4:
        raise SequenceShapeError(f"mels must be [B, N, n_mels, F], got {tuple(mels.shape)}")
    b, n = mels.shape[:2]
    num_ws, w_dim = int(predictor.num_ws), int(predictor.w_dim)
    if tuple(base.shape) != (b, num_ws, w_dim):
        raise SequenceShapeError(f"base must be [{b}, {num_ws}, {w_dim}], got {tuple(base.shape)}")
    if tuple(loudness.shape) != (b, n):
        raise SequenceShapeError(f"loudness must be [{b}, {n}], got {tuple(loudness.shape)}")
    deltas = inversion(mels.reshape(b * n, *mels.shape[2:])).view(b, n, num_ws, w_dim)  # all windows at once
    r = dynamics.loudness_reactivity
    target = loudness.clamp(0.0, 1.0) ** r if r > 0 else (loudness > 0).to(loudness.dtype)  # [B, N]
    scale = dynamics.gain * target.sqrt()  # [B, N]
    gmask = _group_gain_mask(predictor.groups, dynamics.group_gains, num_ws, base)  # [1, L, 1]
    s, keep = dynamics.smoothing, 1.0 - dynamics.leak
    state = predictor.init_state(b, base.device, base.dtype)
    offset = torch.zeros_like(base)  # o, [B, L, C]
    level = torch.zeros(b, device=base.device, dtype=base.dtype)  # [B]
    out = []
    for j in range(n):
        w_prev = base + offset
        w_pred, state = predictor.step(w_prev, deltas[:, j], state)
        change = (w_pred - w_prev) * (scale[:, j].view(b, 1, 1) * gmask)
        new_offset = clamp_rows((offset + change) * keep, dynamics.max_offset)
        offset = s * offset + (1.0 - s) * new_offset
        a = torch.where(target[:, j] > level, dynamics.level_attack, dynamics.level_release)
        level = a * level + (1.0 - a) * target[:, j]
        out.append(base + level.view(b, 1, 1) * offset)
    return torch.stack(out, dim=1)  # [B, N, L, C]


@dataclass
class SoundModels:
    """What :func:`ours_latents` needs: the frontend, E_a, the predictor and the live settings."""

    logmel: LogMel
    inversion: nn.Module
    predictor: nn.Module
    substeps: int = 1
    dynamics: LiveDynamics = LiveDynamics()


def ours_latents(models: SoundModels, audio: torch.Tensor, base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ours on segments ``[B, T, S]`` → (latents after every live step ``[B, N, L, C]``,
    latents at the segment ends ``[B, T, L, C]``); ``N = 1 + (T - 1) * substeps``."""
    windows, seg_steps = live_windows(audio, models.substeps)  # [B, N, S], [T]
    b, n, s = windows.shape
    mels = models.logmel(windows.reshape(b * n, s))  # [B*N, n_mels, F]
    mels = mels.view(b, n, *mels.shape[1:])  # [B, N, n_mels, F]
    loud = loudness_units(windows, models.dynamics.level_quiet_db, models.dynamics.level_loud_db)  # [B, N]
    ws = sound_rollout(models.inversion, models.predictor, mels, base, loud, models.dynamics)
    return ws, ws[:, seg_steps]


@dataclass
class AtlasModels:
    """What :func:`atlas_latents` needs: the frontend, F_a, the atlas steering and the scene dynamics."""

    logmel: LogMel
    audio_encoder: nn.Module
    steering: "AtlasSteering"
    substeps: int = 1
    dynamics: LiveDynamics = LiveDynamics()
    scene: SceneDynamics = SceneDynamics()


def atlas_latents(models: AtlasModels, audio: torch.Tensor, base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The atlas scene on segments ``[B, T, S]`` (as live, :mod:`vjapp.engine.scene`) → (latents after
    every live step ``[B, N, L, C]``, latents at the segment ends ``[B, T, L, C]``).

    Each step: F_a of the newest segment → the held meaning → the atlas target near the base's w → the scene glides
    toward it → shown ``base + level · strength · (scene − base)`` with the live loudness envelope.
    """
    windows, seg_steps = live_windows(audio, models.substeps)  # [B, N, S]
    b, n, s = windows.shape
    with torch.no_grad():
        mels = models.logmel(windows.reshape(b * n, s))
        emb = models.audio_encoder(mels).float().view(b, n, -1)  # [B, N, D]
        base_w = base[:, 0]  # [B, C]
        meaning = MeaningTracker(models.scene, models.steering.anchors)
        d, sd = models.dynamics, models.scene
        r = d.loudness_reactivity
        loud = loudness_units(windows, d.level_quiet_db, d.level_loud_db)  # [B, N] the show's level scale
        targets, switched = [], []
        for j in range(n):
            query, held, switch = meaning.step(emb[:, j], loud[:, j] > 0)  # silence holds the meaning
            targets.append(models.steering.target(query, base_w, held))
            switched.append(switch)
        targets = torch.stack(targets, dim=1)  # [B, N, C]
        speed = sd.speed(loud ** r if r > 0 else (loud > 0).to(loud.dtype), torch.stack(switched, dim=1))  # [B, N]
        scenes = scene_rollout(targets.to(base), base_w, speed.to(base))  # [B, N, C]
        # the scene's level: its own scale and release (:class:`vjapp.engine.scene.SceneDynamics`)
        scene_dyn = dataclasses.replace(d, level_release=sd.release)
        level = loudness_level(loudness_units(windows, sd.quiet_db, sd.loud_db), scene_dyn)  # [B, N]
        ws = base.unsqueeze(1) + shown_scene_offset(base.unsqueeze(1), scenes, level * sd.strength)
    return ws, ws[:, seg_steps]


def scene_and_sound_latents(sound: SoundModels, atlas: AtlasModels, audio: torch.Tensor,
                            base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The live default with an atlas: the scene term plus E_a + predictor's offset on top (as
    :class:`vjapp.engine.pipeline.SoundToLatent` composes them): ``base + level·o + scene term``."""
    ours_all, ours_seg = ours_latents(sound, audio, base)
    scene_all, scene_seg = atlas_latents(atlas, audio, base)
    b = base.unsqueeze(1)
    return ours_all + (scene_all - b), ours_seg + (scene_seg - b)


def loudness_level(loudness: torch.Tensor, dynamics: LiveDynamics = LiveDynamics()) -> torch.Tensor:
    """The live loudness envelope ``[B, N]`` (attack/release on ``loudness^r``), as :func:`sound_rollout`'s level."""
    r = dynamics.loudness_reactivity
    target = loudness.clamp(0.0, 1.0) ** r if r > 0 else (loudness > 0).to(loudness.dtype)
    level = torch.zeros_like(target[:, 0])
    out = []
    for j in range(target.shape[1]):
        a = torch.where(target[:, j] > level, dynamics.level_attack, dynamics.level_release)
        level = a * level + (1.0 - a) * target[:, j]
        out.append(level)
    return torch.stack(out, dim=1)


def _unit_directions(b: int, t: int, w_dim: int, generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    d = torch.randn(b, t, w_dim, generator=generator).to(like)  # CPU generator: reproducible anywhere
    return d / d.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # [B, T, C]


def _check_base(base: torch.Tensor, steps: int) -> None:
    if not isinstance(base, torch.Tensor) or base.dim() != 3:
        raise SequenceShapeError(f"base must be [B, num_ws, w_dim], got {tuple(getattr(base, 'shape', ()))}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")


def random_walk(base: torch.Tensor, steps: int, step_size: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """``[B, L, C]`` → ``[B, steps, L, C]``: each step moves every w by ``step_size`` in one random W direction.

    The first latent is the base itself (as ours starts there), then one step per segment.
    """
    _check_base(base, steps)
    b, _, c = base.shape
    d = _unit_directions(b, steps, c, generator, base) * step_size  # [B, T, C]
    d[:, 0] = 0.0
    return base.unsqueeze(1) + d.cumsum(dim=1).unsqueeze(2)  # [B, T, L, C]


def linear_interpolation(base: torch.Tensor, target: torch.Tensor, steps: int) -> torch.Tensor:
    """A straight line from ``base`` to ``target`` (both ``[B, L, C]``) in ``steps`` latents ``[B, T, L, C]``."""
    _check_base(base, steps)
    if target.shape != base.shape:
        raise SequenceShapeError(f"target must match base {tuple(base.shape)}, got {tuple(target.shape)}")
    alpha = torch.linspace(0.0, 1.0, steps, device=base.device, dtype=base.dtype) if steps > 1 else base.new_zeros(1)
    return torch.lerp(base.unsqueeze(1), target.unsqueeze(1), alpha.view(1, steps, 1, 1))


def loudness_walk(base: torch.Tensor, loudness: torch.Tensor, step_size: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """A random walk whose step into segment ``t`` is ``step_size · loudness[:, t]`` (loudness ``[B, T]`` in [0, 1]).

    The first latent is the base; silence does not move, full loudness moves ``step_size``.
    """
    if not isinstance(loudness, torch.Tensor) or loudness.dim() != 2:
        raise SequenceShapeError(f"loudness must be [B, T], got {tuple(getattr(loudness, 'shape', ()))}")
    b, t = loudness.shape
    _check_base(base, t)
    if base.shape[0] != b:
        raise SequenceShapeError(f"loudness has batch {b} but base has {base.shape[0]}")
    d = _unit_directions(b, t, base.shape[-1], generator, base) * (step_size * loudness.to(base)).unsqueeze(-1)
    d[:, 0] = 0.0
    return base.unsqueeze(1) + d.cumsum(dim=1).unsqueeze(2)  # [B, T, L, C]


def mean_step_motion(ws: torch.Tensor) -> float:
    """Mean per-w L2 distance between consecutive latents of ``[B, T, L, C]`` (0 for T = 1)."""
    if ws.dim() != 4:
        raise SequenceShapeError(f"ws must be [B, T, L, C], got {tuple(ws.shape)}")
    if ws.shape[1] < 2:
        return 0.0
    return float((ws[:, 1:] - ws[:, :-1]).norm(dim=-1).mean())


def truncate_sequence(ws: torch.Tensor, w_avg: torch.Tensor, psi: float) -> torch.Tensor:
    """Truncation toward ``w_avg`` as live (``lerp(w_avg, ws, psi)``) for any leading shape."""
    return ws if psi == 1.0 else torch.lerp(w_avg.to(ws), ws, psi)


def render_sequences(synthesis: nn.Module, ws: torch.Tensor, w_avg: torch.Tensor, psi: float,
                     batch: int = 16, noise_mode: str = "const") -> torch.Tensor:
    """Render ``[B, T, L, C]`` raw latents (truncated as live) → images ``[B, T, 3, H, W]`` in [-1, 1]."""
    b, t = ws.shape[:2]
    flat = truncate_sequence(ws, w_avg, psi).reshape(b * t, *ws.shape[2:])
    chunks = [synthesis(flat[i : i + batch], noise_mode=noise_mode) for i in range(0, flat.shape[0], batch)]
    images = torch.cat(chunks)
    return images.view(b, t, *images.shape[1:])


def random_bases(mapping: nn.Module, seeds: Sequence[int], z_dim: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Raw base latents ``[len(seeds), num_ws, w_dim]`` for seeds, as the live app's LatentBank makes them."""
    from vjapp.engine.latents import seed_to_z

    z = torch.cat([seed_to_z(int(s), z_dim) for s in seeds]).to(device)
    with torch.no_grad():
        return mapping(z, truncation_psi=1.0)


__all__ = [
    "METHODS", "AtlasModels", "LiveDynamics", "atlas_latents", "loudness_level", "scene_and_sound_latents", "SoundModels", "SequenceShapeError", "clamp_rows", "linear_interpolation",
    "live_windows", "loudness_units", "loudness_walk", "mean_step_motion", "ours_latents", "random_bases",
    "random_walk", "render_sequences", "sound_rollout", "substeps_per_segment", "truncate_sequence",
]
