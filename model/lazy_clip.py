"""A bundle's native CLIP, built on first real use, and what the show needs of it from disk.

Building a CLIP imports OpenCLIP and torchvision (1.7 s of a 12 s demo render on a quiet 2-core
CPU). A render without a text prompt needs three things of its CLIP and none needs the network:
its embedding width (the JSON config), the hash of its image tower, which keys the latent atlas
(the tensors in its safetensors file, hashed as :func:`model.latent_cache.module_hash` hashes the
built tower), and the text embeddings of the bundle's class prompts (cached beside the bundle by
:func:`class_anchors`, written whenever a real CLIP computes them).

:class:`LazyClip` stands in for the :class:`~model.clip.ClipModel` of a native CLIP: it knows
those three from disk and builds the model on the first call that needs it (``encode_text``,
``encode_image``, ``parameters()``, any other attribute of the model). ``.to()``, ``.eval()`` and
``.train()`` before then are remembered and applied to the built model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from model.clip import CLIP_KIND, DEFAULT_TEMPLATES, ClipConfig, ClipModel, ClipShape, class_text_embeddings, load_native_clip
from model.formats import CheckpointError, config_from_dict, network_paths, read_network_config
from model.latent_cache import Hashable, module_hash, read_cache, write_cache

log = logging.getLogger(__name__)

MODEL_PREFIX = "model."  # ClipModel holds the OpenCLIP model as ``.model``
IMAGE_PREFIX = "visual."  # OpenCLIP's image tower; the rest of the model is the text side


class LazyClip(ClipShape):
    """A native CLIP (``NAME.json`` + ``NAME.safetensors`` of :func:`~model.clip.save_clip`) that is
    built on first use. Reads the config and the safetensors header now: a missing or unreadable
    file fails here with a CheckpointError, as loading it eagerly would; the full check of the
    weights against the network happens when it is built."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        self.path = Path(path)
        doc = read_network_config(self.path, CLIP_KIND)
        weights, config_path = network_paths(self.path)
        if not isinstance(doc["config"].get("model_cfg"), dict):
            raise CheckpointError(f"{config_path}: native CLIP config lacks its OpenCLIP model_cfg")
        self.config: ClipConfig = config_from_dict(ClipConfig, doc["config"])
        self._weights = weights
        self._keys = _tensor_names(weights)
        if not any(k.startswith(MODEL_PREFIX + IMAGE_PREFIX) for k in self._keys):
            raise CheckpointError(f"{weights}: holds no CLIP image tower ({MODEL_PREFIX + IMAGE_PREFIX}*)")
        self._moves: list[tuple[tuple[Any, ...], dict[str, Any]]] = [((device,), {})]  # replayed when built
        self._training = False
        self._model: ClipModel | None = None

    # -- what is known without the network --------------------------------------------------------
    @property
    def built(self) -> bool:
        return self._model is not None

    @property
    def training(self) -> bool:
        return self._training if self._model is None else self._model.training

    def image_tower(self) -> Hashable:
        """The image tower as atlas keys hash it: the built module, else its tensors from the file."""
        if self._model is not None:
            return self._model.model.visual
        return self._read(lambda k: k.startswith(MODEL_PREFIX + IMAGE_PREFIX), MODEL_PREFIX + IMAGE_PREFIX)

    def text_tower(self) -> Hashable:
        """Everything of the OpenCLIP model but the image tower (tensors named as in its state dict)."""
        if self._model is not None:
            return text_tower(self._model)
        return self._read(lambda k: k.startswith(MODEL_PREFIX) and not k.startswith(MODEL_PREFIX + IMAGE_PREFIX),
                          MODEL_PREFIX)

    def _read(self, wanted: Callable[[str], bool], strip: str) -> dict[str, torch.Tensor]:
        """The tensors whose names ``wanted`` accepts, named without the prefix ``strip``."""
        from safetensors import safe_open

        try:
            with safe_open(str(self._weights), framework="pt", device="cpu") as f:
                state = {k[len(strip):]: f.get_tensor(k) for k in self._keys if wanted(k)}
        except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds; one message
            raise CheckpointError(f"{self._weights}: corrupt or truncated safetensors file ({exc})") from exc
        for name, tensor in state.items():  # as loading checks them (model.formats.check_state_dict)
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise CheckpointError(f"{self._weights}: {strip}{name} contains NaN or Inf values")
        return state

    # -- the network ------------------------------------------------------------------------------
    def build(self) -> ClipModel:
        """The real CLIP, loaded now if not yet (with the remembered device moves and mode)."""
        if self._model is None:
            log.info("building the CLIP of %s", self.path)
            model = load_native_clip(self.path)
            for args, kwargs in self._moves:
                model.to(*args, **kwargs)
            model.train(self._training)
            self._model = model
        return self._model

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.build().encode_image(images)

    def encode_text(self, texts: str | Sequence[str]) -> torch.Tensor:
        return self.build().encode_text(texts)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.build()(*args, **kwargs)

    def to(self, *args: Any, **kwargs: Any) -> "LazyClip":
        if self._model is not None:
            self._model.to(*args, **kwargs)
        else:
            self._moves.append((args, kwargs))
        return self

    def train(self, mode: bool = True) -> "LazyClip":
        self._training = bool(mode)
        if self._model is not None:
            self._model.train(mode)
        return self

    def eval(self) -> "LazyClip":
        return self.train(False)

    def __getattr__(self, name: str) -> Any:
        # Only called for what this class lacks: anything else of the model builds it.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.build(), name)

    def __repr__(self) -> str:
        state = "built" if self._model is not None else "not built"
        return f"LazyClip({str(self.path)!r}, arch={self.config.arch!r}, embed_dim={self.embed_dim}, {state})"


def _tensor_names(weights: Path) -> list[str]:
    """The tensor names in a safetensors file's header (no tensor is read)."""
    from safetensors import safe_open

    if not weights.is_file():
        raise CheckpointError(f"{weights}: no such weights file")
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            return list(f.keys())
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds; one message
        raise CheckpointError(f"{weights}: corrupt or truncated safetensors file ({exc})") from exc


def image_tower(clip: Any) -> Hashable:
    """What an atlas key hashes of a CLIP: its image tower (a LazyClip's tensors from disk)."""
    if isinstance(clip, LazyClip):
        return clip.image_tower()
    return getattr(getattr(clip, "model", clip), "visual", clip)


def text_tower(clip: Any) -> Hashable:
    """What the class anchors' key hashes of a CLIP: its OpenCLIP model's tensors but the image tower's."""
    if isinstance(clip, LazyClip):
        return clip.text_tower()
    model = getattr(clip, "model", clip)
    return {k: v for k, v in model.state_dict().items() if not k.startswith(IMAGE_PREFIX)}


def anchors_key(clip: Any, labels: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> str:
    """Hash of the text tower, its tokenizer settings, the labels and the prompt templates."""
    text_cfg = (clip.config.model_cfg or {}).get("text_cfg", {})
    extra = json.dumps({"labels": list(labels), "templates": list(templates), "text_cfg": text_cfg}, sort_keys=True)
    return module_hash([text_tower(clip)], extra=extra)


def class_anchors(clip: ClipModel | LazyClip, labels: Sequence[str], bundle_root: Path | None,
                  templates: Sequence[str] = DEFAULT_TEMPLATES) -> torch.Tensor:
    """The unit text embeddings of the class prompts ``[C, D]`` (:func:`~model.clip.class_text_embeddings`):
    from ``anchors-KEY.safetensors`` beside the bundle when it is there, else computed by the CLIP
    (a LazyClip is built) and cached. A cache that cannot be read or does not fit is recomputed."""
    key = anchors_key(clip, labels, templates)
    name = f"anchors-{key}.safetensors"
    hit = read_cache(name, bundle_root)
    if hit is not None:
        emb = hit[0].get("anchors")
        if (emb is not None and emb.is_floating_point() and tuple(emb.shape) == (len(labels), int(clip.embed_dim))
                and bool(torch.isfinite(emb).all())):
            return emb.float()
        log.warning("ignoring cache %s: it does not hold %d finite class embeddings of width %d",
                    name, len(labels), clip.embed_dim)
    elif isinstance(clip, LazyClip) and not clip.built:
        log.info("the class prompts' text embeddings are not cached (%s): building CLIP", name)
    emb = class_text_embeddings(clip, labels, templates)
    path = write_cache(name, bundle_root, {"anchors": emb.float()},
                       {"labels": json.dumps(list(labels)), "templates": json.dumps(list(templates))})
    if path is not None:
        log.info("cached the class prompts' text embeddings in %s", path)
    return emb
