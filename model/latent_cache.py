"""Derived per-generator caches (principal directions, latent atlas) beside a bundle.

A cache file is a safetensors file named for what it holds and a key (a hash of the networks it
was computed from), so a changed generator never reads a stale file. It lives in
``BUNDLE/cache/`` when that is writable, else in the user's cache folder
(``$XDG_CACHE_HOME/vjapp`` or ``~/.cache/vjapp``). A cache that cannot be read is rebuilt, never
fatal.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Iterable, Mapping, Union

import torch

log = logging.getLogger(__name__)


def cache_dirs(bundle_root: Path | None) -> list[Path]:
    """Where caches are looked for and written, in order."""
    out = []
    if bundle_root is not None:
        out.append(Path(bundle_root) / "cache")
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    out.append(Path(base) / "vjapp")
    return out


# A module, or its state dict (the same tensors read from a file without building the module).
Hashable = Union[torch.nn.Module, Mapping[str, torch.Tensor]]


def module_hash(modules: Iterable[Hashable], extra: str = "") -> str:
    """A stable hash of the modules' state (weights and buffers, by name) and ``extra``.

    A state dict hashes the same as the module it belongs to (the same names and values)."""
    h = hashlib.sha256(extra.encode())
    for module in modules:
        state = module if isinstance(module, Mapping) else module.state_dict()
        for name, tensor in sorted(state.items()):
            h.update(name.encode())
            h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def read_cache(name: str, bundle_root: Path | None) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    """The tensors and metadata of cache file ``name`` from the first folder that has it, else None."""
    from safetensors import safe_open

    for folder in cache_dirs(bundle_root):
        path = folder / name
        if not path.is_file():
            continue
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                meta = dict(f.metadata() or {})
                tensors = {k: f.get_tensor(k) for k in f.keys()}
            return tensors, meta
        except Exception as exc:  # noqa: BLE001 - a broken cache is rebuilt, never fatal
            log.warning("ignoring unreadable cache %s: %s", path, exc)
    return None


def write_cache(name: str, bundle_root: Path | None, tensors: Mapping[str, torch.Tensor],
                metadata: Mapping[str, str] | None = None) -> Path | None:
    """Write cache file ``name`` atomically into the first writable folder; returns its path."""
    from safetensors.torch import save_file

    for folder in cache_dirs(bundle_root):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / (name + ".tmp")
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
                      metadata=dict(metadata or {}))
            os.replace(tmp, folder / name)
            return folder / name
        except OSError as exc:
            log.info("cannot write cache %s in %s (%s)", name, folder, exc)
    return None
