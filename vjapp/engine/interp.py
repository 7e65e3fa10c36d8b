"""The two clocks: W+ keyframes at the model rate, frames at the display rate.

The model steps every ``1/model_rate`` s and yields a W+ keyframe ``[num_ws, w_dim]`` stamped with
its time; the display runs at its own rate and asks :class:`LatentTimeline` for the latent at the
frame's time, interpolated between the keyframes around it (DESIGN.md section 2). Sampling at
``now - 1/model_rate`` keeps the display between the two newest keyframes; a sample later than the
newest keyframe **holds** it (optionally extrapolates, bounded, off by default), so motion never
runs ahead of what the model has said.

:class:`FramePacer` gives display deadlines on an absolute grid ``t0 + n / fps`` (no drift from
accumulated sleeps); when a frame is late by whole periods it skips those slots and counts them.
A :class:`Clock` supplies time: :class:`WallClock` for the live show, :class:`OfflineClock` for
headless render, which never sleeps (waiting jumps time forward), so a render is deterministic and
runs as fast as the models allow.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch

__all__ = [
    "TimelineError",
    "LatentTimeline",
    "Clock",
    "WallClock",
    "OfflineClock",
    "FrameTick",
    "FramePacer",
]


class TimelineError(ValueError):
    """Bad keyframe (shape, time order, non-finite time) or a sample before any keyframe."""


InterpMode = Literal["linear", "cubic"]


class LatentTimeline:
    """A fixed ring of the newest ``capacity`` W+ keyframes, sampled at any time.

    Storage is one preallocated tensor ``[capacity, num_ws, w_dim]`` on ``device``; pushing copies
    into the oldest slot, so hours of running allocate nothing. Thread-safe (one lock; the model
    thread may push while the display thread samples).

    Modes:
      * ``"linear"`` (default): straight lines between keyframes; never leaves the segment between
        the two keyframes around ``t``.
      * ``"cubic"``: cubic Hermite with Catmull-Rom tangents (central differences over
        non-uniform times; one-sided at the ends of the stored range). It passes through every
        keyframe with continuous velocity, so motion has no kink at each model step (at a model
        rate of 10 Hz linear interpolation changes direction 10 times a second, which reads as a
        pulse). Unlike smoothstep it does not stop at each keyframe. It may overshoot *values*
        slightly between keyframes, as any interpolating C1 curve does; in time it still never
        goes past the newest keyframe.

    Args:
        num_ws: W+ layers.
        w_dim: latent width.
        capacity: keyframes kept (>= 2; 4 or more for full cubic tangents).
        device, dtype: where and how keyframes are stored (any torch device).
        mode: "linear" or "cubic".
        max_extrapolation_s: past the newest keyframe, continue its last velocity for at most this
            many seconds, then hold. 0 (default) holds at once.
    """

    def __init__(
        self,
        num_ws: int,
        w_dim: int,
        *,
        capacity: int = 8,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        mode: InterpMode = "linear",
        max_extrapolation_s: float = 0.0,
    ) -> None:
        if num_ws < 1 or w_dim < 1:
            raise TimelineError(f"num_ws and w_dim must be >= 1, got {num_ws}, {w_dim}")
        if capacity < 2:
            raise TimelineError(f"capacity must be >= 2, got {capacity}")
        if mode not in ("linear", "cubic"):
            raise TimelineError(f"mode must be 'linear' or 'cubic', got {mode!r}")
        if not (math.isfinite(max_extrapolation_s) and max_extrapolation_s >= 0):
            raise TimelineError(f"max_extrapolation_s must be >= 0, got {max_extrapolation_s}")
        self.num_ws = num_ws
        self.w_dim = w_dim
        self.capacity = capacity
        self.mode: InterpMode = mode
        self.max_extrapolation_s = float(max_extrapolation_s)
        self._buf = torch.zeros(capacity, num_ws, w_dim, device=device, dtype=dtype)  # [K, L, C]
        self._times = [0.0] * capacity  # keyframe time per slot
        self._count = 0
        self._newest = -1  # slot index of the newest keyframe
        self._lock = threading.Lock()

    # ----------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._buf.device

    @property
    def dtype(self) -> torch.dtype:
        return self._buf.dtype

    def __len__(self) -> int:
        return self._count

    def times(self) -> tuple[float, ...]:
        """Stored keyframe times, oldest first."""
        with self._lock:
            return tuple(self._times[self._slot(j)] for j in range(self._count))

    @property
    def newest_time(self) -> float | None:
        with self._lock:
            return self._times[self._newest] if self._count else None

    def clear(self) -> None:
        """Forget all keyframes (e.g. on a seek or a model change); storage is kept."""
        with self._lock:
            self._count = 0
            self._newest = -1

    def _slot(self, j: int) -> int:
        """Slot of the j-th stored keyframe, j = 0 the oldest."""
        return (self._newest - (self._count - 1) + j) % self.capacity

    # ----------------------------------------------------------------------------------------
    def push(self, t: float, ws: torch.Tensor | np.ndarray) -> None:
        """Add the keyframe ``ws [num_ws, w_dim]`` at time ``t`` (s), later than the newest.

        The values are copied into the ring (the caller may reuse ``ws``). Values are not checked
        for NaN here (that would synchronise the GPU every step); the producer owns that.
        """
        t = float(t)
        if not math.isfinite(t):
            raise TimelineError(f"keyframe time must be finite, got {t}")
        shape = tuple(ws.shape)
        if shape != (self.num_ws, self.w_dim):
            raise TimelineError(
                f"keyframe must have shape [num_ws={self.num_ws}, w_dim={self.w_dim}], got {list(shape)}"
            )
        if isinstance(ws, np.ndarray):
            src = torch.from_numpy(np.ascontiguousarray(ws))
        elif isinstance(ws, torch.Tensor):
            src = ws.detach()
        else:
            raise TimelineError(f"keyframe must be a torch tensor or numpy array, got {type(ws).__name__}")
        with self._lock:
            if self._count and t <= self._times[self._newest]:
                raise TimelineError(
                    f"keyframe time {t} is not after the newest keyframe {self._times[self._newest]}"
                )
            slot = (self._newest + 1) % self.capacity
            self._buf[slot].copy_(src, non_blocking=True)
            self._times[slot] = t
            self._newest = slot
            self._count = min(self._count + 1, self.capacity)

    # ----------------------------------------------------------------------------------------
    def sample(self, t: float, out: torch.Tensor | None = None) -> torch.Tensor:
        """The latent ``[num_ws, w_dim]`` at time ``t``.

        Before the oldest stored keyframe it holds the oldest; after the newest it holds the newest
        (or extrapolates up to ``max_extrapolation_s``). Pass ``out`` (same shape, device, dtype)
        to write into a preallocated tensor; otherwise a new tensor is returned.
        """
        t = float(t)
        if not math.isfinite(t):
            raise TimelineError(f"sample time must be finite, got {t}")
        if out is None:
            out = torch.empty_like(self._buf[0])
        elif out.shape != self._buf.shape[1:] or out.device != self._buf.device or out.dtype != self._buf.dtype:
            raise TimelineError(
                f"out must be {list(self._buf.shape[1:])} {self._buf.dtype} on {self._buf.device}, "
                f"got {list(out.shape)} {out.dtype} on {out.device}"
            )
        with self._lock:
            n = self._count
            if n == 0:
                raise TimelineError("sample() before the first keyframe was pushed")
            times = [self._times[self._slot(j)] for j in range(n)]  # oldest first
            slots = [self._slot(j) for j in range(n)]
            buf = self._buf
            if t <= times[0] or n == 1:
                out.copy_(buf[slots[0] if t <= times[0] else slots[-1]])
                return out
            if t >= times[-1]:
                overshoot = min(t - times[-1], self.max_extrapolation_s)
                if overshoot <= 0.0:
                    out.copy_(buf[slots[-1]])
                else:  # continue the last segment's velocity, bounded
                    w = overshoot / (times[-1] - times[-2])
                    torch.lerp(buf[slots[-2]], buf[slots[-1]], 1.0 + w, out=out)
                return out
            # times[i] <= t < times[i + 1]; search from the newest (the usual case)
            i = n - 2
            while times[i] > t:
                i -= 1
            h = times[i + 1] - times[i]
            s = (t - times[i]) / h
            if self.mode == "linear":
                torch.lerp(buf[slots[i]], buf[slots[i + 1]], s, out=out)
                return out
            coeffs = _hermite_coeffs(times, i, s)
            first = True
            for j, c in coeffs.items():
                if first:
                    torch.mul(buf[slots[j]], c, out=out)
                    first = False
                elif c != 0.0:
                    out.add_(buf[slots[j]], alpha=c)
            return out


def _hermite_coeffs(times: list[float], i: int, s: float) -> dict[int, float]:
    """Weights of keyframes i-1..i+2 for the Catmull-Rom Hermite value at fraction s of [i, i+1].

    p = h00 w_i + h01 w_{i+1} + h10 h m_i + h11 h m_{i+1}, with
    m_i = (w_{i+1} - w_L) / (t_{i+1} - t_L) (L = i-1 if stored, else i) and
    m_{i+1} = (w_R - w_i) / (t_R - t_i) (R = i+2 if stored, else i+1).
    """
    n = len(times)
    h = times[i + 1] - times[i]
    s2, s3 = s * s, s * s * s
    h00 = 2 * s3 - 3 * s2 + 1
    h10 = s3 - 2 * s2 + s
    h01 = -2 * s3 + 3 * s2
    h11 = s3 - s2
    left = i - 1 if i >= 1 else i
    right = i + 2 if i + 2 < n else i + 1
    a = h10 * h / (times[i + 1] - times[left])
    b = h11 * h / (times[right] - times[i])
    c: dict[int, float] = {i: h00, i + 1: h01}
    c[i + 1] = c.get(i + 1, 0.0) + a
    c[left] = c.get(left, 0.0) - a
    c[right] = c.get(right, 0.0) + b
    c[i] = c.get(i, 0.0) - b
    return c


# --------------------------------------------------------------------------------------------
# Clocks and pacing
# --------------------------------------------------------------------------------------------


class Clock(Protocol):
    """A source of time in seconds that can wait until a time."""

    def now(self) -> float: ...

    def sleep_until(self, t: float) -> None: ...


class WallClock:
    """Monotonic wall time (``time.perf_counter``); sleeping really waits.

    :meth:`interrupt` wakes a thread sleeping in :meth:`sleep_until` early (used on shutdown).
    """

    def __init__(self) -> None:
        self._wake = threading.Event()

    def now(self) -> float:
        return time.perf_counter()

    def sleep_until(self, t: float) -> None:
        remaining = t - time.perf_counter()
        if remaining > 0 and self._wake.wait(remaining):
            self._wake.clear()

    def interrupt(self) -> None:
        self._wake.set()


class OfflineClock:
    """Time counted in audio samples, for headless render: deterministic, never waits.

    ``now()`` is ``samples / sample_rate``. Time moves when the renderer consumes audio
    (:meth:`advance_samples`) or when a pacer waits (:meth:`sleep_until` jumps to the first sample
    at or after the deadline), so no wall time is ever spent waiting.
    """

    def __init__(self, sample_rate: int, start_sample: int = 0) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
        if start_sample < 0:
            raise ValueError(f"start_sample must be >= 0, got {start_sample}")
        self.sample_rate = int(sample_rate)
        self._samples = int(start_sample)

    @property
    def samples(self) -> int:
        return self._samples

    def now(self) -> float:
        return self._samples / self.sample_rate

    def advance_samples(self, n: int) -> None:
        if n < 0:
            raise ValueError(f"time cannot go backwards (advance by {n} samples)")
        self._samples += int(n)

    def sample_at(self, t: float) -> int:
        """Index of the first sample at or after time ``t`` (tolerant to float rounding)."""
        return max(0, math.ceil(t * self.sample_rate - 1e-6))

    def sleep_until(self, t: float) -> None:
        self._samples = max(self._samples, self.sample_at(t))


@dataclass(frozen=True)
class FrameTick:
    """One display frame: its index on the grid, scheduled time, lateness, slots skipped before it."""

    index: int
    deadline: float
    late_s: float
    skipped: int


class FramePacer:
    """Drift-free display pacing on the absolute grid ``t0 + n / fps``.

    :meth:`wait` sleeps until the next deadline and returns its :class:`FrameTick`. If called late
    by one or more whole periods it skips those slots (``skipped_frames``) and returns the latest
    slot that has passed, so the display catches up at once instead of bursting; a frame started
    more than ``late_tolerance`` of a period after its deadline counts in ``late_frames``.
    """

    def __init__(self, fps: float, clock: Clock | None = None, late_tolerance: float = 0.25) -> None:
        self._period = self._check_fps(fps)
        self.clock: Clock = clock if clock is not None else WallClock()
        self.late_tolerance = float(late_tolerance)
        self._t0: float | None = None
        self._n = 0
        self.frames = 0
        self.late_frames = 0
        self.skipped_frames = 0

    @staticmethod
    def _check_fps(fps: float) -> float:
        fps = float(fps)
        if not (math.isfinite(fps) and 0 < fps <= 1000):
            raise ValueError(f"fps must be in (0, 1000], got {fps}")
        return 1.0 / fps

    @property
    def fps(self) -> float:
        return 1.0 / self._period

    @property
    def period(self) -> float:
        return self._period

    def start(self, t0: float | None = None) -> None:
        """Put the first deadline at ``t0`` (default: now)."""
        self._t0 = self.clock.now() if t0 is None else float(t0)
        self._n = 0

    def set_fps(self, fps: float) -> None:
        """Change the rate from the next deadline on (the grid re-anchors there)."""
        period = self._check_fps(fps)
        if self._t0 is not None:
            self._t0 = self.next_deadline()
            self._n = 0
        self._period = period

    def next_deadline(self) -> float:
        if self._t0 is None:
            self.start()
        assert self._t0 is not None
        return self._t0 + self._n * self._period

    def wait(self) -> FrameTick:
        """Wait for the next frame slot; returns it (index, scheduled time, lateness, skipped)."""
        deadline = self.next_deadline()
        assert self._t0 is not None
        now = self.clock.now()
        skipped = 0
        if now < deadline:
            self.clock.sleep_until(deadline)
            late = 0.0
        else:
            late = now - deadline
            if late >= self._period:  # whole slots missed: skip to the newest one that passed
                skipped = int(late / self._period)
                self._n += skipped
                deadline = self._t0 + self._n * self._period
                late = max(0.0, now - deadline)
                self.skipped_frames += skipped
            if late > self.late_tolerance * self._period:
                self.late_frames += 1
        tick = FrameTick(self._n, deadline, late, skipped)
        self._n += 1
        self.frames += 1
        return tick
