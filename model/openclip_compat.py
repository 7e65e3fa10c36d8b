"""Import OpenCLIP (and so torchvision) against the CPU torch this project pins.

The torchvision wheel that matches torch 2.13 on PyPI is a CUDA build whose C++ extension
does not load against a CPU torch, so ``import torchvision`` dies with
``operator torchvision::nms does not exist`` when its Python code registers fake kernels for
those ops. OpenCLIP never calls them. When (and only when) that happens we define the two op
schemas ourselves and import again. Where torchvision's own extension loads (a matching CUDA
torch), nothing is touched.
"""

from __future__ import annotations

import importlib
import logging
import sys
from types import ModuleType

import torch

log = logging.getLogger(__name__)

# Schemas of the ops torchvision's Python side expects its C++ extension to have defined.
_MISSING_OP_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
# Kept alive for the life of the process: dropping the Library object removes the schemas.
_schema_library: torch.library.Library | None = None


def _forget(prefix: str) -> None:
    for name in [n for n in sys.modules if n == prefix or n.startswith(prefix + ".")]:
        del sys.modules[name]


def _define_missing_ops() -> None:
    global _schema_library
    if _schema_library is not None:
        return
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _MISSING_OP_SCHEMAS:
        lib.define(schema)
    _schema_library = lib


def import_torchvision() -> ModuleType:
    """``import torchvision``, defining the missing op schemas if its extension cannot load."""
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        log.info("torchvision's C++ ops do not load against this torch (%s); defining their schemas", exc)
        _forget("torchvision")
        _define_missing_ops()
        return importlib.import_module("torchvision")


def import_open_clip() -> ModuleType:
    """``import open_clip`` on a CPU torch; raises ImportError with an install hint if absent."""
    try:
        import_torchvision()
    except ImportError as exc:
        raise ImportError(
            "OpenCLIP needs torchvision==0.28.0 next to torch==2.13.0: "
            "pip install -c constraints.txt 'vjapp[clip]'"
        ) from exc
    try:
        return importlib.import_module("open_clip")
    except ImportError as exc:
        raise ImportError("OpenCLIP is not installed: pip install -c constraints.txt 'vjapp[clip]'") from exc
