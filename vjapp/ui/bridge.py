"""Engine -> Qt: frames, what the model heard, stats and messages, as signals on the GUI thread.

Design choice: the GUI *pulls*. A GUI-side timer asks the engine's newest-wins slots
(``engine.frames``, ``engine.analysis``) for anything newer than the stamp it last took, and
emits a signal only when there is something new. The alternative, emitting a queued Qt signal
from the engine thread per frame, queues one event per frame in the GUI's event loop: if the GUI
stalls (a dialog, a slow paint), those events pile up and are then painted in a burst of stale
frames. Pulling keeps exactly one frame in flight (the slot's), costs the engine nothing (it only
publishes), shows the newest frame after a stall, and lets the slot count frames the display
never took. Polling at 8 ms adds at most 8 ms of display latency, below one 60 Hz frame.

Messages (engine errors, source errors, notes from the app) may come from any thread; they go
into a bounded deque (``report``) that the same timer drains, so a storm of errors cannot flood
the event loop either. Each message is cut to :data:`~vjapp.messages.MESSAGE_CHARS` and repeats
of one kind (:func:`~vjapp.messages.message_key`) pass at most once per ``repeat_interval_s``;
the ones held back come as one "N more messages like this" line when the interval has passed. ``install_exception_hooks`` makes sure no exception in a Qt slot or a
Python thread dies silently: it is logged and shown.

Qt and numpy only: the engine is duck-typed (``frames``, ``analysis``, ``stats.snapshot()``).
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
import traceback
from types import TracebackType
from typing import Any, Callable, Protocol

from PyQt6.QtCore import QObject, Qt, QTimer, pyqtSignal, pyqtSlot

from vjapp.messages import RepeatLimiter, message_key, shorten

log = logging.getLogger(__name__)

__all__ = ["EngineBridge", "EngineLike", "GuiInvoker", "LogToBridge", "install_exception_hooks"]

INFO, WARNING, ERROR = "info", "warning", "error"
_LOG_LEVELS = {INFO: logging.INFO, WARNING: logging.WARNING, ERROR: logging.ERROR}


class _Slot(Protocol):
    def take_newer(self, stamp: int) -> tuple[int, Any] | None: ...


class _Stats(Protocol):
    def snapshot(self) -> dict[str, Any]: ...


class EngineLike(Protocol):
    """What the bridge needs of :class:`vjapp.engine.engine.Engine`."""

    frames: _Slot
    analysis: _Slot
    stats: _Stats


class EngineBridge(QObject):
    """Polls an engine's slots on the GUI thread and re-emits what is new.

    Signals: ``frame(obj)`` (an engine Frame: ``image`` [H, W, 3] uint8, ``index``, ``t``,
    ``latency_ms``), ``analysis(obj)``, ``stats(dict)`` (``stats_hz`` times a second),
    ``message(level, text)`` with level ``"info" | "warning" | "error"``.
    """

    frame = pyqtSignal(object)
    analysis = pyqtSignal(object)
    rhythm = pyqtSignal(object)  # the engine's RhythmSnapshot (band strengths, onsets, tempo, phase)
    stats = pyqtSignal(dict)
    message = pyqtSignal(str, str)

    def __init__(self, poll_ms: int = 8, stats_hz: float = 4.0, max_messages: int = 200,
                 repeat_interval_s: float = 2.0, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.repeats = RepeatLimiter(repeat_interval_s)
        self._engine: EngineLike | None = None
        self._frame_stamp = 0
        self._analysis_stamp = 0
        self._rhythm_stamp = 0
        self._messages: collections.deque[tuple[str, str]] = collections.deque(maxlen=max_messages)
        self._lost_messages = 0
        self._lock = threading.Lock()
        self._stats_period = 1.0 / stats_hz
        self._next_stats = 0.0
        self.frames_taken = 0
        self._timer = QTimer(self)
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(int(poll_ms))
        self._timer.timeout.connect(self.poll)

    @property
    def engine(self) -> EngineLike | None:
        return self._engine

    def set_engine(self, engine: EngineLike | None) -> None:
        """Follow another engine (after a bundle change); its stamps start again from 0."""
        self._engine = engine
        self._frame_stamp = 0
        self._analysis_stamp = 0
        self._rhythm_stamp = 0

    def start(self) -> None:
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()

    # ------------------------------------------------------------------ from any thread
    def report(self, text: str, level: str = ERROR, logger: logging.Logger | None = None) -> bool:
        """Queue a message for the GUI (thread-safe, never blocks for long, bounded).

        The text is cut to a readable length; a repeat of a message of the same kind within
        ``repeat_interval_s`` is held back and summarised later. With ``logger``, a message that
        passes (and the summary of those held back) is also logged there, so the log and the panel
        say the same once. Returns whether the message was shown now.
        """
        text = shorten(str(text))
        if not self.repeats.admit(message_key(level, text), level, text, logger):
            return False
        if logger is not None:
            logger.log(_LOG_LEVELS.get(level, logging.INFO), "%s", text)
        self._queue(level, text)
        return True

    def _queue(self, level: str, text: str) -> None:
        with self._lock:
            if len(self._messages) == self._messages.maxlen:
                self._lost_messages += 1
            self._messages.append((level, text))

    def flush_repeats(self) -> None:
        """Queue (and log) one summary line per kind of message held back whose interval passed."""
        for summary in self.repeats.due():
            line = summary.line()
            if summary.owner is not None:
                summary.owner.log(_LOG_LEVELS.get(summary.level, logging.INFO), "%s", line)
            self._queue(summary.level, line)

    def report_error(self, text: str) -> None:
        """``on_error`` callback for the engine (engine thread)."""
        self.report(text, ERROR)

    # ------------------------------------------------------------------ GUI thread
    @pyqtSlot()
    def poll(self) -> None:
        """Emit what is new: messages, the newest frame, the newest analysis, stats when due."""
        self.flush_repeats()
        with self._lock:
            pending = list(self._messages)
            self._messages.clear()
            lost, self._lost_messages = self._lost_messages, 0
        if lost:
            pending.append((WARNING, f"{lost} more messages were dropped (too many at once)"))
        for level, text in pending:
            self.message.emit(level, text)
        engine = self._engine
        if engine is None:
            return
        got = engine.frames.take_newer(self._frame_stamp)
        if got is not None:
            self._frame_stamp, item = got
            self.frames_taken += 1
            self.frame.emit(item)
        got = engine.analysis.take_newer(self._analysis_stamp)
        if got is not None:
            self._analysis_stamp, item = got
            self.analysis.emit(item)
        slot = getattr(engine, "rhythm", None)
        got = slot.take_newer(self._rhythm_stamp) if slot is not None else None
        if got is not None:
            self._rhythm_stamp, item = got
            self.rhythm.emit(item)
        now = time.monotonic()
        if now >= self._next_stats:
            self._next_stats = now + self._stats_period
            snap = engine.stats.snapshot()
            # published by this engine but overwritten before the GUI took one: never painted
            snap["frames_not_painted"] = int(getattr(engine.frames, "dropped", 0))
            self.stats.emit(snap)


class GuiInvoker(QObject):
    """Run a callable on the GUI thread from any thread (e.g. OSC actions): ``invoker.call(fn)``.

    The signal is connected with a queued connection, so ``fn`` always runs later, in the GUI
    thread's event loop; exceptions go to ``on_error`` instead of being lost.
    """

    _call = pyqtSignal(object)

    def __init__(self, on_error: Callable[[str], None] | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.on_error = on_error
        self._call.connect(self._run, Qt.ConnectionType.QueuedConnection)

    def call(self, fn: Callable[[], Any]) -> None:
        self._call.emit(fn)

    @pyqtSlot(object)
    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - shown to the user, never silent
            log.exception("action failed")
            if self.on_error is not None:
                self.on_error(f"{type(exc).__name__}: {exc}")


class LogToBridge(logging.Handler):
    """Library warnings and errors (``logging``) into the GUI's message panel.

    A performer sees what the log says (a device that fell back to the wall clock, a stalled
    stream) without a terminal. Loggers that already report to the panel themselves are
    skipped, so nothing shows twice. Thread-safe: ``EngineBridge.report`` only appends to a
    bounded deque.
    """

    def __init__(self, bridge: EngineBridge, skip: tuple[str, ...] = ()) -> None:
        super().__init__(logging.WARNING)
        self._bridge = bridge
        self._skip = tuple(skip)

    def emit(self, record: logging.LogRecord) -> None:
        if any(record.name == s or record.name.startswith(s + ".") for s in self._skip):
            return
        try:
            level = ERROR if record.levelno >= logging.ERROR else WARNING
            self._bridge.report(f"{record.name}: {record.getMessage()}", level)
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def install_exception_hooks(show: Callable[[str], None]) -> Callable[[], None]:
    """Route uncaught exceptions (Qt slots call ``sys.excepthook``; threads ``threading.excepthook``)
    to the log and to ``show(text)``; returns a function restoring the previous hooks.

    Without this, PyQt6 aborts the process on an exception in a slot; with it the show goes on
    and the performer sees what happened.
    """
    previous_sys, previous_thread = sys.excepthook, threading.excepthook

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(exc_type, KeyboardInterrupt):
            previous_sys(exc_type, exc, tb)
            return
        log.error("uncaught exception:\n%s", "".join(traceback.format_exception(exc_type, exc, tb)))
        try:
            show(f"internal error: {exc_type.__name__}: {exc}")
        except Exception:  # noqa: BLE001 - the hook itself must never raise
            pass

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        name = args.thread.name if args.thread is not None else "?"
        log.error("uncaught exception in thread %s:\n%s", name,
                  "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)))
        try:
            show(f"internal error in thread {name}: {args.exc_type.__name__}: {args.exc_value}")
        except Exception:  # noqa: BLE001
            pass

    sys.excepthook = hook
    threading.excepthook = thread_hook

    def restore() -> None:
        sys.excepthook = previous_sys
        threading.excepthook = previous_thread

    return restore
