"""``vjapp-train atlas-classes``: name what each latent atlas entry draws, with real-frame classifiers.

::

    vjapp-train atlas-classes --bundle BUNDLE --classifiers DIR [--classifier-data DATA --classifier-seed S]

The bundle's atlas (built and cached first if it is not there) has each entry's picture classified
by two small CNNs trained on the real train-split frames of ``--classifier-data`` (full frame and
structure only, :mod:`training.judge`; trained into ``DIR`` when missing, loaded otherwise). Their
class probabilities are written beside the atlas (``BUNDLE/cache/atlas-classes-KEY.safetensors``,
:mod:`model.atlas_classes`), and the show's scene layer blends entries of the class the sound is
held to be by them instead of by the class prompts' CLIP embeddings. These classifiers are a
training signal: they must not be the eval's judge (its seeds are refused; give them other data,
e.g. ``vjapp-train synthscapes --seed`` of their own, so the eval's judge stays independent).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from training.run import TrainingError
from training.signal_classifiers import DEFAULT_SIGNAL_SEED, signal_classifiers

log = logging.getLogger(__name__)

FEW_ENTRIES = 16  # fewer entries of a class than the scene blends: the generator hardly draws it


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, required=True, help="the bundle whose atlas is classed (written there)")
    parser.add_argument("--classifiers", type=Path, required=True,
                        help="folder of the real-frame classifiers (full + structure); trained there from "
                             "--classifier-data when missing or stale. Not the eval's judge folder")
    parser.add_argument("--classifier-data", type=Path, default=None,
                        help="dataset whose train split trains the classifiers: not the eval's --judge-data")
    parser.add_argument("--classifier-seed", type=int, default=DEFAULT_SIGNAL_SEED,
                        help="seed of the classifiers (the eval judge's seeds are refused)")
    parser.add_argument("--classifier-steps", type=int, default=600, help="training steps of each classifier")
    parser.add_argument("--cache-dir", type=Path, default=None, help="decoded-clip cache of the classifier data")
    parser.add_argument("--atlas-samples", type=int, default=4096, help="atlas size (as the show builds it)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run")


def run(args: argparse.Namespace) -> int:
    from model.atlas import AtlasSettings, atlas_for
    from model.atlas_classes import classify_atlas, save_atlas_classes
    from model.bundle import load_bundle
    from training.distributed import resolve_device

    device = resolve_device(args.device)
    bundle = load_bundle(args.bundle, device).eval()
    labels = list(bundle.info.labels)
    if not labels:
        raise TrainingError(f"atlas-classes: {args.bundle} has no class labels to name its atlas entries by")
    if bundle.generator is None or bundle.clip is None:
        raise TrainingError(f"atlas-classes: {args.bundle} needs a generator and a CLIP for its atlas")
    classifiers = [c.to(device) for c in signal_classifiers(
        args.classifiers, labels, int(args.classifier_seed), args.classifier_data, int(args.classifier_steps),
        args.cache_dir, who="atlas-classes: --classifiers")]
    atlas = atlas_for(bundle.generator, bundle.clip, Path(args.bundle), AtlasSettings(samples=int(args.atlas_samples)))
    probs = classify_atlas(bundle.generator, atlas, classifiers,
                           progress=lambda done, total: log.info("classed %d / %d atlas entries", done, total))
    seeds = [int(c.config.seed) for c in classifiers]
    path = save_atlas_classes(atlas, labels, probs, Path(args.bundle),
                              source=f"real-frame classifiers {args.classifiers.name} (seeds {seeds})", seeds=seeds)
    if path is None:
        raise TrainingError(f"atlas-classes: nowhere writable for the classes of {args.bundle}")
    counts = torch.bincount(probs.argmax(1), minlength=len(labels)).tolist()
    log.info("wrote %s; entries per class: %s", path, ", ".join(f"{n} {c}" for n, c in zip(labels, counts)))
    for name, count in zip(labels, counts):
        if count < FEW_ENTRIES:
            log.warning("only %d atlas entries draw %s: the generator hardly draws it (fine-tune it with "
                        "vjapp-train generator --class-balance-judge)", count, name)
    return 0
