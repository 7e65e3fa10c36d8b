"""What the independent judge says about a bundle: per method, per class, and the generator's ceiling.

Used by ``vjapp-train eval`` (:mod:`training.stages.eval`). Every figure here comes from the judges
of :mod:`training.judge` (trained on real frames only), never from the bundle's CLIP:

- **named right**, per class and method, full frame and structure only, on the frames after the
  first second of each held-out clip;
- the **generator's ceiling**: random samples at the live truncation, classified by both judges
  (the full judge's class shares, and how often the structure judge agrees with it per class);
- the **reaction time** after a class switch: clip A's sound then clip B's, frames at every model
  step, the time until the full judge names B and keeps naming it;
- the **loudness ratio**: latent motion with the sound at a tenth of its amplitude over the
  motion at full scale.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from training.judge import (
    FORMS,
    Judge,
    JudgeConfig,
    accuracy_per_class,
    cached_judge_matches,
    data_key,
    load_judge,
    mean_or_nan,
    save_judge,
    train_judge,
)

log = logging.getLogger(__name__)

JUDGE_FPS = 2.0  # real frames per second of clip used to train the judge (consecutive frames are alike)


@dataclass
class Judges:
    full: Judge
    structure: Judge
    held_out: dict[str, dict[str, float]]  # form -> class -> accuracy on held-out real frames

    def forms(self) -> dict[str, Judge]:
        return {"full": self.full, "structure": self.structure}


def _real_frames(data: Path, split: str, labels: Sequence[str], size: int,
                 cache_dir: Path | None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    from training.data.video_folder import FrameDataset

    ds = FrameDataset(data, split=split, size=size, fps=JUDGE_FPS, labels=list(labels), cache_dir=cache_dir)
    frames = torch.stack([ds[i]["image"] for i in range(len(ds))])
    targets = torch.tensor([int(ds[i]["label"]) for i in range(len(ds))])
    return frames, targets, [it.path for it in ds.items]


JUDGE_SEED = 90_001  # the eval's judges: the full form this seed, the structure form the next
JUDGE_SEEDS = (JUDGE_SEED, JUDGE_SEED + 1)  # no training signal may use these (see training/signal_classifiers.py)


def ensure_judges(data: Path, labels: Sequence[str], judge_dir: Path, steps: int = 600,
                  cache_dir: Path | None = None, seed: int = JUDGE_SEED, size: int = 64, batch_size: int = 64,
                  progress: Callable[[str, int, int, float], None] | None = None) -> Judges:
    """The two judges for ``data``: loaded from ``judge_dir`` when they match its train split and
    settings, else trained on the train split's real frames (and saved). Each is checked on the
    held-out split's real frames."""
    frames, targets, paths = _real_frames(data, "train", labels, size, cache_dir)
    key = data_key(paths, targets.tolist())
    judges: dict[str, Judge] = {}
    for form in FORMS:
        config = JudgeConfig(form=form, labels=list(labels), size=size, seed=seed + FORMS.index(form),
                             steps=steps, batch_size=batch_size, data_key=key)
        if cached_judge_matches(judge_dir, form, config):
            judges[form] = load_judge(judge_dir, form)
            log.info("using the %s judge saved in %s", form, judge_dir)
            continue
        log.info("training the %s judge on %d real frames of %s (train split)", form, frames.shape[0], data)
        cb = (lambda s, n, loss, f=form: progress(f, s, n, loss)) if progress is not None else None
        judges[form] = train_judge(frames, targets, config, cb)
        save_judge(judge_dir, judges[form], {"data": str(data), "split": "train", "frames": int(frames.shape[0])})
    val_frames, val_targets, _ = _real_frames(data, "val", labels, size, cache_dir)
    held_out = {form: accuracy_per_class(j.classify(val_frames), val_targets, labels) for form, j in judges.items()}
    for form, acc in held_out.items():
        log.info("%s judge on %d held-out real frames: %.3f mean over classes", form, val_frames.shape[0],
                 mean_or_nan(acc))
    return Judges(judges["full"], judges["structure"], held_out)


def after_first_second(segments: int, segment_seconds: float) -> list[int]:
    """Segments whose frame (at the segment's end) is shown after the first second of the clip."""
    return [t for t in range(segments) if (t + 1) * segment_seconds > 1.0 + 1e-9] or [segments - 1]


@torch.no_grad()
def method_scores(judges: Judges, frames: torch.Tensor, labels: torch.Tensor, names: Sequence[str],
                  segment_seconds: float) -> dict[str, dict[str, float]]:
    """Per form: class -> share of a method's frames (after the first second) named as the clip's class,
    plus ``"mean"``. ``frames`` ``[N, T, 3, H, W]``, ``labels`` ``[N]``."""
    keep = after_first_second(frames.shape[1], segment_seconds)
    sel = frames[:, keep].flatten(0, 1)
    lab = labels.repeat_interleave(len(keep))
    out: dict[str, dict[str, float]] = {}
    for form, judge in judges.forms().items():
        per = accuracy_per_class(judge.classify(sel), lab, names)
        out[form] = {"mean": mean_or_nan(per), "min": min(per.values()) if per else math.nan, "per_class": per}
    return out


@torch.no_grad()
def generator_ceiling(G: torch.nn.Module, judges: Judges, names: Sequence[str], samples: int, psi: float,
                      seed: int, batch: int = 32) -> dict[str, object]:
    """Random samples at truncation ``psi`` classified by both judges.

    Returns the full judge's share of samples per class (coverage), the structure judge's, and per
    class (by the full judge) how often the structure judge names the same class (agreement).
    """
    gen = torch.Generator().manual_seed(seed + 271_828)
    device = next(G.parameters()).device
    full_pred, struct_pred = [], []
    for start in range(0, samples, batch):
        n = min(batch, samples - start)
        z = torch.randn(n, int(G.z_dim), generator=gen).to(device)
        img = G.synthesis(G.mapping(z, truncation_psi=psi), noise_mode="const").float().clamp(-1, 1).cpu()
        full_pred.append(judges.full.classify(img))
        struct_pred.append(judges.structure.classify(img))
    f, s = torch.cat(full_pred), torch.cat(struct_pred)
    k = len(names)
    cov_full = torch.bincount(f, minlength=k).double() / f.numel()
    cov_struct = torch.bincount(s, minlength=k).double() / s.numel()
    agree = {names[c]: float((s[f == c] == c).float().mean()) for c in range(k) if bool((f == c).any())}
    return {
        "samples": samples,
        "truncation_psi": psi,
        "full_share": {names[c]: float(cov_full[c]) for c in range(k)},
        "structure_share": {names[c]: float(cov_struct[c]) for c in range(k)},
        "structure_agrees": agree,
        "structure_agrees_overall": float((s == f).float().mean()),
    }


def switch_pairs(labels: torch.Tensor, pairs: int) -> list[tuple[int, int]]:
    """``pairs`` (i, j) clip pairs of different classes, spread over the class pairs (deterministic)."""
    idx = list(range(labels.shape[0]))
    out: list[tuple[int, int]] = []
    step = 1
    while len(out) < pairs and step < len(idx):
        for i in idx:
            j = (i + step) % len(idx)
            if int(labels[i]) != int(labels[j]):
                out.append((i, j))
                if len(out) >= pairs:
                    break
        step += 1
    return out


def reaction_time(predicted: Sequence[int], target: int, step_seconds: float, hold: int = 3) -> float:
    """Seconds from the switch until the prediction is ``target`` and stays so for ``hold`` steps
    (``inf`` if never). ``predicted[j]`` is the frame after step ``j + 1`` following the switch."""
    run = 0
    for j, p in enumerate(predicted):
        run = run + 1 if p == target else 0
        if run >= hold:
            return (j - hold + 2) * step_seconds
    return math.inf


def summarize_reactions(times: Sequence[float]) -> dict[str, float | int | None]:
    finite = [t for t in times if math.isfinite(t)]
    return {
        "pairs": len(times),
        "reached": len(finite),
        "median_s": statistics.median(times) if times else None,
        "worst_s": max(times) if times else None,
    }
