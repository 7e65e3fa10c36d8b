"""``vjapp-train adapt``: learn the sound's meaning for any generator in one command.

::

    vjapp-train adapt --generator G.pkl|G.pt|BUNDLE|STEM --data DIR --out BUNDLE [--from BUNDLE]

1. The generator: an NVIDIA StyleGAN2(-ADA) ``.pkl`` or rosinality ``.pt`` is converted with
   :func:`vjapp.convert.convert_checkpoint` into the run folder (once: a resumed run reuses the
   conversion when the source file's sha256 is the same); a bundle directory gives its
   generator part; anything else is read as a native checkpoint (stem, ``.json`` or
   ``.safetensors``).
2. The bundle at ``--out`` is staged from it: this generator, CLIP and F_a (``audio_encoder``)
   copied from ``--from`` (default: the embedded default bundle), and ``--from``'s labels, mel
   settings and rates; the layer groups are the paper's coarse / mid / fine split scaled to this
   generator's ``num_ws`` (:func:`model.latent_rnn.default_layer_groups`).
3. E_a and the recurrent predictor, sized for this generator's ``num_ws`` x ``w_dim``, are
   trained by the sound2video stage (:func:`training.stages.sound2video.run`, all its options
   apply), with G, CLIP and F_a frozen. Progress bar, ``--max-minutes``, ``--resume``,
   ``--device`` and ``--amp`` are the common training options; the run folder defaults to
   ``OUT/runs/adapt``.

A run stopped by ``--max-minutes`` (or SIGTERM) still leaves a complete bundle at ``--out``
whose E_a and predictor are marked untrained; running the same command again continues from
the last checkpoint. The first ``bundle.json`` appears once the generator and CLIP are staged,
so the app can load ``--out`` as soon as the command ends.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.run import TrainingError

log = logging.getLogger(__name__)

STAGE = "adapt"
CONVERTED_STEM = "generator"  # the converted generator inside the run folder
FOREIGN_SUFFIXES = (".pkl", ".pt", ".pth")


class AdaptError(TrainingError, ValueError):
    """The generator, ``--from`` bundle, data or ``--out`` do not fit (the CLI prints it as one line)."""


@dataclass
class GeneratorSource:
    """The generator to adapt to: the module, where it came from and the source's sha256."""

    generator: Any  # model.stylegan2.Generator
    kind: str  # "nvidia-pkl" | "rosinality-pt" | "bundle" | "native"
    path: Path
    sha256: str
    trained: bool = True


# ------------------------------------------------------------------------------------------------
# Options


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The sound2video stage's options plus ``--generator`` and ``--from``."""
    from training.stages import sound2video

    sound2video.add_arguments(parser)
    g = parser.add_argument_group("adapt")
    g.add_argument("--generator", type=Path, required=True,
                   help="the generator to learn for: an NVIDIA .pkl, a rosinality .pt, a bundle directory, or a "
                        "native vjapp generator (stem, .json or .safetensors)")
    g.add_argument("--from", dest="from_bundle", type=Path, default=None,
                   help="the bundle whose CLIP and F_a (audio encoder), labels, mel settings and rates are used "
                        "(default: the embedded default bundle)")


def default_from_bundle() -> Path:
    from vjapp.bundles import DEFAULT_BUNDLE_DIR

    return DEFAULT_BUNDLE_DIR


# ------------------------------------------------------------------------------------------------
# The generator


def _sha256(path: Path) -> str:
    from vjapp.convert import file_sha256

    try:
        return file_sha256(path)
    except OSError as exc:
        raise AdaptError(f"--generator {path}: cannot read it ({exc})") from exc


def resolve_generator(src: Path, run_dir: Path) -> GeneratorSource:
    """Load (converting if needed) the generator at ``src``; conversions go to ``run_dir/generator``."""
    from model.formats import network_paths
    from model.safe_pickle import detect_format
    from model.stylegan2 import load_generator

    src = Path(src)
    if src.is_dir():
        weights, config = network_paths(src / "generator")
        if not (weights.is_file() and config.is_file()):
            raise AdaptError(f"--generator {src}: a folder without a generator part (generator.safetensors + "
                             f"generator.json); give a bundle, a .pkl, a .pt or a native generator")
        G = load_generator(src / "generator")
        trained = True
        if (src / "bundle.json").is_file():
            from model.bundle import read_bundle_info

            trained = bool(read_bundle_info(src).trained.get("generator", True))
        return GeneratorSource(G, "bundle", src, _sha256(weights), trained)

    weights, config = network_paths(src)
    if src.suffix.lower() not in FOREIGN_SUFFIXES and weights.is_file() and config.is_file():
        return GeneratorSource(load_generator(src), "native", src, _sha256(weights))
    if not src.is_file():
        raise AdaptError(f"--generator {src}: no such file (give an NVIDIA .pkl, a rosinality .pt, a bundle "
                         f"directory or a native generator)")
    fmt = detect_format(src)  # CheckpointError for an empty or unrecognized file
    if fmt == "native":
        return GeneratorSource(load_generator(src), "native", src, _sha256(weights if weights.is_file() else src))
    return _converted(src, fmt, run_dir)


def _converted(src: Path, fmt: str, run_dir: Path) -> GeneratorSource:
    """Convert a foreign checkpoint into the run folder, or reuse an earlier conversion of the same file."""
    from model.formats import CheckpointError, network_paths, read_network_config
    from model.import_stylegan import UnsupportedCheckpoint
    from model.stylegan2 import load_generator
    from vjapp.convert import convert_checkpoint

    sha = _sha256(src)
    stem = run_dir / CONVERTED_STEM
    weights, config = network_paths(stem)
    if weights.is_file() and config.is_file():
        try:
            meta = read_network_config(stem, "stylegan2").get("metadata") or {}
            if meta.get("source_sha256") == sha:
                log.info("adapt: reusing the earlier conversion %s of %s", weights, src)
                return GeneratorSource(load_generator(stem), fmt, src, sha)
        except CheckpointError as exc:
            log.warning("adapt: converting again (%s)", exc)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        result = convert_checkpoint(src, stem, source_format="auto", overwrite=True)
    except UnsupportedCheckpoint as exc:
        raise AdaptError(f"--generator {src}: {exc}") from exc
    except OSError as exc:
        raise AdaptError(f"--generator {src}: cannot convert it ({exc})") from exc
    log.info("adapt: converted %s (%s) to %s", src, fmt, result.paths[0])
    return GeneratorSource(result.generator, fmt, src, sha)


# ------------------------------------------------------------------------------------------------
# The bundle at --out


def check_from_bundle(path: Path) -> Any:
    """``--from``'s BundleInfo, after checking it has CLIP and F_a (one clear error otherwise)."""
    from model.bundle import read_bundle_info
    from model.formats import CheckpointError
    from training.bundle_io import part_exists

    if not path.is_dir():
        raise AdaptError(f"--from {path}: no such bundle directory")
    try:
        info = read_bundle_info(path)
    except CheckpointError as exc:
        raise AdaptError(f"--from {path}: {exc}") from exc
    missing = [name for part, name in (("clip", "CLIP"), ("audio_encoder", "F_a (audio_encoder)"))
               if not part_exists(path, part, info.clip_source)]
    if missing:
        raise AdaptError(f"--from {path}: the bundle has no {' and no '.join(missing)}; adapt needs both "
                         f"(give a bundle trained with the clip and audio stages)")
    return info


def _out_state(out: Path) -> dict[str, Any] | None:
    """The ``adapt`` record of an earlier adapt run at ``out`` (None if ``out`` is empty or absent).

    Raises AdaptError when ``out`` holds something that is not an adapt output.
    """
    from training.bundle_io import TRAINING_FILE

    if not out.exists() or not any(out.iterdir()):
        return None
    side = out / TRAINING_FILE
    try:
        doc = json.loads(side.read_text(encoding="utf-8")) if side.is_file() else {}
    except (OSError, ValueError):
        doc = {}
    parts = doc.get("parts") or {}
    ours = any(isinstance(r, dict) and r.get("stage") == STAGE for r in parts.values())
    if not ours and {p.name for p in out.iterdir()} - {"runs", TRAINING_FILE}:
        raise AdaptError(f"--out {out}: the folder is not empty and is not the output of an earlier "
                         f"`vjapp-train adapt`; choose a new folder")
    record = parts.get("generator") or {}
    return record if record.get("stage") == STAGE else {}


def stage_bundle(out: Path, from_dir: Path, from_info: Any, source: GeneratorSource, restage: bool,
                 args: argparse.Namespace) -> None:
    """Write generator + CLIP + F_a and the settings of ``--from`` into ``out`` (E_a/predictor left out)."""
    from model.formats import network_paths
    from model.latent_rnn import default_layer_groups
    from training.bundle_io import BUNDLE_FILE, TRAINING_FILE, read_part, write_clip_reference, write_part

    G = source.generator
    if G.num_ws < 3:
        raise AdaptError(f"--generator {source.path}: num_ws {G.num_ws} is too small for the coarse/mid/fine "
                         f"predictor (needs at least 3 ws)")
    if restage:  # start the bundle over: stale parts of another generator would not fit
        for name in ("sound_inversion", "predictor", "generator", "clip", "audio_encoder"):
            for p in network_paths(out / name):
                p.unlink(missing_ok=True)
        (out / BUNDLE_FILE).unlink(missing_ok=True)
        (out / TRAINING_FILE).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    settings = dict(mel=from_info.mel, labels=list(from_info.labels), model_rate=from_info.model_rate,
                    segment_seconds=from_info.segment_seconds, layer_groups=default_layer_groups(G.num_ws),
                    output_size=0)
    if from_info.clip_source.get("kind") == "openclip":
        from model.bundle import _resolve_clip_weights

        weights = _resolve_clip_weights(from_dir, from_info.clip_source["weights"])
        write_clip_reference(out, from_info.clip_source["arch"], weights, trained=True,
                             metadata={"stage": STAGE, "from": str(from_dir)})
    else:
        write_part(out, "clip", read_part(from_dir, "clip"), trained=from_info.trained.get("clip", False),
                   metadata={"stage": STAGE, "from": str(from_dir)})
    write_part(out, "audio_encoder", read_part(from_dir, "audio_encoder"),
               trained=from_info.trained.get("audio_encoder", False), metadata={"stage": STAGE, "from": str(from_dir)})
    write_part(out, "generator", G.cpu(), trained=source.trained,
               metadata={"stage": STAGE, "source": str(source.path), "source_kind": source.kind,
                         "source_sha256": source.sha256}, **settings)
    _write_initial_parts(out, G, from_info.mel.n_mels, settings["layer_groups"], args)
    log.info("adapt: staged %s: generator %s (W+ %d x %d, %d px), CLIP and F_a from %s, layer groups %s",
             out, source.path, G.num_ws, G.w_dim, G.img_resolution, from_dir, settings["layer_groups"])


def _write_initial_parts(out: Path, G: Any, n_mels: int, groups: Any, args: argparse.Namespace) -> None:
    """E_a and the predictor as the training starts them (untrained), so ``out`` loads from the start.

    The first checkpoint replaces them; the architecture options are the ones sound2video builds with.
    """
    import torch

    from model.latent_rnn import LatentRNN, LatentRNNConfig
    from model.sound_inversion import SoundInversionConfig, SoundInversionEncoder
    from training.bundle_io import write_part

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(args.seed))
        inversion = SoundInversionEncoder(SoundInversionConfig(
            n_mels=n_mels, num_ws=G.num_ws, w_dim=G.w_dim, channels=tuple(args.encoder_channels),
            head_hidden=args.head_hidden, groups=tuple(groups)))
        predictor = LatentRNN(LatentRNNConfig(num_ws=G.num_ws, w_dim=G.w_dim, hidden_dim=args.rnn_hidden,
                                              groups=tuple(groups), cell=args.cell))
    meta = {"stage": STAGE, "step": 0, "steps": int(args.steps)}
    write_part(out, "sound_inversion", inversion, trained=False, metadata=meta)
    write_part(out, "predictor", predictor, trained=False, metadata=meta)


# ------------------------------------------------------------------------------------------------
# The stage


def run(args: argparse.Namespace) -> int:
    """Convert/stage the generator into ``--out``, then train E_a + predictor there (sound2video)."""
    from training.bundle_io import update_bundle_json
    from training.checkpoint import latest_checkpoint
    from training.stages import sound2video

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise AdaptError("adapt runs in one process (stage the bundle with adapt, then train it further with "
                         "`torchrun ... -m training.cli sound2video --out BUNDLE`)")
    if args.data is None or not Path(args.data).exists():
        raise AdaptError(f"--data {args.data}: no such file or folder")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise AdaptError(f"--out {out}: exists and is not a directory")
    from_dir = Path(args.from_bundle) if args.from_bundle is not None else default_from_bundle()
    if out.resolve() == from_dir.resolve():
        raise AdaptError(f"--out {out} is the --from bundle; write the adapted bundle into a new folder")
    if args.init_from is not None:
        raise AdaptError("--init-from does not apply to adapt (E_a and the predictor are built for the new "
                         "generator's W+ shape); use the sound2video stage to fine-tune a bundle")
    from_info = check_from_bundle(from_dir)
    if args.run_dir is None:
        args.run_dir = out / "runs" / STAGE
    run_dir = Path(args.run_dir)

    record = _out_state(out)
    source = resolve_generator(Path(args.generator), run_dir)
    if args.dry_run:
        raise AdaptError("--dry-run is not supported by adapt (it stages the bundle before training)")
    has_ckpt = latest_checkpoint(run_dir / "checkpoints") is not None
    same = record is not None and record.get("source_sha256") == source.sha256
    if record is not None and not same and args.resume and has_ckpt:
        raise AdaptError(f"--out {out} holds an adapt run for another generator ({record.get('source')}); "
                         f"choose a new --out, or pass --no-resume to start it over")
    if not (same and args.resume and has_ckpt):
        if record is not None:
            _drop_checkpoints(run_dir / "checkpoints")
        stage_bundle(out, from_dir, from_info, source, restage=record is not None, args=args)
    else:
        log.info("adapt: resuming in %s (run folder %s)", out, run_dir)

    rc = sound2video.run(args)
    completed = _completed(out)
    update_bundle_json(out, notes=(
        f"adapted by vjapp-train adapt: generator {source.path.name} ({source.kind}); CLIP and F_a from "
        f"{from_dir}; E_a and predictor trained for it ({'to the end' if completed else 'stopped early: rerun to resume'})"
    ))
    log.info("adapt: bundle %s %s", out, "ready" if completed else "written (stopped early; rerun the command to go on)")
    return rc


def _drop_checkpoints(ckpt_dir: Path) -> None:
    """Starting over: the old run's checkpoints would otherwise be resumed from later (another W+ shape)."""
    from training.checkpoint import list_checkpoints
    from model.formats import network_paths

    old = list_checkpoints(ckpt_dir)
    for _, json_path in old:
        for p in network_paths(json_path):
            p.unlink(missing_ok=True)
    if old:
        log.info("adapt: starting over: removed %d checkpoint(s) of the earlier run in %s", len(old), ckpt_dir)


def _completed(out: Path) -> bool:
    from training.bundle_io import read_training_json

    return bool((read_training_json(out)["eval"].get("sound2video") or {}).get("completed", False))
