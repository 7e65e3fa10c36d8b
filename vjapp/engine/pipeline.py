"""Sound to W+, one model step at a time (ECCV 2022 eq. 1, 4-5, live and per segment).

Each step takes the newest audio window of each source, turns it into a log-mel spectrogram,
runs E_a (mel -> ΔW+) and one step of the recurrent coarse/mid/fine predictor, and returns the
W+ target for the display to glide to. The papers encode a whole clip at once; live we keep
the predictor's state and an offset from the base latent between steps:

    Δ      = Σ_i weight_i · E_a(mel_i)                     several sources mix (Sound2Scene)
    ŵ, h   = RNN(h, (base + o) + Δ)                        eq. 4-5: the model's next latent
    o'     = o + gain · group_gain · (ŵ − (base + o))      the performer scales the model's step
    o'    *= (1 − leak)                                    the scene returns home in silence
    o      = s_g · o + (1 − s_g) · o'                       s_g = 1 − (1 − smoothing)(1 − group_smoothing_g)
    level  ← envelope of scene_loudness^reactivity         (fast attack, slower release; -60..-30 dBFS -> 0..1)
    W+     = mix(truncate(base + level · o + S))           loudness sets how far the picture goes

and, when the bundle has F_a and the generator has a latent atlas (:mod:`vjapp.engine.scene`),
the scene term ``S = level · scene_control · group_gain · (scene − base)``: F_a's CLIP-space
embedding of the newest segment picks atlas latents the generator draws well, the scene glides
toward them, and the picture goes there as far as the sound is loud. A bundle whose generator has
no E_a/predictor of its shape (an imported one) plays with the scene term alone (o stays 0).

Loudness scales the *distance* from the base latent, not only the speed of the step: with a
leak and a bounded offset the recurrence settles at the same place whatever its rate, so a
quiet sound used to end up moving the picture as far as a loud one. Now the same sound at a
tenth of the amplitude goes a fraction of the way (Sound2Scene: louder sound, bigger change);
silence gives no motion, and hours of running keep every tensor the same size.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ContextManager, Sequence

import torch
from torch import nn

from model.audio_features import LogMel, rms_loudness
from vjapp.engine.controls import Controls, GroupGains, GroupSmoothing
from vjapp.engine.frames import synchronize
from vjapp.engine.latents import db_to_unit, group_masks, truncate
from vjapp.engine.scene import MeaningTracker, SceneDynamics, scene_step, shown_scene_offset
from vjapp.engine.stats import EngineStats

if TYPE_CHECKING:
    from model.atlas import AtlasSteering

log = logging.getLogger(__name__)


@dataclass
class PipelineConfig:
    """Live-only settings of the sound-to-latent step (the models' own live in the bundle)."""

    window_seconds: float = 1.0  # audio seen by each model step (newest window)
    leak: float = 0.04  # per-step pull of the offset back toward the base latent
    quiet_db: float = -55.0  # RMS loudness (dBFS) that counts as silence
    loud_db: float = -10.0  # RMS loudness that counts as full scale
    max_offset: float = 8.0  # per-w L2 norm bound of the offset, a guard against runaway motion
    level_quiet_db: float = -60.0  # RMS loudness at which the semantic offset is not shown at all
    level_loud_db: float = -30.0  # ... and from which it is shown in full (a scene's sound, not only a
    # mastered track, is "loud enough"; a tenth of it, 20 dB down, is shown at a third or less)
    level_attack: float = 0.3  # per-step smoothing of the loudness level when it rises (0 = instant)
    level_release: float = 0.8  # ... and when it falls (about half a second at 10 steps/s)


@dataclass
class Heard:
    """What one model step heard: E_a's offset, F_a's embedding and the loudness of the (mixed) window."""

    delta: torch.Tensor  # [1, num_ws, w_dim] (zeros without E_a)
    loudness_db: float  # RMS dBFS (-inf for silence or no source)
    mel: torch.Tensor | None  # [n_mels, T] 0..1, for the scope
    embedding: torch.Tensor | None = None  # [1, D] F_a of the newest segment (None without a scene layer)


@dataclass
class SceneLayer:
    """The atlas scene's parts: F_a, the steering over the generator's atlas, its dynamics and how
    much of the newest audio F_a hears (the segment length it was trained on); it holds the
    sound's meaning between steps (:class:`~vjapp.engine.scene.MeaningTracker`)."""

    audio_encoder: nn.Module
    steering: "AtlasSteering"
    dynamics: SceneDynamics
    segment_seconds: float
    meaning: MeaningTracker = field(init=False)

    def __post_init__(self) -> None:
        self.meaning = MeaningTracker(self.dynamics, self.steering.anchors)


@dataclass
class StepResult:
    ws: torch.Tensor  # [num_ws, w_dim] the W+ target (truncated, mixed)
    loudness: float  # 0..1 of the mixed input
    loudness_db: float
    motion: float  # mean per-w L2 norm of this step's change of the offset
    mel: torch.Tensor | None = None  # [n_mels, T] what the model heard (weighted mix), 0..1; None in silence


class SoundToLatent:
    """The per-segment sound -> W+ step; owned and called by the engine thread only."""

    def __init__(
        self,
        logmel: LogMel,
        inversion: nn.Module | None,
        predictor: nn.Module | None,
        w_avg: torch.Tensor,
        groups: Sequence[tuple[int, int]],
        device: torch.device,
        config: PipelineConfig | None = None,
        stats: EngineStats | None = None,
        scene: SceneLayer | None = None,
        num_ws: int | None = None,
    ) -> None:
        self.config = config or PipelineConfig()
        self.device = device
        self.stats = stats
        # CUDA and MPS run asynchronously: synchronize at stage ends so the stage timings are true.
        self._sync = (lambda: synchronize(device)) if device.type in ("cuda", "mps") else None
        self.logmel = logmel.to(device).eval()
        if (inversion is None) != (predictor is None):
            raise ValueError("E_a and the predictor come together (both or neither)")
        self.inversion = inversion.to(device).eval() if inversion is not None else None
        self.predictor = predictor.to(device).eval() if predictor is not None else None
        if self.predictor is not None:
            self.num_ws = int(self.predictor.num_ws)
        elif num_ws is not None:
            self.num_ws = int(num_ws)
        else:
            raise ValueError("without a predictor, num_ws must be given")
        self.w_dim = int(w_avg.shape[-1])
        if self.predictor is not None and int(self.predictor.w_dim) != self.w_dim:
            raise ValueError(f"w_avg must be [{self.predictor.w_dim}], got {tuple(w_avg.shape)}")
        self.w_avg = w_avg.to(device)
        self.groups = tuple(tuple(g) for g in groups)
        if len(self.groups) != 3:
            raise ValueError(f"expected coarse, mid and fine layer groups, got {self.groups}")
        self.masks = group_masks(self.groups, self.num_ws, device)  # [3, num_ws, 1]
        self.window_samples = int(round(self.config.window_seconds * self.logmel.config.sample_rate))
        self.scene_layer = scene
        if scene is not None:
            scene.audio_encoder.to(device).eval()
            scene.steering.to(device)
            self.segment_samples = int(round(scene.segment_seconds * self.logmel.config.sample_rate))
        self.state = self.predictor.init_state(1, device) if self.predictor is not None else None
        self.offset = torch.zeros(1, self.num_ws, self.w_dim, device=device)  # o, [1, L, C]
        self.scene: torch.Tensor | None = None  # [1, C] the scene w (set from the base at the first step)
        self.level = 0.0  # loudness envelope that scales how far the offset is shown
        self.scene_level = 0.0  # ... and how far the scene is shown (its own, steeper curve)

    @property
    def sample_rate(self) -> int:
        """The rate the audio windows must be at (the mel frontend's)."""
        return int(self.logmel.config.sample_rate)

    def reset(self) -> None:
        if self.state is not None:
            self.state.zero_()
        self.offset.zero_()
        self.scene = None
        if self.scene_layer is not None:
            self.scene_layer.meaning.reset()
        self.level = 0.0
        self.scene_level = 0.0

    def _per_layer(self, groups: GroupGains | GroupSmoothing) -> torch.Tensor:
        """A coarse/mid/fine setting spread over the W+ layers: ``[1, L, 1]``."""
        g = torch.tensor([groups.coarse, groups.mid, groups.fine], device=self.device).view(3, 1, 1)
        return (self.masks * g).sum(0, keepdim=True)

    @torch.no_grad()
    def step(self, windows: Sequence[torch.Tensor], base: torch.Tensor, controls: Controls,
             mix: Sequence[torch.Tensor | None] = (None, None, None)) -> StepResult:
        """One model step: :meth:`hear` the windows, then :meth:`advance`.

        Args:
            windows: one mono window per sound source, ``[window_samples]`` float32 at
                :attr:`sample_rate` (shorter windows are zero-padded at the front).
            base: raw (untruncated) base latent ``[num_ws, w_dim]``.
            controls: the performer's controls (gains, smoothing, mix strengths, truncation).
            mix: raw latents ``[num_ws, w_dim]`` for the coarse, mid and fine mix slots, or None.
        """
        return self.advance(self.hear(windows, controls.source_weights, self.uses_offsets(controls)), base,
                            controls, mix)

    @torch.no_grad()
    def hear(self, windows: Sequence[torch.Tensor], weights: Sequence[float], offsets: bool = True) -> Heard:
        """Mel, E_a and F_a of one window per source, mixed by ``weights`` (Sound2Scene: offsets add).
        ``offsets`` False (:meth:`uses_offsets` says they will not be played) skips E_a: its delta stays 0."""
        active = [(w, x) for w, x in zip(weights, windows) if w > 0.0]
        if not active:
            return Heard(torch.zeros_like(self.offset), float("-inf"), None)
        batch = torch.stack([self._fit(x) for _, x in active])  # [S, N]
        wts = torch.tensor([w for w, _ in active], device=self.device).view(-1, 1, 1)
        with self._stage("mel"):
            mels = self.logmel(batch)  # [S, n_mels, T]
        delta = torch.zeros_like(self.offset)
        if self.inversion is not None and offsets:
            with self._stage("encoder"):
                delta = (self.inversion(mels) * wts).sum(0, keepdim=True)  # [1, L, C]
        mixed = (batch * wts.view(-1, 1)).sum(0)  # [N]
        loud_db = float(rms_loudness(mixed, db=True))
        return Heard(delta, loud_db, (mels * wts).sum(0) / wts.sum(), self._embed(mixed[None])[0:1]
                     if self.scene_layer is not None else None)

    @torch.no_grad()
    def hear_many(self, windows: torch.Tensor, weight: float = 1.0, offsets: bool = True) -> list[Heard]:
        """:meth:`hear` for many windows of one source at once ``[K, window_samples]`` (offline
        render: E_a and F_a have no state, so the windows of a whole stretch of a file batch together)."""
        if weight <= 0.0:
            return [Heard(torch.zeros_like(self.offset), float("-inf"), None) for _ in range(windows.shape[0])]
        batch = windows.to(self.device, torch.float32) * weight  # [K, N]
        with self._stage("mel"):
            mels = self.logmel(batch)  # [K, n_mels, T]
        if self.inversion is not None and offsets:
            with self._stage("encoder"):
                deltas = self.inversion(mels)  # [K, L, C]
        else:
            deltas = torch.zeros(batch.shape[0], self.num_ws, self.w_dim, device=self.device)
        emb = self._embed(batch) if self.scene_layer is not None else None
        loud = rms_loudness(batch, db=True)  # [K]
        return [Heard(deltas[k: k + 1], float(loud[k]), mels[k], None if emb is None else emb[k: k + 1])
                for k in range(batch.shape[0])]

    def _embed(self, windows: torch.Tensor) -> torch.Tensor:
        """F_a of the newest segment of each window ``[K, N]`` → ``[K, D]``."""
        assert self.scene_layer is not None
        with self._stage("scene"):
            seg = windows[:, -self.segment_samples:]
            return self.scene_layer.audio_encoder(self.logmel(seg)).float()

    @torch.no_grad()
    def advance(self, heard: Heard, base: torch.Tensor, controls: Controls,
                mix: Sequence[torch.Tensor | None] = (None, None, None)) -> StepResult:
        """One recurrent step from what was heard; returns the W+ target."""
        loud = db_to_unit(heard.loudness_db, self.config.quiet_db, self.config.loud_db)
        r = controls.loudness_reactivity
        scene = db_to_unit(heard.loudness_db, self.config.level_quiet_db, self.config.level_loud_db)
        target_level = scene**r if r > 0 else 1.0
        if not math.isfinite(heard.loudness_db):
            target_level = 0.0  # silence or no source: nothing to react to
        before = self.offset * self.level  # what was shown

        if self.uses_offsets(controls):
            w_prev = base.unsqueeze(0) + self.offset  # [1, L, C]
            with self._stage("recurrent"):
                w_pred, self.state = self.predictor.step(w_prev, heard.delta, self.state)
            rate = controls.gain * target_level**0.5  # silence (level 0): the model's state holds still
            change = (w_pred - w_prev) * (rate * self._per_layer(controls.group_gains))  # [1, L, C]
            new_offset = (self.offset + change) * (1.0 - self.config.leak)
            new_offset = _clamp_rows(new_offset, self.config.max_offset * controls.semantic_reach)
            s = self._smoothing_mask(controls)  # [1, L, 1]
            self.offset.mul_(s).add_(new_offset * (1.0 - s))
        if self.scene_layer is not None:
            sd = self.scene_layer.dynamics
            self._glide_scene(heard, base, target_level)
            t_scene = db_to_unit(heard.loudness_db, sd.quiet_db, sd.loud_db) if math.isfinite(heard.loudness_db) else 0.0
            t_scene = t_scene**r if r > 0 else float(t_scene > 0)
            a = self.config.level_attack if t_scene > self.scene_level else sd.release
            self.scene_level = a * self.scene_level + (1.0 - a) * t_scene
        a = self.config.level_attack if target_level > self.level else self.config.level_release
        self.level = a * self.level + (1.0 - a) * target_level
        if not bool(torch.isfinite(self.offset).all()):
            log.warning("non-finite latent offset; resetting the predictor")
            self.reset()
        motion = float((self.offset * self.level - before).norm(dim=-1).mean())
        ws = self.compose(base, controls, mix)
        return StepResult(ws=ws, loudness=loud, loudness_db=heard.loudness_db, motion=motion, mel=heard.mel)

    def _glide_scene(self, heard: Heard, base: torch.Tensor, loud: float) -> None:
        """Move the scene toward the atlas target of what was heard, faster the louder ``loud`` (0..1,
        the show's level scale) is; held in silence."""
        assert self.scene_layer is not None
        if self.scene is None:
            self.scene = base[:1].clone()  # [1, C]: start at the base picture
        if heard.embedding is None:
            return
        with self._stage("scene"):
            on = torch.tensor([loud > 0.0])  # silence holds the meaning
            query, held, switched = self.scene_layer.meaning.step(heard.embedding, on)
            if loud <= 0.0:
                return
            target = self.scene_layer.steering.target(query, base[:1], held)  # [1, C]
        glide = float(self.scene_layer.dynamics.speed(loud, bool(switched[0])))
        self.scene = scene_step(self.scene, target.to(self.scene), glide)

    def uses_offsets(self, controls: Controls) -> bool:
        """E_a + predictor's offsets are played: the meaning control asks for them (or for both), or
        it asks for the scene and there is no scene layer to play; and the bundle has them."""
        if self.predictor is None:
            return False
        return controls.meaning != "scene" or self.scene_layer is None

    def scene_offset(self, base: torch.Tensor, controls: Controls) -> torch.Tensor | None:
        """The shown scene term ``[L, C]`` (None without a scene layer, before the first step, or
        when the meaning control plays E_a's offsets alone)."""
        if self.scene_layer is None or self.scene is None or controls.scene <= 0.0 or controls.meaning == "offsets":
            return None
        amount = torch.tensor(self.scene_level * controls.scene * self.scene_layer.dynamics.strength,
                              device=self.device)
        return shown_scene_offset(base, self.scene[0], amount, self._per_layer(controls.group_gains)[0])

    def compose(self, base: torch.Tensor, controls: Controls,
                mix: Sequence[torch.Tensor | None] = (None, None, None)) -> torch.Tensor:
        """``truncate(base + offset + scene)`` with the coarse/mid/fine groups mixed toward ``mix``."""
        shown = base + self.level * self.offset[0] if self.uses_offsets(controls) else base
        scene = self.scene_offset(base, controls)
        if scene is not None:
            shown = shown + scene
        ws = truncate(shown, self.w_avg, controls.truncation_psi)  # [L, C]
        slots = (controls.mix.coarse, controls.mix.mid, controls.mix.fine)
        for i, (slot, other) in enumerate(zip(slots, mix)):
            if other is None or slot.source_kind == "none" or slot.strength <= 0.0:
                continue
            other_t = truncate(other, self.w_avg, controls.truncation_psi)
            m = self.masks[i] * slot.strength  # [L, 1]
            ws = ws + m * (other_t - ws)
        return ws

    def _smoothing_mask(self, controls: Controls) -> torch.Tensor:
        """Per-layer smoothing: the overall and the group's, cascaded (both 0 -> none)."""
        return 1.0 - (1.0 - controls.smoothing) * (1.0 - self._per_layer(controls.group_smoothing))

    def _stage(self, name: str) -> ContextManager[object]:
        if self.stats is None:
            return contextlib.nullcontext()
        if self._sync is None:
            return self.stats.stage(name)
        return _SyncedStage(self.stats.stage(name), self._sync)

    def _fit(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, torch.float32).reshape(-1)
        n = self.window_samples
        if x.numel() >= n:
            return x[-n:]
        return torch.nn.functional.pad(x, (n - x.numel(), 0))


def _clamp_rows(x: torch.Tensor, max_norm: float) -> torch.Tensor:
    norms = x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return x * (max_norm / norms).clamp(max=1.0)


class _SyncedStage:
    """A stage timer that waits for the GPU at both ends of the block."""

    def __init__(self, timer: ContextManager[object], sync: Callable[[], None]) -> None:
        self._timer, self._sync = timer, sync

    def __enter__(self) -> None:
        self._sync()
        self._timer.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._sync()
        self._timer.__exit__(*exc)  # type: ignore[arg-type]
