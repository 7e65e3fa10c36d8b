"""Writing a bundle part by part, as the training stages finish (see :mod:`model.bundle`).

Stages run one after another (clip → audio → generator → sound2video), each writing its part
into the same bundle directory ``OUT``::

    write_part(out, "clip", clip_model, trained=True, metadata={...})
    read_part(out, "clip", device)               # what a later stage builds on
    update_bundle_json(out, mel=MelConfig(...), labels=[...], notes="...")

Until every part exists, what ties them together lives in ``OUT/training.json`` (a side file
only training reads)::

    {"format": "vjapp.training", "format_version": 1,
     "parts": {"clip": {"trained": true, "stage": "clip", "step": 2000, ...}, ...},
     "info":  {"mel": {...MelConfig...}, "labels": [...], "model_rate": 10.0, "segment_seconds": 0.5,
               "notes": "...", "layer_groups": [[0, 3], ...], "clip_source": {"kind": "native"}},
     "eval":  {"clip": {...}, "audio": {...}}}

``bundle.json`` is (re)written by every :func:`update_bundle_json` (and so by every
:func:`write_part`) as soon as the parts it needs exist: the generator (num_ws, w_dim,
resolution) and CLIP (embed_dim). From then on ``load_bundle(OUT, parts=[...])`` loads any
parts that exist, and ``load_bundle(OUT)`` loads a complete bundle; ``trained`` says which
parts were trained to the end (a part written at a checkpoint, or by a run stopped early, is
marked untrained). The part files are written under a temporary name and moved into place,
config JSON last, so an interrupted write never leaves a half part behind. Parts that
disagree (say F_a's width and CLIP's) raise :class:`BundleError` and no ``bundle.json`` is
left behind.

Before anything else exists the mel settings default to :data:`DEFAULT_MEL`, the embedded
default bundle's frontend (22.05 kHz, n_fft 1024, hop 256, 64 mels).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from model.audio_encoder import AudioEncoder, AudioEncoderConfig, load_audio_encoder, save_audio_encoder
from model.audio_features import LIVE_MEL, MelConfig
from model.bundle import (
    BUNDLE_FILE,
    DEFAULT_MODEL_RATE,
    DEFAULT_SEGMENT_SECONDS,
    PARTS,
    BundleInfo,
    read_bundle_info,
)
from model.clip import ClipConfig, ClipModel, load_clip, load_native_clip, lookup_model_cfg, save_clip
from model.formats import CheckpointError, config_from_dict, config_to_dict, network_paths, read_network_config
from model.latent_rnn import LatentRNN, LatentRNNConfig, default_layer_groups, load_latent_rnn, save_latent_rnn
from model.sound_inversion import (
    SoundInversionConfig,
    SoundInversionEncoder,
    load_sound_inversion,
    save_sound_inversion,
)
from model.stylegan2 import Generator, StyleGAN2Config, load_generator, save_generator

log = logging.getLogger(__name__)

TRAINING_FILE = "training.json"
TRAINING_FORMAT = "vjapp.training"
TRAINING_FORMAT_VERSION = 1
# The embedded default's audio frontend (DESIGN §5): 22.05 kHz, n_fft 1024, hop 256, 64 mels.
DEFAULT_MEL = LIVE_MEL
INFO_KEYS = ("mel", "labels", "model_rate", "segment_seconds", "notes", "layer_groups", "clip_source", "output_size")


class BundleError(ValueError):
    """The parts written into a bundle directory do not fit together (or a part is the wrong kind)."""


# part -> (module class, save function, load function, kind in its JSON, config class)
_PART_TYPES: dict[str, tuple[type[nn.Module], Callable[..., Any], Callable[..., nn.Module], str, type]] = {
    "generator": (Generator, save_generator, load_generator, "stylegan2", StyleGAN2Config),
    "clip": (ClipModel, save_clip, load_native_clip, "clip", ClipConfig),
    "audio_encoder": (AudioEncoder, save_audio_encoder, load_audio_encoder, "audio_encoder", AudioEncoderConfig),
    "sound_inversion": (SoundInversionEncoder, save_sound_inversion, load_sound_inversion, "sound_inversion",
                        SoundInversionConfig),
    "predictor": (LatentRNN, save_latent_rnn, load_latent_rnn, "latent_rnn", LatentRNNConfig),
}


def _check_part(part: str) -> None:
    if part not in PARTS:
        raise BundleError(f"unknown bundle part {part!r}; choose from {PARTS}")


def _atomic_json(path: Path, doc: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --- training.json --------------------------------------------------------------------------------

def read_training_json(out_dir: str | Path) -> dict[str, Any]:
    """The side file (an empty skeleton when there is none; seeded from ``bundle.json`` if that exists)."""
    root = Path(out_dir)
    path = root / TRAINING_FILE
    if path.is_file():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{path}: unreadable ({exc})") from exc
        if not isinstance(doc, dict) or doc.get("format") != TRAINING_FORMAT:
            raise BundleError(f"{path}: not a vjapp training side file")
        doc.setdefault("parts", {})
        doc.setdefault("info", {})
        doc.setdefault("eval", {})
        return doc
    doc: dict[str, Any] = {"format": TRAINING_FORMAT, "format_version": TRAINING_FORMAT_VERSION,
                           "parts": {}, "info": {}, "eval": {}}
    if (root / BUNDLE_FILE).is_file():  # an existing bundle (e.g. random_bundle) being retrained part by part
        try:
            info = read_bundle_info(root)
        except CheckpointError as exc:
            log.warning("ignoring the existing %s: %s", BUNDLE_FILE, exc)
        else:
            doc["info"] = {"mel": config_to_dict(info.mel), "labels": list(info.labels),
                           "model_rate": info.model_rate, "segment_seconds": info.segment_seconds,
                           "notes": info.notes, "layer_groups": [list(g) for g in info.layer_groups],
                           "clip_source": dict(info.clip_source)}
            doc["parts"] = {p: {"trained": bool(info.trained.get(p, False)), "stage": "imported"}
                            for p in PARTS if part_exists(root, p, info.clip_source)}
    return doc


def _write_training_json(out_dir: Path, doc: Mapping[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_json(out_dir / TRAINING_FILE, dict(doc))


def read_mel(out_dir: str | Path) -> MelConfig | None:
    """The bundle's mel settings as recorded so far (None when no stage has set them)."""
    mel = read_training_json(out_dir)["info"].get("mel")
    return config_from_dict(MelConfig, mel) if mel else None


def read_labels(out_dir: str | Path) -> tuple[str, ...]:
    """Class labels recorded so far (empty if none)."""
    return tuple(read_training_json(out_dir)["info"].get("labels") or ())


def record_eval(out_dir: str | Path, stage: str, result: Mapping[str, Any]) -> None:
    """Store a stage's evaluation result in ``training.json`` (``eval[stage]``)."""
    root = Path(out_dir)
    doc = read_training_json(root)
    doc["eval"][stage] = json.loads(json.dumps(dict(result), default=str))
    _write_training_json(root, doc)


# --- parts ------------------------------------------------------------------------------------------

def part_exists(out_dir: str | Path, part: str, clip_source: Mapping[str, Any] | None = None) -> bool:
    """Both files of ``part`` are there (or, for CLIP, an OpenCLIP reference is recorded)."""
    _check_part(part)
    root = Path(out_dir)
    if part == "clip":
        source = clip_source if clip_source is not None else _clip_source(root)
        if source.get("kind") == "openclip":
            return True
    weights, config = network_paths(root / part)
    return weights.is_file() and config.is_file()


def _clip_source(root: Path) -> dict[str, Any]:
    path = root / TRAINING_FILE
    if path.is_file() or (root / BUNDLE_FILE).is_file():
        return dict(read_training_json(root)["info"].get("clip_source") or {"kind": "native"})
    return {"kind": "native"}


def _unwrap(module: nn.Module) -> nn.Module:
    module = module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
    return getattr(module, "_orig_mod", module)


def write_part(
    out_dir: str | Path,
    part: str,
    module: nn.Module,
    trained: bool = True,
    metadata: Mapping[str, Any] | None = None,
    **info: Any,
) -> Path:
    """Save ``module`` as ``OUT/part.safetensors + .json`` (atomically), record it, refresh bundle.json.

    ``trained``: True when the part was trained to the end. ``metadata`` (JSON) goes into the
    part's JSON and its ``training.json`` record. ``info``: bundle settings that come with this
    part (``mel=...``, ``labels=...``; see :func:`update_bundle_json`), recorded together with
    it so the consistency check sees both. A CLIP is always stored natively here (see
    :func:`write_clip_reference` for an external OpenCLIP file). Returns the config JSON path.
    """
    _check_part(part)
    cls, save, _, _, _ = _PART_TYPES[part]
    module = _unwrap(module)
    if not isinstance(module, cls):
        raise BundleError(f"part {part!r} must be a {cls.__name__}, got {type(module).__name__}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    meta = json.loads(json.dumps(dict(metadata or {}), default=str))
    meta["trained"] = bool(trained)
    tmp_weights, tmp_config = save(root / f".{part}.tmp", module, meta)
    weights, config = network_paths(root / part)
    os.replace(tmp_weights, weights)
    os.replace(tmp_config, config)  # the config is the commit mark
    doc = read_training_json(root)
    doc["parts"][part] = dict(meta, written=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if part == "clip":
        doc["info"]["clip_source"] = {"kind": "native"}
    _write_training_json(root, doc)
    log.info("wrote bundle part %s to %s (trained=%s)", part, weights, trained)
    update_bundle_json(root, **info)
    return config


def write_clip_reference(
    out_dir: str | Path, arch: str, weights: str | Path, trained: bool = True, metadata: Mapping[str, Any] | None = None
) -> None:
    """Record an external OpenCLIP model (architecture name + local weights file) as the bundle's CLIP."""
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    weights_path = Path(weights).expanduser().resolve()
    if not weights_path.is_file():
        raise BundleError(f"CLIP weights {weights_path} do not exist")
    for stale in network_paths(root / "clip"):
        stale.unlink(missing_ok=True)
    doc = read_training_json(root)
    doc["info"]["clip_source"] = {"kind": "openclip", "arch": str(arch), "weights": str(weights_path)}
    doc["parts"]["clip"] = dict(json.loads(json.dumps(dict(metadata or {}), default=str)), trained=bool(trained),
                                written=time.strftime("%Y-%m-%dT%H:%M:%S"))
    _write_training_json(root, doc)
    update_bundle_json(root)


def read_part(out_dir: str | Path, part: str, device: str | torch.device = "cpu") -> nn.Module:
    """Load one part of a (possibly partial) bundle directory, in eval mode; CheckpointError if missing."""
    _check_part(part)
    root = Path(out_dir)
    if part == "clip":
        source = _clip_source(root)
        if source.get("kind") == "openclip":
            return load_clip(source["arch"], source["weights"], device)
    weights, config = network_paths(root / part)
    if not weights.is_file() or not config.is_file():
        raise CheckpointError(f"{root}: has no {part!r} part yet ({weights.name} + {config.name}); "
                              f"run the stage that trains it first")
    return _PART_TYPES[part][2](root / part, device)


def part_config(out_dir: str | Path, part: str) -> Any:
    """The config dataclass of a written part (no weights read); None if the part is absent."""
    _check_part(part)
    root = Path(out_dir)
    if part == "clip":
        source = _clip_source(root)
        if source.get("kind") == "openclip":
            return ClipConfig(arch=source["arch"], weights=source["weights"], model_cfg=lookup_model_cfg(source["arch"]))
    if not part_exists(root, part, {"kind": "native"}):
        return None
    _, _, _, kind, config_cls = _PART_TYPES[part]
    doc = read_network_config(root / part, kind)
    return config_from_dict(config_cls, doc["config"])


# --- bundle.json ------------------------------------------------------------------------------------

def update_bundle_json(out_dir: str | Path, **info: Any) -> BundleInfo | None:
    """Merge ``info`` into ``training.json`` and (re)write ``bundle.json`` if generator and CLIP exist.

    Keywords (all optional): ``mel`` (MelConfig), ``labels`` (list of str), ``model_rate``,
    ``segment_seconds``, ``notes``, ``layer_groups``, ``clip_source``, ``output_size`` (the
    size the app shows by default; 0 = the generator's resolution). Returns the written
    :class:`BundleInfo`, or None while the generator or CLIP is still missing.
    """
    unknown = sorted(set(info) - set(INFO_KEYS))
    if unknown:
        raise BundleError(f"update_bundle_json: unknown fields {unknown}; known: {INFO_KEYS}")
    root = Path(out_dir)
    doc = read_training_json(root)
    for key, value in info.items():
        if value is None:
            continue
        if key == "mel":
            if not isinstance(value, MelConfig):
                raise BundleError(f"mel must be a MelConfig, got {type(value).__name__}")
            value = config_to_dict(value)
        elif key in ("labels", "layer_groups"):
            value = json.loads(json.dumps([list(v) if isinstance(v, tuple) else v for v in value]))
        doc["info"][key] = value
    _write_training_json(root, doc)

    bundle_path = root / BUNDLE_FILE
    g_config = part_config(root, "generator")
    clip_config = part_config(root, "clip") if part_exists(root, "clip") else None
    if g_config is None or clip_config is None:
        log.debug("%s: %s not written yet (needs generator and clip)", root, BUNDLE_FILE)
        return None
    meta = doc["info"]
    mel = config_from_dict(MelConfig, meta["mel"]) if meta.get("mel") else DEFAULT_MEL
    num_ws = g_config.num_ws
    groups = _layer_groups(root, meta, num_ws)
    trained = {p: bool(doc["parts"].get(p, {}).get("trained", False)) and part_exists(root, p) for p in PARTS}
    try:
        bundle_info = BundleInfo(
            num_ws=num_ws, w_dim=g_config.w_dim, embed_dim=clip_config.embed_dim, resolution=g_config.resolution,
            mel=mel, model_rate=float(meta.get("model_rate", DEFAULT_MODEL_RATE)),
            segment_seconds=float(meta.get("segment_seconds", DEFAULT_SEGMENT_SECONDS)),
            layer_groups=groups, labels=tuple(meta.get("labels") or ()), trained=trained,
            clip_source=dict(meta.get("clip_source") or {"kind": "native"}), notes=str(meta.get("notes", "")),
            output_size=int(meta.get("output_size", 0)),
        )
    except ValueError as exc:
        bundle_path.unlink(missing_ok=True)
        raise BundleError(f"{root}: cannot describe the bundle: {exc}") from exc
    problems = _mismatches(root, bundle_info)
    if problems:
        bundle_path.unlink(missing_ok=True)
        raise BundleError(f"{root}: parts do not fit together: " + "; ".join(problems))
    _atomic_json(bundle_path, bundle_info.to_json())
    log.info("wrote %s (trained: %s)", bundle_path, ", ".join(p for p in PARTS if trained[p]) or "none")
    return bundle_info


def _layer_groups(root: Path, meta: Mapping[str, Any], num_ws: int) -> tuple[tuple[int, int], ...]:
    for part in ("predictor", "sound_inversion"):
        cfg = part_config(root, part)
        if cfg is not None:
            return tuple(tuple(g) for g in cfg.groups)
    if meta.get("layer_groups"):
        return tuple(tuple(g) for g in meta["layer_groups"])
    return default_layer_groups(num_ws)


def _mismatches(root: Path, info: BundleInfo) -> list[str]:
    problems: list[str] = []

    def expect(part: str, what: str, got: Any, want: Any) -> None:
        if got != want:
            problems.append(f"{part} has {what}={got!r} but the bundle needs {want!r}")

    a = part_config(root, "audio_encoder")
    if a is not None:
        expect("audio_encoder", "n_mels", a.n_mels, info.mel.n_mels)
        expect("audio_encoder", "embed_dim", a.embed_dim, info.embed_dim)
    s = part_config(root, "sound_inversion")
    if s is not None:
        expect("sound_inversion", "n_mels", s.n_mels, info.mel.n_mels)
        expect("sound_inversion", "num_ws", s.num_ws, info.num_ws)
        expect("sound_inversion", "w_dim", s.w_dim, info.w_dim)
    p = part_config(root, "predictor")
    if p is not None:
        expect("predictor", "num_ws", p.num_ws, info.num_ws)
        expect("predictor", "w_dim", p.w_dim, info.w_dim)
        expect("predictor", "layer groups", tuple(tuple(g) for g in p.groups), tuple(info.layer_groups))
    return problems


def bundle_status(out_dir: str | Path) -> dict[str, Any]:
    """Which parts exist and are trained, and whether ``bundle.json`` is there (for reports)."""
    root = Path(out_dir)
    doc = read_training_json(root)
    return {
        "parts": {p: {"exists": part_exists(root, p), "trained": bool(doc["parts"].get(p, {}).get("trained", False))}
                  for p in PARTS},
        "bundle_json": (root / BUNDLE_FILE).is_file(),
        "info": doc["info"],
    }


__all__ = [
    "BundleError", "DEFAULT_MEL", "TRAINING_FILE", "bundle_status", "part_config", "part_exists", "read_labels",
    "read_mel", "read_part", "read_training_json", "record_eval", "update_bundle_json", "write_clip_reference",
    "write_part",
]
