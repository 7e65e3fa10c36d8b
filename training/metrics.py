"""The paper's sound-to-video metrics (ECCV 2022, Table 3a), on CLIP embeddings.

All functions take L2-normalised embeddings (``ClipModel.encode_image`` / ``encode_text`` and
F_a already return unit vectors; :func:`_unit` re-normalises defensively) and return plain
Python numbers, so the evaluation can put ours and every baseline side by side:

* **audio-video similarity** — mean cosine between F_a(audio segment ``t``) and F_v(frame ``t``);
* **text-video similarity** — mean cosine between F_t(the clip's label prompt) and F_v(frame);
* **semantic consistency** — each frame classified by CLIP against every label prompt; top-1
  accuracy per class (and the mean over classes);
* **audio label top-1** — F_a(audio segment) classified against the label prompts: does the audio
  encoder itself hear the class (independent of the generator, so the same for every method).

Two pixel-space measures sit beside them, because a small CLIP can name a frame as the class
without the frame looking like it (the tiny default CLIP calls a black frame "raining"):

* **palette distance** — L1 between the colour layout of each generated frame and that of the
  real frame of the same clip and segment (:func:`training.losses.palette_distance`), per class;
* **brightness** — mean luma of the frames per class, to set beside the real frames'.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F


class MetricInputError(ValueError):
    """Embeddings or labels of inconsistent shapes."""


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.float(), dim=-1)


def _check_seq(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 3 or min(x.shape) < 1:
        raise MetricInputError(f"{name} must be [N, T, D] embeddings, got {tuple(getattr(x, 'shape', ()))}")


def audio_video_similarity(frame_emb: torch.Tensor, audio_emb: torch.Tensor) -> float:
    """Mean cos(F_v(frame_t), F_a(audio_t)) over clips and segments; both ``[N, T, D]``."""
    _check_seq("frame_emb", frame_emb)
    _check_seq("audio_emb", audio_emb)
    if frame_emb.shape != audio_emb.shape:
        raise MetricInputError(f"frame_emb {tuple(frame_emb.shape)} and audio_emb {tuple(audio_emb.shape)} differ")
    return float((_unit(frame_emb) * _unit(audio_emb)).sum(-1).mean())


def text_video_similarity(frame_emb: torch.Tensor, text_emb: torch.Tensor) -> float:
    """Mean cos(F_v(frame_t), F_t(prompt of the clip)): frames ``[N, T, D]``, one prompt per clip ``[N, D]``."""
    _check_seq("frame_emb", frame_emb)
    if text_emb.dim() != 2 or text_emb.shape[0] != frame_emb.shape[0] or text_emb.shape[1] != frame_emb.shape[2]:
        raise MetricInputError(f"text_emb must be [{frame_emb.shape[0]}, {frame_emb.shape[2]}], got {tuple(text_emb.shape)}")
    return float((_unit(frame_emb) * _unit(text_emb).unsqueeze(1)).sum(-1).mean())


def _check_labels(labels: torch.Tensor, n: int, k: int) -> torch.Tensor:
    labels = torch.as_tensor(labels).long().reshape(-1)
    if labels.numel() != n:
        raise MetricInputError(f"need {n} labels, got {labels.numel()}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise MetricInputError(f"labels must be in [0, {k}), got range [{int(labels.min())}, {int(labels.max())}]")
    return labels


def classify(emb: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
    """Nearest class prompt by cosine: ``[..., D]`` against ``[K, D]`` → class indices ``[...]``."""
    if class_emb.dim() != 2 or emb.shape[-1] != class_emb.shape[-1]:
        raise MetricInputError(f"class_emb must be [K, {emb.shape[-1]}], got {tuple(class_emb.shape)}")
    return (_unit(emb) @ _unit(class_emb).T).argmax(dim=-1)


@dataclass
class ClassAccuracy:
    """Top-1 accuracy per class (classes with no sample are left out) and their mean."""

    per_class: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def mean(self) -> float:
        """Mean of the per-class accuracies (balanced accuracy); NaN with no class."""
        return sum(self.per_class.values()) / len(self.per_class) if self.per_class else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "per_class": dict(self.per_class), "counts": dict(self.counts)}


def per_class_top1(pred: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> ClassAccuracy:
    """Top-1 accuracy per class: ``pred [N, ...]`` predicted indices for items of class ``labels [N]``."""
    k = len(class_names)
    labels = _check_labels(labels, pred.shape[0], k)
    hits = (pred.reshape(pred.shape[0], -1) == labels.view(-1, 1).to(pred.device)).float()  # [N, M]
    out = ClassAccuracy()
    for c, name in enumerate(class_names):
        rows = hits[labels == c]
        if rows.numel():
            out.per_class[name] = float(rows.mean())
            out.counts[name] = int(rows.numel())
    return out


def semantic_consistency(frame_emb: torch.Tensor, class_emb: torch.Tensor, labels: torch.Tensor,
                         class_names: Sequence[str]) -> ClassAccuracy:
    """Frames ``[N, T, D]`` classified by CLIP against the label prompts ``[K, D]``: top-1 per class."""
    _check_seq("frame_emb", frame_emb)
    if len(class_names) != class_emb.shape[0]:
        raise MetricInputError(f"{len(class_names)} class names for {class_emb.shape[0]} class embeddings")
    return per_class_top1(classify(frame_emb, class_emb), labels, class_names)


def audio_label_top1(audio_emb: torch.Tensor, class_emb: torch.Tensor, labels: torch.Tensor,
                     class_names: Sequence[str]) -> ClassAccuracy:
    """F_a's segments ``[N, T, D]`` (or clips ``[N, D]``) classified against the label prompts ``[K, D]``."""
    if audio_emb.dim() == 2:
        audio_emb = audio_emb.unsqueeze(1)
    _check_seq("audio_emb", audio_emb)
    if len(class_names) != class_emb.shape[0]:
        raise MetricInputError(f"{len(class_names)} class names for {class_emb.shape[0]} class embeddings")
    return per_class_top1(classify(audio_emb, class_emb), labels, class_names)


@dataclass
class MethodMetrics:
    """The Table 3a numbers of one method on one evaluation set."""

    audio_video: float
    text_video: float
    semantic: ClassAccuracy
    motion: float = 0.0  # mean per-w L2 step between consecutive latents (how much it moves)
    extra: dict[str, float] = field(default_factory=dict)  # e.g. KID, class coverage

    def to_json(self) -> dict[str, Any]:
        return {
            "audio_video_similarity": self.audio_video,
            "text_video_similarity": self.text_video,
            "semantic_consistency": self.semantic.to_json(),
            "latent_motion": self.motion,
            **self.extra,
        }


def method_metrics(frame_emb: torch.Tensor, audio_emb: torch.Tensor, class_emb: torch.Tensor,
                   labels: torch.Tensor, class_names: Sequence[str], motion: float = 0.0) -> MethodMetrics:
    """Every per-method metric at once (frames ``[N, T, D]``, audio ``[N, T, D]``, prompts ``[K, D]``)."""
    labels = _check_labels(labels, frame_emb.shape[0], class_emb.shape[0])
    text = class_emb[labels.to(class_emb.device)]  # [N, D]: the prompt of each clip's label
    return MethodMetrics(
        audio_video=audio_video_similarity(frame_emb, audio_emb),
        text_video=text_video_similarity(frame_emb, text),
        semantic=semantic_consistency(frame_emb, class_emb, labels, class_names),
        motion=motion,
    )


def _per_class_means(values: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """Per-clip values ``[N]`` → ``{"mean": mean over classes present, "per_class": {name: mean}}``."""
    labels = _check_labels(labels, values.shape[0], len(class_names))
    per_class = {name: float(values[labels == c].mean()) for c, name in enumerate(class_names)
                 if bool((labels == c).any())}
    mean = sum(per_class.values()) / len(per_class) if per_class else float("nan")
    return {"mean": mean, "per_class": per_class}


def palette_per_class(frames: torch.Tensor, real: torch.Tensor, labels: torch.Tensor,
                      class_names: Sequence[str], grid: int = 4) -> dict[str, Any]:
    """Palette distance of frames ``[N, T, 3, H, W]`` to the real frames ``[N, T, 3, H', W']`` of the same
    clips and segments (both in [-1, 1]), averaged per clip, then per class (lower is closer)."""
    from training.losses import palette_distance

    if frames.dim() != 5 or real.dim() != 5 or frames.shape[:3] != real.shape[:3]:
        raise MetricInputError(f"frames {tuple(frames.shape)} and real frames {tuple(real.shape)} must both be "
                               "[N, T, 3, H, W] with the same N and T")
    n, t = frames.shape[:2]
    per_clip = palette_distance(frames.flatten(0, 1), real.flatten(0, 1).to(frames.device), grid).view(n, t).mean(1)
    return _per_class_means(per_clip.cpu(), labels, class_names)


def brightness_per_class(frames: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    """Mean luma (Rec. 601, 0 black .. 1 white) of frames ``[N, T, 3, H, W]`` in [-1, 1], per class."""
    if frames.dim() != 5 or frames.shape[2] != 3:
        raise MetricInputError(f"frames must be [N, T, 3, H, W], got {tuple(frames.shape)}")
    rgb = (frames.float().clamp(-1, 1) + 1) / 2
    luma = (0.299 * rgb[:, :, 0] + 0.587 * rgb[:, :, 1] + 0.114 * rgb[:, :, 2]).flatten(1).mean(1)  # [N]
    return _per_class_means(luma.cpu(), labels, class_names)
