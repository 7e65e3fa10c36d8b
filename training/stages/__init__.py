"""The training stages of ``vjapp-train``, one module each.

A stage module exposes ``add_arguments(parser)`` (calling
:func:`training.run.add_common_arguments` with its own defaults) and ``run(args) -> int``,
trains inside a :class:`training.run.Run`, and writes its part into the bundle directory with
``run.write_part``. The command table lives in :mod:`training.cli`.

Shared evaluation helpers for stages that work in CLIP space live here.
"""

from __future__ import annotations

import logging

from model.clip import DEFAULT_TEMPLATES, class_text_embeddings, label_texts

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_TEMPLATES", "class_text_embeddings", "label_texts"]
