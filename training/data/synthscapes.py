"""synthscapes: our own procedural audio-visual dataset (DESIGN.md section 5).

Nine classes mirror the Landscape dataset of the sound-guided video papers, in the order of
``model.bundle.LANDSCAPE_LABELS``. A clip is a pure function of ``(label, seed)`` and its
settings: a seeded generator draws the scene's parameters (palette / time of day, intensity
curves, event times), the sound is synthesised from them and the picture is rendered from the same
curves frame by frame (see :mod:`training.data.synth_scenes`), so the sound drives the picture.

On disk (``write_synthscapes`` / ``vjapp-train synthscapes``)::

    OUT/manifest.csv              path,label,caption,seed,split   (path relative to OUT)
    OUT/manifest.json             the settings, labels and split rule
    OUT/<label>/<slug>_00000.mp4  H.264 + AAC mono, one per clip

Clips go round-robin over the classes (balanced); within a class, clip ``k`` is in the validation
split when ``k % 5 == 1`` (so even two clips per class give one of each, and big sets are 80/20).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from model.bundle import LANDSCAPE_LABELS
from vjapp.output.mp4 import Mp4Writer

from .synth_audio import normalize_peak
from .synth_scenes import CAPTIONS, SCENES, SceneContext, caption_for, scene_info
from .synth_video import to_uint8

__all__ = [
    "LABELS",
    "SPLIT_EVERY",
    "SynthParams",
    "ClipSpec",
    "SynthClip",
    "generate_clip",
    "plan_clips",
    "write_clip",
    "write_synthscapes",
    "split_of",
    "slug",
    "add_arguments",
    "run",
]

log = logging.getLogger(__name__)

LABELS: tuple[str, ...] = tuple(LANDSCAPE_LABELS)
FORMAT_VERSION = 1
SPLIT_EVERY = 5  # clip k of a class is validation when k % SPLIT_EVERY == 1
DEFAULT_SECONDS = 4.0
DEFAULT_SIZE = 128
DEFAULT_FPS = 16.0
DEFAULT_SAMPLE_RATE = 22050
PEAK = 0.9

assert list(SCENES) == list(LABELS) and list(CAPTIONS) == list(LABELS), "scene table out of label order"


def slug(label: str) -> str:
    """File-name form of a label: ``"squishing water"`` -> ``"squishing_water"``."""
    return label.replace(" ", "_")


def split_of(k: int) -> str:
    """Split of the ``k``-th clip (0-based) of a class: ``"val"`` when ``k % 5 == 1``, else ``"train"``."""
    return "val" if k % SPLIT_EVERY == 1 else "train"


@dataclass(frozen=True)
class SynthParams:
    """The random parameters one clip was drawn with (for the record; the seed reproduces them)."""

    label_index: int
    label: str
    seed: int
    variant: str  # palette / time of day
    caption_index: int
    events: tuple[float, ...]  # times (s) of the class's sound events (thunder, splashes, ...)
    mean_drive: float  # mean of the per-frame driver (flash, flicker, density, ...)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClipSpec:
    """One clip of a dataset plan: which class, which seed, where it goes."""

    index: int  # position in the dataset (round-robin over classes)
    label_index: int
    seed: int
    name: str  # file stem, e.g. "thunderstorm_00003"
    split: str  # "train" | "val"

    @property
    def label(self) -> str:
        return LABELS[self.label_index]

    @property
    def relpath(self) -> str:
        """Path of the MP4 relative to the dataset root (POSIX separators)."""
        return f"{self.label}/{self.name}.mp4"


@dataclass
class SynthClip:
    """A generated clip: picture, sound, and what they show."""

    frames: np.ndarray  # [T, H, W, 3] uint8 RGB
    audio: np.ndarray  # [S] float32 mono, peak <= 0.9
    sample_rate: int
    fps: float
    label: str
    caption: str
    params: SynthParams
    drive: np.ndarray  # [T] float32: the sound parameter each frame shows (flash, flicker, ...)


# ------------------------------------------------------------------------------- generation
def _check_settings(seconds: float, size: int, fps: float, sample_rate: int) -> None:
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds) and 0 < seconds <= 600):
        raise ValueError(f"seconds must be in (0, 600], got {seconds!r}")
    if not isinstance(size, (int, np.integer)) or not 16 <= size <= 2048 or size % 2:
        raise ValueError(f"size must be an even number of pixels in 16..2048, got {size!r}")
    if not (isinstance(fps, (int, float)) and math.isfinite(fps) and 1 <= fps <= 120):
        raise ValueError(f"fps must be in 1..120, got {fps!r}")
    if not isinstance(sample_rate, (int, np.integer)) or not 8000 <= sample_rate <= 96000:
        raise ValueError(f"sample_rate must be an int in 8000..96000 Hz, got {sample_rate!r}")
    if seconds * fps < 1:
        raise ValueError(f"{seconds} s at {fps} fps is less than one frame")


def generate_clip(
    label_index: int,
    seed: int,
    seconds: float = DEFAULT_SECONDS,
    size: int = DEFAULT_SIZE,
    fps: float = DEFAULT_FPS,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
) -> SynthClip:
    """Synthesise one clip of class ``LABELS[label_index]``; the same arguments give identical arrays.

    Frames: ``round(seconds * fps)`` of ``size`` x ``size``; audio: ``round(seconds * sample_rate)``
    samples. Raises ValueError for an unknown label index, a negative seed or bad settings.
    """
    if not isinstance(label_index, (int, np.integer)) or not 0 <= label_index < len(LABELS):
        raise ValueError(f"label_index must be in 0..{len(LABELS) - 1}, got {label_index!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    _check_settings(seconds, size, fps, sample_rate)
    label = LABELS[int(label_index)]
    scene_seq, caption_seq = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(label_index),)).spawn(2)
    ctx = SceneContext(
        rng=np.random.default_rng(scene_seq),
        seconds=float(seconds),
        fps=float(fps),
        sample_rate=int(sample_rate),
        size=int(size),
    )
    result = SCENES[label](ctx)
    audio = normalize_peak(result.audio, PEAK)  # [S]
    frames = to_uint8(result.frames)  # [T, H, W, 3]
    assert frames.shape == (ctx.frames, size, size, 3) and audio.shape == (ctx.samples,), (frames.shape, audio.shape)
    caption_index = int(np.random.default_rng(caption_seq).integers(len(CAPTIONS[label])))
    info = scene_info(result)
    params = SynthParams(
        label_index=int(label_index),
        label=label,
        seed=int(seed),
        variant=result.variant,
        caption_index=caption_index,
        events=tuple(info.pop("events")),
        mean_drive=float(np.mean(result.drive)),
        extra={k: v for k, v in info.items() if k != "variant"},
    )
    return SynthClip(
        frames=frames,
        audio=audio,
        sample_rate=int(sample_rate),
        fps=float(fps),
        label=label,
        caption=caption_for(label, caption_index, result.variant),
        params=params,
        drive=result.drive.astype(np.float32),
    )


def write_clip(path: str | os.PathLike[str], clip: SynthClip) -> Path:
    """Encode ``clip`` to an MP4 (H.264 + AAC mono) at ``path``, written to a temporary name first
    so a crash never leaves a half file under the real name."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    t, h, w, _ = clip.frames.shape
    per_frame = clip.audio.shape[0] / t
    with Mp4Writer(
        tmp, w, h, clip.fps, audio_rate=clip.sample_rate, audio_channels=1, crf=18, preset="veryfast", threads=1
    ) as writer:
        for i in range(t):  # interleave: each frame with the sound heard while it shows
            writer.write_video(clip.frames[i])
            writer.write_audio(clip.audio[int(round(i * per_frame)) : int(round((i + 1) * per_frame))])
    os.replace(tmp, path)
    return path


def plan_clips(clips: int, seed: int) -> list[ClipSpec]:
    """The dataset plan: ``clips`` clips round-robin over the classes, each with its own seed."""
    if not isinstance(clips, (int, np.integer)) or clips < 1:
        raise ValueError(f"clips must be a positive int, got {clips!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    seeds = np.random.SeedSequence(int(seed)).generate_state(int(clips), dtype=np.uint32)
    plan = []
    for i in range(int(clips)):
        label_index = i % len(LABELS)
        k = i // len(LABELS)
        plan.append(ClipSpec(i, label_index, int(seeds[i]), f"{slug(LABELS[label_index])}_{k:05d}", split_of(k)))
    return plan


def _make_one(spec: ClipSpec, out_dir: str, seconds: float, size: int, fps: float, sample_rate: int) -> dict[str, Any]:
    """Generate and write one planned clip; returns its manifest row (worker entry point)."""
    clip = generate_clip(spec.label_index, spec.seed, seconds, size, fps, sample_rate)
    path = Path(out_dir) / spec.relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    write_clip(path, clip)
    return {"path": spec.relpath, "label": spec.label, "caption": clip.caption, "seed": spec.seed, "split": spec.split}


def write_synthscapes(
    out_dir: str | os.PathLike[str],
    clips: int,
    seconds: float = DEFAULT_SECONDS,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    *,
    fps: float = DEFAULT_FPS,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    workers: int = 1,
    progress: bool = True,
) -> Path:
    """Generate ``clips`` clips into ``out_dir`` (see the module docstring); returns manifest.csv's path.

    ``workers`` > 1 encodes in that many processes; the result is the same either way.
    """
    _check_settings(seconds, size, fps, sample_rate)
    if not isinstance(workers, (int, np.integer)) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    plan = plan_clips(clips, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from tqdm import tqdm

    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(plan), desc="synthscapes", unit="clip", file=sys.stderr, disable=not progress)
    args = (str(out), float(seconds), int(size), float(fps), int(sample_rate))
    try:
        if workers == 1:
            for spec in plan:
                rows.append(_make_one(spec, *args))
                bar.update(1)
        else:
            # spawn, not fork: the parent may hold torch/OpenMP threads that a fork would copy mid-state
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=int(workers), mp_context=ctx) as pool:
                futures = [pool.submit(_make_one, spec, *args) for spec in plan]
                for fut in futures:  # in plan order: the manifest does not depend on timing
                    rows.append(fut.result())
                    bar.update(1)
    finally:
        bar.close()

    manifest = out / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "label", "caption", "seed", "split"])
        writer.writeheader()
        writer.writerows(rows)
    settings = {
        "format": "synthscapes",
        "version": FORMAT_VERSION,
        "labels": list(LABELS),
        "clips": int(clips),
        "seconds": float(seconds),
        "size": int(size),
        "fps": float(fps),
        "sample_rate": int(sample_rate),
        "seed": int(seed),
        "split_rule": f"clip k of a class is val when k % {SPLIT_EVERY} == 1",
        "counts": {
            split: {lab: sum(1 for r in rows if r["label"] == lab and r["split"] == split) for lab in LABELS}
            for split in ("train", "val")
        },
        "video": "H.264 yuv420p, crf 18",
        "audio": "AAC mono",
    }
    (out / "manifest.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    log.info("wrote %d synthscapes clips to %s", len(rows), out)
    return manifest


# ------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``vjapp-train synthscapes``."""
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument("--clips", type=int, default=900, help="number of clips, spread evenly over the 9 classes")
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="length of each clip")
    parser.add_argument("--size", type=int, default=DEFAULT_SIZE, help="frame width and height in pixels (even)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (same seed, same dataset)")
    parser.add_argument("--fps", type=float, default=DEFAULT_FPS, help="video frame rate")
    parser.add_argument("--sample-rate", type=int, default=DEFAULT_SAMPLE_RATE, help="audio sample rate in Hz")
    parser.add_argument("--workers", type=int, default=1, help="encoding processes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run ``vjapp-train synthscapes``; returns the exit status (2 for bad settings)."""
    try:
        manifest = write_synthscapes(
            args.out,
            args.clips,
            args.seconds,
            args.size,
            args.seed,
            fps=args.fps,
            sample_rate=args.sample_rate,
            workers=args.workers,
            progress=not getattr(args, "no_progress", False),
        )
    except ValueError as exc:
        print(f"vjapp-train synthscapes: error: {exc}", file=sys.stderr)
        return 2
    print(manifest, file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.data.synthscapes`` (the same as ``vjapp-train synthscapes``)."""
    parser = argparse.ArgumentParser(prog="synthscapes", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main())
