"""Presets: named, partial sets of controls, shipped with the app or saved by the performer.

A preset file is JSON::

    {"format": "vjapp-preset", "version": 1, "name": "storm", "description": "...",
     "controls": {"gain": 2.5, "group_gains": {"coarse": 3.0}, "prompt": "thunderstorm"}}

``controls`` has the shape of :meth:`Controls.to_dict() <vjapp.engine.controls.Controls.to_dict>`
but may be partial, at any depth. **A preset sets every field it names and leaves the others as
they are**: ``{"group_gains": {"fine": 3.0}}`` changes the fine gain only. So a preset can be a
whole look, or a small modifier ("more fine detail"); a saved preset (:meth:`PresetLibrary.save`)
names every field and so restores the whole state.

Validation is Controls' own (:data:`~vjapp.engine.controls.CONTROL_SPECS`), applied when the file
is loaded: unknown keys, wrong types (a string for ``gain``, ``true`` for a number) and NaN/Inf
are a :class:`PresetError` naming the file and the field; numbers out of range are clamped, as a
fader pushed past its end would be (and logged). A preset that failed to load cannot be applied,
and applying one never fails half-way, so a bad preset never changes the current state.

A preset may also carry a MIDI controller's mapping (optional; saved when the performer asks)::

    "midi": {"format": "vjapp-midi-map", "version": 1, "controller": "nanoKONTROL2",
             "bindings": [{"kind": "cc", "channel": 0, "number": 21, "target": "gain"}]}

It is :meth:`MidiMap.to_dict() <vjapp.control.midi_map.MidiMap.to_dict>` plus the controller's
name; it is validated on load like the controls, and the app applies it only while that
controller is the MIDI input. Presets without it are read as before.

The preset's name is its file name without ``.json`` (the ``name`` inside the file is informative).
:class:`PresetLibrary` lists the shipped presets (``presets/`` in the repository) and then the
user's (``$XDG_CONFIG_HOME/vjapp/presets``, else ``~/.config/vjapp/presets``); a user preset with
a shipped preset's name overrides it in place. :class:`PresetPlayer` loads presets into the controls
mailbox and steps through them (the OSC ``/vjapp/preset*`` actions).

No Qt, no torch: the GUI, the OSC server and the CLI all use this module.
"""

from __future__ import annotations

import json
import logging
import numbers
import os
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from vjapp.engine.controls import (
    CONTROL_SPECS,
    ControlError,
    Controls,
    FloatSpec,
    IntSpec,
    set_path,
)
from vjapp.engine.mailbox import Mailbox
from vjapp.messages import QUOTE_CHARS, quote, shorten

__all__ = [
    "PRESET_FORMAT",
    "PRESET_VERSION",
    "SHIPPED_DIR",
    "PresetError",
    "Preset",
    "PresetLibrary",
    "PresetPlayer",
    "default_user_dir",
    "flatten_controls",
]

log = logging.getLogger(__name__)

PRESET_FORMAT = "vjapp-preset"
PRESET_VERSION = 1
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "presets"
MAX_PRESET_BYTES = 1 << 20  # a preset is a few hundred bytes; refuse to parse huge files
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.\-]{0,63}")
_TOP_KEYS = frozenset({"format", "version", "name", "description", "controls", "midi"})
_GROUPS = frozenset(p.rsplit(".", i)[0] for p in CONTROL_SPECS for i in range(1, p.count(".") + 1))


class PresetError(ValueError):
    """A preset that cannot be loaded, saved, found or applied (message names file and field)."""


def default_user_dir() -> Path:
    """User presets: ``$XDG_CONFIG_HOME/vjapp/presets``, else ``~/.config/vjapp/presets``."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "vjapp" / "presets"


def check_name(name: Any) -> str:
    """A valid preset name (also its file name): 1-64 of letters, digits, space ``_ . -``."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name) or name.endswith((" ", ".")):
        raise PresetError(
            f"invalid preset name {quote(name)}: use 1-64 letters, digits, spaces, '_', '.', '-' "
            "(starting with a letter or digit)"
        )
    return name


def flatten_controls(data: Any, where: str = "preset") -> dict[str, Any]:
    """Validate a (partial) ``Controls.to_dict()``-shaped mapping into ``{dotted path: value}``.

    Values come back cleaned by the control's spec (clamped, stripped, snapped). Raises
    :class:`PresetError` naming ``where`` and the field.
    """
    out: dict[str, Any] = {}
    _flatten(data, "", where, out)
    return out


def _flatten(data: Any, prefix: str, where: str, out: dict[str, Any]) -> None:
    if not isinstance(data, Mapping):
        raise PresetError(f"{where}: {prefix.rstrip('.') or 'controls'} must be an object, "
                          f"got {type(data).__name__}")
    for key, value in data.items():
        path = f"{prefix}{key}"
        spec = CONTROL_SPECS.get(path) if isinstance(key, str) else None
        if spec is not None:
            try:
                clean = spec.coerce(path, value)
            except ControlError as exc:
                raise PresetError(f"{where}: field {quote(path)}: {shorten(str(exc), QUOTE_CHARS * 2)}") from None
            if isinstance(spec, (FloatSpec, IntSpec)) and isinstance(value, numbers.Real):
                if float(clean) != float(value) and clean != round(value):
                    log.warning("%s: %s = %r clamped to %r", where, path, value, clean)
            out[path] = clean
        elif path in _GROUPS:
            _flatten(value, path + ".", where, out)
        else:
            raise PresetError(f"{where}: unknown control {quote(path)}")


def check_midi_mapping(data: Any, where: str = "preset") -> dict[str, Any]:
    """A preset's ``midi`` entry, validated: a MIDI mapping (see :class:`~vjapp.control.midi_map.MidiMap`)
    with a non-empty ``controller`` name. Raises :class:`PresetError` naming ``where``."""
    from vjapp.control.midi_map import MidiMap, MidiMapError  # pure logic; imported late (no cycle)

    if not isinstance(data, Mapping):
        raise PresetError(f"{where}: 'midi' must be an object, got {type(data).__name__}")
    controller = data.get("controller")
    if not isinstance(controller, str) or not controller.strip():
        raise PresetError(f"{where}: 'midi' needs the controller's name ('controller')")
    try:
        mapping = MidiMap.from_dict(data)
    except MidiMapError as exc:
        raise PresetError(f"{where}: 'midi': {shorten(str(exc), QUOTE_CHARS * 2)}") from None
    return dict(mapping.to_dict(), controller=controller)


def _nest(values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"mix.fine.seed": 3}`` -> ``{"mix": {"fine": {"seed": 3}}}`` (tuples become lists)."""
    out: dict[str, Any] = {}
    for path, value in values.items():
        node = out
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = list(value) if isinstance(value, tuple) else value
    return out


@dataclass(frozen=True)
class Preset:
    """One preset. ``controls`` is validated on construction (see the module docstring).

    Attributes:
        name: the preset's name (its file name without ``.json``).
        description: one line for the GUI.
        controls: partial ``Controls.to_dict()``-shaped mapping (cleaned values).
        version: preset format version.
        path: the file it was loaded from / saved to (None if built in memory).
        user: True for a user preset, False for a shipped one.
        midi: a MIDI controller's mapping (see the module docstring), or None.
    """

    name: str
    description: str = ""
    controls: Mapping[str, Any] = field(default_factory=dict)
    version: int = PRESET_VERSION
    path: Path | None = field(default=None, compare=False)
    user: bool = field(default=False, compare=False)
    midi: Mapping[str, Any] | None = None
    _values: Mapping[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = str(self.path) if self.path is not None else f"preset {quote(self.name)}"
        check_name(self.name)
        if not isinstance(self.description, str):
            raise PresetError(f"{where}: description must be a string")
        if (isinstance(self.version, bool) or not isinstance(self.version, int)
                or not 1 <= self.version <= PRESET_VERSION):
            raise PresetError(
                f"{where}: preset version {quote(self.version)} not supported "
                f"(this vjapp reads version {PRESET_VERSION}; a newer vjapp may have written it)"
            )
        values = flatten_controls(self.controls, where)
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "controls", _nest(values))
        if self.midi is not None:
            object.__setattr__(self, "midi", check_midi_mapping(self.midi, where))

    @property
    def values(self) -> dict[str, Any]:
        """``{dotted control path: value}`` of every field this preset sets."""
        return dict(self._values)

    def apply(self, controls: Controls) -> Controls:
        """``controls`` with every field this preset names set; the others unchanged."""
        new = controls
        try:
            for path, value in self._values.items():
                new = set_path(new, path, value)
        except ControlError as exc:  # cannot happen for a validated preset; never half-apply
            raise PresetError(f"preset {quote(self.name)}: {exc}") from None
        return new

    def to_dict(self) -> dict[str, Any]:
        """The JSON document of this preset (``midi`` only when it carries a mapping)."""
        out: dict[str, Any] = {
            "format": PRESET_FORMAT,
            "version": self.version,
            "name": self.name,
            "description": self.description,
            "controls": _nest(self._values),
        }
        if self.midi is not None:
            out["midi"] = dict(self.midi)
        return out

    @classmethod
    def from_dict(
        cls, data: Any, name: str, *, path: Path | None = None, user: bool = False
    ) -> "Preset":
        """A preset from its parsed JSON document; ``name`` wins over the document's ``name``."""
        where = str(path) if path is not None else f"preset {quote(name)}"
        if not isinstance(data, Mapping):
            raise PresetError(f"{where}: a preset must be a JSON object, got {type(data).__name__}")
        unknown = sorted(str(k) for k in set(data) - _TOP_KEYS)
        if unknown:
            raise PresetError(f"{where}: unknown key(s) {unknown}; expected {sorted(_TOP_KEYS)}")
        if data.get("format", PRESET_FORMAT) != PRESET_FORMAT:
            raise PresetError(f"{where}: format {quote(data.get('format'))} is not {PRESET_FORMAT!r}")
        if "controls" not in data:
            raise PresetError(f"{where}: missing 'controls'")
        return cls(
            name=name,
            description=data.get("description", ""),
            controls=data["controls"],
            version=data.get("version", PRESET_VERSION),
            path=path,
            user=user,
            midi=data.get("midi"),
        )

    @classmethod
    def load(cls, path: str | Path, *, user: bool = False) -> "Preset":
        """Read a preset file; its name is the file name without ``.json``."""
        path = Path(path)
        try:
            size = path.stat().st_size
            if size > MAX_PRESET_BYTES:
                raise PresetError(f"{path}: {size} bytes is too large for a preset")
            text = path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise PresetError(f"{path}: cannot read: {exc.strerror or exc}") from None
        except UnicodeDecodeError as exc:
            raise PresetError(f"{path}: not UTF-8 text: {exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PresetError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: "
                              f"{exc.msg}") from None
        except RecursionError:
            raise PresetError(f"{path}: JSON nested too deeply") from None
        return cls.from_dict(data, path.stem, path=path, user=user)


class PresetLibrary:
    """The shipped presets, then the user's, by name or by index (thread-safe).

    Args:
        shipped_dir: read-only presets that ship (default: ``presets/`` of the repository).
        user_dir: the performer's presets (default :func:`default_user_dir`); created on save.
    """

    def __init__(
        self, shipped_dir: str | Path | None = None, user_dir: str | Path | None = None
    ) -> None:
        self.shipped_dir = Path(shipped_dir) if shipped_dir is not None else SHIPPED_DIR
        self.user_dir = Path(user_dir) if user_dir is not None else default_user_dir()
        self._lock = threading.RLock()
        self._presets: dict[str, Preset] = {}
        self._errors: list[tuple[Path, str]] = []
        self.reload()

    # -- loading -----------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read both folders. Files that fail go to :attr:`errors`; the others still load."""
        presets: dict[str, Preset] = {}
        errors: list[tuple[Path, str]] = []
        for folder, user in ((self.shipped_dir, False), (self.user_dir, True)):
            if not folder.is_dir():
                continue
            for path in sorted(folder.glob("*.json")):
                try:
                    check_name(path.stem)
                    preset = Preset.load(path, user=user)
                except PresetError as exc:
                    errors.append((path, str(exc)))
                    log.warning("skipping preset: %s", exc)
                    continue
                presets[preset.name] = preset  # a user preset replaces a shipped one in place
        with self._lock:
            self._presets = presets
            self._errors = errors

    @property
    def errors(self) -> list[tuple[Path, str]]:
        """``(file, message)`` for every preset file that failed to load at the last reload."""
        with self._lock:
            return list(self._errors)

    # -- lookup ------------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Shipped names (sorted), then user-only names (sorted); the order indices refer to."""
        with self._lock:
            return list(self._presets)

    def __len__(self) -> int:
        with self._lock:
            return len(self._presets)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._presets

    def get(self, name_or_index: str | int) -> Preset:
        """A preset by name (exact, else case-insensitive) or by index into :meth:`names`."""
        with self._lock:
            if isinstance(name_or_index, str):
                preset = self._presets.get(name_or_index)
                if preset is None:
                    key = name_or_index.casefold()
                    folded = [p for n, p in self._presets.items() if n.casefold() == key]
                    preset = folded[0] if len(folded) == 1 else None
                if preset is None:
                    raise PresetError(
                        f"no preset named {quote(name_or_index)}; have {list(self._presets)}"
                    )
                return preset
            if isinstance(name_or_index, numbers.Integral) and not isinstance(name_or_index, bool):
                i = int(name_or_index)
                names = list(self._presets)
                if not 0 <= i < len(names):
                    raise PresetError(f"preset index {i} out of range ({len(names)} presets)")
                return self._presets[names[i]]
            raise PresetError(f"a preset is chosen by name or index, got {quote(name_or_index)}")

    def index(self, name: str) -> int:
        """The index of a preset name in :meth:`names`."""
        names = self.names()
        try:
            return names.index(self.get(name).name)
        except ValueError:  # removed between the two calls
            raise PresetError(f"no preset named {quote(name)}") from None

    def apply(self, name_or_index: str | int, controls: Controls) -> Controls:
        """``controls`` with the preset applied (a new value; put it into the mailbox)."""
        return self.get(name_or_index).apply(controls)

    # -- user presets ------------------------------------------------------------------------

    def save(self, name: str, controls: Controls, description: str = "",
             midi: Mapping[str, Any] | None = None) -> Path:
        """Save the full ``controls`` as user preset ``name`` (atomic write); returns its path.

        ``midi``: a controller's mapping to carry (``MidiMap.to_dict()`` plus ``controller``).
        A shipped preset of the same name is overridden (it returns if the user one is deleted).
        """
        check_name(name)
        if not isinstance(controls, Controls):
            raise PresetError(f"save needs a Controls, got {type(controls).__name__}")
        preset = Preset(name=name, description=description, controls=controls.to_dict(), user=True, midi=midi)
        path = self.user_dir / f"{name}.json"
        text = json.dumps(preset.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        try:
            self.user_dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.user_dir)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            reason = exc.strerror or exc
            raise PresetError(f"cannot save preset {quote(name)} to {path}: {reason}") from None
        self.reload()
        return path

    def delete(self, name: str) -> None:
        """Delete user preset ``name`` (shipped presets cannot be deleted)."""
        with self._lock:
            preset = self._presets.get(name)
        if preset is None:
            raise PresetError(f"no preset named {quote(name)}")
        if not preset.user or preset.path is None:
            raise PresetError(f"{quote(name)} is a shipped preset; only user presets can be deleted")
        try:
            preset.path.unlink()
        except OSError as exc:
            raise PresetError(f"cannot delete {preset.path}: {exc.strerror or exc}") from None
        self.reload()


class PresetPlayer:
    """Loads presets into the controls mailbox and steps through them; thread-safe.

    Args:
        library: where presets come from.
        controls: the controls mailbox.
        on_applied: ``fn(preset, old, new)`` after a preset was applied (on the caller's thread:
            the OSC thread for OSC actions), e.g. to refresh the GUI and send OSC feedback with
            ``OscServer.notify_ui_diff(old, new)``. Must be quick and thread-safe.
    """

    def __init__(
        self,
        library: PresetLibrary,
        controls: Mailbox[Controls],
        on_applied: Callable[[Preset, Controls, Controls], None] | None = None,
    ) -> None:
        self.library = library
        self._controls = controls
        self._on_applied = on_applied
        self._lock = threading.Lock()
        self._current: str | None = None

    @property
    def current(self) -> str | None:
        """Name of the preset loaded last (None before the first)."""
        return self._current

    def load(self, name_or_index: str | int) -> Preset:
        """Apply a preset to the mailbox atomically; raises PresetError (state unchanged)."""
        preset = self.library.get(name_or_index)
        seen: list[Controls] = []

        def change(c: Controls) -> Controls:
            new = preset.apply(c)
            seen[:] = [c, new]
            return new

        with self._lock:
            self._controls.update(change)
            self._current = preset.name
        if self._on_applied is not None:
            self._on_applied(preset, seen[0], seen[1])
        return preset

    def step(self, delta: int) -> Preset:
        """Load the preset ``delta`` places after the current one (wrapping around)."""
        names = self.library.names()
        if not names:
            raise PresetError("no presets to step through")
        current = self._current
        if current in names:
            i = (names.index(current) + delta) % len(names)
        else:
            i = 0 if delta > 0 else len(names) - 1
        return self.load(i)

    def next(self) -> Preset:
        return self.step(1)

    def prev(self) -> Preset:
        return self.step(-1)

    def osc_actions(self) -> dict[str, Callable[[Any], None]]:
        """Callbacks for the OSC actions ``preset``, ``preset/next`` and ``preset/prev``."""
        return {
            "preset": lambda arg: self.load(arg),
            "preset/next": lambda _: self.next(),
            "preset/prev": lambda _: self.prev(),
        }
