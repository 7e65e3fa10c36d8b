"""Helpers for the tests of real-frame classifiers used as a training signal."""

from __future__ import annotations

from typing import Sequence

import torch


def untrained_judges(labels: Sequence[str], seed: int = 31_337) -> list:
    """A full and a structure classifier (training.judge) of these labels, randomly initialised
    (eval mode), with ``seed`` and ``seed + 1`` as their recorded seeds."""
    from training.judge import Judge, JudgeConfig

    torch.manual_seed(seed)
    return [Judge(JudgeConfig(form=f, labels=list(labels), size=16, seed=seed + i)).eval()
            for i, f in enumerate(("full", "structure"))]
