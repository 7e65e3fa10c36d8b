"""An independent judge of what a frame shows: classifiers trained on real frames only.

The eval's CLIP metrics are scored by the same CLIP that trained E_a, and the palette term
rewards the coarse colour layout, so a colour field that a CLIP names "fire" scores well. The
judge is apart from every model the training uses: a small CNN trained here on **real frames
of the data only** (never on generated frames, never through the bundle's CLIP), with its own
seed and its own data split, and no training stage ever reads it.

It comes in two forms, trained separately on the same real frames:

- ``full``: the frame as it is (colour, layout, structure);
- ``structure``: the frame without its colour layout — grey (luma), the mean of each cell of a
  coarse 8 x 8 grid removed, contrast normalised — so only edges, shapes and textures are left.
  A colour field with the right palette is named right by ``full`` and not by ``structure``.

A judge is saved as ``judge-<form>.safetensors`` + ``.json`` (:class:`JudgeConfig` inside, with
the hash of the data it was trained on) and reused when the data and settings match.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.formats import CheckpointError, load_network, network_paths, read_network_config, save_network

log = logging.getLogger(__name__)

KIND = "judge"
FORMS = ("full", "structure")
LAYOUT_GRID = 8  # the coarse colour layout removed by the structure form: one mean per cell of 8 x 8


@dataclass
class JudgeConfig:
    """Hyperparameters of one judge and what it was trained on."""

    form: str = "full"  # "full" | "structure"
    labels: list[str] = field(default_factory=list)
    size: int = 64  # frames are resized to size x size
    widths: tuple[int, ...] = (32, 64, 128, 128)
    seed: int = 90_001  # its own seed: no training stage uses it
    steps: int = 600
    batch_size: int = 64
    lr: float = 2e-3
    data_key: str = ""  # hash of the training frames' clip list and split

    def __post_init__(self) -> None:
        if self.form not in FORMS:
            raise ValueError(f"judge form must be one of {FORMS}, got {self.form!r}")
        self.widths = tuple(int(w) for w in self.widths)
        if self.size < 16 or self.size % 16:
            raise ValueError(f"judge size must be a multiple of 16 (>= 16), got {self.size}")

    @property
    def in_channels(self) -> int:
        return 3 if self.form == "full" else 1


def structure_only(images: torch.Tensor, grid: int = LAYOUT_GRID) -> torch.Tensor:
    """``[N, 3, H, W]`` in [-1, 1] → ``[N, 1, H, W]``: luma minus its coarse ``grid x grid`` layout.

    Each cell's mean is removed (nearest upsampling of the cell means), then the frame is scaled to
    unit standard deviation, so neither the colours, their layout nor the overall contrast is left.
    """
    r, g, b = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    luma = 0.299 * r + 0.587 * g + 0.114 * b
    h, w = luma.shape[-2:]
    layout = F.adaptive_avg_pool2d(luma, (grid, grid))
    detail = luma - F.interpolate(layout, size=(h, w), mode="nearest")
    std = detail.flatten(1).std(dim=1).clamp_min(1e-3).view(-1, 1, 1, 1)
    return detail / std


class Judge(nn.Module):
    """A small CNN over ``size x size`` frames: strided 3x3 convolutions, global pooling, a linear head."""

    def __init__(self, config: JudgeConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = config.in_channels
        for width in config.widths:
            layers += [nn.Conv2d(c_in, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.SiLU(),
                       nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.SiLU()]
            c_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, len(config.labels))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` in [-1, 1] (any size) → the network's input for its form."""
        s = self.config.size
        x = images.float()
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=x.shape[-1] > s)
        return x if self.config.form == "full" else structure_only(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits ``[N, K]`` for frames ``[N, 3, H, W]`` in [-1, 1]."""
        return self.head(self.features(self.prepare(images)).mean(dim=(2, 3)))

    @torch.no_grad()
    def classify(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """Predicted class index ``[N]`` (eval mode), in batches."""
        was = self.training
        self.eval()
        out = torch.cat([self(images[i:i + batch]).argmax(1) for i in range(0, images.shape[0], batch)])
        self.train(was)
        return out


def data_key(paths: Sequence[str], labels: Sequence[int]) -> str:
    """A stable hash of the training clips (file names and labels): a judge is reused only for them."""
    h = hashlib.sha256()
    for p, lab in sorted(zip(paths, labels)):
        h.update(f"{Path(p).name}:{int(lab)}\n".encode())
    return h.hexdigest()[:16]


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Per frame: a random crop of 70–100 % of the side, resized back, flipped half the time (one
    batched resampling)."""
    n = x.shape[0]
    scale = 0.7 + 0.3 * torch.rand(n, generator=gen)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (1 - scale)[:, None]  # keep the crop inside
    flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale * flip
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def train_judge(frames: torch.Tensor, labels: torch.Tensor, config: JudgeConfig,
                progress: Callable[[int, int, float], None] | None = None) -> Judge:
    """Train one judge on real frames ``[N, 3, H, W]`` in [-1, 1] with class indices ``[N]``.

    Deterministic for a given config and data (its own seed); CPU-sized (a minute or two).
    """
    if frames.ndim != 4 or frames.shape[0] != labels.shape[0] or frames.shape[0] < 2:
        raise ValueError(f"need frames [N, 3, H, W] and labels [N] with N >= 2, got {tuple(frames.shape)}, "
                         f"{tuple(labels.shape)}")
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    judge = Judge(config)
    s = config.size
    # resize once: training sees the same resolution the judge classifies at
    x_all = torch.cat([F.interpolate(frames[i:i + 256].float(), size=(s, s), mode="bilinear", align_corners=False,
                                     antialias=frames.shape[-1] > s) for i in range(0, frames.shape[0], 256)])
    y_all = labels.long()
    opt = torch.optim.AdamW(judge.parameters(), lr=config.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.steps, pct_start=0.15)
    judge.train()
    t0 = time.monotonic()
    for step in range(config.steps):
        idx = torch.randint(0, x_all.shape[0], (config.batch_size,), generator=gen)
        x = _augment(x_all[idx], gen)
        loss = F.cross_entropy(judge.head(judge.features(
            x if config.form == "full" else structure_only(x)).mean(dim=(2, 3))), y_all[idx], label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if progress is not None and (step % 50 == 0 or step == config.steps - 1):
            progress(step + 1, config.steps, float(loss.detach()))
    judge.eval()
    log.info("trained the %s judge: %d steps on %d real frames in %.0f s", config.form, config.steps,
             x_all.shape[0], time.monotonic() - t0)
    return judge


def judge_path(directory: Path, form: str) -> Path:
    return Path(directory) / f"judge-{form}"


def save_judge(directory: Path, judge: Judge, metadata: dict | None = None) -> Path:
    stem = judge_path(directory, judge.config.form)
    stem.parent.mkdir(parents=True, exist_ok=True)
    save_network(stem, judge, judge.config, KIND, metadata or {})
    return stem


def load_judge(directory: Path, form: str, device: str | torch.device = "cpu") -> Judge:
    """Load a saved judge (eval mode); raises CheckpointError when missing or corrupt."""
    model, _, _ = load_network(judge_path(directory, form), JudgeConfig, Judge, KIND, device)
    return model.eval()


def cached_judge_matches(directory: Path, form: str, config: JudgeConfig) -> bool:
    """A judge is saved in ``directory`` for this form, these labels, this data and these settings."""
    weights, cfg_path = network_paths(judge_path(directory, form))
    if not (weights.is_file() and cfg_path.is_file()):
        return False
    try:
        saved = read_network_config(judge_path(directory, form), KIND)["config"]
    except CheckpointError:
        return False
    want = {"labels": list(config.labels), "size": config.size, "widths": list(config.widths),
            "seed": config.seed, "steps": config.steps, "batch_size": config.batch_size,
            "data_key": config.data_key, "form": form}
    return all(saved.get(k) == v for k, v in want.items())


@torch.no_grad()
def accuracy_per_class(predicted: torch.Tensor, labels: torch.Tensor, names: Sequence[str]) -> dict[str, float]:
    """Share of frames of each present class that were named as that class."""
    out: dict[str, float] = {}
    for c, name in enumerate(names):
        mask = labels == c
        if bool(mask.any()):
            out[name] = float((predicted[mask] == c).float().mean())
    return out


def mean_or_nan(values: dict[str, float]) -> float:
    return float(sum(values.values()) / len(values)) if values else math.nan
