"""CLIP (F_v image encoder, F_t text encoder) over OpenCLIP, offline only.

OpenCLIP builds the networks; nothing is ever downloaded:

* the architecture is an OpenCLIP config — a built-in name (``"ViT-B-32"``), one of ours in
  ``resources/clip_configs`` (``"vjapp-tiny"``), or a path to such a JSON file;
* weights come from a local file: ``.safetensors`` preferred, ``.pt``/``.bin``/``.pth`` only
  through ``torch.load(weights_only=True)`` (TorchScript archives and pickled code are refused);
* text goes through OpenCLIP's built-in BPE tokenizer, whose vocabulary ships in the package.

We build the OpenCLIP model class from the config ourselves instead of calling
``open_clip.create_model``: that keeps the config a plain dict we can save next to our weights
(a trained CLIP is stored natively, safetensors + JSON, and needs no OpenCLIP file or config
registry to load), and it refuses the towers that would need the network (Hugging Face text
towers and tokenizers, pretrained timm towers). ``tests/test_clip.py`` checks that the result
matches ``create_model`` for the same config. :func:`register_clip_configs` still makes our
configs visible to OpenCLIP's own registry for code that wants ``create_model`` directly.

:meth:`ClipModel.encode_image` takes generator output (``[-1, 1]``, any size), resizes and
normalises it in torch, and stays differentiable, for the CLIP losses.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.formats import (
    CheckpointError,
    check_state_dict,
    load_network,
    load_state_dict_file,
    network_paths,
    read_network_config,
    save_network,
)
from model.openclip_compat import import_open_clip

log = logging.getLogger(__name__)

CLIP_KIND = "clip"
# Our small OpenCLIP configs (JSON in OpenCLIP's own format).
CLIP_CONFIG_DIR = Path(__file__).resolve().parent.parent / "resources" / "clip_configs"
DEFAULT_CLIP_ARCH = "vjapp-tiny"
# CLIP's image normalisation (OpenAI's dataset statistics; OpenCLIP's default).
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# Size of the vocabulary of OpenCLIP's SimpleTokenizer (its token ids are < this).
SIMPLE_TOKENIZER_VOCAB = 49408
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")

_registered_config_paths: set[Path] = set()


@dataclass
class ClipConfig:
    """Which CLIP: an OpenCLIP architecture, its resolved config, optional local weights."""

    arch: str = DEFAULT_CLIP_ARCH  # OpenCLIP name, one of ours (resources/clip_configs) or a config JSON path.
    weights: str | None = None  # Local OpenCLIP weights file; None = random init (or native weights).
    model_cfg: dict[str, Any] | None = None  # The OpenCLIP model config; None = look ``arch`` up.
    embed_dim: int = 0  # Joint embedding width; 0 = from model_cfg (checked when given).
    image_size: int = 0  # Input size of the image tower; 0 = from model_cfg (checked when given).
    context_length: int = 0  # Text tokens; 0 = from model_cfg (checked when given).
    mean: tuple[float, float, float] = OPENAI_MEAN  # Image normalisation mean (RGB, [0, 1] scale).
    std: tuple[float, float, float] = OPENAI_STD  # Image normalisation std.

    def __post_init__(self) -> None:
        if not isinstance(self.arch, str) or not self.arch:
            raise ValueError(f"ClipConfig.arch must be a non-empty string, got {self.arch!r}")
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"ClipConfig: mean and std need 3 values (std > 0), got {self.mean}, {self.std}")
        if self.model_cfg is not None:
            _check_model_cfg(self.model_cfg, self.arch)
            derived = _derived_sizes(self.model_cfg)
            for name, value in derived.items():
                given = getattr(self, name)
                if given and given != value:
                    raise ValueError(f"ClipConfig.{name}={given} disagrees with the model config ({value})")
                setattr(self, name, value)


def available_clip_configs() -> list[str]:
    """Names of our own OpenCLIP configs in ``resources/clip_configs``."""
    return sorted(p.stem for p in CLIP_CONFIG_DIR.glob("*.json")) if CLIP_CONFIG_DIR.is_dir() else []


def register_clip_configs(path: str | Path = CLIP_CONFIG_DIR) -> None:
    """Add a config JSON (or a folder of them) to OpenCLIP's registry (``open_clip.add_model_config``).

    Only needed by code that calls ``open_clip.create_model(name)`` itself; :func:`load_clip`
    reads configs by name or path without touching the registry. Idempotent.
    """
    p = Path(path).resolve()
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such OpenCLIP config file or folder")
    if p in _registered_config_paths:
        return
    import_open_clip().add_model_config(p)
    _registered_config_paths.add(p)


def _check_model_cfg(cfg: Mapping[str, Any], source: str) -> None:
    """An OpenCLIP model config we can build and run offline, or ValueError naming the problem."""
    if not isinstance(cfg, Mapping) or not all(k in cfg for k in ("embed_dim", "vision_cfg", "text_cfg")):
        raise ValueError(f"{source}: not an OpenCLIP model config (needs embed_dim, vision_cfg, text_cfg)")
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    if not isinstance(vision, Mapping) or not isinstance(text, Mapping):
        raise ValueError(f"{source}: vision_cfg and text_cfg must be JSON objects")
    if "multimodal_cfg" in cfg:
        raise ValueError(f"{source}: CoCa models (multimodal_cfg) are not supported")
    if text.get("hf_model_name") or text.get("hf_tokenizer_name"):
        raise ValueError(
            f"{source}: Hugging Face text towers/tokenizers need a download; only OpenCLIP's built-in "
            "tokenizer and text transformer are supported"
        )
    if vision.get("timm_model_pretrained"):
        raise ValueError(f"{source}: timm_model_pretrained would download ImageNet weights; set it false")
    vocab = int(text.get("vocab_size", SIMPLE_TOKENIZER_VOCAB))
    if vocab < SIMPLE_TOKENIZER_VOCAB:
        raise ValueError(
            f"{source}: text vocab_size {vocab} is smaller than the built-in tokenizer's {SIMPLE_TOKENIZER_VOCAB}"
        )


def _derived_sizes(cfg: Mapping[str, Any]) -> dict[str, int]:
    size = cfg["vision_cfg"].get("image_size", 224)
    if isinstance(size, (list, tuple)):
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(f"only square CLIP inputs are supported, got image_size={size}")
        size = size[0]
    return {
        "embed_dim": int(cfg["embed_dim"]),
        "image_size": int(size),
        "context_length": int(cfg["text_cfg"].get("context_length", 77)),
    }


def _read_config_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read OpenCLIP config ({exc})") from exc
    if isinstance(data, dict) and "model_cfg" in data:  # open_clip_config.json (hub/local-dir layout)
        data = data["model_cfg"]
    return data


def lookup_model_cfg(arch: str) -> dict[str, Any]:
    """The OpenCLIP model config for a path, one of our names, or an OpenCLIP built-in name."""
    p = Path(arch)
    if p.suffix == ".json" or p.is_file():
        if not p.is_file():
            raise ValueError(f"{p}: no such OpenCLIP config file")
        return _read_config_json(p)
    ours = CLIP_CONFIG_DIR / f"{arch}.json"
    if ours.is_file():
        return _read_config_json(ours)
    open_clip = import_open_clip()
    cfg = open_clip.get_model_config(arch)
    if cfg is None:
        raise ValueError(
            f"unknown CLIP architecture {arch!r}: not a config file, not one of ours {available_clip_configs()}, "
            "and not an OpenCLIP built-in (see open_clip.list_models())"
        )
    return cfg


def resolve_clip_config(spec: ClipConfig | str, weights: str | Path | None = None) -> ClipConfig:
    """A ClipConfig with ``model_cfg`` (and the sizes) filled in; ``weights`` overrides the config's."""
    config = ClipConfig(arch=spec) if isinstance(spec, str) else spec
    if not isinstance(config, ClipConfig):
        raise TypeError(f"expected a ClipConfig or an architecture string, got {type(spec).__name__}")
    changes: dict[str, Any] = {}
    if config.model_cfg is None:
        changes["model_cfg"] = lookup_model_cfg(config.arch)
    if weights is not None:
        changes["weights"] = str(weights)
    return dataclasses.replace(config, **changes) if changes else config


@functools.lru_cache(maxsize=4)
def _simple_tokenizer(context_length: int, kwargs_json: str) -> Any:
    open_clip = import_open_clip()
    return open_clip.SimpleTokenizer(context_length=context_length, **json.loads(kwargs_json))


def _build_openclip(model_cfg: Mapping[str, Any]) -> nn.Module:
    """Instantiate the OpenCLIP model class for a config (random init, fp32, CPU)."""
    open_clip = import_open_clip()
    cfg = json.loads(json.dumps(model_cfg))  # deep copy, JSON types only
    custom_text = bool(cfg.pop("custom_text", False))
    vision = cfg["vision_cfg"]
    if vision.get("timm_model_name"):
        vision["timm_model_pretrained"] = False
    model_cls = open_clip.CustomTextCLIP if custom_text else open_clip.CLIP
    return model_cls(**cfg)


class ClipShape:
    """What a CLIP's config says of its shape (shared by :class:`ClipModel` and the lazy stand-in)."""

    config: "ClipConfig"

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def context_length(self) -> int:
        return self.config.context_length


class ClipModel(ClipShape, nn.Module):
    """An OpenCLIP model plus our preprocessing: images in [-1, 1] and strings in, unit vectors out."""

    def __init__(self, config: ClipConfig) -> None:
        super().__init__()
        config = resolve_clip_config(config)
        self.config = config
        self.model = _build_openclip(config.model_cfg or {})
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)
        text_cfg = (config.model_cfg or {})["text_cfg"]
        self._tokenizer_kwargs = json.dumps(text_cfg.get("tokenizer_kwargs") or {}, sort_keys=True)

    @property
    def logit_scale(self) -> torch.Tensor:
        """CLIP's learned temperature (log scale), for contrastive losses."""
        return self.model.logit_scale

    def extra_repr(self) -> str:
        c = self.config
        return f"arch={c.arch!r}, embed_dim={c.embed_dim}, image_size={c.image_size}, context_length={c.context_length}"

    # -- images --------------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` in [-1, 1] → CLIP input ``[B, 3, S, S]`` (centre-crop, resize, normalise)."""
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"ClipModel expects images [B, 3, H, W], got {tuple(getattr(images, 'shape', ()))}")
        if not images.is_floating_point():
            raise TypeError(f"ClipModel expects float images in [-1, 1], got {images.dtype}")
        _, _, h, w = images.shape
        if h != w:  # CLIP's own preprocessing: centre square crop of the shorter side
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            images = images[:, :, top : top + side, left : left + side]
        size = self.config.image_size
        if images.shape[-1] != size:
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        x = (images + 1.0) * 0.5  # [0, 1]
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, H, W]`` in [-1, 1] → unit-length embeddings ``[B, embed_dim]`` (differentiable)."""
        x = self.preprocess(images)
        dtype = next(self.model.parameters()).dtype
        return F.normalize(self.model.encode_image(x.to(dtype)).float(), dim=-1)

    # -- text ----------------------------------------------------------------------------------
    def tokenize(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Strings → token ids ``[B, context_length]`` (OpenCLIP's BPE tokenizer, offline)."""
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence) or not texts or not all(isinstance(t, str) for t in texts):
            raise ValueError("ClipModel.encode_text expects a non-empty list of strings")
        tokenizer = _simple_tokenizer(self.config.context_length, self._tokenizer_kwargs)
        return tokenizer(list(texts))

    def encode_text(self, texts: str | Sequence[str]) -> torch.Tensor:
        """Strings → unit-length embeddings ``[B, embed_dim]``."""
        tokens = self.tokenize(texts).to(self.mean.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    # -- weights -------------------------------------------------------------------------------
    def load_openclip_weights(self, path: str | Path) -> None:
        """Fill the OpenCLIP model from a local weights file (strict: every tensor, right shapes)."""
        state = read_openclip_state_dict(path)
        check_state_dict(self.model, state, str(path))
        self.model.load_state_dict(state, strict=True)


def read_openclip_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A local OpenCLIP checkpoint as a state dict; never runs pickled code."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such CLIP weights file")
    if p.suffix == ".safetensors":
        state: Any = load_state_dict_file(p)
    elif p.suffix in WEIGHT_SUFFIXES:
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, ValueError, AttributeError) as exc:
            raise CheckpointError(
                f"{p}: not a weights-only PyTorch checkpoint ({exc}); TorchScript archives and pickled code "
                "are refused - convert it to safetensors"
            ) from exc
    else:
        raise CheckpointError(f"{p}: unknown CLIP weights format (expected one of {WEIGHT_SUFFIXES})")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # OpenCLIP training checkpoint
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{p}: does not hold a state dict of tensors")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def build_clip(config: ClipConfig | str) -> ClipModel:
    """A randomly initialised ClipModel for a config or architecture name (no weights read)."""
    return ClipModel(resolve_clip_config(config))


def load_clip(
    spec: ClipConfig | str | Path = DEFAULT_CLIP_ARCH,
    weights_path: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> ClipModel:
    """Load a CLIP for inference (eval mode) from local files only.

    ``spec``: a ClipConfig, an OpenCLIP architecture name, a path to an OpenCLIP config JSON,
    or a native vjapp CLIP (``NAME.json``/``NAME.safetensors`` written by :func:`save_clip`).
    ``weights_path`` (or ``config.weights``): a local OpenCLIP weights file; without one the
    CLIP is randomly initialised (logged), which is only useful for tests and training.
    """
    if isinstance(spec, (str, Path)) and _is_native_clip(spec):
        if weights_path is not None:
            raise ValueError(f"{spec}: a native CLIP carries its own weights; do not pass weights_path")
        return load_native_clip(spec, device)
    if isinstance(spec, Path):
        spec = str(spec)
    try:
        config = resolve_clip_config(spec, weights_path)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
    clip = ClipModel(config)
    if config.weights:
        clip.load_openclip_weights(config.weights)
    else:
        log.warning("CLIP %r has no weights: randomly initialised", config.arch)
    return clip.to(device).eval()


def _is_native_clip(spec: str | Path) -> bool:
    p = Path(spec)
    if p.suffix not in (".json", ".safetensors"):
        return False
    _, config_path = network_paths(p)
    if not config_path.is_file():
        return False
    try:
        return json.loads(config_path.read_text(encoding="utf-8")).get("format") == "vjapp.network"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False


def save_clip(path: str | Path, clip: ClipModel, metadata: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Save a CLIP natively (NAME.safetensors + NAME.json with the full OpenCLIP config)."""
    config = dataclasses.replace(clip.config, weights=None)
    return save_network(path, clip, config, CLIP_KIND, metadata)


def load_native_clip(path: str | Path, device: str | torch.device = "cpu") -> ClipModel:
    """Load a CLIP written by :func:`save_clip`; needs OpenCLIP installed, nothing else."""
    doc = read_network_config(path, CLIP_KIND)
    if not isinstance(doc["config"].get("model_cfg"), dict):
        raise CheckpointError(f"{network_paths(path)[1]}: native CLIP config lacks its OpenCLIP model_cfg")
    clip, _, _ = load_network(path, ClipConfig, ClipModel, CLIP_KIND, device)
    return clip


# ------------------------------------------------------------------------------------------------
# Class prompts (zero-shot labels): the same texts wherever a CLIP names classes


DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}", "a photo of {}", "the sound of {}")


def label_texts(labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> list[list[str]]:
    """The prompt texts of every label: ``[[template.format(label) for template], ...]``."""
    if not labels:
        raise ValueError("no labels to build prompts from")
    if not templates or not all("{}" in t for t in templates):
        raise ValueError(f"prompt templates need a '{{}}' placeholder, got {list(templates)}")
    return [[t.format(label) for t in templates] for label in labels]


@torch.no_grad()
def class_text_embeddings(
    clip: "ClipModel", labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES
) -> torch.Tensor:
    """One unit text embedding per label ``[C, D]``: the normalised mean over the prompt templates."""
    texts = label_texts(labels, templates)
    flat = [t for group in texts for t in group]
    emb = clip.encode_text(flat).view(len(labels), len(templates), -1).mean(dim=1)  # [C, D]
    return F.normalize(emb, dim=-1)
