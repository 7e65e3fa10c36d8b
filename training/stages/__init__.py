"""The training stages of ``vjapp-train``, one module each.

A stage module exposes ``add_arguments(parser)`` (calling
:func:`training.run.add_common_arguments` with its own defaults) and ``run(args) -> int``,
trains inside a :class:`training.run.Run`, and writes its part into the bundle directory with
``run.write_part``. The command table lives in :mod:`training.cli`.

Shared evaluation helpers for stages that work in CLIP space live here.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch

from model.clip import ClipModel

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}", "a photo of {}", "the sound of {}")


def label_texts(labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[list[str]]:
    """The prompt texts of every label: ``[[template.format(label) for template], ...]``."""
    if not labels:
        raise ValueError("no labels to build prompts from")
    if not templates or not all("{}" in t for t in templates):
        raise ValueError(f"prompt templates need a '{{}}' placeholder, got {list(templates)}")
    return [[t.format(label) for t in templates] for label in labels]


@torch.no_grad()
def class_text_embeddings(
    clip: ClipModel, labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES
) -> torch.Tensor:
    """One unit text embedding per label ``[C, D]``: the normalised mean over the prompt templates."""
    texts = label_texts(labels, templates)
    flat = [t for group in texts for t in group]
    emb = clip.encode_text(flat).view(len(labels), len(templates), -1).mean(dim=1)  # [C, D]
    return torch.nn.functional.normalize(emb, dim=-1)
