"""A bundle: every network the show needs, in one directory, plus ``bundle.json``.

Layout (each network is native safetensors + JSON, see :mod:`model.formats`)::

    bundle.json                        what ties the parts together (below)
    generator.safetensors / .json      StyleGAN2 G (frozen during encoder training)
    clip.safetensors / .json           CLIP F_v/F_t — or, in bundle.json, an OpenCLIP arch + local weights path
    audio_encoder.safetensors / .json  F_a (audio → CLIP space)
    sound_inversion.safetensors / .json  E_a (audio → ΔW+)
    predictor.safetensors / .json      recurrent latent predictor

``bundle.json`` holds the format version, the vjapp version that wrote it, the model rate and
segment length, the mel settings, the W+ size and layer groups, the class labels, which parts
are trained and which are random, where CLIP comes from, and free-form notes. Loading checks
that the parts agree with it (num_ws, w_dim, n_mels, embedding width, layer groups) and raises
:class:`CheckpointError` with one clear message otherwise.

:func:`random_bundle` builds a consistent, randomly initialised bundle (tiny CLIP) for tests and
for the app until a trained one exists; its ``bundle.json`` says it is untrained.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from model.audio_encoder import AudioEncoder, AudioEncoderConfig, load_audio_encoder, save_audio_encoder
from model.audio_features import LIVE_MEL, MelConfig
from model.clip import (
    DEFAULT_CLIP_ARCH,
    ClipConfig,
    ClipModel,
    build_clip,
    load_clip,
    load_native_clip,
    save_clip,
)
from model.formats import CheckpointError, config_from_dict, config_to_dict, is_finite_number, network_paths
from model.latent_rnn import (
    LatentRNN,
    LatentRNNConfig,
    default_layer_groups,
    load_latent_rnn,
    save_latent_rnn,
    validate_layer_groups,
)
from model.lazy_clip import LazyClip
from model.sound_inversion import (
    SoundInversionConfig,
    SoundInversionEncoder,
    load_sound_inversion,
    save_sound_inversion,
)
from model.generators import AnyGenerator, load_generator, save_generator
from model.stylegan2 import Generator, StyleGAN2Config

log = logging.getLogger(__name__)

BUNDLE_FORMAT = "vjapp.bundle"
BUNDLE_FORMAT_VERSION = 1
BUNDLE_FILE = "bundle.json"
# Part name = file stem in the bundle directory.
PARTS = ("generator", "clip", "audio_encoder", "sound_inversion", "predictor")
# Parts a bundle may lack: an imported generator has no E_a/predictor of its W+ shape (it plays with
# the rhythm layer and the atlas scene), and a bundle without F_a/CLIP plays the rhythm layer alone.
OPTIONAL_PARTS = ("clip", "audio_encoder", "sound_inversion", "predictor")
# The paper's Landscape classes, mirrored by synthscapes (DESIGN §5).
LANDSCAPE_LABELS = (
    "thunderstorm",
    "waterfall",
    "volcano",
    "squishing water",
    "wind",
    "fire crackling",
    "raining",
    "underwater bubbling",
    "splashing water",
)
DEFAULT_MODEL_RATE = 10.0  # model steps per second
DEFAULT_SEGMENT_SECONDS = 0.5  # audio window per model step


def _vjapp_version() -> str:
    """The installed vjapp version (model/ must not import vjapp itself)."""
    from importlib import metadata

    try:
        return metadata.version("vjapp")
    except metadata.PackageNotFoundError:
        app = sys.modules.get("vjapp")  # running from a source tree: use it if already imported
        return str(getattr(app, "__version__", "unknown"))


@dataclass
class BundleInfo:
    """The contents of ``bundle.json``: how the parts fit together and how to drive them."""

    num_ws: int  # W+ layers of the generator.
    w_dim: int  # Width of each w.
    embed_dim: int  # CLIP joint embedding width (= F_a output width).
    resolution: int  # Generator output size (pixels).
    mel: MelConfig = field(default_factory=MelConfig)  # Audio frontend settings of F_a and E_a.
    model_rate: float = DEFAULT_MODEL_RATE  # Model steps (segments) per second.
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS  # Audio window each step reads (s).
    layer_groups: tuple[tuple[int, int], ...] = ()  # Coarse/mid/fine W+ ranges; () = default.
    labels: tuple[str, ...] = ()  # Class labels the encoders were trained on.
    trained: dict[str, bool] = field(default_factory=dict)  # Per part: trained (True) or random.
    clip_source: dict[str, Any] = field(default_factory=lambda: {"kind": "native"})  # native | openclip.
    notes: str = ""  # Free-form: dataset, run, anything a person should know.
    output_size: int = 0  # Size the app shows by default ("native"); 0 = the generator's resolution.
    parts: tuple[str, ...] = PARTS  # Parts the bundle holds (the generator always; see OPTIONAL_PARTS).
    vjapp_version: str = field(default_factory=_vjapp_version)  # Version that wrote the bundle.
    format_version: int = BUNDLE_FORMAT_VERSION

    def __post_init__(self) -> None:
        for name in ("num_ws", "w_dim", "embed_dim", "resolution"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"BundleInfo.{name} must be a positive int, got {v!r}")
        for name in ("model_rate", "segment_seconds"):
            v = getattr(self, name)
            if not is_finite_number(v) or v <= 0:
                raise ValueError(f"BundleInfo.{name} must be a positive number, got {v!r}")
        if not isinstance(self.mel, MelConfig):
            raise ValueError(f"BundleInfo.mel must be a MelConfig, got {type(self.mel).__name__}")
        self.layer_groups = (
            validate_layer_groups(self.layer_groups, self.num_ws) if self.layer_groups
            else default_layer_groups(self.num_ws)
        )
        if isinstance(self.labels, str) or not all(isinstance(s, str) for s in self.labels):
            raise ValueError(f"BundleInfo.labels must be a list of strings, got {self.labels!r}")
        self.labels = tuple(self.labels)
        unknown = sorted(set(self.trained) - set(PARTS))
        if unknown or not all(isinstance(v, bool) for v in self.trained.values()):
            raise ValueError(f"BundleInfo.trained must map parts {PARTS} to true/false, got {self.trained!r}")
        self.trained = {p: bool(self.trained.get(p, False)) for p in PARTS}
        if isinstance(self.parts, str) or not all(isinstance(p, str) for p in self.parts):
            raise ValueError(f"BundleInfo.parts must be a list of part names, got {self.parts!r}")
        unknown_parts = sorted(set(self.parts) - set(PARTS))
        if unknown_parts or "generator" not in self.parts:
            raise ValueError(f"BundleInfo.parts must name parts of {PARTS}, the generator included, got {self.parts!r}")
        self.parts = tuple(p for p in PARTS if p in self.parts)
        kind = self.clip_source.get("kind") if isinstance(self.clip_source, dict) else None
        if kind == "openclip":
            if not isinstance(self.clip_source.get("arch"), str) or not isinstance(self.clip_source.get("weights"), str):
                raise ValueError("BundleInfo.clip_source 'openclip' needs string 'arch' and 'weights' entries")
        elif kind != "native":
            raise ValueError(f"BundleInfo.clip_source.kind must be 'native' or 'openclip', got {self.clip_source!r}")
        size = self.output_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or (size and size & (size - 1)):
            raise ValueError(f"BundleInfo.output_size must be 0 or a power of two, got {size!r}")
        if not isinstance(self.notes, str) or not isinstance(self.vjapp_version, str):
            raise ValueError("BundleInfo.notes and vjapp_version must be strings")

    @property
    def display_size(self) -> int:
        """The size frames are shown at by default: ``output_size``, else the generator's resolution
        (a bundle trained at 128 px may ask to be upsampled to 256)."""
        return self.output_size or self.resolution

    @property
    def is_trained(self) -> bool:
        """True when every part the bundle holds was trained (the app says so when it is not)."""
        return all(self.trained[p] for p in self.parts)

    @property
    def untrained_parts(self) -> tuple[str, ...]:
        return tuple(p for p in self.parts if not self.trained[p])

    @property
    def absent_parts(self) -> tuple[str, ...]:
        """Parts this bundle does not hold (e.g. E_a and the predictor of an imported generator)."""
        return tuple(p for p in PARTS if p not in self.parts)

    @property
    def segment_samples(self) -> int:
        """Audio samples per model step at the bundle's rate."""
        return self.mel.samples_for_seconds(self.segment_seconds)

    @property
    def segment_frames(self) -> int:
        """Mel frames per model step."""
        return self.mel.num_frames(self.segment_samples)

    def to_json(self) -> dict[str, Any]:
        doc = {
            "format": BUNDLE_FORMAT,
            "format_version": self.format_version,
            "vjapp_version": self.vjapp_version,
            "num_ws": self.num_ws,
            "w_dim": self.w_dim,
            "embed_dim": self.embed_dim,
            "resolution": self.resolution,
            "model_rate": self.model_rate,
            "segment_seconds": self.segment_seconds,
            "mel": config_to_dict(self.mel),
            "layer_groups": [list(g) for g in self.layer_groups],
            "labels": list(self.labels),
            "trained": dict(self.trained),
            "clip": dict(self.clip_source),
            "notes": self.notes,
        }
        if self.output_size:
            doc["output_size"] = self.output_size
        if self.parts != PARTS:  # old readers keep reading complete bundles
            doc["parts"] = list(self.parts)
        return doc

    @classmethod
    def from_json(cls, doc: Any, source: str) -> "BundleInfo":
        """Parse ``bundle.json`` strictly; CheckpointError naming the problem otherwise."""
        if not isinstance(doc, dict) or doc.get("format") != BUNDLE_FORMAT:
            raise CheckpointError(f"{source}: not a vjapp bundle (format != {BUNDLE_FORMAT!r})")
        version = doc.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= BUNDLE_FORMAT_VERSION:
            raise CheckpointError(
                f"{source}: bundle format_version {version!r} is not supported "
                f"(this vjapp reads <= {BUNDLE_FORMAT_VERSION}; written by vjapp {doc.get('vjapp_version')!r})"
            )
        known = {"format", "format_version", "vjapp_version", "num_ws", "w_dim", "embed_dim", "resolution",
                 "model_rate", "segment_seconds", "mel", "layer_groups", "labels", "trained", "clip", "notes",
                 "output_size", "parts"}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise CheckpointError(f"{source}: unknown bundle fields {unknown} (written by a newer vjapp?)")
        missing = sorted({"num_ws", "w_dim", "embed_dim", "resolution", "mel"} - set(doc))
        if missing:
            raise CheckpointError(f"{source}: bundle.json lacks {missing}")
        try:
            return cls(
                num_ws=doc["num_ws"],
                w_dim=doc["w_dim"],
                embed_dim=doc["embed_dim"],
                resolution=doc["resolution"],
                mel=config_from_dict(MelConfig, doc["mel"]),
                model_rate=doc.get("model_rate", DEFAULT_MODEL_RATE),
                segment_seconds=doc.get("segment_seconds", DEFAULT_SEGMENT_SECONDS),
                layer_groups=tuple(tuple(g) for g in doc.get("layer_groups") or ()),
                labels=tuple(doc.get("labels") or ()),
                trained=dict(doc.get("trained") or {}),
                clip_source=dict(doc.get("clip") or {"kind": "native"}),
                notes=doc.get("notes", ""),
                output_size=doc.get("output_size", 0),
                parts=tuple(doc.get("parts") or PARTS),
                vjapp_version=doc.get("vjapp_version", "unknown"),
                format_version=version,
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{source}: invalid bundle.json: {exc}") from exc


@dataclass
class Bundle:
    """The networks of one bundle (None for parts not loaded) and its :class:`BundleInfo`."""

    info: BundleInfo
    generator: AnyGenerator | None = None
    clip: ClipModel | LazyClip | None = None  # LazyClip: built on first real use (load_bundle(lazy_clip=True))
    audio_encoder: AudioEncoder | None = None
    sound_inversion: SoundInversionEncoder | None = None
    predictor: LatentRNN | None = None
    root: Path | None = None  # the directory it was loaded from (derived caches live beside it)

    @property
    def num_ws(self) -> int:
        return self.info.num_ws

    @property
    def w_dim(self) -> int:
        return self.info.w_dim

    def parts(self) -> dict[str, nn.Module]:
        """The loaded parts by name."""
        return {p: m for p in PARTS if (m := getattr(self, p)) is not None}

    def to(self, device: str | torch.device) -> "Bundle":
        """Move every loaded part to ``device`` (in place); returns self."""
        for m in self.parts().values():
            m.to(device)
        return self

    def eval(self) -> "Bundle":
        """Put every loaded part in eval mode; returns self."""
        for m in self.parts().values():
            m.eval()
        return self

    def check(self, source: str = "bundle") -> None:
        """Raise CheckpointError if a loaded part disagrees with the info or with another part."""
        check_consistency(self, source)


def check_consistency(bundle: Bundle, source: str = "bundle") -> None:
    """The parts agree with ``bundle.info`` (num_ws, w_dim, resolution, n_mels, embed_dim, groups)."""
    info = bundle.info
    problems: list[str] = []

    def expect(part: str, what: str, got: Any, want: Any) -> None:
        if got != want:
            problems.append(f"{part} has {what}={got!r} but the bundle says {want!r}")

    if bundle.generator is not None:
        g = bundle.generator
        expect("generator", "num_ws", g.num_ws, info.num_ws)
        expect("generator", "w_dim", g.w_dim, info.w_dim)
        expect("generator", "resolution", g.img_resolution, info.resolution)
    if bundle.clip is not None:
        expect("clip", "embed_dim", bundle.clip.embed_dim, info.embed_dim)
    if bundle.audio_encoder is not None:
        c = bundle.audio_encoder.config
        expect("audio_encoder", "n_mels", c.n_mels, info.mel.n_mels)
        expect("audio_encoder", "embed_dim", c.embed_dim, info.embed_dim)
    if bundle.sound_inversion is not None:
        c = bundle.sound_inversion.config
        expect("sound_inversion", "n_mels", c.n_mels, info.mel.n_mels)
        expect("sound_inversion", "num_ws", c.num_ws, info.num_ws)
        expect("sound_inversion", "w_dim", c.w_dim, info.w_dim)
    if bundle.predictor is not None:
        c = bundle.predictor.config
        expect("predictor", "num_ws", c.num_ws, info.num_ws)
        expect("predictor", "w_dim", c.w_dim, info.w_dim)
        expect("predictor", "layer groups", tuple(c.groups), tuple(info.layer_groups))
    if problems:
        raise CheckpointError(f"{source}: parts do not fit together: " + "; ".join(problems))


def _check_parts(parts: Iterable[str] | None) -> tuple[str, ...]:
    if parts is None:
        return PARTS
    if isinstance(parts, str):
        parts = [parts]
    chosen = tuple(parts)
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown:
        raise ValueError(f"unknown bundle parts {unknown}; choose from {PARTS}")
    return tuple(p for p in PARTS if p in chosen)


def read_bundle_info(path: str | Path) -> BundleInfo:
    """Read and validate ``bundle.json`` of a bundle directory (no weights are read)."""
    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"{root}: no such bundle directory")
    info_path = root / BUNDLE_FILE
    if not info_path.is_file():
        raise CheckpointError(f"{root}: not a bundle (no {BUNDLE_FILE})")
    try:
        doc = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{info_path}: not valid JSON ({exc})") from exc
    return BundleInfo.from_json(doc, str(info_path))


def _resolve_clip_weights(root: Path, weights: str) -> Path:
    p = Path(os.path.expanduser(weights))
    return p if p.is_absolute() else (root / p)


def load_bundle(
    path: str | Path, device: str | torch.device = "cpu", parts: Iterable[str] | None = None,
    lazy_clip: bool = False,
) -> Bundle:
    """Load a bundle directory (all parts, or only ``parts``), in eval mode, on ``device``.

    Parts the bundle does not hold (``bundle.json``'s ``parts``; see OPTIONAL_PARTS) stay None,
    also when asked for: callers check for them. ``lazy_clip``: a native CLIP is a
    :class:`~model.lazy_clip.LazyClip`, built on first real use (OpenCLIP is not imported before);
    a CLIP referenced by OpenCLIP arch + weights file loads as usual.

    Raises CheckpointError for a missing directory or ``bundle.json``, an unsupported format
    version, a missing or corrupt part, or parts that disagree with each other.
    """
    root = Path(path)
    info = read_bundle_info(root)
    wanted = tuple(p for p in _check_parts(parts) if p in info.parts)
    bundle = Bundle(info=info, root=root)
    for part in wanted:
        if part == "clip" and info.clip_source["kind"] == "openclip":
            weights = _resolve_clip_weights(root, info.clip_source["weights"])
            if not weights.is_file():
                raise CheckpointError(f"{root}: CLIP weights {weights} (named in {BUNDLE_FILE}) do not exist")
            bundle.clip = load_clip(info.clip_source["arch"], weights, device)
            continue
        weights_path, config_path = network_paths(root / part)
        if not config_path.is_file() or not weights_path.is_file():
            raise CheckpointError(f"{root}: bundle is missing part {part!r} ({weights_path.name} + {config_path.name})")
        loader = LazyClip if part == "clip" and lazy_clip else _LOADERS[part]
        try:
            module = loader(root / part, device)
        except CheckpointError as exc:
            raise CheckpointError(f"{root}: part {part!r}: {exc}") from exc
        setattr(bundle, part, module)
    check_consistency(bundle, str(root))
    log.info("loaded bundle %s (%s)%s", root, ", ".join(wanted),
             "" if info.is_trained else f"; untrained parts: {', '.join(info.untrained_parts)}")
    return bundle


_LOADERS = {
    "generator": load_generator,
    "clip": load_native_clip,
    "audio_encoder": load_audio_encoder,
    "sound_inversion": load_sound_inversion,
    "predictor": load_latent_rnn,
}


def save_bundle(path: str | Path, bundle: Bundle, clip_mode: str = "auto") -> Path:
    """Write every part and ``bundle.json`` into directory ``path`` (created if needed).

    The generator is required; the parts of OPTIONAL_PARTS may be None (``bundle.json`` then lists
    the parts held, and stale files of absent parts are removed).

    ``clip_mode``: ``"native"`` stores CLIP's weights in the bundle; ``"reference"`` stores only
    its OpenCLIP arch and weights path (the CLIP must have been loaded from a local file);
    ``"auto"`` references external OpenCLIP weights and stores anything else natively.
    ``bundle.json`` is written last, so a bundle interrupted mid-save does not load.
    """
    if bundle.generator is None:
        raise ValueError("save_bundle needs the generator")
    held = tuple(p for p in PARTS if getattr(bundle, p) is not None)
    if ("sound_inversion" in held) != ("predictor" in held):
        raise ValueError("save_bundle: E_a (sound_inversion) and the predictor come together (both or neither)")
    if clip_mode not in ("auto", "native", "reference"):
        raise ValueError(f"clip_mode must be 'auto', 'native' or 'reference', got {clip_mode!r}")
    check_consistency(bundle, "save_bundle")
    clip = bundle.clip
    reference = clip is not None and (
        clip_mode == "reference" or (clip_mode == "auto" and clip.config.weights is not None))
    if clip is not None and reference and clip.config.weights is None:
        raise ValueError("clip_mode='reference' needs a CLIP loaded from an OpenCLIP weights file")

    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    (root / BUNDLE_FILE).unlink(missing_ok=True)
    save_generator(root / "generator", bundle.generator)
    clip_source: dict[str, Any] = {"kind": "native"}
    if clip is not None and reference:
        clip_source = {"kind": "openclip", "arch": clip.config.arch, "weights": str(Path(clip.config.weights).resolve())}
        for stale in network_paths(root / "clip"):
            stale.unlink(missing_ok=True)
    elif clip is not None:
        save_clip(root / "clip", clip)
    savers = {"audio_encoder": save_audio_encoder, "sound_inversion": save_sound_inversion,
              "predictor": save_latent_rnn}
    for part, save in savers.items():
        module = getattr(bundle, part)
        if module is not None:
            save(root / part, module)
    for part in OPTIONAL_PARTS:
        if part not in held:
            for stale in network_paths(root / part):
                stale.unlink(missing_ok=True)

    info = dataclasses.replace(bundle.info, clip_source=clip_source, parts=held)
    tmp = root / (BUNDLE_FILE + ".tmp")
    tmp.write_text(json.dumps(info.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, root / BUNDLE_FILE)
    log.info("saved bundle to %s", root)
    return root


DEFAULT_OUTPUT_SIZE = 256  # the embedded default (and its stand-in) is shown at this size


def random_bundle(
    resolution: int = 128,
    channel_max: int = 64,
    seed: int = 0,
    *,
    w_dim: int = 256,
    channel_base: int = 4096,
    mapping_layers: int = 8,
    clip_arch: str | ClipConfig = DEFAULT_CLIP_ARCH,
    mel: MelConfig | None = None,
    encoder_channels: Sequence[int] = (16, 32, 64, 128),
    hidden_dim: int = 256,
    labels: Sequence[str] = LANDSCAPE_LABELS,
    model_rate: float = DEFAULT_MODEL_RATE,
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS,
    notes: str = "randomly initialised: no part is trained",
    output_size: int = 0,
) -> Bundle:
    """A consistent, randomly initialised bundle (every part marked untrained), reproducible by ``seed``.

    Uses its own RNG stream, so the caller's global torch RNG state is left untouched. The
    defaults are the embedded default's sizes (a 128 px generator with channel_base 4096,
    channel_max 64, w_dim 256; encoder channels 16..128; tiny CLIP), real-time on a 2-core CPU;
    ``output_size`` (0: the resolution) is the size the app shows it at.
    """
    mel = mel or LIVE_MEL
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g_config = StyleGAN2Config(
            z_dim=w_dim, w_dim=w_dim, mapping_layers=mapping_layers, mapping_hidden_dim=w_dim,
            resolution=resolution, channel_base=channel_base, channel_max=channel_max,
        )
        generator = Generator(g_config)
        num_ws = generator.num_ws
        groups = default_layer_groups(num_ws)
        clip = build_clip(clip_arch)
        channels = tuple(encoder_channels)
        audio_encoder = AudioEncoder(AudioEncoderConfig(n_mels=mel.n_mels, embed_dim=clip.embed_dim, channels=channels))
        sound_inversion = SoundInversionEncoder(SoundInversionConfig(
            n_mels=mel.n_mels, num_ws=num_ws, w_dim=w_dim, channels=channels, head_hidden=hidden_dim, groups=groups,
        ))
        predictor = LatentRNN(LatentRNNConfig(num_ws=num_ws, w_dim=w_dim, hidden_dim=hidden_dim, groups=groups))
    info = BundleInfo(
        num_ws=num_ws, w_dim=w_dim, embed_dim=clip.embed_dim, resolution=resolution, mel=mel,
        model_rate=model_rate, segment_seconds=segment_seconds, layer_groups=groups, labels=tuple(labels),
        trained={p: False for p in PARTS}, notes=notes, output_size=output_size,
    )
    bundle = Bundle(info, generator, clip, audio_encoder, sound_inversion, predictor).eval()
    bundle.check("random_bundle")
    return bundle
