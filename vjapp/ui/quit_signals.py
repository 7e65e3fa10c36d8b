"""SIGINT (Ctrl+C) and SIGTERM as a clean quit, delivered through the Qt event loop.

Python runs signal handlers only between bytecodes of the main thread. While Qt's loop waits in
C++ no Python runs, and Python's default SIGINT handler then raises ``KeyboardInterrupt`` inside
whichever slot runs next: a traceback, and the show goes on. Here the Python handler only notes
the signal; :func:`signal.set_wakeup_fd` makes the C-level handler also write a byte to a socket
that a :class:`~PyQt6.QtCore.QSocketNotifier` watches, so the loop wakes at once and calls
``on_signal(signum)`` on the GUI thread, between two events, where quitting is safe.

A second signal while the first is being handled (a recording being finished, say) ends the
process at once with ``128 + signum``, as the signal's default action would.
A signal ignored when the app starts (``nohup``, or SIGINT for a shell's background job) stays
ignored, as Python itself leaves SIGINT then.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from types import FrameType, TracebackType
from typing import Any, Callable

from PyQt6.QtCore import QSocketNotifier

log = logging.getLogger(__name__)

__all__ = ["QuitSignals", "QUIT_SIGNALS"]

QUIT_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)


class QuitSignals:
    """While installed, each of ``signals`` calls ``on_signal(signum)`` from the Qt loop (once).

    Use as a context manager around building the app and running its loop: signals that arrive
    before :meth:`attach` (while the app loads) are kept in :attr:`received` and delivered when the
    loop starts. Installing is a no-op outside the main thread (Python allows handlers only there).
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = QUIT_SIGNALS) -> None:
        self.signals = signals
        self.received: int | None = None
        self._on_signal: Callable[[int], None] | None = None
        self._delivered = False
        self._previous_handlers: dict[signal.Signals, Any] = {}
        self._previous_wakeup_fd: int | None = None
        self._reader: socket.socket | None = None
        self._writer: socket.socket | None = None
        self._notifier: QSocketNotifier | None = None

    # ------------------------------------------------------------------ install
    def install(self) -> bool:
        """Take over ``signals``; False (and nothing changed) outside the main thread."""
        if threading.current_thread() is not threading.main_thread():
            log.debug("not the main thread: signals keep their handlers")
            return False
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous_wakeup_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        for sig in self.signals:
            if signal.getsignal(sig) is signal.SIG_IGN:  # ignored by whoever started us (nohup, `cmd &`)
                continue
            self._previous_handlers[sig] = signal.signal(sig, self._handle)
        return True

    def attach(self, on_signal: Callable[[int], None]) -> None:
        """Call ``on_signal`` from the running Qt loop (needs a Q(Core)Application)."""
        self._on_signal = on_signal
        if self._reader is None:
            return
        self._notifier = QSocketNotifier(self._reader.fileno(), QSocketNotifier.Type.Read)
        self._notifier.activated.connect(self._deliver)

    def uninstall(self) -> None:
        """Give the signals back their previous handlers (idempotent)."""
        if self._notifier is not None:
            self._notifier.setEnabled(False)
            self._notifier.deleteLater()
            self._notifier = None
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()
        if self._previous_wakeup_fd is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            self._previous_wakeup_fd = None
        for sock in (self._reader, self._writer):
            if sock is not None:
                sock.close()
        self._reader = self._writer = None

    def __enter__(self) -> QuitSignals:
        self.install()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.uninstall()

    # ------------------------------------------------------------------ delivery
    def _handle(self, signum: int, frame: FrameType | None) -> None:
        """Python-level handler (main thread, between bytecodes): note the first signal only."""
        if self.received is None:
            self.received = signum
            return
        os.write(2, f"vjapp: {signal.Signals(signum).name} again: stopping at once\n".encode())
        os._exit(128 + signum)

    def _deliver(self) -> None:
        """Qt loop: drain the wakeup bytes, then hand the first signal on (once)."""
        assert self._reader is not None
        try:
            while self._reader.recv(512):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        if self.received is None or self._delivered or self._on_signal is None:
            return
        self._delivered = True
        self._on_signal(self.received)
