"""Training checkpoints as data: one safetensors file for every tensor, one JSON file for the rest.

A checkpoint of step N in a run's ``checkpoints/`` folder is the pair::

    ckpt-0000000N.safetensors   model/<name>/<state key>            model (and EMA) weights
                                optim/<name>/state/<param>/<key>     optimizer state tensors
                                optim/<name>/group/<i>/<key>         tensor-valued hyperparameters
                                extra/<key>                          tensors the stage passed in ``extra``
                                rng/torch_cpu, rng/cuda/<i>, rng/numpy_keys
    ckpt-0000000N.json          {"format": "vjapp.train_checkpoint", "step": N, "stage": ..., "config": {...},
                                 "optimizers": {name: {"param_groups": [...], "state_scalars": {...}}},
                                 "extra": {...JSON...}, "rng": {...}, "tensors_file": ..., "tensors_bytes": ...}

Both files are written to a temporary name and moved into place with ``os.replace``, tensors
first and JSON last, so the JSON is the commit mark: a checkpoint whose JSON is missing, or
whose tensors file is not the size the JSON records, is incomplete and skipped by
:func:`latest_checkpoint`. Only the newest ``keep`` checkpoints are kept. Loading reads
safetensors and JSON only; nothing is unpickled, nothing executes.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from model.formats import CheckpointError, config_to_dict, load_state_dict_file

log = logging.getLogger(__name__)

CKPT_FORMAT = "vjapp.train_checkpoint"
CKPT_FORMAT_VERSION = 1
_NAME_RE = re.compile(r"^ckpt-(\d{8,})\.json$")


def checkpoint_paths(ckpt_dir: str | Path, step: int) -> tuple[Path, Path]:
    """``(tensors, json)`` paths of the checkpoint of ``step``."""
    stem = Path(ckpt_dir) / f"ckpt-{step:08d}"
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def _plain(module: nn.Module) -> nn.Module:
    """The module inside a DDP / torch.compile wrapper."""
    module = getattr(module, "module", module) if isinstance(module, nn.parallel.DistributedDataParallel) else module
    return getattr(module, "_orig_mod", module)


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"{kind} name must be a non-empty string without '/', got {name!r}")


def _json_value(value: Any, where: str) -> Any:
    """``value`` as JSON data (tuples → lists); TypeError naming ``where`` for anything else."""
    try:
        return json.loads(json.dumps(value, allow_nan=True))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"checkpoint: {where} is not JSON data or a tensor ({exc})") from exc


# --- optimizers -------------------------------------------------------------------------------

def flatten_optimizer_state(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's ``state_dict()`` split into tensors (keyed ``optim/<name>/...``) and JSON."""
    _check_name("optimizer", name)
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{name}/state/{idx}/{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = _json_value(value, f"optimizer {name} state {idx}/{key}")
    groups: list[dict[str, Any]] = []
    for i, group in enumerate(sd["param_groups"]):
        doc: dict[str, Any] = {}
        for key, value in group.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{name}/group/{i}/{key}"] = value
                doc[key] = {"__tensor__": True}
            else:
                doc[key] = _json_value(value, f"optimizer {name} param group {i} {key}")
        groups.append(doc)
    return tensors, {"param_groups": groups, "state_scalars": scalars, "class": type(optimizer).__name__}


def restore_optimizer_state(
    optimizer: torch.optim.Optimizer, name: str, tensors: Mapping[str, torch.Tensor], doc: Mapping[str, Any]
) -> None:
    """Inverse of :func:`flatten_optimizer_state`; CheckpointError if it does not fit ``optimizer``."""
    if doc.get("class") != type(optimizer).__name__:
        raise CheckpointError(f"optimizer {name!r}: checkpoint holds a {doc.get('class')} state, not {type(optimizer).__name__}")
    current = optimizer.state_dict()["param_groups"]
    saved_groups = doc.get("param_groups")
    if not isinstance(saved_groups, list) or len(saved_groups) != len(current):
        raise CheckpointError(f"optimizer {name!r}: {len(saved_groups or [])} param groups saved, optimizer has {len(current)}")
    groups = []
    for i, (saved, now) in enumerate(zip(saved_groups, current)):
        if len(saved.get("params", [])) != len(now["params"]):
            raise CheckpointError(f"optimizer {name!r}: param group {i} has {len(saved.get('params', []))} params saved, "
                                  f"{len(now['params'])} now (model changed?)")
        group: dict[str, Any] = {}
        for key, value in saved.items():
            if isinstance(value, dict) and value.get("__tensor__"):
                value = tensors[f"optim/{name}/group/{i}/{key}"]
            elif isinstance(value, list) and isinstance(now.get(key), tuple):
                value = tuple(value)  # betas and friends were tuples
            group[key] = value
        groups.append(group)
    state: dict[int, dict[str, Any]] = {}
    prefix = f"optim/{name}/state/"
    for key, value in tensors.items():
        if key.startswith(prefix):
            idx, sub = key[len(prefix):].split("/", 1)
            state.setdefault(int(idx), {})[sub] = value
    for idx, entries in (doc.get("state_scalars") or {}).items():
        state.setdefault(int(idx), {}).update(entries)
    try:
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"optimizer {name!r}: state does not fit: {exc}") from exc


# --- RNG --------------------------------------------------------------------------------------

def capture_rng() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Python, NumPy, torch CPU and CUDA generator states, as tensors + JSON."""
    tensors = {"rng/torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng/numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    py_version, py_state, py_gauss = random.getstate()
    doc = {"numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
           "python": {"version": py_version, "state": list(py_state), "gauss_next": py_gauss}}
    return tensors, doc


def restore_rng(tensors: Mapping[str, torch.Tensor], doc: Mapping[str, Any]) -> None:
    """Put back what :func:`capture_rng` captured (missing pieces are left alone)."""
    if "rng/torch_cpu" in tensors:
        torch.set_rng_state(tensors["rng/torch_cpu"].to(torch.uint8))
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng/cuda/")), key=lambda k: int(k.rsplit("/", 1)[1]))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([t.to(torch.uint8) for t in cuda])
    np_doc = doc.get("numpy")
    if np_doc and "rng/numpy_keys" in tensors:
        keys = tensors["rng/numpy_keys"].numpy().astype(np.uint32)
        np.random.set_state((np_doc["kind"], keys, np_doc["pos"], np_doc["has_gauss"], np_doc["cached_gaussian"]))
    py = doc.get("python")
    if py:
        random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))


# --- save / load ------------------------------------------------------------------------------

def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: str | Path, doc: Any) -> Path:
    """Write ``doc`` as pretty JSON to ``path`` via a temporary file and ``os.replace``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write_bytes(p, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return p


def save_checkpoint(
    ckpt_dir: str | Path,
    step: int,
    models: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    extra: Mapping[str, Any] | None = None,
    *,
    config: Any = None,
    stage: str = "",
    keep: int = 3,
    include_rng: bool = True,
) -> Path:
    """Write the checkpoint of ``step`` (returns its JSON path) and prune to the newest ``keep``.

    ``extra``: JSON data and/or tensors (top-level values that are tensors go to safetensors).
    ``config``: a dataclass (or a JSON dict) describing the run, stored for reference.
    """
    from safetensors.torch import save as save_bytes

    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative int, got {step!r}")
    root = Path(ckpt_dir)
    root.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, module in models.items():
        _check_name("model", name)
        for key, value in _plain(module).state_dict().items():
            tensors[f"model/{name}/{key}"] = value
    optim_doc: dict[str, Any] = {}
    for name, opt in (optimizers or {}).items():
        t, d = flatten_optimizer_state(name, opt)
        tensors.update(t)
        optim_doc[name] = d
    extra_doc: dict[str, Any] = {}
    for key, value in (extra or {}).items():
        _check_name("extra", key)
        if isinstance(value, torch.Tensor):
            tensors[f"extra/{key}"] = value
            extra_doc[key] = {"__tensor__": True}
        else:
            extra_doc[key] = _json_value(value, f"extra[{key!r}]")
    rng_doc: dict[str, Any] = {}
    if include_rng:
        t, rng_doc = capture_rng()
        tensors.update(t)
    # Fresh contiguous CPU copies: no shared storage (safetensors refuses it), no device tensors.
    flat = {key: value.detach().to("cpu", copy=True).contiguous() for key, value in tensors.items()}
    blob = save_bytes(flat, metadata={"format": CKPT_FORMAT, "step": str(step)})
    tensors_path, json_path = checkpoint_paths(root, step)
    _atomic_write_bytes(tensors_path, blob)
    if config is None:
        config_doc: Any = None
    elif isinstance(config, Mapping):
        config_doc = _json_value(dict(config), "config")
    else:
        config_doc = config_to_dict(config)
    doc = {
        "format": CKPT_FORMAT,
        "format_version": CKPT_FORMAT_VERSION,
        "step": step,
        "stage": stage,
        "config": config_doc,
        "models": sorted(models),
        "optimizers": optim_doc,
        "extra": extra_doc,
        "rng": rng_doc,
        "tensors_file": tensors_path.name,
        "tensors_bytes": len(blob),
    }
    atomic_write_json(json_path, doc)
    log.info("checkpoint of step %d written to %s", step, json_path)
    prune_checkpoints(root, keep)
    return json_path


def list_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, json path)`` of every committed checkpoint in ``ckpt_dir``, oldest first."""
    root = Path(ckpt_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def prune_checkpoints(ckpt_dir: str | Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (keep <= 0 keeps everything)."""
    if keep <= 0:
        return
    for step, json_path in list_checkpoints(ckpt_dir)[:-keep]:
        tensors_path, _ = checkpoint_paths(json_path.parent, step)
        json_path.unlink(missing_ok=True)  # un-commit first
        tensors_path.unlink(missing_ok=True)


def read_checkpoint_doc(json_path: str | Path) -> dict[str, Any]:
    """The JSON half of a checkpoint, validated, and its tensors file checked for completeness."""
    p = Path(json_path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{p}: unreadable checkpoint ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != CKPT_FORMAT:
        raise CheckpointError(f"{p}: not a vjapp training checkpoint")
    version = doc.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= CKPT_FORMAT_VERSION:
        raise CheckpointError(f"{p}: checkpoint format_version {version!r} is not supported")
    step = doc.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{p}: invalid step {step!r}")
    name = doc.get("tensors_file")
    if not isinstance(name, str) or Path(name).name != name:
        raise CheckpointError(f"{p}: invalid tensors_file entry")
    tensors_path = p.with_name(name)
    if not tensors_path.is_file() or tensors_path.stat().st_size != doc.get("tensors_bytes"):
        raise CheckpointError(f"{p}: its tensors file {name} is missing or incomplete")
    return doc


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """JSON path of the newest complete checkpoint, or None (incomplete ones are skipped, logged)."""
    for step, json_path in reversed(list_checkpoints(ckpt_dir)):
        try:
            read_checkpoint_doc(json_path)
        except CheckpointError as exc:
            log.warning("skipping checkpoint: %s", exc)
            continue
        return json_path
    return None


@dataclass
class LoadedCheckpoint:
    """What :func:`load_checkpoint` restored."""

    step: int
    path: Path
    extra: dict[str, Any] = field(default_factory=dict)  # JSON values and tensors the stage saved.
    config: Any = None  # The config stored with it (JSON data).
    stage: str = ""


def load_checkpoint(
    json_path: str | Path,
    models: Mapping[str, nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    *,
    restore_rng_state: bool = True,
) -> LoadedCheckpoint:
    """Fill ``models`` and ``optimizers`` (in place) from a checkpoint; CheckpointError if they do not fit."""
    p = Path(json_path)
    doc = read_checkpoint_doc(p)
    tensors = load_state_dict_file(p.with_name(doc["tensors_file"]))
    for name, module in models.items():
        prefix = f"model/{name}/"
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not state and _plain(module).state_dict():
            raise CheckpointError(f"{p}: holds no weights for model {name!r} (has {doc.get('models')})")
        try:
            _plain(module).load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{p}: model {name!r} does not fit the checkpoint: {exc}") from exc
        for key, value in state.items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise CheckpointError(f"{p}: model {name!r} tensor {key} contains NaN or Inf")
    saved_optims = doc.get("optimizers") or {}
    for name, opt in (optimizers or {}).items():
        if name not in saved_optims:
            raise CheckpointError(f"{p}: holds no state for optimizer {name!r} (has {sorted(saved_optims)})")
        restore_optimizer_state(opt, name, tensors, saved_optims[name])
    extra: dict[str, Any] = {}
    for key, value in (doc.get("extra") or {}).items():
        extra[key] = tensors[f"extra/{key}"] if isinstance(value, dict) and value.get("__tensor__") else value
    if restore_rng_state:
        restore_rng(tensors, doc.get("rng") or {})
    return LoadedCheckpoint(step=doc["step"], path=p, extra=extra, config=doc.get("config"), stage=doc.get("stage", ""))

