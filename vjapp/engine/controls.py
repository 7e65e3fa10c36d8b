"""Everything a performer controls, as one immutable, always-valid value.

:class:`Controls` is a frozen dataclass; the GUI, the OSC server and presets never mutate it but
put a new one into the controls :class:`~vjapp.engine.mailbox.Mailbox`. Each field declares its
range next to it (``metadata={"spec": ...}``); :data:`CONTROL_SPECS` is the table of those specs by
dotted path (``"gain"``, ``"mix.coarse.strength"``, ``"source_weights.1"``), reused by the OSC address
table, presets and GUI sliders, so a range is written down exactly once.

Validation policy (one rule for every entry point: constructor, :meth:`Controls.replace`,
:func:`set_path`, :meth:`Controls.from_dict`):

* Every ``Controls`` (and nested :class:`MixSlot` / :class:`MixGroups` / :class:`GroupGains`) is
  checked in ``__post_init__``, so an invalid one cannot exist and the engine never re-checks.
* Numbers out of range are **clamped**: a fader pushed past its end still means "as far as it
  goes". Int fields accept floats (rounded to nearest); float fields accept ints.
* NaN and +-Inf are **rejected** with :class:`ControlError`: they carry no intended value, so the
  previous value stays (a rejected OSC message or preset changes nothing).
* Wrong types are rejected: bools only for bool fields (``True`` is not a number here), strings
  only for string and choice fields. Strings are stripped of surrounding whitespace and control
  characters and truncated to the field's maximum length; choices are matched case-insensitively.
* ``size`` is a power of two in 64..1024 (other ints snap to the nearest power of two, in log scale,
  then clamp) or the string ``"native"`` (the bundle's display size: the generator's resolution unless the bundle
  asks to be upsampled).
* ``aspect`` is one of :data:`ASPECTS` (width:height). The generator synthesizes that shape
  natively (StyleGAN2: a widened constant input); ``size`` is then the short side and the long
  side is rounded to an even number of pixels (:func:`frame_shape`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import unicodedata
from types import MappingProxyType
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Union

import numpy as np

__all__ = [
    "ControlError",
    "FloatSpec",
    "IntSpec",
    "BoolSpec",
    "StrSpec",
    "ChoiceSpec",
    "SizeSpec",
    "VectorSpec",
    "Spec",
    "MixSlot",
    "MixGroups",
    "GroupGains",
    "BandPulse",
    "Rhythm",
    "Camera",
    "Controls",
    "CONTROL_SPECS",
    "get_path",
    "set_path",
]

MAX_SEED = 2**31 - 1
PROMPT_MAX_LEN = 200


class ControlError(ValueError):
    """A control value or path that cannot be accepted (the message names the field)."""


# --------------------------------------------------------------------------------------------
# Field specs: type check + clamp for one value. ``coerce(path, value)`` returns the clean value.
# --------------------------------------------------------------------------------------------


def _real(path: str, value: Any) -> float:
    """A finite real number from ``value`` (int, float or numpy scalar; not bool)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ControlError(f"{path}: expected a number, got {type(value).__name__} {value!r}")
    x = float(value)
    if not math.isfinite(x):
        raise ControlError(f"{path}: value must be finite, got {x!r}")
    return x


@dataclass(frozen=True)
class FloatSpec:
    """A float clamped to ``[lo, hi]``."""

    lo: float
    hi: float
    doc: str = ""
    kind: ClassVar[str] = "float"

    def coerce(self, path: str, value: Any) -> float:
        return min(max(_real(path, value), self.lo), self.hi)


@dataclass(frozen=True)
class IntSpec:
    """An int clamped to ``[lo, hi]``; floats are rounded to the nearest int."""

    lo: int
    hi: int
    doc: str = ""
    kind: ClassVar[str] = "int"

    def coerce(self, path: str, value: Any) -> int:
        if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
            x = int(value)  # exact, even beyond float precision
        else:
            x = round(_real(path, value))
        return min(max(x, self.lo), self.hi)


@dataclass(frozen=True)
class BoolSpec:
    """A bool (Python or numpy); nothing else."""

    doc: str = ""
    kind: ClassVar[str] = "bool"

    def coerce(self, path: str, value: Any) -> bool:
        if not isinstance(value, (bool, np.bool_)):
            raise ControlError(f"{path}: expected a bool, got {type(value).__name__} {value!r}")
        return bool(value)


def _clean_text(path: str, value: Any, max_len: int) -> str:
    if not isinstance(value, str):
        raise ControlError(f"{path}: expected a string, got {type(value).__name__} {value!r}")
    text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in value)
    return text.strip()[:max_len].rstrip()


@dataclass(frozen=True)
class StrSpec:
    """A string, stripped of control characters and surrounding spaces, at most ``max_len``."""

    max_len: int
    doc: str = ""
    kind: ClassVar[str] = "str"

    def coerce(self, path: str, value: Any) -> str:
        return _clean_text(path, value, self.max_len)


@dataclass(frozen=True)
class ChoiceSpec:
    """One string of ``choices`` (case-insensitive)."""

    choices: tuple[str, ...]
    doc: str = ""
    kind: ClassVar[str] = "choice"

    def coerce(self, path: str, value: Any) -> str:
        text = _clean_text(path, value, 64).lower()
        if text not in self.choices:
            raise ControlError(f"{path}: {value!r} is not one of {', '.join(self.choices)}")
        return text


@dataclass(frozen=True)
class SizeSpec:
    """Output size: a power of two in ``[lo, hi]`` or ``"native"``."""

    lo: int = 64
    hi: int = 1024
    doc: str = ""
    kind: ClassVar[str] = "size"

    def coerce(self, path: str, value: Any) -> int | str:
        if isinstance(value, str):
            if value.strip().lower() == "native":
                return "native"
            raise ControlError(f"{path}: expected a power of two or 'native', got {value!r}")
        x = _real(path, value)
        if x <= 0:
            return self.lo
        snapped = 2 ** round(math.log2(x))
        return int(min(max(snapped, self.lo), self.hi))


def size_from_text(text: str) -> int | str:
    """A ``--size`` argument as the ``size`` control takes it: digits become an int (snapped to a
    power of two by the control), anything else is passed on (``native``, or a ControlError)."""
    return int(text) if text.strip().isdigit() else text


@dataclass(frozen=True)
class VectorSpec:
    """A fixed-length tuple of floats, each clamped to ``[lo, hi]``."""

    length: int
    lo: float
    hi: float
    doc: str = ""
    kind: ClassVar[str] = "vector"

    def coerce(self, path: str, value: Any) -> tuple[float, ...]:
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
            raise ControlError(f"{path}: expected {self.length} numbers, got {value!r}")
        if len(value) != self.length:
            raise ControlError(f"{path}: expected {self.length} numbers, got {len(value)}")
        item = FloatSpec(self.lo, self.hi)
        return tuple(item.coerce(f"{path}.{i}", v) for i, v in enumerate(value))

    def element(self) -> FloatSpec:
        return FloatSpec(self.lo, self.hi, self.doc)


Spec = Union[FloatSpec, IntSpec, BoolSpec, StrSpec, ChoiceSpec, SizeSpec, VectorSpec]


def _ctl(default: Any, spec: Spec) -> Any:
    """A dataclass field with its spec next to it."""
    return field(default=default, metadata={"spec": spec})


def _nested(cls: type) -> Any:
    return field(default_factory=cls, metadata={"nested": cls})


class _Validated:
    """Mixin: coerce every spec'd field in ``__post_init__`` (frozen, so via object.__setattr__)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if "spec" in f.metadata:
                object.__setattr__(self, f.name, f.metadata["spec"].coerce(f.name, value))
            elif "nested" in f.metadata:
                cls = f.metadata["nested"]
                if isinstance(value, Mapping):
                    object.__setattr__(self, f.name, _from_dict(cls, value, f.name))
                elif not isinstance(value, cls):
                    raise ControlError(
                        f"{f.name}: expected {cls.__name__}, got {type(value).__name__}"
                    )

    def replace(self, **changes: Any) -> Any:
        """A validated copy with top-level fields changed (nested ones as objects or dicts)."""
        names = {f.name for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ControlError(f"unknown control field(s) of {type(self).__name__}: {unknown}")
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (tuples become lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, _Validated):
                out[f.name] = value.to_dict()
            elif isinstance(value, tuple):
                out[f.name] = list(value)
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """Build from a (possibly partial) dict; unknown keys raise ControlError."""
        return _from_dict(cls, data, "")


def _from_dict(cls: type, data: Any, prefix: str) -> Any:
    where = prefix or cls.__name__
    if not isinstance(data, Mapping):
        raise ControlError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            raise ControlError(f"unknown control {path!r}")
        f = fields[key]
        if "nested" in f.metadata:
            kwargs[key] = _from_dict(f.metadata["nested"], value, path)
        else:
            kwargs[key] = f.metadata["spec"].coerce(path, value)  # full path in the error
    return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# The controls
# --------------------------------------------------------------------------------------------

SOURCE_KINDS = ("none", "seed", "prompt")
NOISE_MODES = ("const", "random", "none")
ASPECTS = ("1:1", "16:9", "4:3", "9:16")  # width:height of the frames


def aspect_ratio(aspect: str) -> float:
    """Width / height of an :data:`ASPECTS` entry (``"16:9"`` -> 1.777...)."""
    if aspect not in ASPECTS:
        raise ControlError(f"aspect: {aspect!r} is not one of {', '.join(ASPECTS)}")
    w, h = aspect.split(":")
    return int(w) / int(h)


def aspect_arg(text: str) -> str:
    """The argparse type of ``--aspect``: an :data:`ASPECTS` entry, else one clear message."""
    clean = text.strip().lower() if isinstance(text, str) else text
    if clean not in ASPECTS:
        raise argparse.ArgumentTypeError(f"--aspect must be one of {', '.join(ASPECTS)} (width:height), got {text!r}")
    return clean


def frame_shape(short_side: int, aspect: str) -> tuple[int, int]:
    """``(height, width)`` of frames at ``aspect`` whose short side is ``short_side`` px; the long
    side is rounded to an even number (what H.264 needs), as the generator rounds it."""
    ratio = aspect_ratio(aspect)
    if ratio == 1.0:
        return short_side, short_side
    if ratio > 1.0:
        return short_side, max(2, 2 * round(short_side * ratio / 2))
    return max(2, 2 * round(short_side / ratio / 2)), short_side


@dataclass(frozen=True)
class MixSlot(_Validated):
    """Style mixing for one layer group: take it from another latent (a seed or a prompt)."""

    source_kind: str = _ctl("none", ChoiceSpec(SOURCE_KINDS, "where the group's latent comes from"))
    seed: int = _ctl(0, IntSpec(0, MAX_SEED, "seed of the mixed-in latent"))
    prompt: str = _ctl("", StrSpec(PROMPT_MAX_LEN, "prompt of the mixed-in latent"))
    strength: float = _ctl(1.0, FloatSpec(0.0, 1.0, "0 = own latent, 1 = fully the source's"))


@dataclass(frozen=True)
class MixGroups(_Validated):
    """One :class:`MixSlot` per W+ layer group."""

    coarse: MixSlot = _nested(MixSlot)
    mid: MixSlot = _nested(MixSlot)
    fine: MixSlot = _nested(MixSlot)


@dataclass(frozen=True)
class GroupGains(_Validated):
    """Reactivity per W+ layer group (scales that group's sound-driven change)."""

    coarse: float = _ctl(1.0, FloatSpec(0.0, 4.0, "gain of the coarse layers (pose, layout)"))
    mid: float = _ctl(1.0, FloatSpec(0.0, 4.0, "gain of the middle layers (features)"))
    fine: float = _ctl(1.0, FloatSpec(0.0, 4.0, "gain of the fine layers (colour, texture)"))


@dataclass(frozen=True)
class GroupSmoothing(_Validated):
    """Extra temporal smoothing per W+ layer group, on top of the overall ``smoothing``."""

    coarse: float = _ctl(0.0, FloatSpec(0.0, 0.99, "extra smoothing of the coarse layers"))
    mid: float = _ctl(0.0, FloatSpec(0.0, 0.99, "extra smoothing of the middle layers"))
    fine: float = _ctl(0.0, FloatSpec(0.0, 0.99, "extra smoothing of the fine layers"))


LAYER_GROUPS = ("coarse", "mid", "fine")
QUANTIZE_MODES = ("off", "beat", "bar")
TEMPO_SOURCES = ("audio", "tap", "external")


@dataclass(frozen=True)
class BandPulse(_Validated):
    """The pulse of one audio band: how big, and which W+ layer group it moves."""

    gain: float = _ctl(1.0, FloatSpec(0.0, 4.0, "size of this band's pulse"))
    group: str = _ctl("coarse", ChoiceSpec(LAYER_GROUPS, "layer group this band's onsets push"))


@dataclass(frozen=True)
class LowPulse(BandPulse):
    group: str = _ctl("coarse", ChoiceSpec(LAYER_GROUPS, "layer group the low band (kick, bass) pushes"))


@dataclass(frozen=True)
class MidPulse(BandPulse):
    gain: float = _ctl(0.6, FloatSpec(0.0, 4.0, "size of this band's pulse"))
    group: str = _ctl("mid", ChoiceSpec(LAYER_GROUPS, "layer group the mid band (snare, voice) pushes"))


@dataclass(frozen=True)
class HighPulse(BandPulse):
    gain: float = _ctl(0.35, FloatSpec(0.0, 4.0, "size of this band's pulse"))
    group: str = _ctl("fine", ChoiceSpec(LAYER_GROUPS, "layer group the high band (hats, cymbals) pushes"))


@dataclass(frozen=True)
class Rhythm(_Validated):
    """The rhythm layer: band onsets pulse the picture, changes can land on the beat."""

    amount: float = _ctl(4.5, FloatSpec(0.0, 8.0, "overall size of the beat pulses (0 = off)"))
    attack: float = _ctl(0.01, FloatSpec(0.0, 0.5, "pulse attack time (s)"))
    release: float = _ctl(0.06, FloatSpec(0.01, 2.0, "pulse release time (s)"))
    low: LowPulse = _nested(LowPulse)
    mid: MidPulse = _nested(MidPulse)
    high: HighPulse = _nested(HighPulse)
    offbeat: float = _ctl(0.3, FloatSpec(0.0, 1.0, "size of pulses off the beat (1 = every onset alike)"))
    quantize: str = _ctl("off", ChoiceSpec(QUANTIZE_MODES, "seed/prompt/mix/preset changes land on the next beat or bar"))
    tempo_source: str = _ctl("audio", ChoiceSpec(TEMPO_SOURCES, "tempo from the audio, tap tempo, or an external clock"))


@dataclass(frozen=True)
class Camera(_Validated):
    """A camera inside the picture: StyleGAN3's input transform (StyleGAN2 generators ignore it)."""

    x: float = _ctl(0.0, FloatSpec(-8.0, 8.0, "camera pan: the picture moves right by this many picture heights (StyleGAN3)"))
    y: float = _ctl(0.0, FloatSpec(-8.0, 8.0, "camera pan: the picture moves down by this many picture heights (StyleGAN3)"))
    rotate: float = _ctl(0.0, FloatSpec(-180.0, 180.0, "camera roll: the picture turns counter-clockwise by this many degrees (StyleGAN3)"))


@dataclass(frozen=True)
class Controls(_Validated):
    """The whole performer-facing state. Immutable; valid by construction."""

    seed: int = _ctl(0, IntSpec(0, MAX_SEED, "seed of the base latent"))
    prompt: str = _ctl("", StrSpec(PROMPT_MAX_LEN, "text prompt steering the base latent"))
    truncation_psi: float = _ctl(0.7, FloatSpec(0.0, 1.5, "truncation towards the mean latent"))
    mix: MixGroups = _nested(MixGroups)
    gain: float = _ctl(1.0, FloatSpec(0.0, 4.0, "overall reactivity to sound"))
    smoothing: float = _ctl(0.5, FloatSpec(0.0, 0.99, "temporal smoothing of the latent"))
    group_gains: GroupGains = _nested(GroupGains)
    group_smoothing: GroupSmoothing = _nested(GroupSmoothing)
    loudness_reactivity: float = _ctl(
        1.0, FloatSpec(0.0, 2.0, "how much loudness scales the size of the change")
    )
    semantic_reach: float = _ctl(
        1.0, FloatSpec(0.1, 1.0, "how far the sound's meaning may pull the picture from its seed (1 = all the way)")
    )
    source_weights: tuple[float, float] = _ctl(
        (1.0, 0.0), VectorSpec(2, 0.0, 1.0, "mix weight of each sound source")
    )
    model_rate: float = _ctl(10.0, FloatSpec(1.0, 60.0, "model steps per second (Hz)"))
    fps: float = _ctl(30.0, FloatSpec(1.0, 240.0, "display frames per second"))
    size: int | str = _ctl("native", SizeSpec(64, 1024, "output size (px, the short side) or 'native'"))
    aspect: str = _ctl("1:1", ChoiceSpec(ASPECTS, "frame shape, width:height, synthesized natively (not letterboxed)"))
    noise_mode: str = _ctl("const", ChoiceSpec(NOISE_MODES, "StyleGAN noise inputs"))
    paused: bool = _ctl(False, BoolSpec("freeze the picture"))
    rhythm: Rhythm = _nested(Rhythm)
    camera: Camera = _nested(Camera)


# --------------------------------------------------------------------------------------------
# Dotted-path addressing (OSC, presets)
# --------------------------------------------------------------------------------------------


def _walk_specs(cls: type, prefix: str, out: dict[str, Spec]) -> None:
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        if "nested" in f.metadata:
            _walk_specs(f.metadata["nested"], path + ".", out)
            continue
        spec = f.metadata["spec"]
        out[path] = spec
        if isinstance(spec, VectorSpec):
            for i in range(spec.length):
                out[f"{path}.{i}"] = spec.element()


_specs: dict[str, Spec] = {}
_walk_specs(Controls, "", _specs)
CONTROL_SPECS: Mapping[str, Spec] = MappingProxyType(_specs)
"""Every addressable control path -> its spec, in declaration order (read-only)."""


def _spec_for(path: str) -> Spec:
    spec = CONTROL_SPECS.get(path)
    if spec is None:
        raise ControlError(f"unknown control {path!r}")
    return spec


def get_path(controls: Controls, path: str) -> Any:
    """The value at a dotted path, e.g. ``get_path(c, "mix.coarse.strength")``."""
    _spec_for(path)
    obj: Any = controls
    for part in path.split("."):
        obj = obj[int(part)] if isinstance(obj, tuple) else getattr(obj, part)
    return obj


def _set_in(obj: Any, parts: list[str], value: Any) -> Any:
    head, rest = parts[0], parts[1:]
    if isinstance(obj, tuple):
        items = list(obj)
        items[int(head)] = value if not rest else _set_in(items[int(head)], rest, value)
        return tuple(items)
    new = value if not rest else _set_in(getattr(obj, head), rest, value)
    return dataclasses.replace(obj, **{head: new})


def set_path(controls: Controls, path: str, value: Any) -> Controls:
    """A validated copy of ``controls`` with the value at ``path`` set (clamped, type-checked).

    Raises :class:`ControlError` for an unknown path, a wrong type or a non-finite number.
    """
    clean = _spec_for(path).coerce(path, value)
    return _set_in(controls, path.split("."), clean)
