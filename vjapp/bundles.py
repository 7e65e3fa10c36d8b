"""Which bundle the app plays: a chosen directory, the embedded default, or a random stand-in."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from typing import Iterable

from model.bundle import DEFAULT_OUTPUT_SIZE, Bundle, load_bundle, random_bundle

log = logging.getLogger(__name__)

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
DEFAULT_BUNDLE_DIR = RESOURCES / "default"
DEMO_AUDIO_DIR = RESOURCES / "demo"


# What the show needs: every part a bundle holds (F_a and CLIP serve the latent atlas; absent ones stay None).
SHOW_PARTS = ("generator", "clip", "audio_encoder", "sound_inversion", "predictor")


def stand_in_bundle() -> Bundle:
    """A random bundle of the embedded default's sizes, shown at its size (when no default loads)."""
    return random_bundle(output_size=DEFAULT_OUTPUT_SIZE)


def open_bundle(path: str | Path | None, device: torch.device | str = "cpu",
                parts: Iterable[str] | None = None, lazy_clip: bool = False) -> tuple[Bundle, str]:
    """Load ``path``, else the embedded default, else a random bundle; returns (bundle, description).

    ``parts`` limits what is loaded (None: everything); ``lazy_clip``: a native CLIP is built on
    first real use (see :func:`model.bundle.load_bundle`). A bundle that is not fully trained is
    described as such, so the app and ``vjapp render`` can say honestly what the audience is
    looking at.
    """
    if path is not None:
        bundle = load_bundle(path, device=device, parts=parts, lazy_clip=lazy_clip)
        where = str(path)
    elif (DEFAULT_BUNDLE_DIR / "bundle.json").is_file():
        bundle = load_bundle(DEFAULT_BUNDLE_DIR, device=device, parts=parts, lazy_clip=lazy_clip)
        where = "the embedded default"
    else:
        bundle = stand_in_bundle().to(device)
        where = "a randomly initialized bundle (no trained default is installed yet)"
        return bundle, where
    if not bundle.info.is_trained:
        where += f" (untrained parts: {', '.join(bundle.info.untrained_parts)})"
    return bundle, where
