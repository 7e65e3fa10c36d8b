"""Safe reading of foreign generator checkpoints: NVIDIA ``.pkl`` and rosinality ``.pt``.

NVIDIA's StyleGAN2-ADA / StyleGAN3 network pickles are ordinary Python pickles in which every
network object is stored by ``torch_utils.persistence`` as a call::

    torch_utils.persistence._reconstruct_persistent_obj(meta)
    meta = {"type": "class", "version": 6, "module_src": "<source of the whole .py file>",
            "class_name": "Generator", "state": {...the nn.Module __dict__...}}

NVIDIA's own loader ``exec``s ``module_src`` to rebuild the class; a plain ``pickle.load`` can
run anything at all. :class:`RestrictedUnpickler` instead resolves an exact allowlist of
``(module, name)`` globals, each to a function or class of *ours* that validates its
arguments, and turns every persistent object into a plain :class:`PersistentRecord` (class
name + state) whose source is kept as text and never executed. Tensor storages arrive as
``torch.storage._load_from_bytes(bytes)``, whose real implementation does a full unsafe
``torch.load``; ours loads those bytes with ``weights_only=True``.

TensorFlow-era NVIDIA pickles (``dnnlib.tflib.network.Network`` objects, which run their stored
source on load) are recognised, not read: they raise one error that names them and the way to
convert them (NVIDIA's ``legacy.py``).

rosinality checkpoints are ``torch.save`` files (a dict of state dicts plus an
``argparse.Namespace``) and are read with ``torch.load(..., weights_only=True)``.

Every failure, hostile or merely corrupt, raises :class:`model.formats.CheckpointError` (or
its subclass :class:`UnsafeCheckpoint`) with a message naming the problem.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import io
import logging
import math
import pickle
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Mapping

import numpy as np
import torch

from model.formats import CheckpointError

log = logging.getLogger(__name__)

SourceFormat = Literal["nvidia-pkl", "rosinality-pt", "native"]

# The only persistence layout version ever written by NVIDIA's public code.
NVIDIA_PERSISTENCE_VERSION = 6

# First bytes of a legacy (pre-zip) torch.save file: pickle protocol 2 of the magic number
# 0x1950a86a20f9469cfc6c.
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_ZIP_MAGIC = b"PK\x03\x04"


class UnsafeCheckpoint(CheckpointError):
    """A checkpoint asked for code or objects outside the allowlist; nothing was executed."""


# --------------------------------------------------------------------------------------------
# Plain stand-ins for the objects a network pickle holds.


class _SealedType(type):
    """Metaclass forbidding attribute writes on the class itself.

    A pickle can ``BUILD`` (setattr) on any object it holds, including a class returned by
    ``find_class``; sealing our classes keeps a hostile file from patching them.
    """

    def __setattr__(cls, name: str, value: Any) -> None:
        raise UnsafeCheckpoint(f"refused to modify class {cls.__name__} (attribute {name!r})")

    def __delattr__(cls, name: str) -> None:
        raise UnsafeCheckpoint(f"refused to modify class {cls.__name__} (attribute {name!r})")


class EasyDict(dict, metaclass=_SealedType):
    """Our stand-in for ``dnnlib.EasyDict``: a dict whose keys also read as attributes.

    ``dnnlib`` is never imported; pickles naming ``dnnlib.util.EasyDict`` get this class.
    """

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setstate__(self, state: Any) -> None:
        # dnnlib.EasyDict has an empty instance __dict__; older Pythons pickle it as {}.
        if state not in (None, {}):
            raise CheckpointError(f"unexpected EasyDict state of type {type(state).__name__}")


@dataclasses.dataclass(frozen=True, eq=False)
class PersistentRecord:
    """One NVIDIA persistent object, captured as data instead of being reconstructed.

    ``state`` is the object's ``__dict__`` as pickled (for an nn.Module: ``_parameters``,
    ``_buffers``, ``_modules`` of nested records, ``_init_kwargs``, ...). ``module_src`` is
    the pickled Python source, kept only as text: it is never compiled or executed.
    """

    class_name: str
    version: int
    state: dict[str, Any]
    module_src: str = dataclasses.field(repr=False, default="")
    kind: str = "class"

    @property
    def module_sha256(self) -> str:
        """Digest of the stored source, to tell which network file a record came from."""
        return hashlib.sha256(self.module_src.encode("utf-8", "replace")).hexdigest()

    @property
    def module_name(self) -> str:
        """Best-effort name of the NVIDIA file this class came from, guessed from the text.

        The source is only searched for class definitions, never run. ``"unknown"`` when no
        known marker is found.
        """
        src = self.module_src
        if re.search(r"^class SynthesisInput\b", src, re.M):
            return "training.networks_stylegan3"
        if re.search(r"^class SynthesisBlock\b", src, re.M):
            return "training.networks_stylegan2"
        if re.search(r"^class AugmentPipe\b", src, re.M):
            return "training.augment"
        return "unknown"

    def __repr__(self) -> str:
        params = len(self.state.get("_parameters") or {})
        modules = list((self.state.get("_modules") or {}).keys())
        return f"PersistentRecord({self.class_name}, {params} parameters, submodules {modules})"

    def __setstate__(self, state: Any) -> None:  # a pickle must not BUILD onto a record
        raise UnsafeCheckpoint("refused to modify a persistent-object record")


class _PendingDtype:
    """A numpy dtype named by a pickle, resolved only for plain numeric and bool kinds."""

    __slots__ = ("spec", "byteorder")

    def __init__(self, spec: Any, align: Any = False, copy: Any = False) -> None:
        # Numbers and booleans only: no object, string, datetime or structured dtypes.
        if not isinstance(spec, str) or not re.fullmatch(r"b1|[iu][1248]|f[248]|c(8|16)", spec):
            raise UnsafeCheckpoint(f"refused numpy dtype {spec!r} (only numeric and bool arrays are read)")
        self.spec = spec
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        # numpy writes (version, byteorder, subdescr, names, fields, elsize, alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) < 2 or not isinstance(state[1], str):
            raise CheckpointError("corrupt numpy dtype state")
        if any(x is not None for x in state[2:5]):
            raise UnsafeCheckpoint("refused structured numpy dtype")
        if state[1] not in ("<", ">", "=", "|"):
            raise CheckpointError(f"corrupt numpy dtype byte order {state[1]!r}")
        self.byteorder = state[1]

    def resolve(self) -> np.dtype:
        dt = np.dtype(self.spec)
        return dt if self.byteorder in ("=", "|") else dt.newbyteorder(self.byteorder)


class _PendingArray:
    """A numpy array named by a pickle; built from raw bytes by us, not by numpy's setstate."""

    __slots__ = ("array",)

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        # numpy writes (version, shape, dtype, is_fortran, rawdata)
        if not isinstance(state, tuple) or len(state) != 5:
            raise CheckpointError("corrupt numpy array state")
        _, shape, dtype, is_fortran, raw = state
        if not isinstance(dtype, _PendingDtype):
            raise CheckpointError("corrupt numpy array state (dtype)")
        if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise CheckpointError(f"corrupt numpy array shape {shape!r}")
        if not isinstance(raw, (bytes, bytearray)):
            raise UnsafeCheckpoint("refused numpy array whose data is not raw bytes")
        dt = dtype.resolve()
        count = math.prod(shape)
        if count * dt.itemsize != len(raw):
            raise CheckpointError(f"corrupt numpy array: {len(raw)} bytes for shape {shape} of {dt}")
        flat = np.frombuffer(bytes(raw), dtype=dt, count=count).copy()
        self.array = flat.reshape(shape, order="F" if is_fortran else "C")


# --------------------------------------------------------------------------------------------
# The functions the allowlist resolves to. Each validates its arguments.


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: no exec."""
    if not isinstance(meta, dict):
        raise CheckpointError(f"persistent object metadata is a {type(meta).__name__}, expected a dict")
    missing = {"type", "version", "module_src", "class_name", "state"} - set(meta)
    if missing:
        raise CheckpointError(f"persistent object metadata lacks {sorted(missing)}")
    if meta["type"] != "class":
        raise CheckpointError(f"persistent object of type {meta['type']!r} is not supported (expected 'class')")
    version = meta["version"]
    if version != NVIDIA_PERSISTENCE_VERSION:
        raise CheckpointError(
            f"persistent object layout version {version!r} is not supported (expected {NVIDIA_PERSISTENCE_VERSION})"
        )
    class_name, src, state = meta["class_name"], meta["module_src"], meta["state"]
    if not isinstance(class_name, str) or not class_name.isidentifier():
        raise CheckpointError(f"persistent object has an invalid class name {class_name!r}")
    if not isinstance(src, str):
        raise CheckpointError(f"persistent object {class_name}: module source is not text")
    if not isinstance(state, dict):
        raise CheckpointError(f"persistent object {class_name}: state is a {type(state).__name__}, expected a dict")
    return PersistentRecord(class_name=class_name, version=version, state=dict(state), module_src=src)


def _load_storage_from_bytes(data: Any) -> torch.storage.TypedStorage:
    """Stand-in for ``torch.storage._load_from_bytes``: the same bytes, weights-only."""
    if not isinstance(data, (bytes, bytearray)):
        raise CheckpointError(f"tensor storage payload is a {type(data).__name__}, expected bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TypedStorage deprecation, protocol notes
            storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _weights_only_error("tensor storage", exc) from None
    except Exception as exc:  # noqa: BLE001 - any failure of a corrupt blob is one error
        raise CheckpointError(f"corrupt tensor storage ({type(exc).__name__}: {_first_line(exc)})") from None
    if not isinstance(storage, torch.storage.TypedStorage):
        raise UnsafeCheckpoint(f"tensor storage payload decodes to a {type(storage).__name__}, not a storage")
    return storage


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: checks bounds, drops hooks."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise CheckpointError(f"tensor rebuilt from a {type(storage).__name__}, expected a storage")
    ints = lambda xs: isinstance(xs, tuple) and all(isinstance(x, int) and not isinstance(x, bool) for x in xs)  # noqa: E731
    if not isinstance(storage_offset, int) or storage_offset < 0 or not ints(size) or not ints(stride):
        raise CheckpointError("corrupt tensor header (offset, size, stride)")
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise CheckpointError(f"corrupt tensor header: size {size}, stride {stride}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation
        dtype, untyped = storage.dtype, storage._untyped_storage
    tensor = torch.empty((0,), dtype=dtype)
    numel = untyped.nbytes() // tensor.element_size()
    if all(size):
        last = storage_offset + sum((n - 1) * st for n, st in zip(size, stride))
        if last >= numel:
            raise CheckpointError(f"tensor of size {size} reaches past its storage of {numel} elements")
    tensor.set_(untyped, storage_offset, torch.Size(size), stride)
    return tensor


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None, state: Any = None) -> torch.Tensor:
    """Stand-in for ``torch._utils._rebuild_parameter[_with_state]``; hooks and state dropped."""
    if not isinstance(data, torch.Tensor):
        raise CheckpointError(f"parameter rebuilt from a {type(data).__name__}, expected a tensor")
    return torch.nn.Parameter(data, requires_grad=False)


def _numpy_reconstruct(subtype: Any, shape: Any, dtype: Any) -> _PendingArray:
    """Stand-in for ``numpy.core.multiarray._reconstruct``: plain ndarrays only."""
    if subtype is not np.ndarray:
        raise UnsafeCheckpoint(f"refused numpy array subclass {subtype!r}")
    return _PendingArray()


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """Stand-in for ``numpy.core.multiarray.scalar``: numeric scalars from raw bytes only."""
    if not isinstance(dtype, _PendingDtype):
        raise CheckpointError("corrupt numpy scalar (dtype)")
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafeCheckpoint("refused numpy scalar whose data is not raw bytes")
    dt = dtype.resolve()
    if len(data) != dt.itemsize:
        raise CheckpointError(f"corrupt numpy scalar: {len(data)} bytes for {dt}")
    return np.frombuffer(bytes(data), dtype=dt, count=1)[0]


def _numpy_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Stand-in for ``numpy.core.numeric._frombuffer`` (how protocol 5 writes arrays)."""
    if not isinstance(dtype, _PendingDtype):
        raise CheckpointError("corrupt numpy array (dtype)")
    if not isinstance(buf, (bytes, bytearray, pickle.PickleBuffer)) or order not in ("C", "F"):
        raise CheckpointError("corrupt numpy array buffer")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise CheckpointError(f"corrupt numpy array shape {shape!r}")
    raw = bytes(buf)
    dt = dtype.resolve()
    count = math.prod(shape)
    if count * dt.itemsize != len(raw):
        raise CheckpointError(f"corrupt numpy array: {len(raw)} bytes for shape {shape} of {dt}")
    return np.frombuffer(raw, dtype=dt, count=count).copy().reshape(shape, order=order)


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    """Stand-in for ``_codecs.encode``: protocol-2 pickles write bytes as latin-1 text."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpoint(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


# TensorFlow-era NVIDIA pickles (the original StyleGAN and StyleGAN2 releases) hold
# dnnlib.tflib.network.Network objects, written as NEWOBJ of that class and BUILD with the dict its
# __getstate__ returns: {"version", "name", "static_kwargs", "components", "build_module_src",
# "build_func_name", "variables"}; loading them execs build_module_src. StyleGAN2's code writes
# version 4, the first StyleGAN's version 3. NVIDIA's legacy.py (stylegan2-ada-pytorch, stylegan3)
# converts version 4 to PyTorch pickles and refuses older ones ("TensorFlow pickle version too low").
_TF_NETWORK = "dnnlib.tflib.network.Network"
_LEGACY_PY = ("convert it to a PyTorch pickle with legacy.py from NVIDIA's stylegan3 or stylegan2-ada-pytorch "
              "repository (python legacy.py --source=IN.pkl --dest=OUT.pkl), then run vjapp convert on OUT.pkl")


def tensorflow_pickle_message(version: Any = None) -> str:
    """One line saying what a TensorFlow-era NVIDIA pickle is and what to do with it."""
    version = version if type(version) is int else None  # noqa: E721 - not bool, not float
    if version == 4:
        return (f"a TensorFlow-era NVIDIA StyleGAN2 network pickle ({_TF_NETWORK}, layout version 4), "
                f"which vjapp cannot read directly: {_LEGACY_PY}")
    if version in (2, 3):
        return (f"a TensorFlow-era NVIDIA StyleGAN (first version) network pickle ({_TF_NETWORK}, layout version "
                f"{version}), which vjapp cannot read; NVIDIA's legacy.py converts only TensorFlow StyleGAN2 "
                "pickles (layout version 4), so this network has no PyTorch StyleGAN2 form to import")
    return (f"a TensorFlow-era NVIDIA network pickle ({_TF_NETWORK}), which vjapp cannot read directly; "
            f"if it is a StyleGAN2 network, {_LEGACY_PY}")


class _TensorFlowNetwork(metaclass=_SealedType):
    """What ``dnnlib.tflib.network.Network`` resolves to: it holds nothing and runs nothing.

    Its ``__setstate__`` (the pickle's BUILD) reads only the layout version from the state and
    raises the message for that kind of file; the stored source is never looked at.
    """

    __slots__ = ()

    def __init__(self, *args: Any) -> None:  # a REDUCE call instead of NEWOBJ: caught after loading
        pass

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise CheckpointError(tensorflow_pickle_message())
        raise CheckpointError(tensorflow_pickle_message(state.get("version")))


def _holds_tensorflow_network(data: Any) -> bool:
    items = data.values() if isinstance(data, dict) else data if isinstance(data, (tuple, list)) else ()
    return isinstance(data, _TensorFlowNetwork) or any(isinstance(x, _TensorFlowNetwork) for x in items)


_TORCH_DTYPES = {
    name: getattr(torch, name)
    for name in ("float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool")
}

class _Sealed:
    """A callable wrapper whose attributes a pickle cannot overwrite (no ``BUILD`` onto it)."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args: Any) -> Any:
        return self._fn(*args)

    def __setattr__(self, name: str, value: Any) -> None:
        raise UnsafeCheckpoint(f"refused to modify {self._fn.__name__} (attribute {name!r})")

    def __repr__(self) -> str:
        return f"<allowed {self._fn.__name__}>"


_CALLABLES: dict[tuple[str, str], Callable[..., Any]] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("_codecs", "encode"): _latin1_bytes,
    ("numpy", "dtype"): _PendingDtype,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
}

# Exact (module, name) -> object. Nothing else resolves. Classes are built-in types (which
# refuse attribute writes) or sealed; functions are wrapped in _Sealed.
_ALLOWED: dict[tuple[str, str], Any] = {
    **{key: _Sealed(fn) for key, fn in _CALLABLES.items()},
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("dnnlib.tflib.network", "Network"): _TensorFlowNetwork,
    ("numpy", "ndarray"): np.ndarray,
    **{("torch", name): value for name, value in _TORCH_DTYPES.items()},
}


class RestrictedUnpickler(pickle.Unpickler):
    """A pickle reader that resolves only the exact globals in ``_ALLOWED``."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            if module == "dnnlib.tflib" or module.startswith("dnnlib.tflib."):
                raise CheckpointError(tensorflow_pickle_message()) from None
            raise UnsafeCheckpoint(f"refused global {module}.{name} (not on the allowlist; nothing was executed)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpoint("refused a pickle persistent id (not used by network pickles)")


def _resolve_pending(obj: Any, depth: int = 0) -> Any:
    """Replace the numpy placeholders left by unpickling with real arrays/dtypes, in place."""
    if depth > 200:
        raise CheckpointError("object nesting too deep")
    if isinstance(obj, _PendingArray):
        if obj.array is None:
            raise CheckpointError("corrupt numpy array (no data)")
        return obj.array
    if isinstance(obj, _PendingDtype):
        return obj.resolve()
    if isinstance(obj, torch.Tensor):
        if obj._backward_hooks:  # only a hand-made pickle can put hooks here
            raise UnsafeCheckpoint("refused a tensor carrying backward hooks")
        return obj
    if isinstance(obj, PersistentRecord):
        for k, v in obj.state.items():
            obj.state[k] = _resolve_pending(v, depth + 1)
        return obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            obj[k] = _resolve_pending(v, depth + 1)
        return obj
    if isinstance(obj, list):
        for i, v in enumerate(obj):
            obj[i] = _resolve_pending(v, depth + 1)
        return obj
    if isinstance(obj, tuple):
        return tuple(_resolve_pending(v, depth + 1) for v in obj)
    return obj


# --------------------------------------------------------------------------------------------
# Public API


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def _weights_only_error(what: str, exc: BaseException) -> CheckpointError:
    """Turn torch's weights-only refusal into our error, without its 'retry unsafely' advice."""
    text = str(exc)
    match = re.search(r"(unsupported GLOBAL|Unsupported global: GLOBAL)\s+(\S+?)[\s.]*(?:\s|$)", text)
    if match:
        return UnsafeCheckpoint(f"{what}: refused global {match.group(2)} (weights-only load; nothing was executed)")
    if "WeightsUnpickler error" in text:
        tail = text.split("WeightsUnpickler error:", 1)[1]
        reason = next((ln.strip() for ln in tail.splitlines() if ln.strip()), "unsupported content")
        return UnsafeCheckpoint(f"{what}: refused by the weights-only loader ({reason[:200]}; nothing was executed)")
    return CheckpointError(f"{what}: corrupt pickle data ({_first_line(exc)})")


def _read_head(path: Path, n: int = 32) -> bytes:
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a file")
    with path.open("rb") as f:
        return f.read(n)


def detect_format(path: str | Path) -> SourceFormat:
    """Which kind of checkpoint ``path`` holds, judged by its content.

    ``"rosinality-pt"``: a ``torch.save`` file (zip, or the legacy pickle with torch's magic
    number); ``"nvidia-pkl"``: a plain binary pickle; ``"native"``: our safetensors or JSON
    file. Anything else raises :class:`CheckpointError`.
    """
    p = Path(path)
    head = _read_head(p)
    if not head:
        raise CheckpointError(f"{p}: file is empty, not a checkpoint")
    if head.startswith(_ZIP_MAGIC) or head.startswith(_TORCH_LEGACY_MAGIC):
        return "rosinality-pt"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "nvidia-pkl"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < (1 << 27):
        return "native"  # safetensors: u64 header length, then a JSON header
    if head.lstrip()[:1] == b"{":
        return "native"  # the JSON half of a native checkpoint
    raise CheckpointError(
        f"{p}: not a recognized checkpoint (not an NVIDIA pickle, a torch.save file, "
        f"or a vjapp safetensors/JSON file; starts with {head[:8]!r})"
    )


def load_nvidia_pickle(path: str | Path) -> dict[str, Any]:
    """Read an NVIDIA StyleGAN2-ADA / StyleGAN3 network pickle without executing anything.

    Returns the top-level dict (``"G"``, ``"D"``, ``"G_ema"``, ``"training_set_kwargs"``,
    ...) with every network replaced by a :class:`PersistentRecord`.
    """
    p = Path(path)
    head = _read_head(p)
    if not head:
        raise CheckpointError(f"{p}: file is empty, not a network pickle")
    if head.startswith(_ZIP_MAGIC) or head.startswith(_TORCH_LEGACY_MAGIC):
        raise CheckpointError(f"{p}: a torch.save file (rosinality .pt?), not an NVIDIA network pickle")
    if not (head[0] == 0x80 and 2 <= head[1] <= 5):
        raise CheckpointError(f"{p}: not a pickle file (starts with {head[:8]!r}), so not an NVIDIA network pickle")
    try:
        # From memory: a corrupt length field then cannot make the reader allocate it.
        data = RestrictedUnpickler(io.BytesIO(p.read_bytes())).load()
        data = _resolve_pending(data)
    except CheckpointError as exc:
        raise type(exc)(f"{p}: {exc}") from None
    except EOFError:
        raise CheckpointError(f"{p}: truncated pickle (ends early); the file is incomplete") from None
    except RecursionError:
        raise CheckpointError(f"{p}: pickle nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - arbitrary bytes can fail anywhere; one clear error
        raise CheckpointError(f"{p}: corrupt or truncated pickle ({type(exc).__name__}: {_first_line(exc)})") from None
    if _holds_tensorflow_network(data):
        raise CheckpointError(f"{p}: {tensorflow_pickle_message()}")
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{p}: holds a {type(data).__name__}, not a StyleGAN network pickle (expected a dict with 'G_ema')"
        )
    if not any(isinstance(data.get(k), PersistentRecord) for k in ("G_ema", "G")):
        raise CheckpointError(
            f"{p}: not a StyleGAN network pickle (no 'G_ema' or 'G' network among keys {sorted(map(str, data))[:8]})"
        )
    for key in ("G", "D", "G_ema", "augment_pipe"):
        if data.get(key) is not None and not isinstance(data[key], PersistentRecord):
            raise CheckpointError(f"{p}: entry {key!r} is a {type(data[key]).__name__}, not a network")
    return data


def _iter_tensors(group: Any, what: str, record: PersistentRecord) -> Iterator[tuple[str, torch.Tensor]]:
    if group is None:
        return
    if not isinstance(group, dict):
        raise CheckpointError(f"{record.class_name}: {what} is a {type(group).__name__}, expected a dict")
    for name, value in group.items():
        if value is None:
            continue
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{record.class_name}: {what} entry {name!r} is a {type(value).__name__}, not a tensor")
        yield name, value


def record_state_dict(record: PersistentRecord) -> dict[str, torch.Tensor]:
    """Flatten a module record into ``{dotted.name: tensor}`` like ``nn.Module.state_dict()``.

    Parameters, then persistent buffers, then submodules recursively; ``None`` entries and
    buffers listed in ``_non_persistent_buffers_set`` are skipped.
    """
    out: dict[str, torch.Tensor] = {}
    stack: list[int] = []

    def walk(rec: PersistentRecord, prefix: str) -> None:
        if id(rec) in stack:
            raise CheckpointError(f"{rec.class_name}: module tree contains a cycle")
        if len(stack) > 64:
            raise CheckpointError("module tree nested too deeply")
        stack.append(id(rec))
        state = rec.state
        skip = state.get("_non_persistent_buffers_set") or ()
        if not isinstance(skip, (set, frozenset, list, tuple)):
            raise CheckpointError(f"{rec.class_name}: corrupt _non_persistent_buffers_set")
        for name, t in _iter_tensors(state.get("_parameters"), "_parameters", rec):
            out[prefix + name] = t.detach()
        for name, t in _iter_tensors(state.get("_buffers"), "_buffers", rec):
            if name not in skip:
                out[prefix + name] = t.detach()
        modules = state.get("_modules") or {}
        if not isinstance(modules, dict):
            raise CheckpointError(f"{rec.class_name}: _modules is a {type(modules).__name__}, expected a dict")
        for name, child in modules.items():
            if child is None:
                continue
            if not isinstance(child, PersistentRecord):
                raise CheckpointError(f"{rec.class_name}: submodule {name!r} is a {type(child).__name__}, not a network")
            walk(child, f"{prefix}{name}.")
        stack.pop()

    walk(record, "")
    return out


def _plain(obj: Any) -> Any:
    """EasyDicts/OrderedDicts to plain dicts, recursively (tuples and lists kept)."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    return obj


def record_init_kwargs(record: PersistentRecord) -> dict[str, Any]:
    """The keyword arguments the network was constructed with (``init_kwargs``), as plain dicts.

    Raises :class:`CheckpointError` when the object was built with positional arguments,
    whose names only the (unexecuted) source would tell.
    """
    args = record.state.get("_init_args", ())
    kwargs = record.state.get("_init_kwargs")
    if kwargs is None:
        raise CheckpointError(f"{record.class_name}: no recorded constructor arguments (_init_kwargs)")
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise CheckpointError(f"{record.class_name}: _init_kwargs is not a dict of names")
    if args not in ((), [], None):
        raise CheckpointError(f"{record.class_name}: built with positional arguments, which cannot be mapped to names")
    return _plain(kwargs)


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`CheckpointError` naming the first tensor holding NaN or Inf."""
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise CheckpointError(f"{source}: {name} contains NaN or Inf values")


def load_rosinality_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a rosinality/stylegan2-pytorch ``.pt`` file with a weights-only ``torch.load``.

    The checkpoint's ``argparse.Namespace`` (training args) is the one extra class allowed.
    Returns the checkpoint dict (``"g_ema"``, optional ``"latent_avg"``, ``"args"``, ...).
    """
    p = Path(path)
    head = _read_head(p)
    if not head:
        raise CheckpointError(f"{p}: file is empty, not a checkpoint")
    if not (head.startswith(_ZIP_MAGIC) or head.startswith(_TORCH_LEGACY_MAGIC)):
        raise CheckpointError(f"{p}: not a torch.save file (starts with {head[:8]!r}), so not a rosinality .pt")
    allowed: list[Callable[..., Any] | tuple[Callable[..., Any], str]] = [argparse.Namespace]
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(allowed):
            warnings.simplefilter("ignore")
            ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise _weights_only_error(str(p), exc) from None
    except EOFError:
        raise CheckpointError(f"{p}: truncated checkpoint (ends early); the file is incomplete") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        raise CheckpointError(f"{p}: corrupt or truncated torch checkpoint ({type(exc).__name__}: {_first_line(exc)})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{p}: holds a {type(ckpt).__name__}, not a rosinality checkpoint (expected a dict with 'g_ema')")
    g_ema = ckpt.get("g_ema")
    if not isinstance(g_ema, dict) or not g_ema:
        raise CheckpointError(f"{p}: not a rosinality StyleGAN2 checkpoint (no 'g_ema' state dict; keys {sorted(map(str, ckpt))[:8]})")
    for name, value in g_ema.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{p}: g_ema entry {name!r} is a {type(value).__name__}, not a tensor")
    return ckpt
