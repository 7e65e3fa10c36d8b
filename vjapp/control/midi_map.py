"""Which knob, fader or pad drives what: MIDI mappings and MIDI learn (pure logic, no mido, no Qt).

A :class:`MidiMap` holds :class:`Binding` s from a MIDI source - a control change (CC) or a
note on one channel - to a **target**: a control path of
:data:`~vjapp.engine.controls.CONTROL_SPECS` (number, bool or choice controls) or an action name
of :data:`vjapp.osc.ACTIONS` (``preset/next``, ``record``, ``tempo/tap``...). One binding per
target: learning a target again moves it to the new knob, as a performer expects.

:meth:`MidiMap.handle` turns one incoming message (any object with mido's attribute names:
``type``, ``channel``, ``control``, ``value``, ``note``, ``velocity``) into effects; it decides,
it does not act. :func:`perform` applies an effect through the same doors the GUI and OSC use:
the controls :class:`~vjapp.engine.mailbox.Mailbox` with :func:`~vjapp.engine.controls.set_path`
(clamped and type-checked there), and the app's action callables.

What a message does:

* **CC -> control**: the value 0..127 spans the control's range: ``lo..hi`` for numbers (ints
  rounded), equal zones for choices (by index), on from 64 for bools.
* **14-bit CC**: a controller that sends CC *n* (0..31, the MSB) followed by CC *n*+32 (the LSB)
  is recognised on the first LSB after a binding to CC *n*; from then the binding is ``fine``:
  the MSB is kept and each LSB sets the control to ``(msb * 128 + lsb) / 16383`` of its range
  (an LSB alone reuses the last MSB, as the MIDI spec allows).
* **CC -> action**: trigger actions fire when the value rises to 64 or more (a button's press,
  not its release, and a knob turned past half fires once); switch actions (``record``) follow
  the button, on at 64 or more, off below.
* **Note -> action**: a note-on (velocity > 0) fires it; a switch action gets ``None`` (toggle).
  **Note -> control**: toggles a bool, steps a choice to the next, sets a number by velocity.
  Note-offs do nothing.

**Learn**: :meth:`MidiMap.start_learn` arms a target; the next CC or note-on binds to it (and is
not otherwise applied). Mappings are saved per controller by :class:`MidiMapStore` as JSON, and
:meth:`MidiMap.to_dict` / :meth:`MidiMap.from_dict` let a preset carry them.

Thread safety: the listener thread calls :meth:`~MidiMap.handle` while the GUI thread may call
:meth:`~MidiMap.start_learn` or :meth:`~MidiMap.to_dict`; one lock guards the state.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Union

from vjapp.engine.controls import (
    CONTROL_SPECS,
    BoolSpec,
    ChoiceSpec,
    Controls,
    FloatSpec,
    IntSpec,
    Spec,
    get_path,
    set_path,
)
from vjapp.engine.mailbox import Mailbox
from vjapp.osc import ACTIONS

log = logging.getLogger(__name__)

__all__ = [
    "MidiMapError",
    "Binding",
    "SetControl",
    "StepControl",
    "CallAction",
    "Effect",
    "Outcome",
    "MidiMap",
    "MidiMapStore",
    "MIDI_ACTIONS",
    "midi_targets",
    "perform",
    "controller_name",
]

FORMAT = "vjapp-midi-map"
VERSION = 1
SOURCE_KINDS = ("cc", "note")
# Every OSC action but ``preset`` (it takes a preset's name or index, which a knob or pad has not).
MIDI_ACTIONS: tuple[str, ...] = tuple(name for name, (kind, _, _) in ACTIONS.items() if kind in ("trigger", "switch"))
_MAPPABLE_SPECS = (FloatSpec, IntSpec, BoolSpec, ChoiceSpec)


class MidiMapError(ValueError):
    """A mapping that cannot be used (unknown target, bad JSON); the message says which."""


def midi_targets() -> list[str]:
    """Every target a knob or pad can drive: mappable control paths, then action names."""
    controls = [path for path, spec in CONTROL_SPECS.items() if isinstance(spec, _MAPPABLE_SPECS)]
    return controls + list(MIDI_ACTIONS)


def _check_target(target: str) -> None:
    if target in MIDI_ACTIONS:
        return
    spec = CONTROL_SPECS.get(target)
    if spec is None:
        raise MidiMapError(f"{target!r} is neither a control nor a MIDI action (actions: {', '.join(MIDI_ACTIONS)})")
    if not isinstance(spec, _MAPPABLE_SPECS):
        raise MidiMapError(f"control {target!r} is a {spec.kind}: a knob or pad cannot set it")


@dataclass(frozen=True)
class Binding:
    """One MIDI source (``cc`` or ``note`` number on a channel 0..15) -> one target."""

    kind: str
    channel: int
    number: int
    target: str
    fine: bool = False  # 14-bit: CC number (0..31) is the MSB, number + 32 the LSB

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise MidiMapError(f"binding kind must be cc or note, got {self.kind!r}")
        for name, value, hi in (("channel", self.channel, 15), ("number", self.number, 127)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
                raise MidiMapError(f"binding {name} must be 0..{hi}, got {value!r}")
        if self.fine and not (self.kind == "cc" and self.number < 32):
            raise MidiMapError(f"only CC 0..31 can be 14-bit (with CC n+32), got {self.kind} {self.number}")
        _check_target(self.target)

    @property
    def key(self) -> tuple[str, int, int]:
        return self.kind, self.channel, self.number

    def describe(self) -> str:
        """e.g. ``CC 7 (ch 1) -> gain`` or ``CC 1/33 14-bit (ch 1) -> gain`` (channels counted from 1)."""
        source = "note" if self.kind == "note" else "CC"
        number = f"{self.number}/{self.number + 32} 14-bit" if self.fine else str(self.number)
        return f"{source} {number} (ch {self.channel + 1}) -> {self.target}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "channel": self.channel, "number": self.number,
                               "target": self.target}
        if self.fine:
            out["fine"] = True
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "Binding":
        if not isinstance(data, Mapping):
            raise MidiMapError(f"a binding must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - {"kind", "channel", "number", "target", "fine"})
        if unknown:
            raise MidiMapError(f"unknown binding field(s) {unknown}")
        try:
            return cls(kind=data["kind"], channel=data["channel"], number=data["number"], target=data["target"],
                       fine=bool(data.get("fine", False)))
        except KeyError as exc:
            raise MidiMapError(f"a binding needs {exc.args[0]!r}") from None


@dataclass(frozen=True)
class SetControl:
    """Set ``path`` to ``value`` (already in the control's range)."""

    path: str
    value: Any


@dataclass(frozen=True)
class StepControl:
    """Toggle a bool control, or step a choice control to its next choice (wrapping)."""

    path: str


@dataclass(frozen=True)
class CallAction:
    """Call action ``name`` with ``arg``: None for a trigger (or a toggle of a switch), a bool for a switch."""

    name: str
    arg: bool | None = None


Effect = Union[SetControl, StepControl, CallAction]


@dataclass(frozen=True)
class Outcome:
    """What one message did: ``effects`` to perform; ``learned`` the binding it made while
    learning; ``changed`` whether the mapping changed (learned, or a binding became 14-bit)."""

    effects: tuple[Effect, ...] = ()
    learned: Binding | None = None
    changed: bool = False


def scale(spec: Spec, fraction: float) -> Any:
    """A control value from ``fraction`` 0..1 of a knob's travel."""
    f = min(max(float(fraction), 0.0), 1.0)
    if isinstance(spec, BoolSpec):
        return f >= 0.5  # 7-bit: on from 64
    if isinstance(spec, ChoiceSpec):
        return spec.choices[min(int(f * len(spec.choices)), len(spec.choices) - 1)]
    if isinstance(spec, IntSpec):
        return round(spec.lo + (spec.hi - spec.lo) * f)
    if isinstance(spec, FloatSpec):
        return spec.lo + (spec.hi - spec.lo) * f
    raise MidiMapError(f"a knob cannot set a {spec.kind} control")


class MidiMap:
    """Bindings of one controller, MIDI learn, and the 14-bit pairing state."""

    def __init__(self, bindings: list[Binding] | tuple[Binding, ...] = ()) -> None:
        self._lock = threading.Lock()
        self._bindings: dict[tuple[str, int, int], Binding] = {}
        self._learning: str | None = None
        self._msb: dict[tuple[int, int], int] = {}  # (channel, cc 0..31) -> last MSB
        self._high: dict[tuple[int, int], bool] = {}  # (channel, cc) -> last CC was >= 64 (action edges)
        for b in bindings:
            self._bind(b)

    # ------------------------------------------------------------------ bindings
    @property
    def bindings(self) -> list[Binding]:
        with self._lock:
            return list(self._bindings.values())

    def binding_for(self, target: str) -> Binding | None:
        with self._lock:
            return next((b for b in self._bindings.values() if b.target == target), None)

    def bind(self, binding: Binding) -> None:
        """Add ``binding``; it replaces any binding of the same source or the same target."""
        with self._lock:
            self._bind(binding)

    def _bind(self, binding: Binding) -> None:
        for key in [k for k, b in self._bindings.items() if b.target == binding.target]:
            del self._bindings[key]
        self._bindings[binding.key] = binding

    def unbind(self, target: str) -> bool:
        """Forget the binding of ``target``; whether there was one."""
        with self._lock:
            keys = [k for k, b in self._bindings.items() if b.target == target]
            for key in keys:
                del self._bindings[key]
            return bool(keys)

    # ------------------------------------------------------------------ learn
    @property
    def learning(self) -> str | None:
        """The target waiting for a knob or pad, or None."""
        return self._learning

    def start_learn(self, target: str) -> None:
        """The next CC or note-on binds to ``target`` (a control path or a MIDI action)."""
        _check_target(target)
        with self._lock:
            self._learning = target

    def cancel_learn(self) -> None:
        with self._lock:
            self._learning = None

    # ------------------------------------------------------------------ messages
    def handle(self, msg: Any) -> Outcome:
        """Decide what one message does (see the module's notes). Unmapped messages do nothing."""
        kind = getattr(msg, "type", None)
        if kind == "control_change":
            return self._control_change(int(msg.channel), int(msg.control), int(msg.value))
        if kind == "note_on" and int(msg.velocity) > 0:
            return self._note_on(int(msg.channel), int(msg.note), int(msg.velocity))
        return Outcome()

    def _control_change(self, channel: int, number: int, value: int) -> Outcome:
        with self._lock:
            if self._learning is not None and not self._is_lsb_of_bound(channel, number):
                learned = Binding("cc", channel, number, self._learning)
                self._bind(learned)
                self._learning = None
                if number < 32:
                    self._msb[(channel, number)] = value
                self._high[(channel, number)] = value >= 64
                return Outcome(learned=learned, changed=True)
            changed = False
            binding = self._bindings.get(("cc", channel, number))
            if number < 32:
                self._msb[(channel, number)] = value
            elif 32 <= number < 64 and (msb_binding := self._bindings.get(("cc", channel, number - 32))) is not None:
                if not msb_binding.fine:
                    msb_binding = Binding("cc", channel, number - 32, msb_binding.target, fine=True)
                    self._bindings[msb_binding.key] = msb_binding
                    changed = True
                    log.info("MIDI: %s (the controller sends 14-bit values)", msb_binding.describe())
                msb = self._msb.get((channel, number - 32), 0)
                return Outcome(self._to_target(msb_binding, (msb * 128 + value) / 16383.0, channel, number - 32),
                               changed=changed)
            if binding is None or binding.fine:  # a 14-bit MSB waits for its LSB
                return Outcome()
            return Outcome(self._to_target(binding, value / 127.0, channel, number))

    def _is_lsb_of_bound(self, channel: int, number: int) -> bool:
        """While learning, the LSB that follows a just-learned MSB is that knob, not a new one."""
        return 32 <= number < 64 and ("cc", channel, number - 32) in self._bindings and (
            self._bindings[("cc", channel, number - 32)].target == self._learning
            or (channel, number - 32) in self._msb)

    def _to_target(self, binding: Binding, fraction: float, channel: int, number: int) -> tuple[Effect, ...]:
        high = fraction >= 0.5
        was_high = self._high.get((channel, number), False)
        self._high[(channel, number)] = high
        if binding.target in MIDI_ACTIONS:
            if ACTIONS[binding.target][0] == "switch":
                return (CallAction(binding.target, high),) if high != was_high else ()
            return (CallAction(binding.target),) if high and not was_high else ()
        return (SetControl(binding.target, scale(CONTROL_SPECS[binding.target], fraction)),)

    def _note_on(self, channel: int, note: int, velocity: int) -> Outcome:
        with self._lock:
            if self._learning is not None:
                learned = Binding("note", channel, note, self._learning)
                self._bind(learned)
                self._learning = None
                return Outcome(learned=learned, changed=True)
            binding = self._bindings.get(("note", channel, note))
        if binding is None:
            return Outcome()
        if binding.target in MIDI_ACTIONS:
            return Outcome((CallAction(binding.target),))
        spec = CONTROL_SPECS[binding.target]
        if isinstance(spec, (BoolSpec, ChoiceSpec)):
            return Outcome((StepControl(binding.target),))
        return Outcome((SetControl(binding.target, scale(spec, velocity / 127.0)),))

    # ------------------------------------------------------------------ export
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"format", "version", "bindings": [...]}`` (a preset can carry it)."""
        return {"format": FORMAT, "version": VERSION, "bindings": [b.to_dict() for b in self.bindings]}

    @classmethod
    def from_dict(cls, data: Any) -> "MidiMap":
        """Rebuild from :meth:`to_dict`'s output; :class:`MidiMapError` names what is wrong."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise MidiMapError(f"not a MIDI mapping (expected \"format\": \"{FORMAT}\")")
        if data.get("version") != VERSION:
            raise MidiMapError(f"MIDI mapping version {data.get('version')!r} is not supported (this app reads {VERSION})")
        items = data.get("bindings", [])
        if not isinstance(items, list):
            raise MidiMapError("\"bindings\" must be a list")
        return cls([Binding.from_dict(item) for item in items])


def _step(spec: Spec, value: Any) -> Any:
    if isinstance(spec, BoolSpec):
        return not value
    if isinstance(spec, ChoiceSpec):
        return spec.choices[(spec.choices.index(value) + 1) % len(spec.choices)]
    raise MidiMapError(f"a {spec.kind} control cannot be stepped")


def perform(effect: Effect, controls: Mailbox[Controls], actions: Mapping[str, Callable[[Any], None]]) -> None:
    """Apply one effect: controls through the mailbox (validated by ``set_path``), actions by name.

    Raises :class:`~vjapp.engine.controls.ControlError` for a rejected value and
    :class:`MidiMapError` for an action the app does not offer; the caller reports them.
    """
    if isinstance(effect, SetControl):
        controls.update(lambda c: set_path(c, effect.path, effect.value))
    elif isinstance(effect, StepControl):
        spec = CONTROL_SPECS[effect.path]
        controls.update(lambda c: set_path(c, effect.path, _step(spec, get_path(c, effect.path))))
    else:
        fn = actions.get(effect.name)
        if fn is None:
            raise MidiMapError(f"the app has no action {effect.name!r}")
        fn(effect.arg)


_ALSA_ADDRESS = re.compile(r"\s+\d+:\d+$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def controller_name(port_name: str) -> str:
    """The controller behind a port name, stable across replugging: ALSA's trailing ``20:0``
    client:port numbers are dropped (``nanoKONTROL2:nanoKONTROL2 MIDI 1 20:0``)."""
    return _ALSA_ADDRESS.sub("", port_name).strip()


class MidiMapStore:
    """Mappings saved per controller as ``<folder>/<controller>.json`` (the app: data dir / midi)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def path_for(self, controller: str) -> Path:
        stem = _UNSAFE.sub("_", controller_name(controller)).strip("._") or "controller"
        return self.folder / f"{stem[:100]}.json"

    def load(self, controller: str) -> MidiMap:
        """The saved mapping of ``controller``; an empty one if none was saved.

        Raises :class:`MidiMapError` (naming the file) for a file that cannot be read or used.
        """
        path = self.path_for(controller)
        if not path.is_file():
            return MidiMap()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return MidiMap.from_dict(data)
        except (OSError, ValueError) as exc:  # json.JSONDecodeError and MidiMapError are ValueErrors
            raise MidiMapError(f"MIDI mapping {path}: {exc}") from None

    def save(self, controller: str, mapping: MidiMap) -> Path:
        """Write atomically (a temporary file renamed over the old one); returns the path."""
        path = self.path_for(controller)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = dict(mapping.to_dict(), controller=controller_name(controller))
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path
