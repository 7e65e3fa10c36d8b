"""MIDI in: list and open input ports (mido + python-rtmidi), a listener that never blocks the
engine, and a port that comes back after it vanished.

mido and python-rtmidi are the optional ``midi`` extra; they are imported on first use, and
their absence is one :class:`MidiUnavailable` saying ``pip install "vjapp[midi]"``.

Which MIDI system (``api``): ``auto`` takes mido's default (``MIDO_BACKEND`` if set; ALSA on
Linux, CoreMIDI on macOS, Windows MultiMedia on Windows), except on a Linux machine with no ALSA
sequencer (``/dev/snd/seq`` absent: a container, a server), where it takes JACK. ``alsa``,
``jack``, ``coremidi`` and ``winmm`` choose one.

Threads (DESIGN.md section 2): python-rtmidi calls the port's callback on its own thread (JACK's
process thread under JACK); the callback only stamps the message with ``time.perf_counter`` (the
engine's clock) and puts it in a queue. :class:`MidiInput`'s listener thread takes from the queue:
clock messages go to the :class:`~vjapp.control.midi_clock.MidiClock`, the rest through the
:class:`~vjapp.control.midi_map.MidiMap` into the controls mailbox and the app's actions (which
post to the GUI thread). About once a second it also checks the port list: a port that vanished
is reported once and closed, and reopened when a port of that name (or of that controller) is
back. Nothing raised in the listener ends it: each failure is logged and reported through
``on_message``.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from typing import Any, Callable, Mapping

from vjapp.control.midi_clock import MidiClock
from vjapp.control.midi_map import MidiMap, MidiMapError, MidiMapStore, controller_name, perform
from vjapp.engine.controls import ControlError, Controls
from vjapp.engine.mailbox import Mailbox

log = logging.getLogger(__name__)

__all__ = [
    "MidiError",
    "MidiUnavailable",
    "MIDI_APIS",
    "INSTALL_HINT",
    "list_midi_inputs",
    "resolve_port",
    "MidiInput",
]

INSTALL_HINT = 'MIDI needs mido and python-rtmidi: pip install "vjapp[midi]"'
# --midi-api choices -> python-rtmidi API names (as mido spells them after "rtmidi/")
MIDI_APIS: Mapping[str, str | None] = {
    "auto": None,
    "alsa": "LINUX_ALSA",
    "jack": "UNIX_JACK",
    "coremidi": "MACOSX_CORE",
    "winmm": "WINDOWS_MM",
}
CLOCK_TYPES = frozenset({"clock", "start", "stop", "continue"})

Report = Callable[[str, str], None]  # (text, level "info" | "warning" | "error")


class MidiError(RuntimeError):
    """MIDI cannot be used as asked (no such port, no MIDI system); the message says why."""


class MidiUnavailable(MidiError):
    """mido or python-rtmidi is not installed."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(INSTALL_HINT + (f" ({detail})" if detail else ""))


def _rtmidi_api(api: str) -> str | None:
    if api not in MIDI_APIS:
        raise MidiError(f"unknown MIDI system {api!r} (choose from {', '.join(MIDI_APIS)})")
    chosen = MIDI_APIS[api]
    if chosen is None and not os.environ.get("MIDO_BACKEND") and sys.platform.startswith("linux") \
            and not os.path.exists("/dev/snd/seq"):
        chosen = "UNIX_JACK"  # no ALSA sequencer here: JACK is the MIDI system that can work
    return chosen


class _Backend:
    """mido's rtmidi backend on one MIDI system, and one persistent client for listing ports
    (polling every second with a new client each time would churn JACK or ALSA clients)."""

    def __init__(self, api: str = "auto") -> None:
        try:
            import mido
            import rtmidi
        except ImportError as exc:
            raise MidiUnavailable(str(exc)) from None
        self._rtmidi = rtmidi
        self.rt_api = _rtmidi_api(api)
        self._jack_by_default = api == "auto" and self.rt_api == "UNIX_JACK"
        name = os.environ.get("MIDO_BACKEND") if self.rt_api is None else None
        try:
            self.mido = mido.Backend(name or ("mido.backends.rtmidi" + (f"/{self.rt_api}" if self.rt_api else "")),
                                     load=True)
        except ImportError as exc:
            raise MidiUnavailable(str(exc)) from None
        self._lister: Any = None

    @property
    def description(self) -> str:
        return self.rt_api or "default"

    def input_names(self) -> list[str]:
        """The MIDI inputs there are now; :class:`MidiError` when the MIDI system cannot be reached."""
        try:
            if self._lister is None:
                api_id = getattr(self._rtmidi, f"API_{self.rt_api}") if self.rt_api else self._rtmidi.API_UNSPECIFIED
                self._lister = self._rtmidi.MidiIn(rtapi=api_id, name="vjapp ports")
            return list(self._lister.get_ports())
        except Exception as exc:  # noqa: BLE001 - rtmidi.SystemError, RuntimeError, ...: the system is down
            self.close()
            hint = ("; there is no ALSA sequencer here (/dev/snd/seq), so JACK was tried: start a JACK server"
                    if self._jack_by_default else "")
            raise MidiError(f"no MIDI system ({self.description}): {exc}{hint}") from None

    def open_input(self, name: str, callback: Callable[[Any], None]) -> Any:
        try:
            return self.mido.open_input(name, callback=callback)
        except Exception as exc:  # noqa: BLE001 - OSError for a vanished port, rtmidi errors
            raise MidiError(f"cannot open MIDI input {name!r}: {exc}") from None

    def close(self) -> None:
        lister, self._lister = self._lister, None
        if lister is not None:
            try:
                lister.delete()
            except Exception:  # noqa: BLE001
                log.debug("closing the MIDI port lister failed", exc_info=True)


def list_midi_inputs(api: str = "auto") -> list[str]:
    """Names of the MIDI input ports; raises :class:`MidiUnavailable` or :class:`MidiError`."""
    backend = _Backend(api)
    try:
        return backend.input_names()
    finally:
        backend.close()


def resolve_port(spec: str, names: list[str]) -> str:
    """The port ``spec`` names: an exact name, an index into ``names``, or a part of one name
    (case-insensitive). :class:`MidiError` when none or several match."""
    if spec in names:
        return spec
    if spec.strip().isdigit():
        index = int(spec)
        if index < len(names):
            return names[index]
        raise MidiError(f"no MIDI input {index} ({_listing(names)})")
    found = [n for n in names if spec.lower() in n.lower()]
    if len(found) == 1:
        return found[0]
    if not found:
        raise MidiError(f"no MIDI input {spec!r} ({_listing(names)})")
    raise MidiError(f"{spec!r} matches several MIDI inputs ({', '.join(found)}): give more of the name or an index")


def _listing(names: list[str]) -> str:
    if not names:
        return "there are no MIDI inputs"
    return "inputs: " + ", ".join(f"{i}: {n}" for i, n in enumerate(names)) + "; see `vjapp devices --midi`"


class MidiInput:
    """One MIDI input port, its mapping and MIDI learn, MIDI clock, and a reconnecting listener.

    ``controls`` and ``actions`` are where effects go (see :func:`~vjapp.control.midi_map.perform`);
    actions are called on the listener thread and must be quick (post to the GUI thread).
    ``store`` keeps the mapping per controller (loaded on open, saved on every learn).
    ``on_message(text, level)`` gets every report; ``on_clock()`` is called (listener thread)
    when MIDI clock starts arriving, again after it went quiet.
    """

    def __init__(self, port: str, controls: Mailbox[Controls], actions: Mapping[str, Callable[[Any], None]],
                 *, api: str = "auto", store: MidiMapStore | None = None, clock: MidiClock | None = None,
                 on_message: Report | None = None, on_clock: Callable[[], None] | None = None,
                 poll_s: float = 1.0) -> None:
        self.spec = port
        self.controls = controls
        self.actions = actions
        self.api = api
        self.store = store
        self.clock = clock if clock is not None else MidiClock()
        self.on_message = on_message
        self.on_clock = on_clock
        self.poll_s = poll_s
        self.mapping = MidiMap()
        self.port_name: str | None = None  # the port opened (kept while it is gone, to find it again)
        self.connected = False
        self.counts = {"received": 0, "applied": 0, "actions": 0, "clock": 0, "rejected": 0, "errors": 0,
                       "reconnects": 0}
        self._backend: _Backend | None = None
        self._port: Any = None
        self._queue: queue.SimpleQueue[tuple[float, Any]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_clock = -1e9

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Find and open the port, load its mapping, start the listener.

        Raises :class:`MidiUnavailable` without mido/python-rtmidi and :class:`MidiError` for a
        port that is not there or a MIDI system that cannot be reached (nothing is left running).
        """
        if self._thread is not None:
            return
        backend = _Backend(self.api)
        try:
            name = resolve_port(self.spec, backend.input_names())
            self._open(backend, name)
        except MidiError:
            backend.close()
            raise
        self._backend = backend
        count = len(self.mapping.bindings)
        self._report(f"MIDI input {name}" + (f" ({count} saved mapping{'s' if count != 1 else ''})" if count else ""),
                     "info")
        self._thread = threading.Thread(target=self._run, name="vjapp-midi", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the listener and close the port (idempotent)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self._close_port()
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def _open(self, backend: _Backend, name: str) -> None:
        self._port = backend.open_input(name, self._on_rtmidi_message)
        same_controller = self.port_name is not None and controller_name(self.port_name) == controller_name(name)
        self.port_name = name
        self.connected = True
        if self.store is not None and not same_controller:  # reopened: the mapping in hand is the newest
            try:
                self.mapping = self.store.load(name)
            except MidiMapError as exc:
                self.mapping = MidiMap()
                self._report(f"{exc}; starting with an empty MIDI mapping", "warning")

    def _close_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except Exception:  # noqa: BLE001 - a port whose system went away may fail to close
                log.debug("closing MIDI port failed", exc_info=True)

    def _on_rtmidi_message(self, msg: Any) -> None:
        """python-rtmidi's thread: stamp and queue, nothing else."""
        self._queue.put((time.perf_counter(), msg))

    # ------------------------------------------------------------------ learn
    def start_learn(self, target: str) -> None:
        """The next knob moved or pad hit binds to ``target`` (a control path or an action)."""
        self.mapping.start_learn(target)

    def cancel_learn(self) -> None:
        self.mapping.cancel_learn()

    def forget(self, target: str) -> bool:
        """Unbind ``target`` and save the mapping; whether it was bound."""
        removed = self.mapping.unbind(target)
        if removed:
            self._save()
        return removed

    def set_mapping(self, mapping: MidiMap) -> None:
        """Use ``mapping`` from now on (a preset's) and save it as this controller's."""
        self.mapping = mapping
        self._save()

    @property
    def running(self) -> bool:
        """The listener runs (between :meth:`start` and :meth:`stop`)."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def controller(self) -> str | None:
        return controller_name(self.port_name) if self.port_name else None

    # ------------------------------------------------------------------ listener
    def _run(self) -> None:
        next_poll = time.monotonic() + self.poll_s
        while not self._stop.is_set():
            try:
                stamp, msg = self._queue.get(timeout=max(0.0, next_poll - time.monotonic()))
            except queue.Empty:
                pass
            else:
                self._guarded(self._dispatch, stamp, msg)
            if time.monotonic() >= next_poll:
                self._guarded(self._watch)
                next_poll = time.monotonic() + self.poll_s

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - the listener lives on; the failure is reported
            self.counts["errors"] += 1
            log.debug("MIDI listener error", exc_info=True)
            self._report(f"MIDI: {type(exc).__name__}: {exc}", "error")

    def _dispatch(self, stamp: float, msg: Any) -> None:
        self.counts["received"] += 1
        kind = getattr(msg, "type", "")
        if kind in CLOCK_TYPES:
            self.counts["clock"] += 1
            self.clock.handle(kind, stamp)
            if kind == "clock":
                if stamp - self._last_clock > self.clock.timeout_s and self.on_clock is not None:
                    self.on_clock()
                self._last_clock = stamp
            return
        outcome = self.mapping.handle(msg)
        if outcome.learned is not None:
            self._report(f"MIDI learn: {outcome.learned.describe()}", "info")
        if outcome.changed:
            self._save()
        for effect in outcome.effects:
            try:
                perform(effect, self.controls, self.actions)
            except (ControlError, MidiMapError) as exc:
                self.counts["rejected"] += 1
                self._report(f"MIDI: {exc}", "warning")
                continue
            self.counts["actions" if effect.__class__.__name__ == "CallAction" else "applied"] += 1

    def _save(self) -> None:
        if self.store is None or self.port_name is None:
            return
        try:
            self.store.save(self.port_name, self.mapping)
        except OSError as exc:
            self._report(f"could not save the MIDI mapping: {exc}", "warning")

    def _watch(self) -> None:
        """Once a second: is our port still there? Is it back?"""
        assert self._backend is not None
        try:
            names = self._backend.input_names()
        except MidiError as exc:
            names = []
            if self.connected:
                self._report(f"{exc}", "error")
        if self.connected and self.port_name not in names:
            self.connected = False
            self._close_port()
            self._report(f"MIDI input {self.port_name} disappeared; it is reopened when it is back "
                         "(the show goes on)", "warning")
            return
        if self.connected:
            return
        name = self._find_again(names)
        if name is None:
            return
        self._open(self._backend, name)
        self.counts["reconnects"] += 1
        self._report(f"MIDI input {name} is back", "info")

    def _find_again(self, names: list[str]) -> str | None:
        """The same port, else a port of the same controller (ALSA renumbers on replug)."""
        if self.port_name in names:
            return self.port_name
        if self.port_name is not None:
            same = [n for n in names if controller_name(n) == controller_name(self.port_name)]
            if len(same) == 1:
                return same[0]
        return None

    def _report(self, text: str, level: str) -> None:
        """To ``on_message`` (the app's reporter logs it too), else to the log."""
        if self.on_message is None:
            log.log(logging.INFO if level == "info" else logging.WARNING if level == "warning" else logging.ERROR,
                    text)
            return
        try:
            self.on_message(text, level)
        except Exception:  # noqa: BLE001 - a broken reporter must not end the listener
            log.exception("MIDI on_message failed")

    def summary(self) -> str:
        """One line for the status panel."""
        c = self.counts
        where = self.port_name if self.connected else f"{self.port_name} (gone; waiting for it)"
        bpm = self.clock.bpm
        return (f"{where} · received {c['received']} · applied {c['applied']} · actions {c['actions']}"
                + (f" · clock {bpm:.1f} BPM" if bpm is not None else "") + f" · rejected {c['rejected']}")
