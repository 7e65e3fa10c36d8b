"""Engine timing and counters for the GUI status line and the benchmarks.

:class:`EngineStats` keeps, in fixed-size rings allocated once per name:

* display and model frame rates over a sliding time window (from tick timestamps; over the
  ticks since the start while fewer than a window have passed, and from the newest interval
  when frames come slower than one per window, so a visible picture never reads 0.0 fps);
* milliseconds per named stage (``"mel"``, ``"encoders"``, ``"recurrent"``, ``"synthesis"``,
  ``"to_uint8"``, ...) as an EMA and as p50/p90 over the last ``window`` samples;
* audio-to-frame latency (ms), the same way;
* integer counters (frames skipped to keep time, overflows, errors ...) and float gauges.

:class:`RecentCounts` turns cumulative counters (from snapshots, the bridge, the recorder) into
what happened over the last seconds, for rates beside the totals.

The engine thread writes; any thread may call :meth:`EngineStats.snapshot`, which returns a fresh
plain dict (JSON-ready, nothing shared with the live rings). Timing a stage is
``with stats.stage("synthesis"): ...``: the timer object is created once per name and reused, so
a timed block costs two ``perf_counter_ns`` calls and a ring write.
"""

from __future__ import annotations

import math
import threading
import time
from types import TracebackType
from typing import Any, Callable

import numpy as np

__all__ = ["EngineStats", "RateMeter", "RecentCounts", "StageTimer"]

# skipped_frames: display slots the engine skipped to keep time (it fell a whole period behind)
DEFAULT_COUNTERS = ("skipped_frames", "late_frames", "audio_overflows", "errors")
STALL_INTERVALS = 3.0  # no tick for this many of the newest intervals (and a window): stalled


class _Series:
    """The newest ``capacity`` samples of one quantity plus an EMA (fixed size)."""

    __slots__ = ("values", "capacity", "count", "ema", "last", "alpha", "_i")

    def __init__(self, capacity: int, alpha: float) -> None:
        self.values = [0.0] * capacity
        self.capacity = capacity
        self.count = 0  # total samples ever added
        self.ema = math.nan
        self.last = math.nan
        self.alpha = alpha
        self._i = 0

    def add(self, x: float) -> None:
        self.values[self._i] = x
        self._i = (self._i + 1) % self.capacity
        self.count += 1
        self.last = x
        self.ema = x if self.count == 1 else self.ema + self.alpha * (x - self.ema)

    def summary(self) -> dict[str, float | int | None]:
        n = min(self.count, self.capacity)
        if n == 0:
            return {"last": None, "ema": None, "p50": None, "p90": None, "max": None, "count": 0}
        arr = np.asarray(self.values[:n] if n < self.capacity else self.values, dtype=np.float64)
        p50, p90 = np.percentile(arr, [50.0, 90.0])
        return {
            "last": float(self.last),
            "ema": float(self.ema),
            "p50": float(p50),
            "p90": float(p90),
            "max": float(arr.max()),
            "count": int(self.count),
        }


class RateMeter:
    """Timestamps (ns) of the newest ``capacity`` ticks; rate over a trailing time window."""

    __slots__ = ("stamps", "capacity", "count", "_i")

    def __init__(self, capacity: int) -> None:
        self.stamps = [0] * capacity
        self.capacity = capacity
        self.count = 0
        self._i = 0

    def add(self, t_ns: int) -> None:
        self.stamps[self._i] = t_ns
        self._i = (self._i + 1) % self.capacity
        self.count += 1

    def _stamp(self, back: int) -> int:
        """The ``back``-th newest stamp (1 = newest)."""
        return self.stamps[(self._i - back) % self.capacity]

    def rate(self, now_ns: int, window_ns: int) -> float:
        """Ticks per second over the ticks of the last ``window_ns`` (all of them while fewer than
        a window have passed since the first); from the newest interval when ticks come slower
        than one per window; 0 once stalled (no tick for a window and STALL_INTERVALS intervals)."""
        n = min(self.count, self.capacity)
        if n < 2:
            return 0.0
        newest = self._stamp(1)
        interval = newest - self._stamp(2)
        since = now_ns - newest
        if since > max(window_ns, STALL_INTERVALS * interval):
            return 0.0
        oldest = newest
        k = 1
        for j in range(2, n + 1):  # walk back from the newest while inside the window
            t = self._stamp(j)
            if now_ns - t > window_ns:
                break
            oldest = t
            k += 1
        if k >= 2 and newest > oldest:
            return (k - 1) * 1e9 / (newest - oldest)
        # slower than one tick per window: the newest interval, stretched while the next is late
        span = max(interval, since)
        return 1e9 / span if span > 0 else 0.0


class RecentCounts:
    """How much cumulative counters grew over the last ``window_s`` seconds.

    Feed it :meth:`add` ``(t, {name: total})`` as totals are read (a few times a second); ask
    :meth:`increase` for the growth of one counter over the window and :meth:`span_s` for the time
    it covers. A total that went down (a new engine, a new take) starts that counter afresh.
    """

    def __init__(self, window_s: float = 10.0, capacity: int = 256) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        self.window_s = float(window_s)
        self.capacity = int(capacity)
        self._samples: list[tuple[float, dict[str, int]]] = []

    def add(self, t: float, totals: dict[str, int]) -> None:
        """Totals read at time ``t`` (s, monotonic)."""
        if self._samples and any(totals.get(k, 0) < v for k, v in self._samples[-1][1].items()):
            self._samples.clear()  # a counter restarted: the older totals say nothing now
        self._samples.append((float(t), {k: int(v) for k, v in totals.items()}))
        while len(self._samples) > 2 and t - self._samples[1][0] >= self.window_s:
            self._samples.pop(0)  # keep one sample at or before the window's start
        del self._samples[: max(0, len(self._samples) - self.capacity)]

    def increase(self, name: str) -> int:
        """Growth of ``name`` over the window (0 with fewer than two samples)."""
        if len(self._samples) < 2:
            return 0
        return self._samples[-1][1].get(name, 0) - self._samples[0][1].get(name, 0)

    def span_s(self) -> float:
        """Seconds between the oldest and the newest sample kept."""
        return self._samples[-1][0] - self._samples[0][0] if len(self._samples) >= 2 else 0.0

    def share(self, part: str, whole: str) -> float | None:
        """``part``'s growth as a fraction of ``whole``'s over the window; None when nothing grew."""
        total = self.increase(whole)
        return self.increase(part) / total if total > 0 else None


class StageTimer:
    """Context manager timing one named stage into its series (reused, not re-entrant)."""

    __slots__ = ("_series", "_lock", "_t0")

    def __init__(self, series: _Series, lock: threading.Lock) -> None:
        self._series = series
        self._lock = lock
        self._t0 = 0

    def __enter__(self) -> StageTimer:
        self._t0 = time.perf_counter_ns()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ms = (time.perf_counter_ns() - self._t0) * 1e-6
        with self._lock:
            self._series.add(ms)


class EngineStats:
    """Rates, per-stage timings, latency and counters with fixed memory.

    Args:
        window: samples kept per stage / latency series for the percentiles.
        ema_alpha: weight of the newest sample in the EMAs.
        rate_window_s: time window of the fps figures.
        max_names: cap on distinct stage, counter and gauge names (names come from code, so
            hitting it means a bug, e.g. a name built from data); raises ValueError beyond.
        clock_ns: time source in ns (injectable for tests).
    """

    def __init__(
        self,
        window: int = 240,
        ema_alpha: float = 0.1,
        rate_window_s: float = 2.0,
        max_names: int = 64,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if not 0.0 < ema_alpha <= 1.0:
            raise ValueError(f"ema_alpha must be in (0, 1], got {ema_alpha}")
        if not rate_window_s > 0:
            raise ValueError(f"rate_window_s must be > 0, got {rate_window_s}")
        self.window = int(window)
        self.ema_alpha = float(ema_alpha)
        self.max_names = int(max_names)
        self._window_ns = int(rate_window_s * 1e9)
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._t_start = clock_ns()
        self._display = RateMeter(1024)
        self._model = RateMeter(1024)
        self._latency = _Series(self.window, self.ema_alpha)
        self._stages: dict[str, _Series] = {}
        self._timers: dict[str, StageTimer] = {}
        self._counters: dict[str, int] = dict.fromkeys(DEFAULT_COUNTERS, 0)
        self._gauges: dict[str, float] = {}

    # -------------------------------------------------------------------- recording
    def _series(self, name: str) -> _Series:
        series = self._stages.get(name)
        if series is None:
            with self._lock:
                series = self._stages.get(name)
                if series is None:
                    self._check_room(self._stages, name)
                    series = _Series(self.window, self.ema_alpha)
                    self._stages[name] = series
        return series

    def _check_room(self, table: dict[str, Any], name: str) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"stat names must be non-empty strings, got {name!r}")
        if len(table) >= self.max_names:
            raise ValueError(f"too many stat names (max {self.max_names}); refusing {name!r}")

    def stage(self, name: str) -> StageTimer:
        """``with stats.stage("synthesis"):`` times the block into the stage ``name``."""
        timer = self._timers.get(name)
        if timer is None:
            timer = StageTimer(self._series(name), self._lock)
            self._timers[name] = timer
        return timer

    def record_stage(self, name: str, ms: float) -> None:
        """Add a measured duration (e.g. from CUDA events) to stage ``name``."""
        series = self._series(name)
        with self._lock:
            series.add(float(ms))

    def tick_display(self, t_ns: int | None = None) -> None:
        """A frame was shown (or handed to the output)."""
        t = self._clock_ns() if t_ns is None else t_ns
        with self._lock:
            self._display.add(t)

    def tick_model(self, t_ns: int | None = None) -> None:
        """The model produced a keyframe."""
        t = self._clock_ns() if t_ns is None else t_ns
        with self._lock:
            self._model.add(t)

    def record_latency(self, ms: float) -> None:
        """Audio-to-frame latency of one frame: newest audio sample used -> frame out (ms)."""
        with self._lock:
            self._latency.add(float(ms))

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (safe from any thread)."""
        with self._lock:
            if name not in self._counters:
                self._check_room(self._counters, name)
                self._counters[name] = 0
            self._counters[name] += int(n)

    def gauge(self, name: str, value: float) -> None:
        """Set a current value (queue fill, ring fill, memory ...)."""
        with self._lock:
            if name not in self._gauges:
                self._check_room(self._gauges, name)
            self._gauges[name] = float(value)

    def reset(self) -> None:
        """Forget all samples and counters (names and storage are kept)."""
        with self._lock:
            self._t_start = self._clock_ns()
            self._display = RateMeter(self._display.capacity)
            self._model = RateMeter(self._model.capacity)
            self._latency = _Series(self.window, self.ema_alpha)
            for name in self._stages:
                fresh = _Series(self.window, self.ema_alpha)
                self._stages[name] = fresh
                if name in self._timers:
                    self._timers[name] = StageTimer(fresh, self._lock)
            for name in self._counters:
                self._counters[name] = 0
            self._gauges.clear()

    # -------------------------------------------------------------------- reading
    def snapshot(self) -> dict[str, Any]:
        """A fresh JSON-ready dict of everything (no references into the live rings).

        ``{"uptime_s", "display_fps", "model_fps", "frames": {"display", "model"},
        "stages": {name: {"last", "ema", "p50", "p90", "max", "count"}} (ms),
        "latency_ms": {same keys}, "counters": {name: int}, "gauges": {name: float}}``;
        statistics of an empty series are None.
        """
        now = self._clock_ns()
        with self._lock:
            return {
                "uptime_s": (now - self._t_start) * 1e-9,
                "display_fps": self._display.rate(now, self._window_ns),
                "model_fps": self._model.rate(now, self._window_ns),
                "frames": {"display": self._display.count, "model": self._model.count},
                "stages": {name: s.summary() for name, s in self._stages.items()},
                "latency_ms": self._latency.summary(),
                "counters": dict(self._counters),
                "gauges": dict(self._gauges),
            }
