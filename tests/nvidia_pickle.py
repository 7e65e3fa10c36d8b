"""Test helper: WRITE network pickles in NVIDIA's ``torch_utils.persistence`` layout.

NVIDIA's StyleGAN2-ADA / StyleGAN3 snapshots are pickles in which each network object is
stored as ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta =
{type, version, module_src, class_name, state}`` and ``state`` the module's ``__dict__``
(its ``_init_kwargs`` holding ``dnnlib.util.EasyDict`` values). This module produces the same
byte layout from ordinary ``nn.Module`` trees, without importing, defining or registering any
``torch_utils`` or ``dnnlib`` module: those globals are written as raw opcodes.

Tensors are pickled exactly as ``pickle.dump`` pickles them (``torch._utils._rebuild_tensor_v2``
/ ``_rebuild_parameter`` over ``torch.storage._load_from_bytes``), numpy values as numpy does.

It can also emit arbitrary global calls (:class:`Call`), to build hostile files for tests.
"""

from __future__ import annotations

import copy
import functools
import io
import pickle
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

PERSISTENCE_VERSION = 6


class GlobalRef:
    """A ``module.name`` global written by name only; the module is never imported."""

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name

    def __call__(self, *args: Any) -> Any:  # pickle requires reduce functions to be callable
        raise RuntimeError(f"{self.module}.{self.name} is a pickle reference, not callable here")

    def __repr__(self) -> str:
        return f"GlobalRef({self.module}.{self.name})"


class Call:
    """Pickled as ``module.name(*args)`` (GLOBAL + args + REDUCE): hostile payloads, odd tensors."""

    def __init__(self, module: str, name: str, *args: Any) -> None:
        self.func = GlobalRef(module, name)
        self.args = args


class EasyDictOut(dict):
    """A dict written as ``dnnlib.util.EasyDict`` (NEWOBJ + SETITEMS, as pickle writes it)."""


class TFNetworkOut:
    """Written as a TensorFlow-era ``dnnlib.tflib.network.Network`` pickles itself (NVlabs/stylegan2,
    ``dnnlib/tflib/network.py``): NEWOBJ of the class with no arguments, then BUILD with the dict
    its ``__getstate__`` returns."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state


PERSISTENT_RECONSTRUCT = GlobalRef("torch_utils.persistence", "_reconstruct_persistent_obj")
EASYDICT = GlobalRef("dnnlib.util", "EasyDict")
TF_NETWORK = GlobalRef("dnnlib.tflib.network", "Network")


def remember_init(cls: type[nn.Module]) -> type[nn.Module]:
    """Class decorator recording constructor arguments as NVIDIA's ``persistent_class`` does.

    The instance gets ``_init_args`` (a tuple) and ``_init_kwargs`` (a deep-copied dict).
    """
    orig_init = cls.__init__

    @functools.wraps(orig_init)
    def __init__(self: nn.Module, *args: Any, **kwargs: Any) -> None:
        orig_init(self, *args, **kwargs)
        self._init_args = copy.deepcopy(args)
        self._init_kwargs = copy.deepcopy(kwargs)

    cls.__init__ = __init__  # type: ignore[method-assign]
    return cls


def _as_easydicts(value: Any) -> Any:
    """Nested dicts inside init kwargs become EasyDicts, as NVIDIA's train.py builds them."""
    if isinstance(value, dict):
        return EasyDictOut({k: _as_easydicts(v) for k, v in value.items()})
    if isinstance(value, list):
        return [_as_easydicts(v) for v in value]
    return value


def _default_source(module: nn.Module, class_name: str) -> str:
    return f"# stand-in for the pickled source of {class_name}\nclass {class_name}:\n    pass\n"


class NvidiaPickler(pickle._Pickler):  # the pure-Python pickler lets us write raw opcodes
    """Writes ``nn.Module`` objects as NVIDIA persistent records."""

    dispatch = dict(pickle._Pickler.dispatch)

    def __init__(
        self,
        file: io.BufferedIOBase,
        protocol: int = 4,
        module_src: str | Callable[[nn.Module, str], str] | None = None,
        class_names: Mapping[type, str] | None = None,
    ) -> None:
        super().__init__(file, protocol=protocol)
        self._module_src = module_src
        self._class_names = dict(class_names or {})

    def _write_global(self, ref: GlobalRef) -> None:
        if self.proto >= 4:
            self.save(ref.module)
            self.save(ref.name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + ref.module.encode() + b"\n" + ref.name.encode() + b"\n")
        self.memoize(ref)

    def _write_easydict(self, obj: EasyDictOut) -> None:
        self.save(EASYDICT)
        self.save(())
        self.write(pickle.NEWOBJ)
        self.memoize(obj)
        self._batch_setitems(iter(obj.items()))

    def _write_tf_network(self, obj: TFNetworkOut) -> None:
        self.save(TF_NETWORK)
        self.save(())
        self.write(pickle.NEWOBJ)
        self.memoize(obj)
        self.save(obj.state)
        self.write(pickle.BUILD)

    dispatch[GlobalRef] = _write_global
    dispatch[EasyDictOut] = _write_easydict
    dispatch[TFNetworkOut] = _write_tf_network

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, Call):
            return (obj.func, obj.args)
        if isinstance(obj, nn.Module):
            return (PERSISTENT_RECONSTRUCT, (self.meta_for(obj),))
        return NotImplemented

    def meta_for(self, module: nn.Module) -> dict[str, Any]:
        """The ``meta`` dict NVIDIA's persistence writes for one module."""
        class_name = self._class_names.get(type(module), type(module).__name__)
        if callable(self._module_src):
            src = self._module_src(module, class_name)
        elif isinstance(self._module_src, str):
            src = self._module_src
        else:
            src = _default_source(module, class_name)
        state = dict(module.__dict__)
        # NVIDIA keeps constructor arguments as _init_args/_init_kwargs (init_kwargs is a
        # property there); accept a plain ``init_kwargs`` attribute as well.
        kwargs = state.pop("init_kwargs", None) if "_init_kwargs" not in state else state["_init_kwargs"]
        state["_init_args"] = tuple(state.get("_init_args", ()))
        state["_init_kwargs"] = {k: _as_easydicts(v) for k, v in dict(kwargs or {}).items()}
        return dict(type="class", version=PERSISTENCE_VERSION, module_src=src, class_name=class_name, state=state)


def nvidia_pickle_bytes(
    data: Any,
    *,
    protocol: int = 4,
    module_src: str | Callable[[nn.Module, str], str] | None = None,
    class_names: Mapping[type, str] | None = None,
) -> bytes:
    """``data`` (usually ``{"G": ..., "D": ..., "G_ema": ..., "training_set_kwargs": ...}``)
    pickled in NVIDIA's layout: every ``nn.Module`` becomes a persistent record."""
    buf = io.BytesIO()
    NvidiaPickler(buf, protocol=protocol, module_src=module_src, class_names=class_names).dump(data)
    return buf.getvalue()


def dump_nvidia_pickle(
    path: str | Path,
    data: Any,
    *,
    protocol: int = 4,
    module_src: str | Callable[[nn.Module, str], str] | None = None,
    class_names: Mapping[type, str] | None = None,
) -> Path:
    """Write :func:`nvidia_pickle_bytes` to ``path``; returns the path."""
    p = Path(path)
    p.write_bytes(nvidia_pickle_bytes(data, protocol=protocol, module_src=module_src, class_names=class_names))
    return p


def snapshot(G: nn.Module, D: nn.Module | None = None, G_ema: nn.Module | None = None) -> dict[str, Any]:
    """The top-level dict of an NVIDIA training snapshot around the given networks."""
    return {
        "G": G,
        "D": D,
        "G_ema": G_ema if G_ema is not None else G,
        "augment_pipe": None,
        "training_set_kwargs": {"class_name": "training.dataset.ImageFolderDataset", "path": "data.zip",
                                "use_labels": False, "max_size": 100, "xflip": False, "resolution": 16},
    }


def tf_network(name: str, build_func_name: str, variables: Mapping[str, np.ndarray], *, version: int = 4,
               static_kwargs: Mapping[str, Any] | None = None, components: Mapping[str, TFNetworkOut] | None = None,
               build_module_src: str = "") -> TFNetworkOut:
    """One TensorFlow-era network with the state ``Network.__getstate__`` writes (StyleGAN2: version 4,
    the first StyleGAN: version 3)."""
    return TFNetworkOut({
        "version": version,
        "name": name,
        "static_kwargs": dict(static_kwargs or {}),
        "components": dict(components or {}),
        "build_module_src": build_module_src,
        "build_func_name": build_func_name,
        "variables": list(variables.items()),
    })


def tensorflow_snapshot(version: int = 4, build_module_src: str = "") -> tuple[TFNetworkOut, ...]:
    """``(G, D, Gs)`` as the TensorFlow StyleGAN / StyleGAN2 training loops pickled them (tiny weights)."""
    module = "training.networks_stylegan2" if version >= 4 else "training.networks_stylegan"
    rng = np.random.default_rng(0)

    def generator(name: str) -> TFNetworkOut:
        mapping = tf_network(f"{name}_mapping", f"{module}.G_mapping",
                             {"Dense0/weight": rng.standard_normal((8, 8), dtype=np.float32),
                              "Dense0/bias": np.zeros(8, np.float32)},
                             version=version, build_module_src=build_module_src,
                             static_kwargs={"latent_size": 8, "dlatent_size": 8, "mapping_layers": 1})
        synthesis_func = f"{module}.G_synthesis_stylegan2" if version >= 4 else f"{module}.G_synthesis"
        synthesis = tf_network(f"{name}_synthesis", synthesis_func,
                               {"4x4/Const/const": rng.standard_normal((1, 8, 4, 4), dtype=np.float32)},
                               version=version, build_module_src=build_module_src,
                               static_kwargs={"resolution": 4, "num_channels": 3})
        return tf_network(name, f"{module}.G_main" if version >= 4 else f"{module}.G_style",
                          {"dlatent_avg": np.zeros(8, np.float32), "lod": np.array(0, np.float32)},
                          version=version, build_module_src=build_module_src,
                          static_kwargs={"resolution": 4, "num_channels": 3, "latent_size": 8, "label_size": 0},
                          components={"mapping": mapping, "synthesis": synthesis})

    D = tf_network("D", f"{module}.D_stylegan2" if version >= 4 else f"{module}.D_basic",
                   {"Output/weight": rng.standard_normal((8, 1), dtype=np.float32)},
                   version=version, build_module_src=build_module_src, static_kwargs={"resolution": 4})
    return generator("G"), D, generator("Gs")


def torch_save_bytes(obj: Any, legacy: bool = False) -> bytes:
    """``torch.save(obj)`` into bytes (legacy non-zip layout when ``legacy``)."""
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def tensor_from_storage_bytes(payload: bytes, size: tuple[int, ...] = (1,)) -> Call:
    """A tensor whose storage is the given ``_load_from_bytes`` payload (for hostile tests)."""
    stride = tuple(int(torch.tensor(size[i + 1:]).prod()) for i in range(len(size)))
    return Call("torch._utils", "_rebuild_tensor_v2",
                Call("torch.storage", "_load_from_bytes", payload), 0, size, stride, False, {})


# A tiny NVIDIA-shaped network for loader tests (not a generator).


@remember_init
class TinyDense(nn.Module):
    """Shaped like NVIDIA's FullyConnectedLayer: raw weights, numpy gain attributes."""

    def __init__(self, in_features: int, out_features: int, lr_multiplier: float = 1.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn([out_features, in_features]))
        self.bias = nn.Parameter(torch.randn([out_features]))
        self.weight_gain = lr_multiplier / np.sqrt(in_features)  # a numpy float64, as NVIDIA's
        self.in_size = np.broadcast_to(np.asarray([in_features], dtype=np.int64), [2]).copy()


@remember_init
class TinyMapping(nn.Module):
    def __init__(self, z_dim: int, w_dim: int, num_layers: int) -> None:
        super().__init__()
        for i in range(num_layers):
            setattr(self, f"fc{i}", TinyDense(in_features=z_dim if i == 0 else w_dim, out_features=w_dim, lr_multiplier=0.01))
        self.register_buffer("w_avg", torch.randn([w_dim]))
        self.register_buffer("scratch", torch.ones([3]), persistent=False)
        self.unused = None  # an optional submodule left out, as NVIDIA's embed layer often is


@remember_init
class TinyG(nn.Module):
    def __init__(self, z_dim: int, w_dim: int, mapping_kwargs: dict) -> None:
        super().__init__()
        self.mapping = TinyMapping(z_dim=z_dim, w_dim=w_dim, **mapping_kwargs)
        self.const = nn.Parameter(torch.randn([4, 2, 2]))
        self.view = nn.Parameter(self.const.detach()[1])  # shares the storage of const at an offset
        self.block_resolutions = [4, 8]


def make_g() -> TinyG:
    """A small network shaped like NVIDIA's (nested records, numpy attributes, shared storage)."""
    torch.manual_seed(0)
    return TinyG(z_dim=5, w_dim=6, mapping_kwargs={"num_layers": 2})
