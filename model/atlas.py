"""The latent atlas: pictures the generator draws well, indexed by what a CLIP sees in them.

Free W+ offsets walk off the generator's manifold into colour fields that a CLIP still names
right. The atlas keeps meaning on the manifold: ``samples`` latents ``w`` of the generator's own
mapping (z from a fixed seed), each rendered small at the live truncation and embedded by the
bundle's CLIP. Live, a CLIP-space query — F_a's embedding of the sound, or a text prompt's — picks
the atlas entries nearest to it and blends their ``w`` (:class:`AtlasSteering`): a target the
generator is known to draw, in W (one w for every layer), not an independent per-layer walk.

Building takes one synthesis and one CLIP image encoding per sample, batched, with progress.
The result is cached beside the bundle (:mod:`model.latent_cache`) under a key that hashes the
generator, the CLIP's image tower and the settings, so it is rebuilt when either changes, and it
is deterministic (same networks and settings, same atlas).

Sound2Scene (Sung-Bin et al., CVPR 2023) conditions a generator on an audio embedding mapped into
a visual embedding space; the atlas is a training-free version of that route for any generator
with a CLIP-compatible view: audio → CLIP space → nearest drawn pictures → their latents.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from model.latent_cache import module_hash, read_cache, write_cache
from model.lazy_clip import image_tower

log = logging.getLogger(__name__)

ATLAS_SEED = 31_415_926
Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class AtlasSettings:
    """How an atlas is sampled (part of its cache key)."""

    samples: int = 4096
    truncation_psi: float = 0.7  # as the show draws by default
    render_size: int = 64  # synthesis output is resized to this before CLIP (CLIP resizes anyway)
    seed: int = ATLAS_SEED
    batch: int = 32

    def __post_init__(self) -> None:
        if self.samples < 1 or self.batch < 1 or self.render_size < 8:
            raise ValueError(f"bad atlas settings {self}")
        if not (0.0 <= self.truncation_psi <= 2.0):
            raise ValueError(f"atlas truncation_psi must be in [0, 2], got {self.truncation_psi}")

    def tag(self) -> str:
        return f"n{self.samples}-psi{self.truncation_psi:g}-r{self.render_size}-s{self.seed}"


@dataclass
class LatentAtlas:
    """``w [N, w_dim]`` raw (untruncated) latents, ``embeddings [N, D]`` unit-length CLIP image
    embeddings of their truncated pictures, the truncation they were drawn at and the cache key."""

    w: torch.Tensor
    embeddings: torch.Tensor
    truncation_psi: float
    key: str

    def __len__(self) -> int:
        return int(self.w.shape[0])

    def to(self, device: torch.device | str) -> "LatentAtlas":
        return LatentAtlas(self.w.to(device), self.embeddings.to(device), self.truncation_psi, self.key)


def atlas_key(generator: torch.nn.Module, clip: torch.nn.Module, settings: AtlasSettings) -> str:
    """Hash of the generator (all of it: the pictures depend on synthesis too), CLIP's image side and settings
    (a LazyClip's image side is hashed from its file: the same key, no CLIP built)."""
    return module_hash([generator, image_tower(clip)], extra=settings.tag())


@torch.no_grad()
def build_atlas(
    generator: torch.nn.Module,
    clip: torch.nn.Module,
    settings: AtlasSettings = AtlasSettings(),
    progress: Progress | None = None,
    key: str = "",
) -> LatentAtlas:
    """Sample, render and embed ``settings.samples`` latents (deterministic; no cache involved)."""
    G = generator
    device = next(G.parameters()).device
    was = G.training, clip.training
    G.eval()
    clip.eval()
    gen = torch.Generator().manual_seed(settings.seed)
    w_avg = G.mapping.w_avg.float()
    psi = settings.truncation_psi
    ws, embs = [], []
    t0 = time.monotonic()
    try:
        for start in range(0, settings.samples, settings.batch):
            n = min(settings.batch, settings.samples - start)
            z = torch.randn(n, int(G.z_dim), generator=gen).to(device)
            w = G.mapping(z, truncation_psi=1.0)  # [n, L, C]
            w0 = w[:, 0].float()
            shown = w_avg + psi * (w0 - w_avg)
            img = G.synthesis(shown[:, None].expand(-1, w.shape[1], -1).contiguous(), noise_mode="const")
            img = img.float().clamp(-1, 1)
            if img.shape[-1] != settings.render_size:
                img = F.interpolate(img, size=(settings.render_size, settings.render_size), mode="bilinear",
                                    align_corners=False, antialias=img.shape[-1] > settings.render_size)
            ws.append(w0.cpu())
            embs.append(clip.encode_image(img).float().cpu())
            if progress is not None:
                progress(start + n, settings.samples)
    finally:
        G.train(was[0])
        clip.train(was[1])
    log.info("built a latent atlas of %d samples in %.1f s", settings.samples, time.monotonic() - t0)
    return LatentAtlas(torch.cat(ws), F.normalize(torch.cat(embs), dim=-1), psi, key)


def atlas_for(
    generator: torch.nn.Module,
    clip: torch.nn.Module,
    bundle_root: Path | None = None,
    settings: AtlasSettings = AtlasSettings(),
    progress: Progress | None = None,
) -> LatentAtlas:
    """The generator's atlas from the cache when its key matches, else built and cached."""
    key = atlas_key(generator, clip, settings)
    name = f"atlas-{key}.safetensors"
    hit = read_cache(name, bundle_root)
    if hit is not None and {"w", "embeddings"} <= set(hit[0]):
        tensors, meta = hit
        log.info("latent atlas from the cache (%d samples)", tensors["w"].shape[0])
        return LatentAtlas(tensors["w"].float(), tensors["embeddings"].float(),
                           float(meta.get("truncation_psi", settings.truncation_psi)), key)
    atlas = build_atlas(generator, clip, settings, progress, key)
    path = write_cache(name, bundle_root, {"w": atlas.w.half(), "embeddings": atlas.embeddings.half()},
                       {"truncation_psi": str(settings.truncation_psi), "samples": str(settings.samples)})
    if path is not None:
        log.info("cached the latent atlas in %s", path)
    # what a later load gets back (fp16 on disk): the same values now and then
    return LatentAtlas(atlas.w.half().float(), atlas.embeddings.half().float(), atlas.truncation_psi, key)


def cached_atlas(generator: torch.nn.Module, clip: torch.nn.Module, bundle_root: Path | None,
                 settings: AtlasSettings = AtlasSettings()) -> LatentAtlas | None:
    """The cached atlas if there is one for these networks and settings (never builds)."""
    key = atlas_key(generator, clip, settings)
    hit = read_cache(f"atlas-{key}.safetensors", bundle_root)
    if hit is None or not {"w", "embeddings"} <= set(hit[0]):
        return None
    return LatentAtlas(hit[0]["w"].float(), hit[0]["embeddings"].float(),
                       float(hit[1].get("truncation_psi", settings.truncation_psi)), key)


@dataclass
class SteeringSettings:
    """How a query picks and blends atlas entries."""

    # defaults chosen with the eval's independent judge on held-out synthscapes clips (README)
    top_k: int = 16  # entries blended
    temperature: float = 0.05  # softmax temperature over the score (smaller: sharper)
    locality: float = 0.0  # prefer entries near the current base latent (in units of w's spread)
    anchor: float = 2.0  # weight of the query's nearest class prompt in the score (0: the query alone)


class AtlasSteering:
    """CLIP-space query → a target ``w`` blended from the nearest atlas entries."""

    def __init__(self, atlas: LatentAtlas, settings: SteeringSettings | None = None,
                 anchors: torch.Tensor | None = None, entry_classes: torch.Tensor | None = None) -> None:
        """``anchors``: unit CLIP text embeddings of the bundle's class prompts ``[K, D]`` (optional):
        with ``settings.anchor > 0`` an entry also scores by its similarity to the prompt of the class
        the query is nearest to, so what a sound *is* weighs beside the finer detail of how it sounds.
        ``entry_classes`` ``[N, K]`` (optional, with ``anchors``): each entry's class probabilities
        from classifiers trained on real frames (:mod:`model.atlas_classes`); they replace the
        entries' prompt similarities in that score (which class the *sound* is stays CLIP's)."""
        self.atlas = atlas
        self.settings = settings or SteeringSettings()
        w = atlas.w
        self.spread = float(w.std(0).norm()) or 1.0  # typical distance between two samples / sqrt(2)
        self.anchors = None if anchors is None else F.normalize(anchors.float(), dim=-1).to(atlas.embeddings.device)
        # how much each entry is of each class [N, K] (fixed per atlas): its classes named by real-frame
        # classifiers when given, else its CLIP similarity to each class prompt
        self.classed = entry_classes is not None and self.anchors is not None
        self._entry_anchor: torch.Tensor | None = None
        if self.classed:
            assert entry_classes is not None and self.anchors is not None
            if tuple(entry_classes.shape) != (len(atlas), self.anchors.shape[0]):
                raise ValueError(f"entry_classes {tuple(entry_classes.shape)} do not fit an atlas of {len(atlas)} "
                                 f"entries and {self.anchors.shape[0]} classes")
            self._entry_anchor = entry_classes.float().to(atlas.embeddings.device)
        elif self.anchors is not None:
            self._entry_anchor = atlas.embeddings @ self.anchors.T

    def to(self, device: torch.device | str) -> "AtlasSteering":
        """Move the atlas and the class scores to ``device`` (in place); returns self."""
        self.atlas = self.atlas.to(device)
        if self.anchors is not None:
            self.anchors = self.anchors.to(device)
        if self._entry_anchor is not None:
            self._entry_anchor = self._entry_anchor.to(device)
        return self

    @torch.no_grad()
    def weights(self, query: torch.Tensor, base_w: torch.Tensor | None = None,
                classes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(indices [B, k], weights [B, k])`` for queries ``[B, D]`` (or ``[D]``), weights summing to 1;
        ``classes`` ``[B]``: the class prompt to anchor to (default: the one each query is nearest to)."""
        q = F.normalize(query.float().reshape(-1, query.shape[-1]), dim=-1).to(self.atlas.embeddings.device)
        sims = q @ self.atlas.embeddings.T  # [B, N]
        s = self.settings
        k = max(1, min(s.top_k, sims.shape[1]))
        if s.anchor > 0.0 and self._entry_anchor is not None:
            assert self.anchors is not None
            nearest = (q @ self.anchors.T).argmax(dim=1) if classes is None else classes.to(q.device)  # [B]
            sims = sims + s.anchor * self._entry_anchor[:, nearest].T  # [B, N]
        score = sims / max(s.temperature, 1e-4)
        if s.locality > 0.0 and base_w is not None:
            b = base_w.float().reshape(-1, base_w.shape[-1]).to(self.atlas.w.device)  # [B or 1, C]
            d2 = torch.cdist(b, self.atlas.w).pow(2) / (self.spread ** 2)  # [B, N]
            score = score - s.locality * d2
        top, idx = score.topk(k, dim=1)
        return idx, torch.softmax(top, dim=1)

    @torch.no_grad()
    def target(self, query: torch.Tensor, base_w: torch.Tensor | None = None,
               classes: torch.Tensor | None = None) -> torch.Tensor:
        """Blended raw ``w`` ``[B, w_dim]`` for queries ``[B, D]`` (``classes``: see :meth:`weights`)."""
        idx, wts = self.weights(query, base_w, classes)
        return (self.atlas.w[idx] * wts.unsqueeze(-1)).sum(1)

    @torch.no_grad()
    def nearest_similarity(self, query: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each query to its nearest atlas entry ``[B]`` (how well it is served)."""
        q = F.normalize(query.float().reshape(-1, query.shape[-1]), dim=-1).to(self.atlas.embeddings.device)
        return (q @ self.atlas.embeddings.T).max(dim=1).values


def expected_build_seconds(samples: int, seconds_per_sample: float) -> float:
    return math.ceil(samples * seconds_per_sample)
