"""The show: one bundle's models wired into controls -> base latent -> sound step -> frame.

Both drivers use it: the live :class:`vjapp.engine.engine.Engine` thread (wall clock, ring
buffers) and headless ``vjapp render`` (sample clock, a decoded file). It owns the models, so it
must only ever be called from one thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from model.audio_features import LogMel
from model.atlas import AtlasSettings, AtlasSteering, LatentAtlas, Progress, atlas_for, cached_atlas
from model.atlas_classes import scene_steering
from model.bundle import Bundle
from vjapp.audio.rhythm import BeatState
from vjapp.engine.controls import LAYER_GROUPS, Controls, MixSlot
from vjapp.engine.frames import FrameRenderer, to_uint8_batch
from vjapp.engine.interp import LatentTimeline
from vjapp.engine.latents import Crossfade, LatentBank, PromptSearch, truncate
from vjapp.engine.pipeline import Heard, PipelineConfig, SceneLayer, SoundToLatent, StepResult
from vjapp.engine.scene import SceneDynamics
from vjapp.engine.pulses import LatentDirections, PulseEnvelopes, directions_for, pulse_offset
from vjapp.engine.stats import EngineStats

log = logging.getLogger(__name__)

PULSE_SHARPNESS = 2.0  # band strength ** this drives the pulse: strong onsets stand out from weak ones
ON_BEAT_S = 0.07  # an onset this close to a beat of a confident clock counts as on the beat
MIN_CONFIDENCE = 0.3  # below it the clock is not trusted to tell on- from off-beat


def on_beat_weight(state: BeatState | None, offbeat: float) -> float:
    """1 on the beat (within ON_BEAT_S, fading over as long again), ``offbeat`` elsewhere; 1 when
    no confident tempo is known."""
    if state is None or state.confidence < MIN_CONFIDENCE:
        return 1.0
    d = min(state.phase, 1.0 - state.phase) * state.period  # seconds to the nearest beat
    x = min(max((d - ON_BEAT_S) / ON_BEAT_S, 0.0), 1.0)
    return 1.0 - x * (1.0 - offbeat)


def scene_atlas(bundle: Bundle, build: bool = False, settings: AtlasSettings = AtlasSettings(),
                progress: Progress | None = None) -> LatentAtlas | None:
    """The generator's latent atlas for this bundle's CLIP: the cached one, else (``build``) built and
    cached now; None when the bundle has no CLIP to make one, or none is cached and not ``build``.
    (Without F_a the atlas still serves text prompts.)"""
    if bundle.generator is None or bundle.clip is None:
        return None
    root = getattr(bundle, "root", None)
    if build:
        return atlas_for(bundle.generator, bundle.clip, root, settings, progress)
    atlas = cached_atlas(bundle.generator, bundle.clip, root, settings)
    if atlas is None:
        log.info("no latent atlas is cached for this generator: the sound's scene layer is off until one is built")
    return atlas


@dataclass
class ShowConfig:
    """How the show runs (not what the performer plays with: that is :class:`Controls`)."""

    pipeline: PipelineConfig = None  # type: ignore[assignment]
    crossfade_seconds: float = 1.5  # prompt/seed changes glide over this long
    prompt_candidates: int = 24  # latents tried per prompt
    prompt_batch: int = 2  # candidates per advance() call (live: one call between frames)
    interp: str = "cubic"  # W+ interpolation between model steps: "linear" or "cubic"
    scene: SceneDynamics = SceneDynamics()  # how the atlas scene follows the sound
    build_atlas: bool = False  # build the generator's atlas here when it is not cached (minutes on a CPU)
    atlas: AtlasSettings = AtlasSettings()  # which atlas (its size) is looked up or built

    def __post_init__(self) -> None:
        if self.pipeline is None:
            self.pipeline = PipelineConfig()


class Show:
    """Models + latent state for one bundle; call from the engine thread only."""

    def __init__(self, bundle: Bundle, device: torch.device, dtype: torch.dtype,
                 config: ShowConfig | None = None, stats: EngineStats | None = None,
                 atlas: LatentAtlas | None = None) -> None:
        self.config = config or ShowConfig()
        self.bundle = bundle
        self.device = device
        self.stats = stats or EngineStats()
        G = bundle.generator.to(device).eval()
        self.G = G
        self.renderer = FrameRenderer(G, device, dtype, native_size=bundle.info.display_size)
        self.messages: list[str] = []  # user-facing notes (e.g. "no CLIP: prompts disabled")
        self.atlas: LatentAtlas | None = None
        self.sound = SoundToLatent(
            LogMel(bundle.info.mel), bundle.sound_inversion, bundle.predictor,
            G.mapping.w_avg.detach(), bundle.info.layer_groups, device, self.config.pipeline, self.stats,
            scene=None, num_ws=G.num_ws,
        )
        self.num_ws, self.w_dim = G.num_ws, G.w_dim
        self.bank = LatentBank(lambda z: G.mapping(z, truncation_psi=1.0), G.z_dim, device)
        self.clip = bundle.clip.to(device).eval() if bundle.clip is not None else None
        self._psi = 0.7
        self.search: PromptSearch | None = None
        if self.clip is not None:
            self.search = PromptSearch(
                mapping=lambda z: G.mapping(z, truncation_psi=1.0),
                render=lambda ws: self.renderer.images(ws, aspect="1:1"),  # CLIP judges square frames
                encode_image=self.clip.encode_image,
                encode_text=self.clip.encode_text,
                truncate=lambda ws: truncate(ws, self.sound.w_avg, self._psi),
                z_dim=G.z_dim, device=device,
                candidates=self.config.prompt_candidates, batch=self.config.prompt_batch,
            )
        self.attach_atlas(atlas if atlas is not None else scene_atlas(bundle, build=self.config.build_atlas,
                                                                      settings=self.config.atlas))
        self.base = Crossfade(self.bank.for_seed(0), self.config.crossfade_seconds)
        # 32 keyframes: room for offline render's batches of frames ahead of the model steps
        self.timeline = LatentTimeline(self.num_ws, self.w_dim, capacity=32, device=device,
                                       mode=self.config.interp)  # type: ignore[arg-type]
        self.controls = Controls()
        self._mix: list[torch.Tensor | None] = [None, None, None]
        # the rhythm layer: the generator's own directions, pushed by band envelopes at frame time
        self.directions: LatentDirections = directions_for(G, getattr(bundle, "root", None)).to(device)
        self.pulses = PulseEnvelopes()
        self._meaning_note()

    # ---------------------------------------------------------------- the atlas (sound meaning)
    def meaning_off_reason(self) -> str | None:
        """Why the sound's meaning (F_a -> atlas scene) is not playing, or None when it is."""
        b = self.bundle
        if b.clip is None:
            return "this bundle has no CLIP model"
        if b.audio_encoder is None:
            return ("this bundle has no F_a for its CLIP (train one: vjapp-train adapt / clip_audio); "
                    "text prompts still steer through the atlas")
        if int(b.audio_encoder.config.embed_dim) != int(b.clip.embed_dim):
            return (f"F_a embeds into {b.audio_encoder.config.embed_dim} dims but this CLIP into "
                    f"{b.clip.embed_dim}: F_a must be trained for this CLIP (vjapp-train adapt / clip_audio)")
        if self.atlas is None:
            return "the generator's latent atlas is not built yet"
        return None

    def _meaning_note(self) -> None:
        reason = self.meaning_off_reason()
        if reason is not None and self.sound.inversion is None:
            self._note(f"sound meaning off: {reason}; playing the rhythm layer")
        elif reason is not None:
            log.info("atlas scene off: %s", reason)

    def attach_atlas(self, atlas: LatentAtlas | None) -> bool:
        """Use ``atlas`` for the sound's scene layer (when F_a serves this CLIP) and for text prompts;
        engine thread only. Returns True when the sound's scene layer is on."""
        self.atlas = atlas
        if atlas is None:
            return False
        steering = AtlasSteering(atlas)
        if self.search is not None:
            self.search.set_atlas(steering, self.num_ws)
        b = self.bundle
        if self.meaning_off_reason() is not None:
            return False
        self.sound.scene_layer = None
        # the sound's steering also weighs the class the sound is nearest to: by the entries' stored
        # classes where the bundle has them, else by the class prompts
        steering = scene_steering(atlas, b.clip, b.info.labels, getattr(b, "root", None)).to(self.device)
        layer = SceneLayer(b.audio_encoder, steering, self.config.scene, b.info.segment_seconds)
        layer.audio_encoder.to(self.device).eval()
        self.sound.segment_samples = int(round(layer.segment_seconds * self.sound.sample_rate))
        self.sound.scene = None
        self.sound.scene_layer = layer
        return True

    # ---------------------------------------------------------------- controls -> latents
    def apply(self, controls: Controls, now: float, immediate: bool = False, fade_s: float | None = None) -> None:
        """Take new controls: retarget the base latent (crossfading over ``fade_s``, default the
        show's crossfade, unless ``immediate``), resolve the mix sources, resize and reshape the output."""
        self.controls = controls
        self._psi = controls.truncation_psi
        self.renderer.set_size(controls.size)
        self.renderer.set_camera(controls.camera.x, controls.camera.y, controls.camera.rotate)
        self.renderer.set_aspect(controls.aspect)
        self.base.set_target(self._resolve(controls.prompt, controls.seed), now, immediate, fade_s)
        slots: tuple[MixSlot, ...] = (controls.mix.coarse, controls.mix.mid, controls.mix.fine)
        self._mix = [self._resolve_slot(s) for s in slots]

    def _resolve(self, prompt: str, seed: int) -> torch.Tensor:
        if prompt:
            if self.search is None:
                self._note("this bundle has no CLIP model: text prompts are ignored")
            else:
                hit = self.search.request(prompt)
                if hit is not None:
                    return hit.latent
                return self.base.target  # keep the current picture until the search is done
        return self.bank.for_seed(seed)

    def _resolve_slot(self, slot: MixSlot) -> torch.Tensor | None:
        if slot.source_kind == "seed":
            return self.bank.for_seed(slot.seed)
        if slot.source_kind == "prompt" and slot.prompt and self.search is not None:
            hit = self.search.cached(slot.prompt)
            if hit is None and self.search.pending is None:
                self.search.request(slot.prompt)
            return hit.latent if hit is not None else None
        return None

    def _note(self, message: str) -> None:
        if message not in self.messages:
            self.messages.append(message)
            log.warning(message)

    def background_work(self, now: float) -> bool:
        """Advance a pending prompt search by one batch; True if a result arrived."""
        if self.search is None or self.search.pending is None:
            return False
        with self.stats.stage("prompt_search"):
            result = self.search.advance()
        if result is not None:
            self.apply(self.controls, now)
            return True
        return False

    def resolve_prompts(self, controls: Controls) -> None:
        """Finish every search the controls need, now (offline render)."""
        if self.search is None:
            return
        for p in [controls.prompt] + [s.prompt for s in (controls.mix.coarse, controls.mix.mid, controls.mix.fine)
                                       if s.source_kind == "prompt"]:
            if p:
                self.search.resolve(p)

    # ---------------------------------------------------------------- steps and frames
    def reset(self) -> None:
        """Forget the motion so far: predictor state, latent offset, pulses and keyframes."""
        self.sound.reset()
        self.timeline.clear()
        self.pulses.reset()

    def model_step(self, now: float, windows: Sequence[torch.Tensor], heard: Heard | None = None) -> StepResult:
        """One sound step at time ``now`` (from ``windows``, or what was already ``heard``);
        pushes the W+ keyframe for the display."""
        if self.controls.paused:
            windows, heard = [], None
        with self.stats.stage("model_step"):
            if heard is None:
                heard = self.sound.hear(windows, self.controls.source_weights,
                                        self.sound.uses_offsets(self.controls))
            result = self.sound.advance(heard, self.base.value(now), self.controls, self._mix)
        self.timeline.push(now, result.ws)
        self.stats.tick_model()
        return result

    # ---------------------------------------------------------------- rhythm layer
    def listen(self, strengths: Sequence[Sequence[float]], hop_s: float, loudness: float,
               beats: Sequence[BeatState | None] | None = None) -> None:
        """Step the pulse envelopes over analysis hops: each hop's band strengths (0..1), scaled by
        the fast loudness (0..1, raised to twice the loudness reactivity), so quiet sound pulses
        less than loud sound, and by where the hop falls in the beat (``beats``: the clock's state
        at each hop), so onsets on the beat hit hardest and off-beat ones pulse by ``rhythm.offbeat``."""
        r = self.controls.rhythm
        level = loudness ** (2.0 * max(self.controls.loudness_reactivity, 0.0))
        for i, strength in enumerate(strengths):
            w = level * on_beat_weight(beats[i] if beats is not None else None, r.offbeat)
            # strength^k: the strongest onsets (the kick) stand out from weaker ones
            self.pulses.step([x ** PULSE_SHARPNESS * w for x in strength], hop_s, r.attack, r.release)

    def pulse(self) -> torch.Tensor | None:
        """The W+ offset ``[num_ws, w_dim]`` of the pulses now (None when the rhythm layer is off)."""
        r = self.controls.rhythm
        if r.amount <= 0.0 or not self.pulses.value.any():
            return None
        groups = [LAYER_GROUPS.index(b.group) for b in (r.low, r.mid, r.high)]
        return pulse_offset(self.pulses.value, (r.low.gain, r.mid.gain, r.high.gain), groups, r.amount,
                            self.directions, self.sound.masks)

    def camera_now(self) -> tuple[float, float, float]:
        """The camera ``(x, y, rotate)`` now: the controls' plus the rhythm layer's push (the low band's
        envelope, sideways) and turn (the mid band's); StyleGAN3 draws through it."""
        c, r = self.controls.camera, self.controls.rhythm
        env = self.pulses.value
        on = r.amount > 0.0
        return (c.x + (r.camera_push * float(env[0]) if on else 0.0), c.y,
                c.rotate + (r.camera_turn * float(env[1]) if on else 0.0))

    # ---------------------------------------------------------------- frames
    def frame_at(self, t: float, pulse: torch.Tensor | None = None) -> np.ndarray:
        """The uint8 frame ``[H, W, 3]`` for display time ``t``, plus a pulse offset (live: the
        camera follows the pulse envelopes now)."""
        return self.frames_at([t], None if pulse is None else [pulse], [self.camera_now()])[0]

    def ws_at(self, times: Sequence[float], pulses: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        """The W+ ``[B, L, C]`` shown at ``times``: the interpolated semantic latent, plus each
        time's pulse offset ``[num_ws, w_dim]`` (the rhythm layer) where one is given."""
        ws = torch.stack([self.timeline.sample(t) for t in times])  # [B, L, C]
        if pulses is not None:
            for i, p in enumerate(pulses):
                if p is not None:
                    ws[i] += p
        return ws

    def frames_at(self, times: Sequence[float], pulses: Sequence[torch.Tensor | None] | None = None,
                  cameras: Sequence[tuple[float, float, float]] | None = None) -> list[np.ndarray]:
        """Frames for several display times, synthesized as one batch (offline render); each may
        carry a pulse offset (see :meth:`ws_at`) and a camera (:meth:`camera_now` at its time)."""
        with self.stats.stage("interpolate"):
            ws = self.ws_at(times, pulses)
        return self.frames_of(ws, cameras)

    def frames_of(self, ws: torch.Tensor, cameras: Sequence[tuple[float, float, float]] | None = None
                  ) -> list[np.ndarray]:
        """Frames of W+ ``[B, L, C]`` (e.g. from :func:`vjapp.engine.offline.latents_at`), one batch."""
        with self.stats.stage("synthesis"):
            imgs = self.renderer.images(ws, self.controls.noise_mode, cameras=cameras, channels_last=True)
        with self.stats.stage("to_uint8"):
            frames = to_uint8_batch(imgs)
        for _ in frames:
            self.stats.tick_display()
        return frames
