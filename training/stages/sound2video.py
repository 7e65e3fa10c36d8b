"""``vjapp-train sound2video``: train E_a and the recurrent predictor with G, CLIP and F_a frozen.

The method (Sound-guided Semantic Video Generation, ECCV 2022, eq. 2, 3, 7-9), trained the way
the live app uses it: for each batch of sequences of ``T`` consecutive audio segments,

1. cut the live model's windows (``substeps = segment_seconds * model_rate`` steps per segment,
   the step at the end of segment ``t`` reads exactly segment ``t``: :func:`training.baselines.live_windows`);
2. log-mel each window with the bundle's frontend, Δ = E_a(mel) for all windows at once;
3. unroll the predictor from a base latent (random z through G.mapping, raw, as the live
   LatentBank) with the live offset dynamics (:func:`training.baselines.sound_rollout`, shown
   equal to :class:`vjapp.engine.pipeline.SoundToLatent` step by step in the tests);
4. render the segment-end latents, truncated as live, with the frozen synthesis network — all
   ``B*T`` frames in one batch, optionally only up to ``--render-size`` (StyleGAN2's skip output
   at a lower resolution: the CLIP input is small, and the top blocks are the expensive ones),
   with ``--clip-full-frames`` random segments of each sequence also rendered at full resolution
   for the CLIP losses (the preview is not the picture the show draws: the top blocks add a lot);
5. L_enc = λ_a (1 − cos(F_v(G(ŵ_t)), F_a(x_t))) + λ_t (1 − cos(F_v(G(ŵ_t)), F_t(caption)))
   + λ_b ‖ŵ − w̄‖² (w̄ the mean over the sequence), plus non-saturating adversarial terms of an
   image discriminator (StyleGAN2 residual D on frames) and a video discriminator (3D patch D on
   ``[B, 3, T, H, W]``), trained against real frames of the same clips, with lazy R1;
6. optionally (``--lambda-palette``) a palette term, after Sound2Scene's use of the paired frame:
   the L1 distance between the colour layout (mean colours of a ``--palette-grid`` grid) of each
   generated frame and that of the real frame of the same clip and segment. The CLIP losses alone
   let E_a settle on whatever a small CLIP names as the class (the tiny default CLIP calls a black
   frame "raining"); the real frames of the class say what it looks like.

``--init-from BUNDLE`` starts E_a and the predictor from that bundle's trained parts (e.g. to
fine-tune the embedded default on a new generator or with other losses) instead of from scratch;
a checkpoint in the run folder still takes precedence, so such a run resumes like any other.

Only E_a and the predictor learn; the gradient of the CLIP and adversarial terms flows through
the frozen CLIP image tower and generator into ŵ. The result is written into the bundle as the
``sound_inversion`` and ``predictor`` parts, and ``bundle.json`` records them as trained.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.audio_features import LogMel
from model.discriminators import (
    Discriminator,
    DiscriminatorConfig,
    VideoDiscriminator,
    VideoDiscriminatorConfig,
)
from model.stylegan2 import Generator
from training.losses import cosine_distance, palette_distance
from training.run import TrainingError
from training.baselines import (
    LiveDynamics,
    live_windows,
    loudness_units,
    sound_rollout,
    substeps_per_segment,
    truncate_sequence,
)

log = logging.getLogger(__name__)

STAGE = "sound2video"


class Sound2VideoError(TrainingError, ValueError):
    """The bundle, data or options do not fit this stage (a TrainingError: the CLI prints it)."""


@dataclass
class Sound2VideoConfig:
    """Hyperparameters of the sound2video stage; saved with every checkpoint."""

    segments: int = 8  # T: segments per training sequence
    batch_size: int = 4  # sequences per step (per process)
    steps: int = 4000  # optimisation steps
    lr: float = 1e-4  # Adam learning rate of E_a and the predictor
    d_lr: float = 2e-4  # Adam learning rate of the discriminators
    lambda_audio: float = 1.0  # weight of 1 - cos(F_v(G(ŵ)), F_a(x))
    lambda_text: float = 1.0  # weight of 1 - cos(F_v(G(ŵ)), F_t(caption))
    lambda_b: float = 0.01  # weight of the latent spread ‖ŵ − w̄‖² (per w, squared L2)
    lambda_img_adv: float = 0.05  # weight of the image discriminator's generator loss
    lambda_vid_adv: float = 0.05  # weight of the video discriminator's generator loss
    lambda_palette: float = 0.0  # weight of the palette term (colour layout vs the paired real frame)
    lambda_atlas: float = 0.0  # weight of the distance to the atlas scene of the segment's sound (the manifold)
    palette_grid: int = 4  # the palette term's grid (cells per side)
    r1_gamma: float = 1.0  # R1 penalty on real data (both discriminators); 0 = off
    r1_interval: int = 8  # lazy R1: every N discriminator steps (scaled by N)
    truncation_psi: float = 0.7  # truncation when rendering (the live default)
    model_rate: float = 0.0  # live model steps per second; 0 = the bundle's
    render_size: int = 0  # render size for the losses (a power of two <= G's); 0 = G's resolution
    clip_full_frames: int = 0  # frames per sequence also rendered at G's full resolution for the CLIP losses
    d_channel_base: int = 4096  # image discriminator channel_base
    d_channel_max: int = 128  # image discriminator channel_max
    video_channels: tuple[int, ...] = (32, 64, 128)  # video discriminator channels per layer
    seed: int = 0  # base latents, data order

    def __post_init__(self) -> None:
        self.video_channels = tuple(int(c) for c in self.video_channels)
        for name in ("segments", "batch_size", "steps", "r1_interval", "d_channel_base", "d_channel_max",
                     "palette_grid"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise Sound2VideoError(f"{name} must be a positive int, got {v!r}")
        for name in ("lr", "d_lr"):
            if not getattr(self, name) > 0:
                raise Sound2VideoError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("lambda_audio", "lambda_text", "lambda_b", "lambda_img_adv", "lambda_vid_adv",
                     "lambda_palette", "lambda_atlas", "r1_gamma", "model_rate"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise Sound2VideoError(f"{name} must be a finite number >= 0, got {v!r}")
        if isinstance(self.render_size, bool) or not isinstance(self.render_size, int) or self.render_size < 0 or (
                self.render_size and (self.render_size < 4 or self.render_size & (self.render_size - 1))):
            raise Sound2VideoError(f"render_size must be 0 or a power of two >= 4, got {self.render_size!r}")
        if isinstance(self.clip_full_frames, bool) or not isinstance(self.clip_full_frames, int) or not (
                0 <= self.clip_full_frames <= self.segments):
            raise Sound2VideoError(f"clip_full_frames must be an int in [0, segments={self.segments}], "
                                   f"got {self.clip_full_frames!r}")


# ------------------------------------------------------------------------------------------------
# Losses


def atlas_distance(ws: torch.Tensor, target: torch.Tensor, spread: float) -> torch.Tensor:
    """Mean squared distance of W+ latents ``[N, L, C]`` from the atlas scene ``[N, C]`` of their sound
    (every layer), in units of the atlas' own spread (the typical distance between two samples over
    sqrt 2): 0 on the scene, about 2 for an unrelated sample of the generator."""
    return ((ws.float() - target.float()[:, None]).pow(2).sum(-1) / (spread ** 2)).mean()


def latent_spread(ws: torch.Tensor) -> torch.Tensor:
    """‖ŵ − w̄‖² of eq. 9: ``[B, T, L, C]`` → scalar, the squared L2 distance of each w from its
    sequence mean, averaged over batch, time and W+ layers (keeps a sequence near one scene)."""
    if ws.dim() != 4:
        raise Sound2VideoError(f"latent_spread expects [B, T, L, C], got {tuple(ws.shape)}")
    return (ws - ws.mean(dim=1, keepdim=True)).square().sum(dim=-1).mean()


def g_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Generator side of the non-saturating GAN loss: mean softplus(−D(fake))."""
    return F.softplus(-fake_logits).mean()


def d_nonsaturating(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator side: mean softplus(D(fake)) + mean softplus(−D(real))."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def r1_penalty(real: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """R1: mean over samples of ‖∇_x D(x)‖² on real data (``real`` must require grad)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


# ------------------------------------------------------------------------------------------------
# Rendering


def synthesize_at(synthesis: nn.Module, ws: torch.Tensor, size: int, noise_mode: str = "const") -> torch.Tensor:
    """StyleGAN2 synthesis stopped at resolution ``size``: ``[N, L, C]`` → ``[N, 3, size, size]``.

    The skip architecture sums every block's toRGB output, so the running image after the
    block of resolution ``size`` is the picture at that resolution before the finer blocks add
    their detail: the CLIP input (small anyway) for a fraction of the cost. The ws of the skipped
    blocks get no gradient from what is computed on it. ``size`` = G's resolution is the full
    synthesis.
    """
    if size >= synthesis.img_resolution:
        return synthesis(ws, noise_mode=noise_mode)
    synthesis.check_ws(ws)
    ws = ws.to(torch.float32)
    x = img = None
    w_idx = 0
    for res in synthesis.block_resolutions:
        if res > size:
            break
        block = getattr(synthesis, f"b{res}")
        x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), noise_mode)
        w_idx += block.num_conv
    assert img is not None
    return img


class SoundToVideo(nn.Module):
    """E_a + predictor as one module (so DDP sees one forward): mels, base, loudness → W+ steps."""

    def __init__(self, inversion: nn.Module, predictor: nn.Module, dynamics: LiveDynamics) -> None:
        super().__init__()
        self.inversion = inversion
        self.predictor = predictor
        self.dynamics = dynamics

    def forward(self, mels: torch.Tensor, base: torch.Tensor, loudness: torch.Tensor) -> torch.Tensor:
        # [B, N, n_mels, F], [B, L, C], [B, N] -> [B, N, L, C]
        return sound_rollout(self.inversion, self.predictor, mels, base, loudness, self.dynamics)


@dataclass
class Frozen:
    """The frozen networks the losses need (eval mode, no gradients of their own)."""

    generator: Generator
    clip: nn.Module
    audio_encoder: nn.Module
    logmel: LogMel

    def __post_init__(self) -> None:
        for m in (self.generator, self.clip, self.audio_encoder, self.logmel):
            m.eval().requires_grad_(False)


def default_discriminators(config: Sound2VideoConfig, size: int, segments: int) -> tuple[Discriminator, VideoDiscriminator]:
    """The image and video discriminators for frames of ``size`` px and ``segments`` frames."""
    channels = tuple(config.video_channels)
    while len(channels) > 1 and 2 ** len(channels) > size:
        channels = channels[:-1]
    strides = tuple(2 if (i > 0 and segments >= 2 ** (i + 1)) else 1 for i in range(len(channels)))
    d_img = Discriminator(DiscriminatorConfig(
        resolution=size, channel_base=config.d_channel_base, channel_max=config.d_channel_max,
        mbstd_group_size=min(4, config.batch_size * segments),
    ))
    d_vid = VideoDiscriminator(VideoDiscriminatorConfig(channels=channels, time_strides=strides))
    return d_img, d_vid


class Sound2VideoTrainer:
    """One optimisation step at a time: the E_a + predictor update, then the discriminators'.

    Data parallel: each rank computes its gradients, :func:`average_gradients` averages them
    (no DDP wrappers, as in the generator stage). ``rank`` varies the base latents per process.
    ``autocast`` (e.g. :meth:`training.run.Run.autocast`) wraps the E_a/predictor step's forward
    pass; the discriminator step (with R1) stays in float32.
    """

    def __init__(
        self,
        config: Sound2VideoConfig,
        frozen: Frozen,
        model: nn.Module,
        d_img: nn.Module,
        d_vid: nn.Module,
        substeps: int,
        render_size: int,
        device: torch.device,
        rank: int = 0,
        autocast: Callable[[], ContextManager[Any]] | None = None,
        steering: Any = None,
    ) -> None:
        """``steering`` (:class:`model.atlas.AtlasSteering`, needed when ``config.lambda_atlas > 0``): the
        generator's latent atlas as the show's scene layer steers through it."""
        if config.lambda_atlas > 0 and steering is None:
            raise Sound2VideoError("lambda_atlas > 0 needs the generator's latent atlas (steering)")
        self.steering = steering
        self.config = config
        self.autocast = autocast or contextlib.nullcontext
        self.frozen = frozen
        self.model = model
        self.d_img = d_img
        self.d_vid = d_vid
        self.substeps = substeps
        self.render_size = render_size
        self.palette_grid = min(config.palette_grid, render_size)
        self.device = device
        self.use_adv = config.lambda_img_adv > 0 or config.lambda_vid_adv > 0
        self.opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=config.lr, betas=(0.9, 0.99))
        d_params = [p for m in (d_img, d_vid) for p in m.parameters()]
        self.d_opt = torch.optim.Adam(d_params, lr=config.d_lr, betas=(0.0, 0.99))
        self.step_count = 0
        self.last_fake: torch.Tensor | None = None  # the newest step's frames [B*T, 3, r, r]
        self._text_cache: dict[str, torch.Tensor] = {}
        self._z_gen = torch.Generator().manual_seed(config.seed + 12345 + 1000003 * rank)
        self._pick_gen = torch.Generator().manual_seed(config.seed + 54321 + 1000003 * rank)

    # -- pieces ----------------------------------------------------------------------------------
    @torch.no_grad()
    def text_embeddings(self, captions: Sequence[str]) -> torch.Tensor:
        """F_t of each caption ``[B, D]``, cached per distinct caption."""
        missing = sorted({c for c in captions if c not in self._text_cache})
        if missing:
            emb = self.frozen.clip.encode_text(missing).float()
            for c, e in zip(missing, emb):
                self._text_cache[c] = e
        return torch.stack([self._text_cache[c] for c in captions]).to(self.device)

    @torch.no_grad()
    def base_latents(self, batch: int) -> torch.Tensor:
        """Raw base latents ``[B, L, C]`` from random z (as the live LatentBank, truncation later)."""
        G = self.frozen.generator
        z = torch.randn(batch, G.z_dim, generator=self._z_gen).to(self.device)
        return G.mapping(z, truncation_psi=1.0)

    def render(self, ws: torch.Tensor) -> torch.Tensor:
        """Raw ``[N, L, C]`` → truncated as live → images ``[N, 3, r, r]`` (r = render size)."""
        G = self.frozen.generator
        return synthesize_at(G.synthesis, truncate_sequence(ws, G.mapping.w_avg, self.config.truncation_psi),
                             self.render_size)

    def render_full(self, ws: torch.Tensor) -> torch.Tensor:
        """Raw ``[N, L, C]`` → truncated as live → images at G's full resolution, as the show draws them."""
        G = self.frozen.generator
        return G.synthesis(truncate_sequence(ws, G.mapping.w_avg, self.config.truncation_psi), noise_mode="const")

    def full_frame_picks(self, b: int, t: int) -> torch.Tensor | None:
        """Indices into the ``B*T`` frames of a step that the CLIP losses also see at full resolution.

        The render-size preview of the skip architecture is the picture before the finer blocks add
        theirs, and the finer blocks add a lot: on the 128 px default the 32 px preview differs from
        the downsampled full frame by a third of its magnitude, and E_a learned previews that the
        CLIP names right (92% top-1) whose full frames it does not (55%). So ``clip_full_frames``
        random segments of each sequence are also rendered as the show renders them. ``None`` when
        off, or when the preview already is the full frame.
        """
        k = self.config.clip_full_frames
        if k <= 0 or self.render_size >= self.frozen.generator.img_resolution:
            return None
        cols = torch.stack([torch.randperm(t, generator=self._pick_gen)[:k] for _ in range(b)])  # [B, k]
        return (cols + torch.arange(b)[:, None] * t).flatten().to(self.device)

    def real_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Dataset frames ``[B, T, 3, H, W]`` → ``[B*T, 3, r, r]`` at the render size."""
        x = frames.to(self.device, torch.float32).flatten(0, 1)
        if x.shape[-1] != self.render_size or x.shape[-2] != self.render_size:
            x = F.interpolate(x, size=(self.render_size, self.render_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.render_size)
        return x

    # -- the step --------------------------------------------------------------------------------
    def step(self, audio: torch.Tensor, frames: torch.Tensor, captions: Sequence[str]) -> dict[str, float]:
        """One training step on ``audio [B, T, S]``, ``frames [B, T, 3, H, W]``, ``captions`` (B strings)."""
        c = self.config
        audio = audio.to(self.device, torch.float32)
        if audio.dim() != 3:
            raise Sound2VideoError(f"audio batch must be [B, T, S], got {tuple(audio.shape)}")
        b, t = audio.shape[:2]
        if len(captions) != b:
            raise Sound2VideoError(f"{len(captions)} captions for a batch of {b}")
        windows, seg_steps = live_windows(audio, self.substeps)  # [B, N, S], [T]
        n = windows.shape[1]
        with torch.no_grad():
            mels = self.frozen.logmel(windows.reshape(b * n, -1))  # [B*N, n_mels, F]
            mels = mels.view(b, n, *mels.shape[1:])
            dyn = self.model.dynamics
            loud = loudness_units(windows, dyn.level_quiet_db, dyn.level_loud_db)  # [B, N], as the show scales it
            audio_emb = self.frozen.audio_encoder(mels[:, seg_steps].flatten(0, 1)).float()  # [B*T, D]
            text_emb = self.text_embeddings(list(captions)).repeat_interleave(t, dim=0)  # [B*T, D]
        base = self.base_latents(b)
        real = self.real_frames(frames)  # [B*T, 3, r, r]: the palette term and the discriminators' reals

        # E_a + predictor update
        self.model.train()
        with self.autocast():
            ws_all = self.model(mels, base, loud).float()  # [B, N, L, C]
            ws_seg = ws_all[:, seg_steps]  # [B, T, L, C]
            fake = self.render(ws_seg.flatten(0, 1))  # [B*T, 3, r, r]
            img_emb = self.frozen.clip.encode_image(fake).float()  # [B*T, D]
            loss_audio = cosine_distance(img_emb, audio_emb).mean()
            loss_text = cosine_distance(img_emb, text_emb).mean()
            stats = {"loss_audio": loss_audio, "loss_text": loss_text}
            picks = self.full_frame_picks(b, t)
            if picks is not None:  # the CLIP losses average the preview and the full frames
                full = self.render_full(ws_seg.flatten(0, 1)[picks])  # [B*k, 3, R, R]
                full_emb = self.frozen.clip.encode_image(full).float()
                full_audio = cosine_distance(full_emb, audio_emb[picks]).mean()
                full_text = cosine_distance(full_emb, text_emb[picks]).mean()
                stats.update(full_audio=full_audio, full_text=full_text)
                loss_audio = (loss_audio + full_audio) / 2
                loss_text = (loss_text + full_text) / 2
            loss_b = latent_spread(ws_all)
            loss = c.lambda_audio * loss_audio + c.lambda_text * loss_text + c.lambda_b * loss_b
            stats["loss_spread"] = loss_b
            if c.lambda_atlas > 0:  # the manifold: each segment's latent near the atlas scene of its sound
                with torch.no_grad():
                    target = self.steering.target(audio_emb).to(self.device)  # [B*T, C] raw w
                loss_atlas = atlas_distance(ws_seg.flatten(0, 1), target, self.steering.spread)
                loss = loss + c.lambda_atlas * loss_atlas
                stats["loss_atlas"] = loss_atlas
            if c.lambda_palette > 0:  # the paired real frame's colour layout, preview and full frames alike
                loss_palette = palette_distance(fake, real, self.palette_grid).mean()
                stats["palette_preview"] = loss_palette
                if picks is not None:
                    full_palette = palette_distance(full, real[picks], self.palette_grid).mean()
                    stats["palette_full"] = full_palette
                    loss_palette = (loss_palette + full_palette) / 2
                loss = loss + c.lambda_palette * loss_palette
                stats["loss_palette"] = loss_palette
            if self.use_adv:
                self.d_img.requires_grad_(False)
                self.d_vid.requires_grad_(False)
                g_img = g_nonsaturating(self.d_img(fake).float())
                g_vid = g_nonsaturating(self.d_vid(_as_clips(fake, b, t)).float())
                loss = loss + c.lambda_img_adv * g_img + c.lambda_vid_adv * g_vid
                stats.update(g_img_adv=g_img, g_vid_adv=g_vid)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients([self.model])
        stats["grad_norm"] = torch.nn.utils.clip_grad_norm_(
            [p for p in self.model.parameters() if p.requires_grad], 10.0)
        self.opt.step()
        stats["loss"] = loss

        if self.use_adv:
            stats.update(self._d_step(real, fake.detach().float(), b, t))
        self.step_count += 1
        self.last_fake = fake.detach().float()
        with torch.no_grad():
            stats["latent_motion"] = (ws_seg[:, 1:] - ws_seg[:, :-1]).norm(dim=-1).mean() if t > 1 else ws_seg.new_zeros(())
        return {k: float(v.detach()) for k, v in stats.items()}

    def _d_step(self, real: torch.Tensor, fake: torch.Tensor, b: int, t: int) -> dict[str, torch.Tensor]:
        c = self.config
        self.d_img.requires_grad_(True)
        self.d_vid.requires_grad_(True)
        do_r1 = c.r1_gamma > 0 and self.step_count % c.r1_interval == 0
        real = real.detach().requires_grad_(do_r1)  # [B*T, 3, r, r]
        real_clips = _as_clips(real, b, t)
        real_img_logits = self.d_img(real)
        real_vid_logits = self.d_vid(real_clips)
        d_img = d_nonsaturating(real_img_logits, self.d_img(fake))
        d_vid = d_nonsaturating(real_vid_logits, self.d_vid(_as_clips(fake, b, t)))
        loss = d_img + d_vid
        out = {"d_img": d_img, "d_vid": d_vid}
        if do_r1:
            r1 = r1_penalty(real, real_img_logits) + r1_penalty(real, real_vid_logits)
            loss = loss + (c.r1_gamma / 2) * c.r1_interval * r1
            out["r1"] = r1
        self.d_opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients([self.d_img, self.d_vid])
        self.d_opt.step()
        return out


def _as_clips(images: torch.Tensor, b: int, t: int) -> torch.Tensor:
    """``[B*T, 3, H, W]`` → ``[B, 3, T, H, W]`` for the video discriminator."""
    return images.view(b, t, *images.shape[1:]).transpose(1, 2)


# ------------------------------------------------------------------------------------------------
# Data-parallel gradient averaging (DDP wrappers are not used: the discriminators need
# requires_grad toggled per step and a double backward for R1, both unsafe under DDP — the
# generator stage does the same)


def average_gradients(modules: Sequence[nn.Module]) -> None:
    """Average the gradients of ``modules`` over the ranks with one flat all-reduce (no-op alone)."""
    from training.distributed import get_world_size, is_distributed

    if not is_distributed():
        return
    import torch.distributed as dist

    grads = [p.grad for m in modules for p in m.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= get_world_size()
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


# ------------------------------------------------------------------------------------------------
# The stage: options, bundle in, bundle out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``vjapp-train sound2video`` (plus the common ones)."""
    from training.run import add_common_arguments

    add_common_arguments(parser, steps=4000, batch_size=4, lr=1e-4, ckpt_every=250, log_every=10, sample_every=250)
    d = Sound2VideoConfig()
    g = parser.add_argument_group("sound2video")
    g.add_argument("--segments", type=int, default=d.segments, help="T: audio segments (and frames) per sequence")
    g.add_argument("--split", default="train", help="data split to train on")
    g.add_argument("--cache-dir", type=Path, default=None, help="decoded-clip cache of the dataset")
    g.add_argument("--lambda-audio", type=float, default=d.lambda_audio, help="weight of 1-cos(F_v(G(w)), F_a(x))")
    g.add_argument("--lambda-text", type=float, default=d.lambda_text, help="weight of 1-cos(F_v(G(w)), F_t(caption))")
    g.add_argument("--lambda-b", type=float, default=d.lambda_b, help="weight of the latent spread |w - mean w|^2")
    g.add_argument("--lambda-img-adv", type=float, default=d.lambda_img_adv, help="weight of the image D loss (0: off)")
    g.add_argument("--lambda-vid-adv", type=float, default=d.lambda_vid_adv, help="weight of the video D loss (0: off)")
    g.add_argument("--lambda-palette", type=float, default=d.lambda_palette,
                   help="weight of the palette term: colour layout of each frame vs the real frame of the same "
                        "clip and segment (0: off)")
    g.add_argument("--palette-grid", type=int, default=d.palette_grid, help="the palette term's grid (cells per side)")
    g.add_argument("--lambda-atlas", type=float, default=d.lambda_atlas,
                   help="weight of the atlas term: each segment's latent near the scene the show's atlas steers to "
                        "for its sound (keeps E_a's offsets on the generator's manifold; 0: off)")
    g.add_argument("--init-from", type=Path, default=None,
                   help="start E_a and the predictor from this bundle's parts instead of from scratch (their "
                        "architecture options then come from it; a checkpoint in the run folder still wins)")
    g.add_argument("--d-lr", type=float, default=d.d_lr, help="learning rate of the discriminators")
    g.add_argument("--r1-gamma", type=float, default=d.r1_gamma, help="R1 weight of both discriminators (0: off)")
    g.add_argument("--r1-interval", type=int, default=d.r1_interval, help="lazy R1 every N steps")
    g.add_argument("--truncation-psi", type=float, default=d.truncation_psi, help="truncation when rendering (as live)")
    g.add_argument("--model-rate", type=float, default=d.model_rate,
                   help="live model steps per second to train with (0: the bundle's)")
    g.add_argument("--render-size", type=int, default=d.render_size,
                   help="render the losses' frames at this size (power of two; 0: the generator's)")
    g.add_argument("--clip-full-frames", type=int, default=d.clip_full_frames,
                   help="segments per sequence the CLIP losses also see at the generator's full resolution, "
                        "as the show draws them (0: only the --render-size preview)")
    g.add_argument("--d-channel-base", type=int, default=d.d_channel_base, help="image D channel_base")
    g.add_argument("--d-channel-max", type=int, default=d.d_channel_max, help="image D channel_max")
    g.add_argument("--video-channels", type=int, nargs="+", default=list(d.video_channels),
                   help="video D channels per strided 3D conv layer")
    g.add_argument("--encoder-channels", type=int, nargs="+", default=[32, 64, 128, 256],
                   help="E_a ResNet stage channels")
    g.add_argument("--head-hidden", type=int, default=256, help="E_a group-head hidden width")
    g.add_argument("--rnn-hidden", type=int, default=256, help="predictor hidden width per group")
    g.add_argument("--cell", choices=("gru", "lstm"), default="gru", help="predictor recurrent cell")


def config_from_args(args: argparse.Namespace) -> Sound2VideoConfig:
    """The stage config from parsed options (Sound2VideoError for a bad value)."""
    return Sound2VideoConfig(
        segments=args.segments, batch_size=args.batch_size, steps=args.steps, lr=args.lr, d_lr=args.d_lr,
        lambda_audio=args.lambda_audio, lambda_text=args.lambda_text, lambda_b=args.lambda_b,
        lambda_img_adv=args.lambda_img_adv, lambda_vid_adv=args.lambda_vid_adv,
        lambda_palette=args.lambda_palette, lambda_atlas=args.lambda_atlas, palette_grid=args.palette_grid, r1_gamma=args.r1_gamma,
        r1_interval=args.r1_interval, truncation_psi=args.truncation_psi, model_rate=args.model_rate,
        render_size=args.render_size, clip_full_frames=args.clip_full_frames,
        d_channel_base=args.d_channel_base, d_channel_max=args.d_channel_max,
        video_channels=tuple(args.video_channels), seed=args.seed,
    )


@dataclass
class BundleSettings:
    """What this stage reads from the bundle under construction (``training.json`` / ``bundle.json``)."""

    mel: Any
    labels: tuple[str, ...]
    model_rate: float
    segment_seconds: float
    layer_groups: tuple[tuple[int, int], ...]


def bundle_settings(out_dir: Path, num_ws: int) -> BundleSettings:
    """Mel settings, labels, rates and layer groups recorded in the bundle so far."""
    from model.audio_features import MelConfig
    from model.bundle import DEFAULT_MODEL_RATE, DEFAULT_SEGMENT_SECONDS
    from model.formats import config_from_dict
    from model.latent_rnn import default_layer_groups, validate_layer_groups
    from training.bundle_io import DEFAULT_MEL, read_training_json

    info = read_training_json(out_dir)["info"]
    mel = config_from_dict(MelConfig, info["mel"]) if info.get("mel") else DEFAULT_MEL
    groups = info.get("layer_groups")
    groups = validate_layer_groups(groups, num_ws) if groups else default_layer_groups(num_ws)
    return BundleSettings(
        mel=mel, labels=tuple(info.get("labels") or ()),
        model_rate=float(info.get("model_rate", DEFAULT_MODEL_RATE)),
        segment_seconds=float(info.get("segment_seconds", DEFAULT_SEGMENT_SECONDS)),
        layer_groups=groups,
    )


def initial_parts(bundle_dir: Path, settings: BundleSettings, num_ws: int,
                  w_dim: int) -> tuple[nn.Module, nn.Module]:
    """E_a and the predictor of ``bundle_dir`` (``--init-from``), checked against the bundle being trained.

    Their architecture is theirs; what must agree with this bundle is what they read and write:
    the mel bands, num_ws, w_dim and the layer groups. Trainable, in train mode.
    """
    from model.formats import CheckpointError
    from training.bundle_io import read_part

    try:
        inversion = read_part(bundle_dir, "sound_inversion")
        predictor = read_part(bundle_dir, "predictor")
    except CheckpointError as exc:
        raise Sound2VideoError(f"--init-from {bundle_dir}: {exc}") from exc
    want = {"n_mels": settings.mel.n_mels, "num_ws": num_ws, "w_dim": w_dim,
            "groups": tuple(tuple(g) for g in settings.layer_groups)}
    have = {"n_mels": inversion.config.n_mels, "num_ws": inversion.config.num_ws, "w_dim": inversion.config.w_dim,
            "groups": tuple(tuple(g) for g in inversion.config.groups)}
    p_have = {"num_ws": predictor.config.num_ws, "w_dim": predictor.config.w_dim,
              "groups": tuple(tuple(g) for g in predictor.config.groups)}
    wrong = [f"E_a {k} {have[k]} (this bundle needs {want[k]})" for k in want if have[k] != want[k]]
    wrong += [f"predictor {k} {p_have[k]} (this bundle needs {want[k]})" for k in p_have if p_have[k] != want[k]]
    if wrong:
        raise Sound2VideoError(f"--init-from {bundle_dir}: its parts do not fit this bundle: " + "; ".join(wrong))
    log.info("sound2video: E_a and predictor start from %s", bundle_dir)
    for m in (inversion, predictor):
        m.train().requires_grad_(True)
    return inversion, predictor


def _resolve_render_size(config: Sound2VideoConfig, resolution: int) -> int:
    size = config.render_size or resolution
    if size > resolution:
        raise Sound2VideoError(f"--render-size {size} is larger than the generator's {resolution} px")
    return size


def _scene_steering(G: nn.Module, clip: nn.Module, bundle_dir: Path, labels: list[str], device: torch.device) -> Any:
    """The atlas steering the show's scene layer uses for this bundle (:func:`model.atlas_classes.scene_steering`;
    the atlas built and cached beside it when missing)."""
    from model.atlas import atlas_for
    from model.atlas_classes import scene_steering

    steering = scene_steering(atlas_for(G, clip, bundle_dir), clip, labels, bundle_dir)
    log.info("sound2video: the atlas term steers by %s", "the entries' stored classes" if steering.classed
             else "the class prompts" if steering.anchors is not None else "F_a alone")
    return steering.to(device)


def run(args: argparse.Namespace) -> int:
    """Train E_a + predictor into the bundle ``--out`` (which must hold generator, clip and audio_encoder)."""
    from model.latent_rnn import LatentRNN, LatentRNNConfig
    from model.sound_inversion import SoundInversionConfig, SoundInversionEncoder
    from training.bundle_io import read_part, record_eval
    from training.data.video_folder import SequenceDataset
    from training.distributed import loop_batches, make_loader
    from training.run import Run

    config = config_from_args(args)
    if args.out is None or not Path(args.out).is_dir():
        raise TrainingError(f"--out {args.out}: the bundle directory does not exist; run the clip, audio and "
                            "generator stages first")
    with Run(args, STAGE, config) as run:
        dev = run.device
        G = read_part(args.out, "generator", dev)
        clip = read_part(args.out, "clip", dev)
        fa = read_part(args.out, "audio_encoder", dev)
        settings = bundle_settings(Path(args.out), G.num_ws)
        if fa.config.n_mels != settings.mel.n_mels:
            raise TrainingError(f"audio_encoder has n_mels={fa.config.n_mels} but the bundle's mel settings say "
                                f"{settings.mel.n_mels}")
        render_size = _resolve_render_size(config, G.img_resolution)
        rate = config.model_rate or settings.model_rate
        substeps = substeps_per_segment(settings.segment_seconds, rate)
        frozen = Frozen(G, clip, fa, LogMel(settings.mel).to(dev))

        if args.init_from is not None:
            inversion, predictor = initial_parts(Path(args.init_from), settings, G.num_ws, G.w_dim)
        else:
            torch.manual_seed(config.seed)  # same initial weights on every rank
            inversion = SoundInversionEncoder(SoundInversionConfig(
                n_mels=settings.mel.n_mels, num_ws=G.num_ws, w_dim=G.w_dim, channels=tuple(args.encoder_channels),
                head_hidden=args.head_hidden, groups=settings.layer_groups,
            ))
            predictor = LatentRNN(LatentRNNConfig(
                num_ws=G.num_ws, w_dim=G.w_dim, hidden_dim=args.rnn_hidden, groups=settings.layer_groups,
                cell=args.cell,
            ))
        model = SoundToVideo(inversion, predictor, LiveDynamics.live()).to(dev)
        d_img, d_vid = default_discriminators(config, render_size, config.segments)
        d_img, d_vid = d_img.to(dev), d_vid.to(dev)
        Run.seed_everything(run.seed + run.rank)
        autocast = run.autocast
        if run.scaler is not None:  # fp16 needs loss scaling, which this stage does not do: stay in fp32
            log.warning("sound2video: --amp with fp16 is not supported (no bf16 on this GPU); training in float32")
            autocast = contextlib.nullcontext
        steering = _scene_steering(G, clip, Path(args.out), list(settings.labels), dev) if config.lambda_atlas > 0 \
            else None
        trainer = Sound2VideoTrainer(config, frozen, model, d_img, d_vid, substeps, render_size, dev,
                                     rank=run.rank, autocast=autocast, steering=steering)

        dataset = SequenceDataset(
            args.data, split=args.split, fps=1.0 / settings.segment_seconds, size=render_size,
            sample_rate=settings.mel.sample_rate, segments=config.segments,
            segment_seconds=settings.segment_seconds, cache_dir=args.cache_dir,
            labels=list(settings.labels) or None,
        )
        models = {"inversion": inversion, "predictor": predictor, "d_img": d_img, "d_vid": d_vid}
        optims = {"opt": trainer.opt, "d_opt": trainer.d_opt}
        start = run.load_checkpoint(models, optims) or 0
        trainer.step_count = start
        loader = make_loader(dataset, run.batch_size, shuffle=True, seed=run.seed, drop_last=True,
                             num_workers=args.num_workers)
        batches = loop_batches(loader, start_epoch=start // max(1, len(loader)))
        meta = {"segments": config.segments, "substeps": substeps, "model_rate": rate, "render_size": render_size,
                "dynamics": dataclasses.asdict(model.dynamics)}
        if args.init_from is not None:
            meta["init_from"] = str(args.init_from)
        last: dict[str, float] = {}
        for step in run.steps_from(start):
            batch = next(batches)
            last = trainer.step(batch["audio"], batch["frames"], list(batch["caption"]))
            run.check_finite(step, loss=last["loss"])
            if run.should(step, args.log_every) or step == run.steps:
                run.log_scalars(step, last)
            if run.should(step, args.sample_every):
                run.log_images(step, "sound2video", trainer.last_fake, nrow=config.segments)
            if run.checkpoint_due(step):
                run.save_checkpoint(step, models, optims)
                if not run.completed and step < run.steps:
                    run.write_part("sound_inversion", inversion, trained=False, metadata=meta)
                    run.write_part("predictor", predictor, trained=False, metadata=meta)
        run.write_part("sound_inversion", inversion, trained=run.completed, metadata=meta)
        run.write_part("predictor", predictor, trained=run.completed, metadata=meta)
        if run.writes:
            run.update_bundle(layer_groups=settings.layer_groups)
            record_eval(args.out, STAGE, {"final": last, "completed": run.completed, **meta})
            run.write_json("final.json", {"final": last, "completed": run.completed, **meta})
    return 0
