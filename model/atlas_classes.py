"""What class each latent atlas entry draws, named by classifiers trained on real frames.

The atlas (:mod:`model.atlas`) knows its entries only through the bundle's CLIP. A small CLIP may
not tell two of the generator's scenes apart (the default's tiny CLIP ranks its dark rain skies
and its thunder skies alike), so the scene layer would blend the wrong ones. A bundle can carry
each entry's class probabilities ``[N, K]`` instead, computed once by classifiers trained on the
real frames of the data (:mod:`training.judge`: a training signal with its own seed and data,
never the eval's judge) and stored beside the atlas as ``cache/atlas-classes-KEY.safetensors``,
keyed by the atlas's own key and the labels: a changed generator or CLIP never reads stale classes.
The show only reads the file (``vjapp-train atlas-classes`` writes it); without one the entries are
scored against the class prompts' CLIP embeddings as before.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from model.atlas import AtlasSteering, LatentAtlas
from model.latent_cache import read_cache, write_cache
from model.lazy_clip import class_anchors

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (done, total)


def classes_name(atlas: LatentAtlas, labels: Sequence[str]) -> str:
    """The cache file name of ``atlas``'s entry classes for these labels (order matters)."""
    h = hashlib.sha256(atlas.key.encode())
    for label in labels:
        h.update(b"\0" + label.encode())
    return f"atlas-classes-{h.hexdigest()[:16]}.safetensors"


@torch.no_grad()
def classify_atlas(generator: torch.nn.Module, atlas: LatentAtlas, classifiers: Sequence[torch.nn.Module],
                   batch: int = 128, progress: Progress | None = None) -> torch.Tensor:
    """Class probabilities ``[N, K]`` of each entry's picture (drawn as the atlas drew it: its
    truncation, const noise): the softmax of the classifiers' summed logits, so an entry counts
    as a class only when every classifier (e.g. full frame and structure only) sees it."""
    if not classifiers:
        raise ValueError("classify_atlas needs at least one classifier")
    G = generator
    device = next(G.parameters()).device
    w_avg = G.mapping.w_avg.float()
    was = G.training
    G.eval()
    out = []
    t0 = time.monotonic()
    try:
        for start in range(0, len(atlas), batch):
            w = atlas.w[start:start + batch].to(device).float()
            shown = w_avg + atlas.truncation_psi * (w - w_avg)
            img = G.synthesis(shown[:, None].expand(-1, int(G.num_ws), -1).contiguous(), noise_mode="const")
            img = img.float().clamp(-1, 1)
            logits = sum(c(img.to(next(c.parameters()).device)).float().cpu() for c in classifiers)
            out.append(torch.softmax(logits, dim=1))
            if progress is not None:
                progress(min(start + batch, len(atlas)), len(atlas))
    finally:
        G.train(was)
    log.info("classified %d atlas entries in %.1f s", len(atlas), time.monotonic() - t0)
    return torch.cat(out)


def save_atlas_classes(atlas: LatentAtlas, labels: Sequence[str], probs: torch.Tensor, bundle_root: Path | None,
                       source: str = "", seeds: Sequence[int] = ()) -> Path | None:
    """Write the entry classes beside the atlas; returns the path (None when nothing was writable).
    ``source``: what named them (for people); ``seeds``: the classifiers' training seeds (so the
    eval can refuse classes named by its own judge)."""
    _check(atlas, labels, probs)
    return write_cache(classes_name(atlas, labels), bundle_root, {"probs": probs.float()},
                       {"labels": "\n".join(labels), "source": source, "samples": str(len(atlas)),
                        "seeds": ",".join(str(int(s)) for s in seeds)})


@dataclass(frozen=True)
class StoredClasses:
    """The entry classes stored for an atlas: ``probs [N, K]``, what named them, their seeds."""

    probs: torch.Tensor
    source: str
    seeds: tuple[int, ...]


def read_atlas_classes(atlas: LatentAtlas, labels: Sequence[str], bundle_root: Path | None) -> StoredClasses | None:
    """The stored entry classes for this atlas and labels, or None (no file, or one that does not
    fit: logged, never fatal)."""
    if not labels:
        return None
    hit = read_cache(classes_name(atlas, labels), bundle_root)
    if hit is None:
        return None
    tensors, meta = hit
    probs = tensors.get("probs")
    try:
        if meta.get("labels", "").split("\n") != list(labels):
            raise ValueError(f"its labels {meta.get('labels', '').splitlines()} are not the bundle's")
        _check(atlas, labels, probs)
    except ValueError as exc:
        log.warning("ignoring the atlas entry classes: %s", exc)
        return None
    assert probs is not None
    source = meta.get("source", "")
    seeds = tuple(int(x) for x in meta.get("seeds", "").split(",") if x.strip().lstrip("-").isdigit())
    log.info("atlas entries classed by %s", source or "stored classifiers")
    return StoredClasses(probs.float(), source, seeds)


def atlas_classes(atlas: LatentAtlas, labels: Sequence[str], bundle_root: Path | None) -> torch.Tensor | None:
    """Just the stored class probabilities ``[N, K]`` (see :func:`read_atlas_classes`), or None."""
    stored = read_atlas_classes(atlas, labels, bundle_root)
    return None if stored is None else stored.probs


def scene_steering(atlas: LatentAtlas, clip: torch.nn.Module | None, labels: Sequence[str],
                   bundle_root: Path | None) -> AtlasSteering:
    """The steering the show's scene layer plays a bundle through: F_a's query against ``atlas``,
    weighing the class prompts (when the bundle has labels) and, where the bundle stores them, its
    entries' classes named by real-frame classifiers in place of their prompt similarities. The
    show and sound2video's atlas term both build it here, so training pulls toward what the show
    steers to."""
    anchors = class_anchors(clip, labels, bundle_root) if labels and clip is not None else None
    entry_classes = atlas_classes(atlas, labels, bundle_root) if anchors is not None else None
    return AtlasSteering(atlas, anchors=anchors, entry_classes=entry_classes)


def _check(atlas: LatentAtlas, labels: Sequence[str], probs: torch.Tensor | None) -> None:
    if not isinstance(probs, torch.Tensor) or tuple(probs.shape) != (len(atlas), len(labels)):
        shape = tuple(probs.shape) if isinstance(probs, torch.Tensor) else None
        raise ValueError(f"entry classes of shape {shape}, expected {(len(atlas), len(labels))}")
    p = probs.float()
    if not bool(torch.isfinite(p).all()) or bool((p < 0).any()) or not torch.allclose(p.sum(1), torch.ones(len(p)),
                                                                                       atol=1e-3):
        raise ValueError("entry classes are not probabilities (finite, >= 0, rows summing to 1)")
