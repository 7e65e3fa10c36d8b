"""Losses shared by the stages.

* :func:`info_nce` — CLIP's symmetric contrastive loss between two batches of embeddings
  (cross-entropy both ways over the batch). Under DDP it gathers both sides from every rank
  (this rank's shard keeps its gradient, see :func:`training.distributed.all_gather_with_grad`)
  and scores this rank's rows against the global batch, so the negatives are the whole
  global batch and the DDP-averaged gradient equals the single-process one.
* :func:`cosine_distance` — ``1 - cos(a, b)`` per row (the papers' L_enc terms).
* :func:`colour_layout` / :func:`palette_distance` — the mean colours of a coarse grid of cells
  and the L1 distance between two images' grids (sound2video's palette term, eval's palette metric).
* :func:`zero_shot_logits` / :func:`top1_accuracy` — nearest-class evaluation in CLIP space.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from training.distributed import all_gather_with_grad, get_rank, is_distributed


def _gather_labels(labels: torch.Tensor) -> torch.Tensor:
    """Every rank's labels [B] concatenated in rank order (no gradient needed)."""
    if not is_distributed():
        return labels
    import torch.distributed as dist

    parts = [torch.empty_like(labels) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, labels.contiguous())
    return torch.cat(parts)


def _check_pair(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
        raise TypeError(f"{name} expects tensors")
    if a.dim() != 2 or b.dim() != 2 or a.shape != b.shape:
        raise ValueError(f"{name} expects two [B, D] tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] < 1:
        raise ValueError(f"{name} got an empty batch")


def info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    logit_scale: torch.Tensor | float,
    *,
    gather: bool = True,
    normalize: bool = True,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE: row i of ``a`` [B, D] matches row i of ``b`` [B, D] and no other.

    ``logit_scale`` is CLIP's *log* temperature (a learnable scalar, ``exp`` is applied here,
    capped at 100 as CLIP does) or a float. ``gather``: use every rank's batch as negatives
    under DDP. ``labels`` [B] (optional): rows with equal labels are all positives of each
    other (the target spreads evenly over them), for batches where the same class or caption
    occurs several times and plain InfoNCE would push identical texts apart. Returns the mean
    of the a→b and b→a cross-entropies (a scalar).
    """
    _check_pair(a, b, "info_nce")
    if normalize:
        a = F.normalize(a.float(), dim=-1)
        b = F.normalize(b.float(), dim=-1)
    scale = torch.as_tensor(logit_scale, dtype=torch.float32, device=a.device).exp().clamp(max=100.0)
    n_local = a.shape[0]
    if gather and is_distributed():
        all_a, all_b = all_gather_with_grad(a), all_gather_with_grad(b)
        offset = get_rank() * n_local
    else:
        all_a, all_b, offset = a, b, 0
    logits_ab = scale * a @ all_b.t()  # [B, B_global]
    logits_ba = scale * b @ all_a.t()  # [B, B_global]
    if labels is None:
        target: torch.Tensor = torch.arange(n_local, device=a.device) + offset
    else:
        if labels.shape != (n_local,):
            raise ValueError(f"info_nce: labels must have shape [{n_local}], got {tuple(labels.shape)}")
        labels = labels.to(a.device).long()
        all_labels = _gather_labels(labels) if (gather and is_distributed()) else labels
        mask = (labels[:, None] == all_labels[None, :]).float()  # [B, B_global]
        target = mask / mask.sum(dim=1, keepdim=True)
    return 0.5 * (F.cross_entropy(logits_ab, target) + F.cross_entropy(logits_ba, target))


def cosine_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1 - cos(a_i, b_i)`` per row ``[B]`` (0 = same direction, 2 = opposite)."""
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"cosine_distance: widths differ ({a.shape[-1]} vs {b.shape[-1]})")
    return 1.0 - F.cosine_similarity(a.float(), b.float(), dim=-1)


def colour_layout(images: torch.Tensor, grid: int) -> torch.Tensor:
    """Mean colour of each cell of a ``grid`` x ``grid`` partition: ``[N, 3, H, W]`` → ``[N, 3, grid, grid]``.

    What a person sees from across the room: the palette and the rough layout (sky over ground,
    a bright column in the middle), none of the detail. Any image size works (``H``, ``W`` >= grid).
    """
    if images.dim() != 4:
        raise ValueError(f"colour_layout expects [N, C, H, W], got {tuple(images.shape)}")
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1 or grid > min(images.shape[-2:]):
        raise ValueError(f"colour_layout: grid must be an int in [1, {min(images.shape[-2:])}], got {grid!r}")
    return F.adaptive_avg_pool2d(images.float(), grid)


def palette_distance(a: torch.Tensor, b: torch.Tensor, grid: int) -> torch.Tensor:
    """Mean L1 between the colour layouts of ``a`` and ``b`` (``[N, 3, H, W]`` each, sizes may differ) → ``[N]``.

    In the images' own units ([-1, 1] here): 0 is the same palette and layout; a black frame
    against a grey daylight street is about 0.9.
    """
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"palette_distance: batches differ ({tuple(a.shape[:2])} vs {tuple(b.shape[:2])})")
    return (colour_layout(a, grid) - colour_layout(b, grid)).abs().flatten(1).mean(dim=1)


def zero_shot_logits(embeddings: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of each embedding [N, D] to each class embedding [C, D] → [N, C]."""
    return F.normalize(embeddings.float(), dim=-1) @ F.normalize(class_embeddings.float(), dim=-1).t()


def top1_accuracy(embeddings: torch.Tensor, class_embeddings: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of embeddings whose nearest class embedding is their label."""
    if embeddings.shape[0] == 0:
        raise ValueError("top1_accuracy: no embeddings to evaluate")
    pred = zero_shot_logits(embeddings, class_embeddings).argmax(dim=-1)
    return float((pred.cpu() == labels.cpu().long()).float().mean().item())
