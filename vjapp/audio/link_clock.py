"""Ableton Link as a tempo source: the show's beat follows (and can lead) a Link session.

:class:`LinkClock` is a :class:`~vjapp.audio.rhythm.TempoSource`: ``beat_at(t)`` answers on the
engine's clock (``time.perf_counter()``). Link keeps its own clock (the platform's raw monotonic
clock, in microseconds); rather than converting clocks, each call reads Link's beat *now* between
two ``perf_counter()`` readings and extrapolates to ``t`` at the session tempo, so the answer is
exact to the microseconds those reads take, and never drifts.

Link's beats agree between peers modulo the *quantum*; here the quantum is the bar
(``beats_per_bar``, 4), so every peer sees the same beat phase and the same bar phase.

aalink (the binding used, GPL-3.0-or-later, Ableton Link compiled in) creates its ``Link`` inside a
running asyncio loop: the clock runs one small loop on its own thread; reading the beat and
setting the tempo are Link's thread-safe "app thread" calls and can come from any thread.

Attach it with ``engine.beat_clock.set_external(clock)`` and choose the ``external`` tempo source.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable

from vjapp.audio.rhythm import BeatState

log = logging.getLogger(__name__)

__all__ = ["LinkClock", "LinkError", "LINK_INSTALL"]

LINK_INSTALL = 'Ableton Link needs `pip install "vjapp[link]"` (aalink, GPL-3.0-or-later)'


class LinkError(RuntimeError):
    """Link cannot start here (aalink missing, or its session failed to open)."""


class LinkClock:
    """A peer in the local Ableton Link session, as a tempo source on the engine's clock."""

    name = "link"

    def __init__(self, bpm: float = 120.0, beats_per_bar: int = 4,
                 on_error: Callable[[str], None] | None = None) -> None:
        if not 20.0 <= bpm <= 999.0:  # Link's own tempo range
            raise ValueError(f"a Link tempo is 20..999 BPM, got {bpm}")
        if beats_per_bar < 1:
            raise ValueError(f"beats per bar must be >= 1, got {beats_per_bar}")
        self._bpm = float(bpm)
        self.beats_per_bar = int(beats_per_bar)
        self._on_error = on_error
        self._link: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: asyncio.Future[None] | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: str | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._link is not None

    def start(self, timeout: float = 5.0) -> None:
        """Join the Link session (raises :class:`LinkError` if aalink is missing or Link fails)."""
        if self.running:
            return
        try:
            import aalink  # type: ignore[import-not-found]  # noqa: F401
        except ImportError as exc:
            raise LinkError(f"{LINK_INSTALL} ({exc})") from None
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name="vjapp-link", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise LinkError(f"Ableton Link did not start within {timeout:.0f} s")
        if self._error is not None:
            raise LinkError(self._error)

    def stop(self, timeout: float = 5.0) -> None:
        """Leave the session and end the loop thread (idempotent)."""
        loop, done = self._loop, self._done
        if loop is not None and done is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))
            except RuntimeError:  # the loop closed meanwhile
                pass
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._session())
        except Exception as exc:  # noqa: BLE001 - say it once; the show goes on on its own tempo
            self._error = f"Ableton Link stopped: {type(exc).__name__}: {exc}"
            log.error("%s", self._error)
            if self._ready.is_set() and self._on_error is not None:
                self._on_error(self._error)
        finally:
            self._link = None
            self._ready.set()
            loop.close()

    async def _session(self) -> None:
        from aalink import Link  # type: ignore[import-not-found]

        link = Link(self._bpm)
        link.quantum = self.beats_per_bar
        link.enabled = True
        self._done = asyncio.get_running_loop().create_future()
        self._link = link
        self._ready.set()
        try:
            await self._done
        finally:
            link.enabled = False

    # ------------------------------------------------------------------ the session
    @property
    def peers(self) -> int:
        """Other Link peers in the session (0 alone)."""
        link = self._link
        return int(link.num_peers) if link is not None else 0

    @property
    def tempo(self) -> float | None:
        link = self._link
        return float(link.tempo) if link is not None else None

    def set_tempo(self, bpm: float) -> None:
        """Propose a tempo to the whole session (every peer follows)."""
        if not 20.0 <= bpm <= 999.0:
            raise ValueError(f"a Link tempo is 20..999 BPM, got {bpm}")
        self._bpm = float(bpm)
        link = self._link
        if link is not None:
            link.tempo = float(bpm)

    def beat_at(self, t: float) -> BeatState | None:
        """Where the session's beat is at engine-clock time ``t`` (None when not running)."""
        link = self._link
        if link is None:
            return None
        before = time.perf_counter()
        beat_now = float(link.beat)
        bpm = float(link.tempo)
        after = time.perf_counter()
        now = 0.5 * (before + after)
        return BeatState(bpm=bpm, beat=beat_now + (t - now) * bpm / 60.0, confidence=1.0, source=self.name,
                         beats_per_bar=self.beats_per_bar)
