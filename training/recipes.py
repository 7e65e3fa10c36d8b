"""``vjapp-train recipe NAME``: every stage in order, into one bundle, resumable.

A recipe is the list of stage invocations that builds a bundle from nothing::

    synthscapes → [signal-data] → clip → audio → generator → sound2video → [atlas-classes] → eval

The bracketed stages run where the recipe trains real-frame classifiers as a training signal
(``default``): ``signal-data`` writes a second synthscapes set with its own seed, on whose real
frames the generator's class balance and ``atlas-classes`` train their classifiers (never the
eval's judge, which trains on the main data with its own seeds).

Each stage is called in-process through its own ``add_arguments``/``run`` (exactly what
``vjapp-train STAGE ...`` would run), with the recipe's options. Data, run folders (checkpoints,
logs) and the evaluation report go into ``--work`` (default: ``OUT-work`` beside the bundle); the
bundle itself into ``--out``.

Resuming: ``WORK/recipe.json`` records each finished stage. Re-running the same command skips
finished stages and re-enters the first unfinished one, whose own run folder resumes it from its
newest checkpoint (``--resume`` is every stage's default). A training stage counts as finished when
it returned 0 *and* ``training.json`` marks all of its parts trained to the end (a stage stopped by
``--max-minutes`` writes its parts marked untrained). ``--max-minutes`` is a budget for the whole
recipe: each training stage gets what is left; when it runs out, the recipe stops with exit status
3 (:data:`EXIT_STOPPED`) and the next invocation continues.

Recipes:

* ``tiny`` — seconds on a CPU (tests, smoke runs): 32 px generator, 16 kHz / 32-mel frontend,
  18 two-second clips, a couple of steps per stage.
* ``default`` — the embedded default bundle (DESIGN.md §5): a 128 px StyleGAN2 (channel_base 4096,
  channel_max 64, w_dim 256) that the app shows upsampled to 256 px (``output_size``), F_a and E_a
  channels 16..128 (the whole bundle stays under the 60 MB the repository can carry), the
  22.05 kHz / 64-mel frontend, the tiny CLIP trained with same-class positives, 900 synthscapes
  clips of 4 s. 128 px rather than 256 because the generator is trained on a 2-core CPU when no
  GPU is lent (about 7 images/s at 128 px against 2.3 at 256). **The generator is the long
  part**: run the recipe with ``--max-minutes`` per session and re-run the same command to resume
  across sessions.

``--scale tiny`` keeps a recipe's architecture but cuts data and step counts to a smoke run
(``recipe default --scale tiny`` checks the default's wiring in minutes); ``--steps STAGE=N``
overrides a stage's step count.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from training.distributed import DEVICE_CHOICES
from training.run import TrainingError

log = logging.getLogger(__name__)

STATE_FILE = "recipe.json"
STATE_FORMAT = "vjapp.recipe"
EXIT_STOPPED = 3  # the time budget ran out before the recipe finished: run it again to resume
SCALES = ("tiny", "default")

# stage -> bundle parts it trains (its completion mark in training.json)
STAGE_PARTS: dict[str, tuple[str, ...]] = {
    "synthscapes": (),
    "clip": ("clip",),
    "audio": ("audio_encoder",),
    "generator": ("generator",),
    "sound2video": ("sound_inversion", "predictor"),
    "eval": (),
}
# recipe stages that run another stage's module with their own options
STAGE_MODULE_OF = {"signal-data": "synthscapes"}
SIGNAL_STAGES = ("signal-data", "atlas-classes")  # only where Sizes.signal_clips > 0
TRAINING_STAGES = ("clip", "audio", "generator", "sound2video")
DEVICE_STAGES = (*TRAINING_STAGES, "atlas-classes", "eval")  # the stages that take --device


@dataclass
class RecipeContext:
    """Where a recipe runs and how big."""

    out: Path  # the bundle directory
    work: Path  # data, run folders, report
    scale: str  # "tiny" or "default"
    steps: dict[str, int] = field(default_factory=dict)  # per-stage step overrides
    device: str = "auto"  # every stage that runs a model: auto, cpu or cuda
    amp: bool = False  # mixed precision in the training stages (CUDA only)

    def device_argv(self, stage: str) -> list[str]:
        """``--device`` (and ``--amp``) for ``stage``, if it runs a model and they are not the defaults."""
        argv = ["--device", self.device] if self.device != "auto" and stage in DEVICE_STAGES else []
        return argv + (["--amp"] if self.amp and stage in TRAINING_STAGES else [])

    @property
    def data(self) -> Path:
        return self.work / "synthscapes"

    def run_dir(self, stage: str) -> Path:
        return self.work / "runs" / stage

    @property
    def report(self) -> Path:
        return self.work / "eval"

    @property
    def signal_data(self) -> Path:
        """The classifiers' own synthscapes set (a training signal: not the eval judge's data)."""
        return self.work / "signal-data"

    @property
    def signal_classifiers(self) -> Path:
        return self.work / "signal-classifiers"


@dataclass(frozen=True)
class Sizes:
    """Everything a recipe decides, per scale where it differs."""

    # data
    clips: int
    clip_seconds: float
    data_size: int  # synthscapes frame size (px)
    data_fps: float
    # audio frontend
    sample_rate: int
    n_fft: int
    hop_length: int
    n_mels: int
    # models
    resolution: int
    output_size: int  # size the app shows the generator at ("native"); 0 = its resolution
    channel_base: int
    channel_max: int
    w_dim: int
    mapping_layers: int
    clip_arch: str
    audio_channels: tuple[int, ...]
    encoder_channels: tuple[int, ...]
    rnn_hidden: int
    segments: int
    render_size: int
    d_channel_base: int  # sound2video's image discriminator
    d_channel_max: int
    video_channels: tuple[int, ...]  # sound2video's video discriminator
    # steps and batches per stage
    steps: dict[str, int]
    batch: dict[str, int]
    eval_clips: int
    lr: dict[str, float] = field(default_factory=dict)  # per-stage learning rates (else the stage's default)
    class_balance: float = 0.0  # generator: weight of the class-balance term (0: off)
    class_balance_start: int = 0  # generator: the step it joins at
    class_balance_pull: float = 0.0  # generator: weight of the nearest-sample pull toward under-drawn classes
    class_balance_psi: float = 1.0  # generator: truncation of the fakes the class-balance term classifies
    clip_full_frames: int = 0  # sound2video: segments per sequence the CLIP losses also see at full size
    lambda_palette: float = 0.0  # sound2video: weight of the palette term (colour layout vs the real frame)
    # real-frame classifiers as a training signal (0 clips: none; the class balance then uses CLIP and
    # the atlas entries are scored by the class prompts)
    signal_clips: int = 0  # clips of their own synthscapes set
    signal_seed: int = 424_242  # that set's seed
    signal_classifier_seed: int = 555_000  # their seed (the eval judge's 90001/90002 are refused)
    signal_classifier_steps: int = 600


@dataclass(frozen=True)
class Recipe:
    """A named recipe: its sizes at each scale."""

    name: str
    summary: str
    sizes: Callable[[str], Sizes]


def _tiny_sizes(scale: str) -> Sizes:
    # The same at both scales: it is already a smoke run.
    return Sizes(
        clips=18, clip_seconds=2.0, data_size=32, data_fps=8.0,
        sample_rate=16000, n_fft=512, hop_length=256, n_mels=32,
        resolution=32, output_size=0, channel_base=1024, channel_max=32, w_dim=64, mapping_layers=2, clip_arch="vjapp-tiny",
        audio_channels=(8, 16, 16, 16), encoder_channels=(8, 16, 16, 16), rnn_hidden=32,
        segments=4, render_size=32, d_channel_base=512, d_channel_max=32, video_channels=(8, 16),
        steps={"clip": 2, "audio": 2, "generator": 2, "sound2video": 2},
        batch={"clip": 8, "audio": 4, "generator": 4, "sound2video": 2},
        eval_clips=4,
        signal_clips=18, signal_classifier_steps=30,
    )


def _default_sizes(scale: str) -> Sizes:
    full = scale == "default"
    return Sizes(
        clips=900 if full else 18, clip_seconds=4.0 if full else 2.0, data_size=256 if full else 64,
        data_fps=16.0 if full else 8.0,
        sample_rate=22050, n_fft=1024, hop_length=256, n_mels=64,
        resolution=128, output_size=256, channel_base=4096, channel_max=64, w_dim=256, mapping_layers=8, clip_arch="vjapp-tiny",
        audio_channels=(16, 32, 64, 128), encoder_channels=(16, 32, 64, 128), rnn_hidden=256,
        segments=8 if full else 4, render_size=32, d_channel_base=4096, d_channel_max=128,
        video_channels=(32, 64, 128),
        # the step counts of the shipped default, trained on a 2-core CPU (README); a GPU affords more
        steps=({"clip": 1000, "audio": 1200, "generator": 19306, "sound2video": 3400} if full
               else {"clip": 1, "audio": 1, "generator": 1, "sound2video": 1}),
        batch=({"clip": 128, "audio": 64, "generator": 8, "sound2video": 4} if full
               else {"clip": 8, "audio": 4, "generator": 2, "sound2video": 2}),
        eval_clips=64 if full else 4,
        lr={"sound2video": 3e-4},
        # the shipped generator ran plain to 13681 steps, then with the class-balance term, then was
        # fine-tuned 2400 steps with the pull and (the last 400) the live truncation, then 650 steps
        # with the term driven by real-frame classifiers (README)
        class_balance=1.0 if full else 0.0, class_balance_start=13681 if full else 0,
        class_balance_pull=0.5 if full else 0.0, class_balance_psi=0.7 if full else 1.0,
        clip_full_frames=2 if full else 0,
        lambda_palette=1.0 if full else 0.0,
        signal_clips=180 if full else 18,
        signal_classifier_steps=600 if full else 30,
    )


RECIPES: dict[str, Recipe] = {
    "tiny": Recipe("tiny", "seconds on a CPU: a 32 px bundle for tests and smoke runs", _tiny_sizes),
    "default": Recipe("default", "the embedded default bundle (long: resume across sessions)", _default_sizes),
}


def stage_argv(stage: str, s: Sizes, ctx: RecipeContext) -> list[str]:
    """The command line of one stage of a recipe (as ``vjapp-train STAGE ARGV`` would take it)."""
    steps = ctx.steps.get(stage, s.steps.get(stage, 1))
    common = ["--data", str(ctx.data), "--out", str(ctx.out), "--run-dir", str(ctx.run_dir(stage)),
              "--steps", str(steps), "--batch-size", str(s.batch.get(stage, 4))]
    if stage in s.lr:
        common += ["--lr", str(s.lr[stage])]
    small = ctx.scale == "tiny" or s.resolution <= 32
    if small:
        common += ["--log-every", "1", "--no-tensorboard"]
    if stage in ("synthscapes", "signal-data"):
        workers = 1 if small else max(1, min(8, os.cpu_count() or 1))
        if stage == "signal-data":
            where, clips, seed = ctx.signal_data, s.signal_clips, ["--seed", str(s.signal_seed)]
        else:
            where, clips, seed = ctx.data, s.clips, []
        return ["--out", str(where), "--clips", str(clips), "--seconds", str(s.clip_seconds),
                "--size", str(s.data_size), "--fps", str(s.data_fps), "--sample-rate", str(s.sample_rate),
                "--workers", str(workers), "--no-progress", *seed]
    if stage == "clip":
        return common + ["--arch", s.clip_arch]
    if stage == "audio":
        return common + ["--sample-rate", str(s.sample_rate), "--n-fft", str(s.n_fft),
                         "--hop-length", str(s.hop_length), "--n-mels", str(s.n_mels),
                         "--channels", *map(str, s.audio_channels)]
    if stage == "generator":
        argv = common + ["--resolution", str(s.resolution), "--channel-base", str(s.channel_base),
                         "--channel-max", str(s.channel_max), "--w-dim", str(s.w_dim),
                         "--mapping-layers", str(s.mapping_layers)]
        if s.output_size:
            argv += ["--output-size", str(s.output_size)]
        if not small:  # decoded frames are kept for the next session's resume
            argv += ["--cache-dir", str(ctx.work / "frame-cache")]
        if s.class_balance > 0:
            argv += ["--class-balance", str(s.class_balance), "--class-balance-start", str(s.class_balance_start),
                     "--class-balance-pull", str(s.class_balance_pull), "--class-balance-psi", str(s.class_balance_psi)]
            if s.signal_clips > 0:
                argv += ["--class-balance-judge", str(ctx.signal_classifiers), "--class-balance-judge-data",
                         str(ctx.signal_data), "--class-balance-judge-seed", str(s.signal_classifier_seed),
                         "--class-balance-judge-steps", str(s.signal_classifier_steps)]
        if small:
            argv += ["--kid-samples", "8", "--kid-subsets", "2", "--coverage-samples", "8"]
        return argv
    if stage == "sound2video":
        return common + ["--segments", str(s.segments), "--render-size", str(s.render_size),
                         "--clip-full-frames", str(s.clip_full_frames), "--lambda-palette", str(s.lambda_palette),
                         "--encoder-channels", *map(str, s.encoder_channels), "--head-hidden", str(s.rnn_hidden),
                         "--rnn-hidden", str(s.rnn_hidden), "--d-channel-base", str(s.d_channel_base),
                         "--d-channel-max", str(s.d_channel_max), "--video-channels", *map(str, s.video_channels)]
    if stage == "atlas-classes":
        argv = ["--bundle", str(ctx.out), "--classifiers", str(ctx.signal_classifiers), "--classifier-data",
                str(ctx.signal_data), "--classifier-seed", str(s.signal_classifier_seed),
                "--classifier-steps", str(s.signal_classifier_steps)]
        if small:
            argv += ["--atlas-samples", "64"]
        return argv
    if stage == "eval":
        argv = ["--data", str(ctx.data), "--bundle", str(ctx.out), "--out", str(ctx.report),
                "--clips", str(s.eval_clips), "--segments", str(s.segments)]
        if small:
            argv += ["--coverage-samples", "8", "--kid-subsets", "2", "--mp4-clips", "1", "--mp4-size", "64",
                     "--atlas-samples", "64", "--judge-steps", "30", "--switch-pairs", "2", "--base-seeds", "1"]
        return argv
    raise TrainingError(f"unknown stage {stage!r}")


STAGE_ORDER = ("synthscapes", "signal-data", "clip", "audio", "generator", "sound2video", "atlas-classes", "eval")


def recipe_stages(s: Sizes) -> tuple[str, ...]:
    """The stages this recipe runs, in order."""
    return tuple(st for st in STAGE_ORDER if s.signal_clips > 0 or st not in SIGNAL_STAGES)


# ------------------------------------------------------------------------------------------------
# State


def read_state(work: Path) -> dict[str, Any]:
    path = work / STATE_FILE
    if not path.is_file():
        return {"format": STATE_FORMAT, "stages": {}}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainingError(f"{path}: unreadable recipe state ({exc}); delete it to start over") from exc
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT or not isinstance(doc.get("stages"), dict):
        raise TrainingError(f"{path}: not a vjapp recipe state file")
    return doc


def write_state(work: Path, doc: dict[str, Any]) -> None:
    work.mkdir(parents=True, exist_ok=True)
    tmp = work / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, work / STATE_FILE)


def stage_finished(stage: str, ctx: RecipeContext) -> bool:
    """Did ``stage`` complete (not merely stop early)? Looks at what it leaves behind."""
    if stage == "synthscapes":
        return (ctx.data / "manifest.csv").is_file()
    if stage == "signal-data":
        return (ctx.signal_data / "manifest.csv").is_file()
    if stage == "atlas-classes":
        return any((ctx.out / "cache").glob("atlas-classes-*.safetensors"))
    if stage == "eval":
        return (ctx.report / "report.json").is_file()
    from training.bundle_io import read_training_json

    parts = read_training_json(ctx.out)["parts"] if ctx.out.is_dir() else {}
    return all(bool(parts.get(p, {}).get("trained", False)) for p in STAGE_PARTS[stage])


# ------------------------------------------------------------------------------------------------
# Running


def run_stage(stage: str, argv: Sequence[str]) -> int:
    """Run one stage in-process with ``argv`` (its own parser; as ``vjapp-train STAGE ARGV``)."""
    from training.cli import STAGES

    module = importlib.import_module(STAGES[STAGE_MODULE_OF.get(stage, stage)][0])
    parser = argparse.ArgumentParser(prog=f"vjapp-train {stage}")
    module.add_arguments(parser)
    args = parser.parse_args(list(argv))
    args._stage = stage
    return int(module.run(args) or 0)


def run_recipe(name: str, out: Path, work: Path | None = None, scale: str = "default",
               max_minutes: float = 0.0, steps: dict[str, int] | None = None,
               only: Sequence[str] | None = None, device: str = "auto", amp: bool = False) -> int:
    """Run recipe ``name`` into bundle ``out``; 0 when every stage is finished, 3 when time ran out."""
    if name not in RECIPES:
        raise TrainingError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
    if scale not in SCALES:
        raise TrainingError(f"--scale must be one of {SCALES}, got {scale!r}")
    if not (max_minutes >= 0):
        raise TrainingError(f"--max-minutes must be >= 0, got {max_minutes}")
    out = Path(out)
    work = Path(work) if work is not None else out.parent / f"{out.name}-work"
    if device not in DEVICE_CHOICES:
        raise TrainingError(f"--device must be one of {DEVICE_CHOICES}, got {device!r}")
    ctx = RecipeContext(out=out, work=work, scale=scale, steps=dict(steps or {}), device=device, amp=amp)
    sizes = RECIPES[name].sizes(scale)
    state = read_state(work)
    recorded = (state.get("recipe"), state.get("scale"))
    if state["stages"] and recorded != (name, scale):
        raise TrainingError(f"{work} holds recipe {recorded[0]!r} at scale {recorded[1]!r}, not {name!r} at "
                            f"{scale!r}; use another --work (and --out)")
    state.update(recipe=name, scale=scale, out=str(out))
    write_state(work, state)
    deadline = time.monotonic() + max_minutes * 60.0 if max_minutes > 0 else None
    stages = [s for s in recipe_stages(sizes) if not only or s in only]
    for stage in stages:
        record = state["stages"].get(stage, {})
        if record.get("done") and stage_finished(stage, ctx):
            log.info("recipe %s: %s already finished, skipping", name, stage)
            continue
        argv = stage_argv(stage, sizes, ctx) + ctx.device_argv(stage)
        if deadline is not None:
            left = (deadline - time.monotonic()) / 60.0
            if left <= 0:
                log.warning("recipe %s: time is up before %s; run the same command again to resume", name, stage)
                return EXIT_STOPPED
            if stage in TRAINING_STAGES:
                argv += ["--max-minutes", f"{left:.4f}"]
        log.info("recipe %s: running %s %s", name, stage, " ".join(argv))
        t0 = time.monotonic()
        rc = run_stage(stage, argv)
        if rc != 0:
            raise TrainingError(f"recipe {name}: stage {stage} failed with exit status {rc}")
        done = stage_finished(stage, ctx)
        state["stages"][stage] = {"done": done, "seconds": round(time.monotonic() - t0, 3),
                                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S") if done else None,
                                  "argv": list(argv)}
        write_state(work, state)
        if not done:
            log.warning("recipe %s: %s stopped before the end; run the same command again to resume", name, stage)
            return EXIT_STOPPED
    log.info("recipe %s: finished; bundle in %s, report in %s", name, out, ctx.report)
    return 0


# ------------------------------------------------------------------------------------------------
# CLI


def _parse_steps(items: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        stage, sep, value = item.partition("=")
        if not sep or stage not in TRAINING_STAGES:
            raise TrainingError(f"--steps takes STAGE=N with STAGE one of {TRAINING_STAGES}, got {item!r}")
        try:
            n = int(value)
        except ValueError as exc:
            raise TrainingError(f"--steps {item!r}: N must be an integer") from exc
        if n < 1:
            raise TrainingError(f"--steps {item!r}: N must be at least 1")
        out[stage] = n
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``vjapp-train recipe``."""
    parser.add_argument("name", choices=sorted(RECIPES), help="which recipe: " + "; ".join(
        f"{r.name}: {r.summary}" for r in RECIPES.values()))
    parser.add_argument("--out", type=Path, required=True, help="the bundle directory to build")
    parser.add_argument("--work", type=Path, default=None,
                        help="data, run folders and the report (default: OUT-work beside the bundle)")
    parser.add_argument("--scale", choices=SCALES, default="default",
                        help="'tiny' cuts data and steps to a smoke run of the recipe")
    parser.add_argument("--max-minutes", type=float, default=0.0,
                        help="time budget of this invocation (0: none); rerun the same command to resume")
    parser.add_argument("--steps", nargs="+", default=[], metavar="STAGE=N", help="override stage step counts")
    parser.add_argument("--only", nargs="+", choices=STAGE_ORDER, default=None, help="run only these stages")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                        help="where every stage that runs a model runs (auto: CUDA when there is one)")
    parser.add_argument("--amp", action="store_true", help="mixed precision in the training stages (CUDA only)")


def run(args: argparse.Namespace) -> int:
    """``vjapp-train recipe NAME``: 0 when finished, 3 when the time budget ran out first."""
    return run_recipe(args.name, args.out, args.work, args.scale, args.max_minutes, _parse_steps(args.steps),
                      args.only, args.device, args.amp)
