"""Any of our generators (StyleGAN2, StyleGAN3): save, load by the ``kind`` in the JSON, prepare for the show.

The native checkpoint's JSON names the network's ``kind`` (:mod:`model.formats`): ``"stylegan2"``
or ``"stylegan3"``. Callers that may meet either (bundles, the app, ``vjapp convert``, the engine)
use these functions instead of the per-architecture ones.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Union

import torch
from torch import nn

from model import stylegan2, stylegan3
from model.formats import CheckpointError, network_paths, read_network_config

log = logging.getLogger(__name__)

AnyGenerator = Union[stylegan2.Generator, stylegan3.Generator]
GENERATOR_KINDS = (stylegan2.KIND, stylegan3.KIND)


def generator_kind(G: nn.Module) -> str:
    """``"stylegan2"`` or ``"stylegan3"``; TypeError for anything else."""
    if isinstance(G, stylegan3.Generator):
        return stylegan3.KIND
    if isinstance(G, (stylegan2.Generator, stylegan2.InferenceGenerator)):
        return stylegan2.KIND
    raise TypeError(f"not a generator: {type(G).__name__}")


def save_generator(path: str | Path, G: AnyGenerator, metadata: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``G`` as PATH.safetensors + PATH.json with its kind."""
    if generator_kind(G) == stylegan3.KIND:
        return stylegan3.save_generator(path, G, metadata)  # type: ignore[arg-type]
    return stylegan2.save_generator(path, G, metadata)  # type: ignore[arg-type]


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> AnyGenerator:
    """Load a native generator of either kind; CheckpointError for anything else."""
    doc = read_network_config(path)
    kind = doc.get("kind")
    if kind == stylegan3.KIND:
        return stylegan3.load_generator(path, device=device)
    if kind == stylegan2.KIND:
        return stylegan2.load_generator(path, device=device)
    raise CheckpointError(f"{network_paths(path)[1]}: holds a {kind!r} network, not a generator "
                          f"(expected one of {list(GENERATOR_KINDS)})")


def prepare_generator(G: AnyGenerator, dtype: torch.dtype = torch.bfloat16, channels_last: bool = True,
                      jit: bool = False, graphs: bool = False) -> nn.Module:
    """The module the show synthesizes with: StyleGAN2's fast frozen copy
    (:func:`model.stylegan2.prepare_for_inference`, traced per batch size when ``jit``, replayed as
    CUDA graphs when ``graphs`` and on CUDA), or the
    StyleGAN3 generator itself in float32 (no fast path yet; ``dtype`` and ``jit`` are ignored for it)."""
    if isinstance(G, stylegan3.Generator):
        if dtype != torch.float32:
            log.info("StyleGAN3 generators synthesize in float32 (no %s fast path yet)", dtype)
        return G.eval().requires_grad_(False)
    return stylegan2.prepare_for_inference(G, dtype=dtype, channels_last=channels_last, jit=jit, graphs=graphs)


def supports_camera(G: nn.Module) -> bool:
    """Whether ``G`` (or the prepared module) has a camera (:meth:`model.stylegan3.Generator.set_camera`)."""
    return isinstance(G, stylegan3.Generator)
