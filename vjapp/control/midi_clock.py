"""MIDI clock in: a drum machine's or DAW's tempo and beat as a :class:`~vjapp.audio.rhythm.TempoSource`.

MIDI clock is 24 ``clock`` messages per quarter note, plus ``start`` (play from the top),
``stop`` and ``continue`` (play on from where it stopped). :class:`MidiClock` is fed each of
them with its arrival time on the engine's clock (``time.perf_counter``, stamped by the port's
callback) and answers :meth:`MidiClock.beat_at` as the tempo sources of
:mod:`vjapp.audio.rhythm` do, so ``BeatClock.set_external(midi_clock)`` makes it the show's tempo
when ``rhythm.tempo_source`` is ``external``.

Arrival times jitter (the sender's timer, USB frames, a JACK period of a few ms, the GIL), so
neither the tempo nor the phase comes from the last tick alone. The newest ``window`` ticks
(2 beats) are fitted by least squares with a line ``time = a + b * tick``: ``b`` is the tick
period (tempo = 60 / (24 b)), and the line, not the last tick, places the beat. The fit follows a
tempo change within the window; a gap in the ticks (a cable pulled, a paused sender) starts a
new fit.

Beat count: the first tick after ``start`` is beat 0 (MIDI's rule); ``continue`` goes on from the
tick count at ``stop``. Clock heard with no ``start`` ever (some boxes only send ticks) counts
from the first tick heard. :meth:`MidiClock.beat_at` is None while stopped, before
``min_ticks`` ticks, and when the ticks have not come for a while (``timeout_s``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque

import numpy as np

from vjapp.audio.rhythm import BeatState

log = logging.getLogger(__name__)

__all__ = ["MidiClock", "PPQN"]

PPQN = 24  # MIDI clock ticks per quarter note (a beat)


class MidiClock:
    """Tempo and beat from MIDI clock messages (thread-safe: fed by the MIDI listener, read by the engine)."""

    name = "midi"

    def __init__(self, window: int = 2 * PPQN, min_ticks: int = PPQN // 2, gap_s: float = 0.5,
                 timeout_s: float = 0.75, min_bpm: float = 20.0, max_bpm: float = 400.0) -> None:
        if window < 3 or min_ticks < 3:
            raise ValueError("the fit needs a window and min_ticks of at least 3 ticks")
        self.window = window
        self.min_ticks = min_ticks
        self.gap_s = gap_s
        self.timeout_s = timeout_s
        self.min_bpm, self.max_bpm = min_bpm, max_bpm
        self._lock = threading.Lock()
        self._times: deque[float] = deque(maxlen=window)  # arrival times of the newest ticks
        self._ticks = 0  # ticks received since the transport started (or since the first tick)
        self._running: bool | None = None  # None: no start/stop/continue heard yet
        self._fit: tuple[float, float, float] | None = None  # (tick index at the last tick, its fitted time, period)
        self._confidence = 0.0
        self.ticks_received = 0  # all clock messages, for the status line

    # ------------------------------------------------------------------ input
    def handle(self, kind: str, t: float) -> None:
        """One message: ``clock``, ``start``, ``stop`` or ``continue`` (others are ignored), arrived at ``t``."""
        if kind == "clock":
            self.tick(t)
        elif kind == "start":
            self.start(t)
        elif kind == "stop":
            self.stop(t)
        elif kind == "continue":
            self.resume(t)

    def tick(self, t: float) -> None:
        with self._lock:
            self.ticks_received += 1
            if self._times and (t - self._times[-1] > self.gap_s or t <= self._times[-1]):
                self._times.clear()  # a gap (or time going back): the old ticks say nothing about now
            if self._running is False:
                self._times.append(t)  # keep the tempo warm while stopped; the position does not move
                return
            self._times.append(t)
            self._ticks += 1
            self._refit()

    def start(self, t: float) -> None:
        """Play from the top: the next tick is beat 0."""
        with self._lock:
            self._running = True
            self._ticks = 0
            self._fit = None

    def stop(self, t: float) -> None:
        with self._lock:
            self._running = False
            self._fit = None

    def resume(self, t: float) -> None:
        """``continue``: play on from the position at ``stop`` (the tick count is kept)."""
        with self._lock:
            self._running = True
            self._times.clear()  # the pause broke the tick spacing
            self._fit = None

    def _refit(self) -> None:
        n = len(self._times)
        if n < 3 or min(n, self._ticks) < self.min_ticks:
            self._fit = None
            return
        y = np.fromiter(self._times, dtype=np.float64, count=n)
        x = np.arange(n, dtype=np.float64)
        x_mean, y_mean = x.mean(), y.mean()
        period = float(np.dot(x - x_mean, y - y_mean) / np.dot(x - x_mean, x - x_mean))
        if not period > 0:
            self._fit = None
            return
        last_time = y_mean + period * (x[-1] - x_mean)  # where the line puts the newest tick
        residual = float(np.sqrt(np.mean((y - (y_mean + period * (x - x_mean))) ** 2)))
        # confidence: enough ticks, and little jitter compared with a tick
        self._confidence = min(1.0, n / self.window) * max(0.0, 1.0 - 4.0 * residual / period)
        self._fit = (self._ticks - 1, last_time, period)

    # ------------------------------------------------------------------ output
    @property
    def running(self) -> bool:
        return self._running is not False

    @property
    def bpm(self) -> float | None:
        """The tempo of the newest fit; None while stopped or before enough ticks."""
        with self._lock:
            fit = self._fit
        if fit is None:
            return None
        return float(np.clip(60.0 / (PPQN * fit[2]), self.min_bpm, self.max_bpm))

    def beat_at(self, t: float) -> BeatState | None:
        """Where the beat is at engine-clock time ``t``: None while stopped, before enough ticks,
        or when the clock went quiet for ``timeout_s``."""
        with self._lock:
            fit, running, confidence = self._fit, self._running, self._confidence
            last_arrival = self._times[-1] if self._times else None
        if fit is None or running is False or last_arrival is None or t - last_arrival > self.timeout_s:
            return None
        tick_index, tick_time, period = fit
        bpm = 60.0 / (PPQN * period)
        if not self.min_bpm <= bpm <= self.max_bpm:
            return None
        beat = (tick_index + (t - tick_time) / period) / PPQN
        return BeatState(bpm, beat, confidence, self.name)
