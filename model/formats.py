"""The native checkpoint format: safetensors weights plus a JSON config, nothing that executes.

A network is saved as two files side by side::

    NAME.safetensors   the state dict (tensors only)
    NAME.json          {"format": "vjapp.network", "format_version": 1,
                        "kind": "<what network>", "config": {...dataclass fields...},
                        "metadata": {...free-form, JSON only...}}

Loading rebuilds the network from its config dataclass alone, checks that every tensor is
present with the right shape and is finite, and raises :class:`CheckpointError` (one error
type, one clear message) for anything else: a missing or empty file, a corrupt header, a
config written by a newer version, a wrong kind, unknown config fields, wrong shapes, NaNs.

Foreign formats (NVIDIA ``.pkl``, rosinality ``.pt``) are *imported* into this format once,
by ``vjapp convert``; the show only ever loads these files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import torch
from torch import nn

log = logging.getLogger(__name__)

FORMAT_NAME = "vjapp.network"
FORMAT_VERSION = 1

C = TypeVar("C")
M = TypeVar("M", bound=nn.Module)


class CheckpointError(Exception):
    """A checkpoint could not be loaded: missing, corrupt, hostile, or not what was asked for."""


def network_paths(path: str | Path) -> tuple[Path, Path]:
    """The ``(weights, config)`` file pair for a stem, ``.json`` or ``.safetensors`` path."""
    p = Path(path)
    if p.suffix in (".json", ".safetensors"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a JSON-ready dict (tuples become lists)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass instance, got {type(config).__name__}")
    return json.loads(json.dumps(dataclasses.asdict(config)))


def config_from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
    """Rebuild a config dataclass from JSON data, strictly: unknown fields are an error."""
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{cls.__name__}: config must be a JSON object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise CheckpointError(f"{cls.__name__}: unknown config fields {unknown} (written by a newer vjapp?)")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints.get(name)
        origin = typing.get_origin(hint)
        if isinstance(value, list) and (hint is tuple or origin is tuple):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{cls.__name__}: invalid config: {exc}") from exc


def save_network(
    path: str | Path,
    module: nn.Module,
    config: Any,
    kind: str,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``module``'s state dict and ``config`` as NAME.safetensors + NAME.json."""
    from safetensors.torch import save_file

    weights_path, config_path = network_paths(path)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    # safetensors refuses tensors that share memory; clone the rare aliased buffer.
    seen: set[int] = set()
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        if ptr in seen:
            state[k] = v.clone()
        seen.add(ptr)
    doc = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": config_to_dict(config),
        "metadata": dict(metadata or {}),
    }
    save_file(state, str(weights_path), metadata={"format": FORMAT_NAME, "kind": kind})
    config_path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    log.debug("saved %s to %s", kind, weights_path)
    return weights_path, config_path


def read_network_config(path: str | Path, kind: str | None = None) -> dict[str, Any]:
    """Read and validate the JSON half of a native checkpoint."""
    _, config_path = network_paths(path)
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: no such config file")
    try:
        doc = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
        raise CheckpointError(f"{config_path}: not a vjapp network config (format != {FORMAT_NAME!r})")
    version = doc.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise CheckpointError(
            f"{config_path}: format_version {version!r} is not supported (this vjapp reads <= {FORMAT_VERSION})"
        )
    if kind is not None and doc.get("kind") != kind:
        raise CheckpointError(f"{config_path}: holds a {doc.get('kind')!r} network, expected {kind!r}")
    if not isinstance(doc.get("config"), dict):
        raise CheckpointError(f"{config_path}: missing 'config' object")
    return doc


def load_state_dict_file(weights_path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file, turning every failure into a CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: no such weights file")
    if weights_path.stat().st_size < 8:
        raise CheckpointError(f"{weights_path}: file is empty or truncated")
    try:
        return load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{weights_path}: corrupt or truncated safetensors file ({exc})") from exc


def check_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Every expected tensor present, no extra ones, shapes equal, values finite."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise CheckpointError(
            f"{source}: tensors do not match the network "
            f"(missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {extra[:5]}{'...' if len(extra) > 5 else ''})"
        )
    for name, ref in expected.items():
        got = state[name]
        if tuple(got.shape) != tuple(ref.shape):
            raise CheckpointError(f"{source}: {name} has shape {tuple(got.shape)}, expected {tuple(ref.shape)}")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise CheckpointError(f"{source}: {name} contains NaN or Inf values")


def load_network(
    path: str | Path,
    config_cls: type[C],
    build: typing.Callable[[C], M],
    kind: str,
    device: str | torch.device = "cpu",
) -> tuple[M, C, dict[str, Any]]:
    """Load a native checkpoint: rebuild ``build(config)`` and fill in its weights.

    Returns ``(module, config, metadata)``; the module is in eval mode.
    """
    weights_path, config_path = network_paths(path)
    doc = read_network_config(path, kind)
    config = config_from_dict(config_cls, doc["config"])
    try:
        module = build(config)
    except (ValueError, AssertionError, TypeError) as exc:
        raise CheckpointError(f"{config_path}: config does not describe a valid {kind}: {exc}") from exc
    state = load_state_dict_file(weights_path)
    check_state_dict(module, state, str(weights_path))
    module.load_state_dict(state, strict=True)
    module.to(device).eval()
    return module, config, dict(doc.get("metadata") or {})


def is_finite_number(x: Any) -> bool:
    """True for an int or float that is not NaN or infinite (bools excluded)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
