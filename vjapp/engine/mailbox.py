"""Newest-wins, versioned hand-over between threads.

Two shapes of hand-over occur in the live app (DESIGN.md section 2):

* :class:`Mailbox` holds *state* that several writers edit and one reader polls: the performer's
  :class:`~vjapp.engine.controls.Controls`, written by the GUI, the OSC server and preset loading,
  read by the engine thread once per tick. Every change bumps a version; the reader only acts when
  the version moved. :meth:`Mailbox.update` is an atomic read-modify-write, so the GUI changing
  ``gain`` and OSC changing ``seed`` at the same moment never lose each other's edit.
* :class:`LatestSlot` carries *results* from the engine to a consumer (frames to the output window,
  stats to the GUI). It holds one item; publishing never blocks and overwrites an item nobody took
  (counted as dropped), so a slow consumer sees the newest frame and never a backlog. Consumers
  remember the stamp of what they last took and ask only for newer items, like a viewer that
  drops stale renders by their stamp.

Values put in either should be immutable (frozen dataclasses, tuples, or arrays that the producer
never touches again): only the reference crosses threads, nothing is copied.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Generic, TypeVar

T = TypeVar("T")

__all__ = ["Mailbox", "LatestSlot"]


class Mailbox(Generic[T]):
    """A versioned, thread-safe cell: newest value wins.

    Version 0 is the initial value; each :meth:`put` or :meth:`update` returns the new version.
    """

    def __init__(self, initial: T) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._value: T = initial
        self._version = 0

    @property
    def version(self) -> int:
        """The current version (reading an int is atomic; no lock needed)."""
        return self._version

    def put(self, value: T) -> int:
        """Replace the value; returns its version."""
        with self._cond:
            self._value = value
            self._version += 1
            self._cond.notify_all()
            return self._version

    def get(self) -> tuple[int, T]:
        """The current ``(version, value)`` pair, read consistently."""
        with self._cond:
            return self._version, self._value

    def get_if_newer(self, version: int) -> tuple[int, T] | None:
        """``(version, value)`` if the mailbox moved past ``version``, else None (a cheap poll)."""
        if self._version <= version:
            return None
        return self.get()

    def update(self, fn: Callable[[T], T]) -> int:
        """Atomically replace the value by ``fn(value)``; returns the new version.

        ``fn`` runs under the lock, so it must be quick and must not touch this mailbox. If it
        raises, the value and version stay as they were and the exception propagates to the caller
        (e.g. a :class:`~vjapp.engine.controls.ControlError` for a bad OSC value).
        """
        with self._cond:
            new = fn(self._value)
            self._value = new
            self._version += 1
            self._cond.notify_all()
            return self._version

    def wait_newer(self, version: int, timeout: float | None = None) -> bool:
        """Block until the version exceeds ``version``; False if ``timeout`` s passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._version > version, timeout)


class LatestSlot(Generic[T]):
    """A single-item, never-blocking result slot with stamps and a drop counter.

    ``publish`` overwrites; an item overwritten before any consumer took it counts as dropped.
    Stamps start at 1 and increase by one per publish; a consumer starts from stamp 0.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._item: T | None = None
        self._stamp = 0
        self._taken = True  # nothing to drop yet
        self._published_at = 0.0
        self._dropped = 0

    @property
    def stamp(self) -> int:
        """Stamp of the newest published item (0 before the first)."""
        return self._stamp

    @property
    def dropped(self) -> int:
        """Items overwritten before any consumer took them."""
        return self._dropped

    def publish(self, item: T) -> int:
        """Store ``item`` as the newest; returns its stamp. Never waits on a consumer."""
        with self._cond:
            if not self._taken:
                self._dropped += 1
            self._item = item
            self._stamp += 1
            self._taken = False
            self._published_at = time.perf_counter()
            self._cond.notify_all()
            return self._stamp

    def take_newer(self, stamp: int) -> tuple[int, T] | None:
        """``(stamp, item)`` if an item newer than ``stamp`` is there, else None."""
        if self._stamp <= stamp:  # lock-free fast path: nothing new
            return None
        with self._cond:
            if self._stamp <= stamp or self._item is None:
                return None
            self._taken = True
            return self._stamp, self._item

    def wait_newer(self, stamp: int, timeout: float | None = None) -> tuple[int, T] | None:
        """Block until an item newer than ``stamp`` arrives and take it; None on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._stamp > stamp, timeout):
                return None
            self._taken = True
            assert self._item is not None
            return self._stamp, self._item

    def age_s(self) -> float:
        """Seconds since the newest item was published (inf before the first)."""
        if self._stamp == 0:
            return float("inf")
        return time.perf_counter() - self._published_at
