"""The ``vjapp-train`` command: ``vjapp-train STAGE [options]``.

Every stage lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int`` (the convention of ``vjapp/cli.py``), registered in :data:`STAGES`.
Modules are imported only to build the chosen stage's parser, so ``vjapp-train --help`` is
quick; a stage whose module is not in this build is still listed and says so when chosen.

Run with several processes through torchrun (gloo on the CPU, nccl on CUDA)::

    torchrun --nproc-per-node 2 -m training.cli audio --data DATA --out BUNDLE
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

log = logging.getLogger(__name__)

# name -> (module, one-line help)
STAGES: dict[str, tuple[str, str]] = {
    "synthscapes": ("training.data.synthscapes", "write the synthscapes audio-visual dataset (MP4 clips + manifest)"),
    "clip": ("training.stages.clip", "train the tiny CLIP (image/text) on frames and captions, or record a real one"),
    "audio": ("training.stages.audio", "train F_a, the audio encoder into CLIP space (needs the clip part)"),
    "generator": ("training.stages.generator", "train the StyleGAN2 generator on video frames"),
    "sound2video": ("training.stages.sound2video", "train E_a and the recurrent predictor (needs the other parts)"),
    "adapt": ("training.stages.adapt", "learn the sound's meaning for any generator (.pkl, .pt, bundle): "
              "E_a + predictor into a complete bundle"),
    "atlas-classes": ("training.stages.atlas_classes", "name what each latent atlas entry draws with classifiers "
                      "trained on real frames (a training signal, not the eval's judge)"),
    "eval": ("training.stages.eval", "evaluate a bundle on held-out clips"),
    "recipe": ("training.recipes", "run every stage in order to build a bundle (e.g. the embedded default)"),
}


def _stage_module(module_name: str):  # -> ModuleType | None
    """The stage module, or None when it is not part of this build (only that module missing)."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            return None
        raise
    if not callable(getattr(module, "add_arguments", None)) or not callable(getattr(module, "run", None)):
        return None  # mid-way: the module exists but is not a stage yet
    return module


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the stage named in ``argv`` (if any) has its module imported."""
    parser = argparse.ArgumentParser(
        prog="vjapp-train",
        description="Train vjapp's models into a bundle: synthscapes data, then the clip, audio, "
        "generator and sound2video stages (or `recipe` for all of them).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug log output")
    sub = parser.add_subparsers(dest="command", metavar="STAGE")
    chosen = _chosen_stage(argv)
    for name, (module_name, help_text) in STAGES.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.set_defaults(_module=module_name, _stage=name)
        if name == chosen:
            module = _stage_module(module_name)
            if module is None:
                p.set_defaults(_missing=True)
            else:
                module.add_arguments(p)
    return parser


def _chosen_stage(argv: Sequence[str] | None) -> str | None:
    args = list(sys.argv[1:] if argv is None else argv)
    for a in args:
        if a in STAGES:
            return a
    return None


def _data_errors() -> tuple[type[Exception], ...]:
    """The data loaders' own error type (bad dataset source), when that module is in this build."""
    try:
        from training.data.video_folder import DatasetError
    except ImportError:
        return ()
    return (DatasetError,)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if getattr(args, "_missing", False):
        print(f"vjapp-train {args.command}: not available in this build ({args._module} is missing or incomplete)", file=sys.stderr)
        return 2
    module = importlib.import_module(args._module)
    from model.formats import CheckpointError
    from training.bundle_io import BundleError
    from training.distributed import DistributedSetupError
    from training.run import TrainingError

    try:
        return int(module.run(args) or 0)
    except (TrainingError, CheckpointError, BundleError, DistributedSetupError, *_data_errors()) as exc:
        print(f"vjapp-train {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # python -m training.cli (what torchrun launches)
    sys.exit(main())
