"""Classifiers trained on real frames used as a *training signal* (never the eval's judge).

The generator's class balance (``vjapp-train generator --class-balance-judge``) and the atlas
entries' classes (``vjapp-train atlas-classes``) may be driven by the same small CNNs the eval
judges with (:mod:`training.judge`, full frame + structure only), but then they must be separate
models: their own seed, their own data (e.g. ``vjapp-train synthscapes`` with another ``--seed``),
their own folder. :func:`signal_classifiers` trains them there when asked, loads them otherwise,
and refuses the eval judge's seeds and classifiers whose labels are not the bundle's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from training.judge_report import JUDGE_SEEDS
from training.run import TrainingError

DEFAULT_SIGNAL_SEED = 31_337


def signal_classifiers(folder: Path, labels: Sequence[str], seed: int = DEFAULT_SIGNAL_SEED,
                       data: Path | None = None, steps: int = 600, cache_dir: Path | None = None,
                       who: str = "classifiers") -> list[Any]:
    """``[full, structure]`` classifiers from ``folder`` (trained first on ``data``'s train split
    when given and missing or stale there). ``who`` names the option in error messages."""
    from model.formats import CheckpointError
    from training.judge import FORMS, load_judge
    from training.judge_report import ensure_judges

    if seed in JUDGE_SEEDS or seed + 1 in JUDGE_SEEDS:
        raise TrainingError(f"{who}: seed {seed}: the eval's independent judge uses {JUDGE_SEEDS}; "
                            "a training signal needs its own seed")
    if data is not None:
        made = ensure_judges(Path(data), list(labels), Path(folder), steps=int(steps), cache_dir=cache_dir, seed=seed)
        return [made.full, made.structure]
    out = []
    for form in FORMS:
        try:
            judge = load_judge(Path(folder), form)
        except (CheckpointError, OSError, ValueError, KeyError) as exc:
            raise TrainingError(f"{who} {folder}: no {form} classifier there ({exc}); give its data to train it") from exc
        if int(judge.config.seed) in JUDGE_SEEDS:
            raise TrainingError(f"{who} {folder}: that is the eval's judge (seed {judge.config.seed}); train a "
                                "separate one (its own data and seed)")
        if list(judge.config.labels) != list(labels):
            raise TrainingError(f"{who} {folder}: its labels {list(judge.config.labels)} are not {list(labels)}")
        out.append(judge)
    return out
