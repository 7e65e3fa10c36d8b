"""Kernel Inception Distance on CLIP features, and per-class coverage of generator samples.

KID (Bińkowski et al., "Demystifying MMD GANs", ICLR 2018) is the unbiased estimate of the squared
maximum mean discrepancy between two feature distributions under the cubic polynomial kernel

    k(x, y) = (x . y / d + 1) ** 3            (d = feature width)

averaged over random subsets of equal size m drawn without replacement from each set:

    MMD² = [Σ_{i≠j} k(x_i, x_j) + Σ_{i≠j} k(y_i, y_j)] / (m (m - 1)) - 2 Σ_{i,j} k(x_i, y_j) / m²

Unlike FID it is unbiased in the number of samples, so small evaluation sets (hundreds of frames)
give meaningful comparisons. We use CLIP image embeddings instead of Inception features because no
Inception weights can be downloaded here and the bundle brings its own CLIP.

:func:`class_coverage` answers "does the generator cover every class?": it classifies random
samples by the nearest CLIP text embedding of each label's prompt and returns the fraction per label.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)


class KIDError(ValueError):
    """The feature sets cannot give a KID (wrong shapes, too few samples, non-finite values)."""


def _as_features(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise KIDError(f"{name} must be a 2-D array of features [N, D], got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise KIDError(f"{name} needs at least 2 samples for an unbiased KID, got {arr.shape[0]}")
    if not np.isfinite(arr).all():
        raise KIDError(f"{name} contains NaN or Inf values")
    return arr


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² of two equally sized samples [m, d] under the cubic polynomial kernel."""
    m, d = x.shape
    kxx = (x @ x.T / d + 1.0) ** 3
    kyy = (y @ y.T / d + 1.0) ** 3
    kxy = (x @ y.T / d + 1.0) ** 3
    same = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(same - 2.0 * kxy.sum() / (m * m))


def kid(
    features_real: Any,  # [N, D] array or tensor
    features_fake: Any,  # [M, D] array or tensor
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID between two feature sets: ``(mean, std)`` of the unbiased MMD² over random subsets.

    ``subset_size`` is reduced to ``min(N, M)`` when either set is smaller; each subset draws that
    many samples without replacement from each set (reproducibly, from ``seed``).
    """
    real = _as_features(features_real, "features_real")
    fake = _as_features(features_fake, "features_fake")
    if real.shape[1] != fake.shape[1]:
        raise KIDError(f"feature widths differ: real has {real.shape[1]}, fake has {fake.shape[1]}")
    if isinstance(subsets, bool) or not isinstance(subsets, int) or subsets < 1:
        raise KIDError(f"subsets must be a positive integer, got {subsets!r}")
    if isinstance(subset_size, bool) or not isinstance(subset_size, int) or subset_size < 2:
        raise KIDError(f"subset_size must be an integer >= 2, got {subset_size!r}")
    m = min(subset_size, real.shape[0], fake.shape[0])
    rng = np.random.default_rng(seed)
    values = np.empty(subsets, dtype=np.float64)
    for i in range(subsets):
        x = fake[rng.choice(fake.shape[0], m, replace=False)]
        y = real[rng.choice(real.shape[0], m, replace=False)]
        values[i] = mmd2_unbiased(x, y)
    return float(values.mean()), float(values.std())


# ----------------------------------------------------------------------------------------------
# Features


@torch.no_grad()
def clip_image_features(clip: nn.Module, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """CLIP image embeddings [N, D] (float32, CPU) of images [N, 3, H, W] in [-1, 1], in batches."""
    device = next(clip.parameters()).device
    out = []
    for i in range(0, images.shape[0], batch_size):
        batch = images[i : i + batch_size].to(device, torch.float32).clamp(-1, 1)
        out.append(clip.encode_image(batch).float().cpu())
    return torch.cat(out, dim=0)


@torch.no_grad()
def generator_features(
    G: nn.Module,
    clip: nn.Module,
    n_samples: int,
    batch_size: int = 32,
    seed: int = 0,
    truncation_psi: float = 1.0,
    noise_mode: str = "const",
) -> torch.Tensor:
    """CLIP image embeddings [n_samples, D] of random generator samples (z from ``seed``)."""
    device = next(G.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    done = 0
    while done < n_samples:
        n = min(batch_size, n_samples - done)
        z = torch.randn([n, G.z_dim], generator=gen).to(device)
        ws = G.mapping(z, truncation_psi=truncation_psi)
        img = G.synthesis(ws, noise_mode=noise_mode)  # [n, 3, H, W]
        out.append(clip_image_features(clip, img, batch_size))
        done += n
    return torch.cat(out, dim=0)


# ----------------------------------------------------------------------------------------------
# Class coverage


@torch.no_grad()
def class_coverage(
    G: nn.Module,
    clip: nn.Module,
    labels: Sequence[str],
    n_samples: int,
    templates: Sequence[str] | None = None,
    batch_size: int = 32,
    seed: int = 0,
    truncation_psi: float = 1.0,
) -> dict[str, float]:
    """Fraction of ``n_samples`` random generator samples whose nearest label prompt is each label.

    Each sample's CLIP image embedding is compared (cosine) with each label's CLIP text embedding
    (the mean over prompt ``templates``, :func:`training.stages.class_text_embeddings`, the same
    prompts the other stages classify with); the sample counts for the closest label. Fractions
    sum to 1. A generator that dropped a class (mode collapse) shows it near 0.
    """
    from training.stages import DEFAULT_TEMPLATES, class_text_embeddings

    labels = list(labels)
    if not labels or not all(isinstance(s, str) and s for s in labels):
        raise ValueError(f"class_coverage needs a non-empty list of label strings, got {labels!r}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"class_coverage labels must be distinct, got {labels!r}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    text = class_text_embeddings(clip, labels, tuple(templates or DEFAULT_TEMPLATES)).float().cpu()  # [L, D]
    image = generator_features(G, clip, n_samples, batch_size=batch_size, seed=seed,
                               truncation_psi=truncation_psi)  # [n, D], unit length
    nearest = (image @ text.T).argmax(dim=1)  # [n]
    counts = torch.bincount(nearest, minlength=len(labels)).double()
    fractions = counts / counts.sum()
    return {label: float(f) for label, f in zip(labels, fractions)}


def kid_summary(mean: float, std: float, n_real: int, n_fake: int, subsets: int, subset_size: int) -> dict[str, Any]:
    """A JSON-ready record of one KID evaluation."""
    return {
        "kid": mean if math.isfinite(mean) else None,
        "kid_std": std if math.isfinite(std) else None,
        "n_real": n_real,
        "n_fake": n_fake,
        "subsets": subsets,
        "subset_size": min(subset_size, n_real, n_fake),
        "features": "clip_image",
    }
