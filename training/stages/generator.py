"""``vjapp-train generator``: a small StyleGAN2 trained on video frames, written into a bundle.

The recipe is StyleGAN2's (Karras et al. 2020; NVIDIA's stylegan2-ada-pytorch ``loss.py`` and
``training_loop.py``), reduced to what a small model on procedural frames needs:

* non-saturating logistic loss: ``L_G = softplus(-D(G(z)))``, ``L_D = softplus(D(G(z))) + softplus(-D(x))``;
* R1 regularization ``γ/2 · ‖∇_x D(x)‖²`` on reals, *lazy*: its own D step every ``r1_interval``
  (16) steps, scaled by the interval, with Adam's learning rate and betas adjusted by
  ``c = interval / (interval + 1)`` exactly as NVIDIA does for lazy regularization;
* style mixing regularization (probability 0.9): a random crossover point in W+ takes the
  latents of a second z;
* ``w_avg`` tracked by ``G.mapping(update_emas=True)`` on the fakes of the D step;
* an exponential moving average of G (``ema_kimg`` half-life in thousands of images, ramped up
  over the first ``ema_rampup`` fraction of training): **G_ema is what gets written** to the bundle;
* optional differentiable augmentation (our own DiffAugment-style color / translation / cutout,
  applied identically to reals and fakes), optional x-flips of the reals;
* optional class balancing (``--class-balance``, :mod:`training.class_balance`): the bundle's CLIP
  classifies the fakes of the G step and a term pushes G toward the classes it draws least
  (``--class-balance-pull``: and the fake nearest each under-drawn class toward it;
  ``--class-balance-psi``: on the fakes rendered truncated, as the show draws its random seeds);
* fine-tuning (``--init-from BUNDLE``): G and G_ema start from that bundle's generator (ours, or
  one ``vjapp convert`` imported from NVIDIA's or rosinality's files); its discriminator is not in
  a bundle, so D starts fresh and ``--d-warmup N`` trains it alone for the first N steps, G held,
  before G learns against it (a fresh D's gradients would otherwise tear the picture apart);
* bf16 autocast on CUDA with ``--amp`` (R1 stays in fp32); off on the CPU;
* data parallel: every process computes its gradients, which are averaged by one flat
  ``all_reduce`` per step (NVIDIA's own scheme). DDP wrappers are not used on purpose: the G step
  needs D frozen and the D step G frozen, and R1 needs a double backward — toggling
  ``requires_grad`` under DDP and ``autograd.grad(create_graph=True)`` through it are both unsafe.

Evaluation: KID (:mod:`training.kid`) between CLIP image features of held-out frames (the
``val`` split) and of G_ema samples, when the bundle has a CLIP; otherwise reported as n/a.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from model.discriminators import Discriminator, DiscriminatorConfig
from model.stylegan2 import Generator, StyleGAN2Config
from training.class_balance import ClassBalance

log = logging.getLogger(__name__)

STAGE = "generator"
AUGMENT_POLICIES = ("color", "translation", "cutout")


# ----------------------------------------------------------------------------------------------
# Hyperparameters


@dataclass
class GeneratorTrainConfig:
    """Everything that defines a generator training run (saved in checkpoints and the eval JSON)."""

    resolution: int = 64  # image size (power of two)
    z_dim: int = 256  # Z width (= w_dim unless told otherwise)
    w_dim: int = 256  # W width
    mapping_layers: int = 4  # mapping network depth
    channel_base: int = 8192  # G channels at res r: min(channel_base // r, channel_max)
    channel_max: int = 128  # G maximum channels
    d_channel_base: int = 0  # D channel_base (0 = as G)
    d_channel_max: int = 0  # D channel_max (0 = as G)
    conv_clamp: float | None = 256.0  # clamp conv activations (NVIDIA's value; keeps bf16 safe)
    mbstd_group_size: int = 4  # minibatch-stddev group size
    batch_size: int = 32  # per process
    g_lr: float = 0.0025  # Adam learning rate of G
    d_lr: float = 0.0025  # Adam learning rate of D (before the lazy-R1 adjustment)
    beta1: float = 0.0  # Adam beta1
    beta2: float = 0.99  # Adam beta2
    r1_gamma: float = 0.2  # R1 weight γ (StyleGAN2-ADA's heuristic at 64 px: 0.0002 * res² / batch)
    r1_interval: int = 16  # lazy R1: every N steps (0 disables R1)
    style_mixing: float = 0.9  # style mixing probability (0 disables)
    ema_kimg: float = 10.0  # EMA half-life in thousands of images
    ema_rampup: float = 0.05  # EMA half-life ramps up as nimg * ema_rampup (0 = none)
    ema_beta: float | None = None  # fixed EMA decay per step (overrides ema_kimg)
    augment: tuple[str, ...] = ()  # differentiable augmentations: color, translation, cutout
    mirror: bool = False  # random x-flips of the reals
    class_balance: float = 0.0  # weight of the classifier-in-the-loop class-balance term (0: off)
    class_balance_momentum: float = 0.99  # momentum of its running class marginal
    class_balance_start: int = 0  # the term joins at this step (a fine-tune of a generator that dropped classes)
    class_balance_pull: float = 0.0  # weight of the nearest-sample pull toward under-drawn classes (0: off)
    class_balance_psi: float = 1.0  # truncation of the fakes the class-balance term sees (1: the G step's own)
    class_balance_classifier: str = "clip"  # what classifies the fakes for it: "clip" or "judge" (real-frame CNNs)
    d_warmup: int = 0  # steps at the start in which only D learns (G held; for a fine-tune with a fresh D)
    seed: int = 0

    def __post_init__(self) -> None:
        self.augment = tuple(self.augment)
        unknown = sorted(set(self.augment) - set(AUGMENT_POLICIES))
        if unknown:
            raise ValueError(f"unknown augmentations {unknown}; choose from {AUGMENT_POLICIES}")
        for name in ("batch_size", "z_dim", "w_dim", "mapping_layers"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("g_lr", "d_lr"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a positive number, got {v!r}")
        for name in ("beta1", "beta2", "style_mixing"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        if not isinstance(self.r1_gamma, (int, float)) or not math.isfinite(self.r1_gamma) or self.r1_gamma < 0:
            raise ValueError(f"r1_gamma must be a non-negative number, got {self.r1_gamma!r}")
        if isinstance(self.r1_interval, bool) or not isinstance(self.r1_interval, int) or self.r1_interval < 0:
            raise ValueError(f"r1_interval must be a non-negative integer, got {self.r1_interval!r}")
        if not isinstance(self.ema_kimg, (int, float)) or not math.isfinite(self.ema_kimg) or self.ema_kimg < 0:
            raise ValueError(f"ema_kimg must be a non-negative number, got {self.ema_kimg!r}")
        if not isinstance(self.ema_rampup, (int, float)) or not math.isfinite(self.ema_rampup) or self.ema_rampup < 0:
            raise ValueError(f"ema_rampup must be a non-negative number, got {self.ema_rampup!r}")
        cb = self.class_balance
        if not isinstance(cb, (int, float)) or not math.isfinite(cb) or cb < 0:
            raise ValueError(f"class_balance must be a non-negative number, got {self.class_balance!r}")
        if not isinstance(self.class_balance_momentum, (int, float)) or not 0 <= self.class_balance_momentum < 1:
            raise ValueError(f"class_balance_momentum must be in [0, 1), got {self.class_balance_momentum!r}")
        if (isinstance(self.class_balance_start, bool) or not isinstance(self.class_balance_start, int)
                or self.class_balance_start < 0):
            raise ValueError(f"class_balance_start must be a non-negative integer, got {self.class_balance_start!r}")
        if not (isinstance(self.class_balance_pull, (int, float)) and math.isfinite(self.class_balance_pull)
                and self.class_balance_pull >= 0):
            raise ValueError(f"class_balance_pull must be a non-negative number, got {self.class_balance_pull!r}")
        if not (isinstance(self.class_balance_psi, (int, float)) and 0 < self.class_balance_psi <= 1):
            raise ValueError(f"class_balance_psi must be in (0, 1], got {self.class_balance_psi!r}")
        if self.class_balance_classifier not in ("clip", "judge"):
            raise ValueError(f"class_balance_classifier must be 'clip' or 'judge', got {self.class_balance_classifier!r}")
        if isinstance(self.d_warmup, bool) or not isinstance(self.d_warmup, int) or self.d_warmup < 0:
            raise ValueError(f"d_warmup must be a non-negative integer, got {self.d_warmup!r}")
        if self.ema_beta is not None and not (isinstance(self.ema_beta, (int, float)) and 0 <= self.ema_beta <= 1):
            raise ValueError(f"ema_beta must be in [0, 1] or None, got {self.ema_beta!r}")
        self.generator_config()  # the network configs check resolution, channels and clamp
        self.discriminator_config()

    def generator_config(self) -> StyleGAN2Config:
        return StyleGAN2Config(
            z_dim=self.z_dim, w_dim=self.w_dim, mapping_layers=self.mapping_layers, mapping_hidden_dim=self.w_dim,
            resolution=self.resolution, channel_base=self.channel_base, channel_max=self.channel_max,
            conv_clamp=self.conv_clamp,
        )

    def discriminator_config(self) -> DiscriminatorConfig:
        return DiscriminatorConfig(
            resolution=self.resolution, channel_base=self.d_channel_base or self.channel_base,
            channel_max=self.d_channel_max or self.channel_max, mbstd_group_size=self.mbstd_group_size,
            conv_clamp=self.conv_clamp,
        )


def fine_tune_mismatches(config: GeneratorTrainConfig, source: StyleGAN2Config) -> list[str]:
    """What keeps a generator of config ``source`` from being fine-tuned under ``config``: one line each."""
    ours = config.generator_config()
    options = {"resolution": "--resolution", "w_dim": "--w-dim", "z_dim": "--w-dim", "mapping_layers": "--mapping-layers",
               "channel_base": "--channel-base", "channel_max": "--channel-max", "conv_clamp": "--conv-clamp",
               "mapping_hidden_dim": "--w-dim"}
    out = []
    for f in dataclasses.fields(StyleGAN2Config):
        theirs, mine = getattr(source, f.name), getattr(ours, f.name)
        if theirs != mine:
            how = f"pass {options[f.name]} {theirs if theirs is not None else 0}" if f.name in options else \
                "not settable here"
            out.append(f"{f.name}: the bundle's generator has {theirs}, these options give {mine} ({how})")
    return out


# ----------------------------------------------------------------------------------------------
# Differentiable augmentation (applied to reals and fakes alike; linear in the image, so R1's
# double backward goes through it)


def augment(x: torch.Tensor, policies: Sequence[str], generator: torch.Generator | None = None) -> torch.Tensor:
    """DiffAugment-style random augmentation of images [N, C, H, W]; differentiable in x."""
    for policy in policies:
        if policy == "color":
            x = _aug_color(x, generator)
        elif policy == "translation":
            x = _aug_translation(x, generator)
        elif policy == "cutout":
            x = _aug_cutout(x, generator)
        else:
            raise ValueError(f"unknown augmentation {policy!r}; choose from {AUGMENT_POLICIES}")
    return x


def _rand(shape: Sequence[int], x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(list(shape), generator=generator, device="cpu").to(x.device, x.dtype)


def _aug_color(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    n = x.shape[0]
    x = x + (_rand([n, 1, 1, 1], x, g) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand([n, 1, 1, 1], x, g) * 2) + mean  # saturation
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand([n, 1, 1, 1], x, g) + 0.5) + mean  # contrast


def _aug_translation(x: torch.Tensor, g: torch.Generator | None, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size (integer pixels), zeros shifted in."""
    n, c, h, w = x.shape
    ry, rx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    if ry == 0 and rx == 0:
        return x
    ty = torch.randint(0, 2 * ry + 1, [n], generator=g).to(x.device)  # offsets into the padded image
    tx = torch.randint(0, 2 * rx + 1, [n], generator=g).to(x.device)
    xp = F.pad(x, [rx, rx, ry, ry]).permute(0, 2, 3, 1)  # [N, H+2ry, W+2rx, C]
    iy = torch.arange(h, device=x.device)[None, :] + ty[:, None]  # [N, H]
    ix = torch.arange(w, device=x.device)[None, :] + tx[:, None]  # [N, W]
    idx = torch.arange(n, device=x.device)[:, None, None]
    return xp[idx, iy[:, :, None], ix[:, None, :]].permute(0, 3, 1, 2)  # [N, C, H, W]


def _aug_cutout(x: torch.Tensor, g: torch.Generator | None, ratio: float = 0.5) -> torch.Tensor:
    """Zero one random square of ``ratio`` of the size per image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), [n, 1, 1], generator=g).to(x.device)
    cx = torch.randint(0, w + (1 - cw % 2), [n, 1, 1], generator=g).to(x.device)
    yy = torch.arange(h, device=x.device)[None, :, None]
    xx = torch.arange(w, device=x.device)[None, None, :]
    inside = ((yy - cy + ch // 2) >= 0) & ((yy - cy + ch // 2) < ch) & ((xx - cx + cw // 2) >= 0) & ((xx - cx + cw // 2) < cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


# ----------------------------------------------------------------------------------------------
# Distributed helpers (a flat all-reduce per step, like NVIDIA's training loop)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (all start identical)."""
    if not _distributed():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def sync_gradients(module: nn.Module) -> None:
    """Average the gradients of ``module`` over the ranks and replace NaN/Inf by finite values."""
    params = [p for p in module.parameters() if p.grad is not None]
    if not params:
        return
    if _distributed():
        flat = torch.cat([p.grad.flatten() for p in params])
        dist.all_reduce(flat)
        flat /= dist.get_world_size()
        torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p))
            offset += n
    else:
        for p in params:
            torch.nan_to_num(p.grad, nan=0, posinf=1e5, neginf=-1e5, out=p.grad)


# ----------------------------------------------------------------------------------------------
# The trainer


@dataclass
class StepStats:
    """What one training step measured (means over this process's batch)."""

    loss_G: float
    loss_D: float
    D_real: float  # mean logit on reals
    D_fake: float  # mean logit on fakes
    r1_penalty: float | None  # mean ‖∇D(x)‖² of the latest R1 step (None before the first)
    r1_ran: bool  # R1 ran in this step
    ema_beta: float
    extra: dict[str, float] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        out = {"loss/G": self.loss_G, "loss/D": self.loss_D, "D/real": self.D_real, "D/fake": self.D_fake,
               "ema/beta": self.ema_beta}
        if self.r1_penalty is not None:
            out["loss/r1_penalty"] = self.r1_penalty
        out.update(self.extra)
        return out


class GeneratorTrainer:
    """Owns G, D, G_ema and both optimizers; :meth:`step` does one G step, one D step, lazy R1, EMA."""

    def __init__(
        self,
        config: GeneratorTrainConfig,
        device: torch.device | str = "cpu",
        world: int = 1,
        rank: int = 0,
        amp_dtype: torch.dtype | None = None,
        balance: ClassBalance | None = None,
    ) -> None:
        if config.class_balance > 0 and balance is None:
            raise ValueError("class_balance > 0 needs a ClassBalance (the bundle's CLIP and the labels)")
        self.config = config
        self.balance = balance if config.class_balance > 0 else None
        self.device = torch.device(device)
        self.world = world
        self.rank = rank
        with torch.random.fork_rng(devices=[]):  # same initial weights everywhere, global RNG untouched
            torch.manual_seed(config.seed)
            G = Generator(config.generator_config())
            D = Discriminator(config.discriminator_config())
        self.G = G.to(self.device).train()
        self.D = D.to(self.device).train()
        broadcast_module(self.G)
        broadcast_module(self.D)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        betas = (config.beta1, config.beta2)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=config.g_lr, betas=betas, eps=1e-8)
        # Lazy regularization: R1 gets its own D step every r1_interval steps, so NVIDIA scales
        # D's learning rate and betas by c = interval / (interval + 1) to keep the same dynamics.
        c = config.r1_interval / (config.r1_interval + 1) if self.r1_enabled else 1.0
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=config.d_lr * c,
                                      betas=(config.beta1**c, config.beta2**c), eps=1e-8)
        self.step_count = 0  # optimizer steps done
        self.nimg = 0  # images shown to D (all ranks)
        self.last_r1: float | None = None  # latest R1 penalty measured
        if amp_dtype is not None and (self.device.type != "cuda" or amp_dtype != torch.bfloat16):
            log.warning("generator training uses bf16 autocast on CUDA only; training in float32 (asked: %s on %s)",
                        amp_dtype, self.device)
            amp_dtype = None
        self.amp_dtype = amp_dtype
        self._gen = torch.Generator(device="cpu")
        self.reseed(0)

    def reseed(self, step: int) -> None:
        """Seed this process's stream of z, mixing and augmentation draws from (seed, rank, step)."""
        self._gen.manual_seed(self.config.seed * 1_000_003 + self.rank * 7919 + step + 17)

    @property
    def r1_enabled(self) -> bool:
        return self.config.r1_gamma > 0 and self.config.r1_interval > 0

    # -- pieces ------------------------------------------------------------------------------
    def _autocast(self) -> Any:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp_dtype is not None)

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn([n, self.config.z_dim], generator=self._gen).to(self.device)

    def _ws(self, n: int, update_emas: bool) -> torch.Tensor:
        """W+ [n, num_ws, w_dim] of fresh z, with style mixing at a random crossover."""
        G = self.G
        ws = G.mapping(self._z(n), update_emas=update_emas)
        if self.config.style_mixing > 0 and G.num_ws > 1:
            if float(torch.rand([], generator=self._gen)) < self.config.style_mixing:
                cutoff = int(torch.randint(1, G.num_ws, [], generator=self._gen))
                ws2 = G.mapping(self._z(n), update_emas=False)
                ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
        return ws

    def _D(self, img: torch.Tensor) -> torch.Tensor:
        if self.config.augment:
            img = augment(img, self.config.augment, self._gen)
        return self.D(img)

    def ema_beta(self) -> float:
        """The EMA decay of this step (NVIDIA's half-life schedule, or the fixed ``ema_beta``)."""
        c = self.config
        if c.ema_beta is not None:
            return float(c.ema_beta)
        ema_nimg = c.ema_kimg * 1000
        if c.ema_rampup > 0:
            ema_nimg = min(ema_nimg, self.nimg * c.ema_rampup)
        batch = c.batch_size * self.world
        return 0.5 ** (batch / max(ema_nimg, 1e-8))

    @torch.no_grad()
    def update_ema(self) -> float:
        """Average ``w_avg`` over the ranks (each tracked its own fakes), then move G_ema toward G."""
        if _distributed():
            w_avg = self.G.mapping.w_avg
            dist.all_reduce(w_avg)
            w_avg /= dist.get_world_size()
        beta = self.ema_beta()
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.copy_(p.detach().lerp(p_ema, beta))
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)
        return beta

    # -- one step ----------------------------------------------------------------------------
    def step(self, real: torch.Tensor) -> StepStats:
        """One training step on a batch of reals [N, C, res, res] in [-1, 1]."""
        c = self.config
        r = c.resolution
        if real.ndim != 4 or tuple(real.shape[1:]) != (self.G.img_channels, r, r):
            raise ValueError(f"real images must be [N, {self.G.img_channels}, {r}, {r}], got {tuple(real.shape)}")
        real = real.to(self.device, torch.float32)
        n = real.shape[0]
        if c.mirror:
            flip = torch.rand([n], generator=self._gen).to(self.device) < 0.5
            real = torch.where(flip[:, None, None, None], real.flip(3), real)

        extra: dict[str, float] = {}
        train_G = self.step_count >= c.d_warmup
        if train_G:  # G main: non-saturating loss, D frozen.
            self.G.requires_grad_(True)
            self.D.requires_grad_(False)
            with self._autocast():
                ws = self._ws(n, update_emas=False)
                fake = self.G.synthesis(ws, noise_mode="random")
                fake_logits = self._D(fake)
            loss_G = F.softplus(-fake_logits).mean()
            total_G = loss_G
            if self.balance is not None and self.step_count >= c.class_balance_start:
                seen = fake
                if c.class_balance_psi < 1:  # the same latents as the show draws them (truncated toward w_avg)
                    with self._autocast():
                        w_avg = self.G.mapping.w_avg.to(ws.dtype)
                        seen = self.G.synthesis(w_avg.lerp(ws, c.class_balance_psi), noise_mode="random")
                # CLIP looks at the fakes shifted a little, so no pixel-exact pattern can steer it.
                term, extra = self.balance(_aug_translation(seen.float(), self._gen))
                total_G = loss_G + c.class_balance * term
            self.opt_G.zero_grad(set_to_none=True)
            total_G.backward()
            sync_gradients(self.G)
            self.opt_G.step()

        # D main: fakes (G frozen, w_avg tracked) and reals.
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        with torch.no_grad(), self._autocast():
            fake = self.G.synthesis(self._ws(n, update_emas=True), noise_mode="random")
        with self._autocast():
            fake_logits = self._D(fake.float())
            real_logits = self._D(real)
        loss_D = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
        if not train_G:  # D warm-up: G's loss as D now sees these fakes (reported, not trained on)
            loss_G = F.softplus(-fake_logits.detach()).mean()
            extra = {"d_warmup": 1.0}
        self.opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        sync_gradients(self.D)
        self.opt_D.step()

        # D reg: lazy R1 on reals, its own step, in fp32 (a double backward).
        r1_ran = False
        if self.r1_enabled and self.step_count % c.r1_interval == 0:
            real_in = real.detach().requires_grad_(True)
            logits = self._D(real_in)
            (grad,) = torch.autograd.grad(logits.sum(), real_in, create_graph=True)
            penalty = grad.square().sum(dim=[1, 2, 3])  # [N]
            loss_r1 = penalty.mean() * (c.r1_gamma / 2) * c.r1_interval
            self.opt_D.zero_grad(set_to_none=True)
            # Adding 0 * logits keeps every D parameter in the graph (as NVIDIA does).
            (loss_r1 + logits.mean() * 0).backward()
            sync_gradients(self.D)
            self.opt_D.step()
            self.last_r1 = float(penalty.detach().mean())
            r1_ran = True
        self.D.requires_grad_(False)

        self.step_count += 1
        self.nimg += n * self.world
        beta = self.update_ema() if train_G else 1.0  # G held: G_ema stays as it is
        return StepStats(
            loss_G=float(loss_G.detach()), loss_D=float(loss_D.detach()),
            D_real=float(real_logits.detach().float().mean()), D_fake=float(fake_logits.detach().float().mean()),
            r1_penalty=self.last_r1, r1_ran=r1_ran, ema_beta=beta, extra=extra,
        )

    @torch.no_grad()
    def init_generator(self, source: Generator) -> None:
        """Start G and G_ema from ``source`` (a bundle's generator, i.e. someone's G_ema; ``w_avg`` included).

        The architectures must be the same (:func:`fine_tune_mismatches`); the optimizer and EMA
        counters start fresh, like the discriminator.
        """
        state = source.state_dict()
        self.G.load_state_dict(state)
        self.G_ema.load_state_dict(state)
        broadcast_module(self.G)
        broadcast_module(self.G_ema)

    # -- what checkpoints hold ---------------------------------------------------------------
    def models(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self.opt_G, "D": self.opt_D}

    def state(self) -> dict[str, Any]:
        """JSON counters a checkpoint must restore besides weights and optimizers."""
        state: dict[str, Any] = {"step_count": self.step_count, "nimg": self.nimg}
        if self.balance is not None:
            state["class_balance"] = self.balance.state()
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        self.step_count = int(state.get("step_count", 0))
        self.nimg = int(state.get("nimg", 0))
        if self.balance is not None and isinstance(state.get("class_balance"), dict):
            self.balance.load_state(state["class_balance"])


# ----------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def render_samples(G: Generator, z: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Images [N, C, H, W] (float32, CPU, in about [-1, 1]) of fixed latents ``z``, const noise."""
    device = next(G.parameters()).device
    out = [G.synthesis(G.mapping(z[i : i + batch_size].to(device)), noise_mode="const").float().cpu()
           for i in range(0, z.shape[0], batch_size)]
    return torch.cat(out, dim=0)


def _evenly_spaced(n_total: int, n: int) -> list[int]:
    if n >= n_total:
        return list(range(n_total))
    return [int(i * n_total / n) for i in range(n)]


class GeneratorEvaluator:
    """KID of G_ema against held-out frames in the bundle CLIP's image space, plus class coverage.

    Real features are computed once (up to ``n_real`` frames spread over the ``val`` split) and
    reused. Without a CLIP in the bundle, or without held-out frames, :meth:`evaluate` returns a
    record with ``kid: None`` and the reason.
    """

    def __init__(
        self,
        clip: nn.Module | None,
        val_dataset: Any,
        n_real: int,
        n_fake: int,
        subsets: int,
        subset_size: int,
        labels: Sequence[str] = (),
        coverage_samples: int = 0,
        seed: int = 0,
        unavailable: str = "",
    ) -> None:
        self.clip = clip
        self.val_dataset = val_dataset
        self.n_real = n_real
        self.n_fake = n_fake
        self.subsets = subsets
        self.subset_size = subset_size
        self.labels = tuple(labels)
        self.coverage_samples = coverage_samples
        self.seed = seed
        self.unavailable = unavailable
        self._real: torch.Tensor | None = None

    def real_features(self) -> torch.Tensor:
        from training.kid import clip_image_features

        if self._real is None:
            assert self.clip is not None and self.val_dataset is not None
            idx = _evenly_spaced(len(self.val_dataset), self.n_real)
            feats = []
            for i in range(0, len(idx), 64):
                images = torch.stack([self.val_dataset[j]["image"] for j in idx[i : i + 64]])  # [B, 3, H, W]
                feats.append(clip_image_features(self.clip, images))
            self._real = torch.cat(feats, dim=0)
        return self._real

    @torch.no_grad()
    def evaluate(self, G: Generator, step: int) -> dict[str, Any]:
        from training.kid import KIDError, class_coverage, generator_features, kid, kid_summary

        record: dict[str, Any] = {"step": step, "kid": None, "kid_std": None, "coverage": None}
        if self.unavailable:
            record["reason"] = self.unavailable
            return record
        assert self.clip is not None
        t0 = time.monotonic()
        real = self.real_features()
        fake = generator_features(G, self.clip, self.n_fake, seed=self.seed)
        try:
            mean, std = kid(real, fake, subsets=self.subsets, subset_size=self.subset_size, seed=self.seed)
        except KIDError as exc:
            record["reason"] = str(exc)
        else:
            record.update(kid_summary(mean, std, real.shape[0], fake.shape[0], self.subsets, self.subset_size))
        if self.labels and self.coverage_samples > 0:
            cov = class_coverage(G, self.clip, self.labels, self.coverage_samples, seed=self.seed + 1)
            record["coverage"] = cov
            record["coverage_min"] = min(cov.values())
        record["seconds"] = round(time.monotonic() - t0, 2)
        return record


# ----------------------------------------------------------------------------------------------
# The command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``vjapp-train generator`` options (common ones from :func:`training.run.add_common_arguments`)."""
    from training.run import add_common_arguments
    from training.signal_classifiers import DEFAULT_SIGNAL_SEED

    add_common_arguments(parser, steps=20000, batch_size=32, lr=0.0025, ckpt_every=1000, log_every=50,
                         sample_every=500, eval_every=0)
    g = parser.add_argument_group("generator")
    g.add_argument("--resolution", type=int, default=64, help="image size (a power of two)")
    g.add_argument("--fps", type=float, default=4.0, help="frames per second taken from each training clip")
    g.add_argument("--cache-dir", type=Path, default=None, help="folder for a cache of decoded frames (none: decode every run)")
    g.add_argument("--channel-base", type=int, default=8192, help="G channels at res r: min(base // r, max)")
    g.add_argument("--channel-max", type=int, default=128, help="G maximum channels")
    g.add_argument("--d-channel-base", type=int, default=0, help="D channel base (0: as G)")
    g.add_argument("--d-channel-max", type=int, default=0, help="D maximum channels (0: as G)")
    g.add_argument("--w-dim", type=int, default=256, help="W (and Z) width")
    g.add_argument("--mapping-layers", type=int, default=4, help="mapping network depth")
    g.add_argument("--conv-clamp", type=float, default=256.0, help="clamp conv activations to +-X (0: off)")
    g.add_argument("--d-lr", type=float, default=0.0, help="D learning rate (0: --lr)")
    g.add_argument("--r1-gamma", type=float, default=None,
                   help="R1 weight; unset: StyleGAN2-ADA's heuristic 0.0002 * resolution^2 / batch size")
    g.add_argument("--r1-interval", type=int, default=16, help="lazy R1 every N steps (0: no R1)")
    g.add_argument("--style-mixing", type=float, default=0.9, help="style mixing probability (0: off)")
    g.add_argument("--ema-kimg", type=float, default=10.0, help="G_ema half-life in thousands of images")
    g.add_argument("--ema-rampup", type=float, default=0.05, help="EMA ramp-up (half-life <= images seen x this; 0: off)")
    g.add_argument("--ema-beta", type=float, default=None, help="fixed EMA decay per step (overrides --ema-kimg)")
    g.add_argument("--augment", type=str, default="",
                   help=f"differentiable augmentations, comma-separated from {', '.join(AUGMENT_POLICIES)} (empty: none)")
    g.add_argument("--mirror", action="store_true", help="random x-flips of the training frames")
    g.add_argument("--class-balance", type=float, default=0.0,
                   help="weight of the class-balance term: the bundle's CLIP classifies the fakes and G is pushed "
                        "toward the classes it draws least (0: off; needs a CLIP in --out)")
    g.add_argument("--class-balance-start", type=int, default=0,
                   help="step at which the class-balance term joins (e.g. where a plain run left off)")
    g.add_argument("--class-balance-pull", type=float, default=0.0,
                   help="weight of the nearest-sample pull: the fake nearest each under-drawn class is pushed "
                        "toward it (-log p; 0: off)")
    g.add_argument("--class-balance-psi", type=float, default=1.0,
                   help="truncation of the fakes the class-balance term classifies (1: the G step's own; e.g. 0.7: "
                        "a second rendering of the same latents as the show draws them, so the balance holds there)")
    g.add_argument("--init-from", type=Path, default=None,
                   help="fine-tune: start G and G_ema from this bundle's generator (same architecture options; "
                        "D starts fresh, see --d-warmup; a checkpoint in the run folder still wins)")
    g.add_argument("--d-warmup", type=int, default=0,
                   help="steps at the start in which only D learns, G held (for --init-from's fresh D)")
    g.add_argument("--class-balance-judge", type=Path, default=None,
                   help="folder of classifiers trained on real frames (training/judge.py, full + structure form) that "
                        "classify the fakes for the class-balance term instead of CLIP; trained there first when "
                        "--class-balance-judge-data is given and they are missing or stale. A training signal: never "
                        "the folder or data of vjapp-train eval's judge")
    g.add_argument("--class-balance-judge-data", type=Path, default=None,
                   help="dataset (its train split) to train the --class-balance-judge classifiers on: not the "
                        "eval's --judge-data (e.g. vjapp-train synthscapes with another --seed)")
    g.add_argument("--class-balance-judge-seed", type=int, default=DEFAULT_SIGNAL_SEED,
                   help="seed of the --class-balance-judge classifiers (the eval's judge uses 90001/90002: refused)")
    g.add_argument("--class-balance-judge-steps", type=int, default=600,
                   help="training steps of each --class-balance-judge classifier")
    g.add_argument("--class-balance-momentum", type=float, default=0.99,
                   help="momentum of the running class frequencies the class-balance term compares with uniform")
    g.add_argument("--kid-every", dest="eval_every", type=int, default=argparse.SUPPRESS,
                   help="evaluate KID every N steps (same as --eval-every; 0: only at the end)")
    g.add_argument("--kid-samples", type=int, default=1000, help="generated samples (and at most this many held-out frames) for KID")
    g.add_argument("--kid-subsets", type=int, default=100, help="KID subsets")
    g.add_argument("--kid-subset-size", type=int, default=1000, help="KID subset size (capped by the sample counts)")
    g.add_argument("--coverage-samples", type=int, default=500,
                   help="random samples classified per evaluation for class coverage (0: off)")
    g.add_argument("--output-size", type=int, default=None,
                   help="size the app shows this generator at by default (a power of two; 0: its resolution; "
                        "not given: keep what the bundle says), "
                        "e.g. 256 for a 128 px generator trained where 256 px training would take too long")
    g.add_argument("--sample-count", type=int, default=16, help="fixed-z samples in each logged grid")


def config_from_args(args: argparse.Namespace) -> GeneratorTrainConfig:
    """The run's :class:`GeneratorTrainConfig` from parsed options (ValueError names a bad one)."""
    augment_list = tuple(a.strip() for a in args.augment.split(",") if a.strip())
    r1_gamma = args.r1_gamma if args.r1_gamma is not None else 0.0002 * args.resolution**2 / args.batch_size
    return GeneratorTrainConfig(
        resolution=args.resolution, z_dim=args.w_dim, w_dim=args.w_dim, mapping_layers=args.mapping_layers,
        channel_base=args.channel_base, channel_max=args.channel_max, d_channel_base=args.d_channel_base,
        d_channel_max=args.d_channel_max, conv_clamp=args.conv_clamp if args.conv_clamp > 0 else None,
        mbstd_group_size=min(4, args.batch_size), batch_size=args.batch_size, g_lr=args.lr,
        d_lr=args.d_lr if args.d_lr > 0 else args.lr, r1_gamma=r1_gamma, r1_interval=args.r1_interval,
        style_mixing=args.style_mixing, ema_kimg=args.ema_kimg, ema_rampup=args.ema_rampup, ema_beta=args.ema_beta,
        augment=augment_list, mirror=args.mirror, class_balance=args.class_balance,
        class_balance_momentum=args.class_balance_momentum, class_balance_start=args.class_balance_start,
        class_balance_pull=args.class_balance_pull, class_balance_psi=args.class_balance_psi,
        class_balance_classifier="judge" if getattr(args, "class_balance_judge", None) else "clip", d_warmup=args.d_warmup,
        seed=args.seed,
    )


def _check_options(args: argparse.Namespace) -> None:
    from training.run import TrainingError

    for name in ("kid_samples", "kid_subsets", "sample_count"):
        if getattr(args, name) < 1:
            raise TrainingError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.kid_subset_size < 2:
        raise TrainingError(f"--kid-subset-size must be at least 2, got {args.kid_subset_size}")
    if args.coverage_samples < 0:
        raise TrainingError(f"--coverage-samples must be >= 0, got {args.coverage_samples}")
    size = args.output_size
    if size is not None and (size < 0 or (size and (size & (size - 1) or not args.resolution <= size <= 1024))):
        raise TrainingError(f"--output-size must be 0 or a power of two from --resolution to 1024, got {size}")
    if not (math.isfinite(args.fps) and args.fps > 0):
        raise TrainingError(f"--fps must be a positive number, got {args.fps}")


def _frame_dataset(args: argparse.Namespace, split: str) -> Any:
    from training.data.video_folder import FrameDataset

    return FrameDataset(args.data, split=split, size=args.resolution, fps=args.fps, cache_dir=args.cache_dir)


def _build_evaluator(args: argparse.Namespace, run: Any, labels: Sequence[str]) -> GeneratorEvaluator:
    """The evaluator: the bundle's CLIP and the held-out frames, or the reason KID is n/a."""
    from model.formats import CheckpointError
    from training import bundle_io

    common = dict(n_real=args.kid_samples, n_fake=args.kid_samples, subsets=args.kid_subsets,
                  subset_size=args.kid_subset_size, labels=labels, coverage_samples=args.coverage_samples,
                  seed=args.seed)
    out = run.out_dir
    if out is None or not bundle_io.part_exists(out, "clip"):
        return GeneratorEvaluator(None, None, unavailable="n/a: the bundle has no CLIP (train the clip stage first)",
                                  **common)
    try:
        clip = bundle_io.read_part(out, "clip", run.device).eval().requires_grad_(False)
    except CheckpointError as exc:
        return GeneratorEvaluator(None, None, unavailable=f"n/a: the bundle's CLIP does not load ({exc})", **common)
    try:
        val = _frame_dataset(args, "val")
        n_val = len(val)
    except (ValueError, OSError) as exc:
        return GeneratorEvaluator(None, None, unavailable=f"n/a: no held-out frames ({exc})", **common)
    if n_val < 2:
        return GeneratorEvaluator(None, None, unavailable=f"n/a: the val split has {n_val} frame(s)", **common)
    return GeneratorEvaluator(clip, val, **common)


def _build_balance(args: argparse.Namespace, run: Any, config: GeneratorTrainConfig,
                   labels: Sequence[str]) -> ClassBalance | None:
    """The class-balance term (``--class-balance`` > 0): the bundle's CLIP and the dataset's labels."""
    from model.formats import CheckpointError
    from training import bundle_io
    from training.run import TrainingError

    if config.class_balance <= 0:
        return None
    if len(labels) < 2:
        raise TrainingError("generator: --class-balance needs class labels (the dataset or the bundle has none)")
    if getattr(args, "class_balance_judge", None) is not None:
        judges = _balance_judges(args, labels)
        return ClassBalance(None, labels, momentum=config.class_balance_momentum, pull=config.class_balance_pull,
                            judges=[j.to(run.device) for j in judges])
    out = run.out_dir
    if out is None or not bundle_io.part_exists(out, "clip"):
        raise TrainingError(f"generator: --class-balance needs a CLIP in the bundle {out} (train the clip stage first)")
    if len(labels) < 2:
        raise TrainingError("generator: --class-balance needs class labels (the dataset or the bundle has none)")
    try:
        clip = bundle_io.read_part(out, "clip", run.device)
    except CheckpointError as exc:
        raise TrainingError(f"generator: --class-balance: the bundle's CLIP does not load ({exc})") from exc
    return ClassBalance(clip, labels, momentum=config.class_balance_momentum, pull=config.class_balance_pull)


def _balance_judges(args: argparse.Namespace, labels: Sequence[str]) -> list[Any]:
    """The real-frame classifiers of ``--class-balance-judge`` (trained first from
    ``--class-balance-judge-data`` when asked); refuses the eval judge's seeds and wrong labels."""
    from training.signal_classifiers import signal_classifiers

    return signal_classifiers(args.class_balance_judge, labels, int(args.class_balance_judge_seed),
                              getattr(args, "class_balance_judge_data", None), int(args.class_balance_judge_steps),
                              getattr(args, "cache_dir", None), who="generator: --class-balance-judge")


def _fine_tune_source(bundle_dir: Path, config: GeneratorTrainConfig, device: Any) -> Generator:
    """The generator ``--init-from`` names, checked against this run's architecture options."""
    from model.formats import CheckpointError
    from training import bundle_io
    from training.run import TrainingError

    try:
        source = bundle_io.read_part(bundle_dir, "generator", device)
    except CheckpointError as exc:
        raise TrainingError(f"generator: --init-from {bundle_dir}: {exc}") from exc
    wrong = fine_tune_mismatches(config, source.config)
    if wrong:
        raise TrainingError(f"generator: --init-from {bundle_dir}: the architecture differs: " + "; ".join(wrong))
    log.info("generator: G and G_ema start from %s (D fresh, %d warm-up steps)", bundle_dir, config.d_warmup)
    return source


def _dataset_labels(dataset: Any, out: Path | None) -> tuple[str, ...]:
    from training import bundle_io

    labels = tuple(getattr(dataset, "labels", None) or ())
    if not labels and out is not None and out.is_dir():
        labels = bundle_io.read_labels(out)
    return tuple(str(label) for label in labels)


def run(args: argparse.Namespace) -> int:
    """Train the generator; write G_ema as the bundle's ``generator`` part and the eval JSON."""
    from training import bundle_io
    from training.distributed import barrier, loop_batches, make_loader
    from training.run import Run, TrainingError

    _check_options(args)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        raise TrainingError(f"generator: {exc}") from exc
    with Run(args, STAGE, config) as run:
        try:
            train_set = _frame_dataset(args, "train")
        except (ValueError, OSError) as exc:
            raise TrainingError(f"generator: cannot read training frames from {args.data}: {exc}") from exc
        labels = _dataset_labels(train_set, run.out_dir)
        trainer = GeneratorTrainer(config, run.device, world=run.world, rank=run.rank, amp_dtype=run.amp_dtype,
                                   balance=_build_balance(args, run, config, labels))
        start = run.load_checkpoint(trainer.models(), trainer.optimizers()) or 0
        if start:
            trainer.load_state(run.extra)
        elif args.init_from is not None:
            trainer.init_generator(_fine_tune_source(Path(args.init_from), config, run.device))
        trainer.reseed(start)
        loader = make_loader(train_set, run.batch_size, shuffle=True, seed=run.seed, drop_last=True,
                             num_workers=args.num_workers)
        batches = loop_batches(loader, start_epoch=start)
        evaluator = _build_evaluator(args, run, labels) if run.is_main and not run.dry_run else None
        fixed_z = torch.randn([args.sample_count, config.z_dim], generator=torch.Generator().manual_seed(args.seed))
        meta = {"resolution": config.resolution, "config": asdict(config), "data": str(args.data)}
        if args.init_from is not None:
            meta["init_from"] = str(args.init_from)

        def evaluate(step: int, name: str) -> dict[str, Any] | None:
            record = None
            if evaluator is not None:
                record = evaluator.evaluate(trainer.G_ema, step)
                if record.get("kid") is not None:
                    log.info("generator: step %d: KID %.5f +- %.5f", step, record["kid"], record["kid_std"])
                    run.log_scalars(step, {"kid": record["kid"]}, prefix="eval")
                else:
                    log.info("generator: step %d: KID %s", step, record.get("reason", "n/a"))
                if record.get("coverage_min") is not None:
                    run.log_scalars(step, {"coverage_min": record["coverage_min"]}, prefix="eval")
                run.write_json(name, record)
            barrier()
            return record

        t_last = time.monotonic()
        step = start
        stats: StepStats | None = None
        for step in run.steps_from(start):
            real = next(batches)["image"]  # [B, 3, res, res] in [-1, 1]
            stats = trainer.step(real)
            run.check_finite(step, loss_G=stats.loss_G, loss_D=stats.loss_D)
            if run.should(step, args.log_every) or step == start + 1:
                now = time.monotonic()
                scalars = stats.scalars()
                scalars["kimg"] = trainer.nimg / 1000
                scalars["sec_per_step"] = (now - t_last) / max(1, args.log_every if step > start + 1 else 1)
                t_last = now
                run.log_scalars(step, scalars)
            if run.should(step, args.sample_every):
                run.log_images(step, "samples/G_ema", render_samples(trainer.G_ema, fixed_z))
            if run.should(step, args.eval_every) and step < run.steps:
                evaluate(step, f"eval/kid-{step:08d}.json")
            if run.checkpoint_due(step):
                run.save_checkpoint(step, trainer.models(), trainer.optimizers(), extra=trainer.state())
                if step < run.steps:
                    run.write_part("generator", trainer.G_ema, trained=False, metadata=meta,
                                   output_size=args.output_size)
        run.write_part("generator", trainer.G_ema, trained=run.completed, metadata=meta,
                       output_size=args.output_size)
        run.log_images(step, "samples/G_ema", render_samples(trainer.G_ema, fixed_z))
        record = evaluate(step, "eval.json")
        if record is not None and run.writes and run.out_dir is not None:
            bundle_io.record_eval(run.out_dir, STAGE, record)
        if run.dry_run and stats is not None:
            log.info("generator: dry run finished (losses G %.4f, D %.4f); nothing written", stats.loss_G, stats.loss_D)
    return 0
