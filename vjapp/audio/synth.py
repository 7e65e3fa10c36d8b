"""SyntheticSource: a generated signal fed to a ring in real time, or faster for tests/benchmarks.

The signal is a program rendered once at construction (a numpy array, or a list of
:class:`Segment` s: sine, noise, noise bursts, silence, each with its own level), then played by an
:class:`~vjapp.audio.cursor.ArrayCursor` (looping by default). ``start()`` feeds the ring from a
wall-clock thread at real-time pace; ``render_into(seconds)`` writes as fast as it can.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from .cursor import ArrayCursor
from .decode import validate_samples
from .ring import RingBuffer
from .sources import AudioSource, ErrorCallback, SourceStatus, WallClock, ring_for

logger = logging.getLogger(__name__)

__all__ = ["Segment", "render_segments", "SyntheticSource"]

SegmentKind = Literal["sine", "noise", "bursts", "silence"]


@dataclass(frozen=True)
class Segment:
    """One piece of a synthetic program.

    kind: "sine" (``freq`` Hz), "noise" (white), "bursts" (white-noise hits decaying over
        ``decay`` s, ``freq`` hits per second: onsets for the engine), "silence".
    seconds: length.
    level_db: peak level in dBFS (0 = full scale).
    """

    kind: SegmentKind
    seconds: float
    freq: float = 440.0
    level_db: float = -12.0
    decay: float = 0.05
    seed: int = 0


def _render_segment(seg: Segment, sample_rate: int, start_frame: int) -> np.ndarray:
    if seg.seconds <= 0:
        raise ValueError(f"segment length must be positive, got {seg.seconds}")
    n = int(round(seg.seconds * sample_rate))
    amp = float(10.0 ** (seg.level_db / 20.0))
    if amp > 1.0:
        raise ValueError(f"segment level {seg.level_db} dBFS is above full scale")
    if seg.kind == "silence":
        return np.zeros(n, np.float32)
    if seg.kind == "sine":
        if not 0 < seg.freq < sample_rate / 2:
            raise ValueError(f"sine frequency {seg.freq} Hz must be in (0, {sample_rate / 2})")
        t = (start_frame + np.arange(n)) / sample_rate  # continuous phase across segments
        return (amp * np.sin(2 * np.pi * seg.freq * t)).astype(np.float32)
    rng = np.random.default_rng(seg.seed)
    noise = rng.uniform(-1.0, 1.0, n)
    if seg.kind == "noise":
        return (amp * noise).astype(np.float32)
    if seg.kind == "bursts":
        if seg.freq <= 0 or seg.decay <= 0:
            raise ValueError("bursts need freq (hits per second) > 0 and decay > 0")
        period = max(1, int(round(sample_rate / seg.freq)))
        t_in = (np.arange(n) % period) / sample_rate
        return (amp * noise * np.exp(-t_in / seg.decay)).astype(np.float32)
    raise ValueError(f"unknown segment kind {seg.kind!r}")


def render_segments(segments: Sequence[Segment], sample_rate: int, channels: int = 1) -> np.ndarray:
    """Render a program: ``[frames]`` if ``channels == 1`` else ``[frames, channels]`` (the same
    signal in every channel)."""
    if not segments:
        raise ValueError("a synthetic program needs at least one segment")
    parts = []
    frame = 0
    for seg in segments:
        part = _render_segment(seg, sample_rate, frame)
        parts.append(part)
        frame += part.shape[0]
    mono = np.concatenate(parts)  # [frames]
    if channels == 1:
        return mono
    return np.repeat(mono[:, None], channels, axis=1)  # [frames, channels]


class SyntheticSource(AudioSource):
    """Generated audio into a ring.

    Args:
        signal: a :class:`Segment`, a list of them, or an array ``[frames]`` / ``[frames, ch]``
            (validated: finite, within [-1, 1]).
        sample_rate: Hz.
        channels: for segment programs; an array brings its own channel count.
        blocksize: frames per ring write.
        loop: repeat the program; otherwise silence after its end (``status.finished``).
        ring: feed this ring instead of creating one holding ``ring_seconds``.
    """

    kind = "synthetic"

    def __init__(
        self,
        signal: Segment | Sequence[Segment] | np.ndarray = Segment("sine", 1.0),
        sample_rate: int = 44_100,
        channels: int = 1,
        blocksize: int = 512,
        loop: bool = True,
        ring: RingBuffer | None = None,
        ring_seconds: float = 8.0,
        on_error: ErrorCallback | None = None,
    ) -> None:
        super().__init__(on_error)
        if blocksize < 1:
            raise ValueError(f"blocksize must be >= 1, got {blocksize}")
        if isinstance(signal, np.ndarray):
            audio = validate_samples(signal, sample_rate, overshoot_limit=1.0)
            samples = audio.samples  # [frames, ch]
        else:
            segs = [signal] if isinstance(signal, Segment) else list(signal)
            samples = render_segments(segs, int(sample_rate), int(channels))
            audio = validate_samples(samples, sample_rate, overshoot_limit=1.0)
            samples = audio.samples
        self._sample_rate = audio.sample_rate
        self._channels = audio.channels
        data = samples[:, 0].copy() if self._channels == 1 else samples  # ring layout
        self.cursor = ArrayCursor(np.ascontiguousarray(data), loop=loop)
        if ring is not None and ring.channels != self._channels:
            raise ValueError(f"ring has {ring.channels} channels, the signal {self._channels}")
        self._ring = ring if ring is not None else ring_for(ring_seconds, self._sample_rate, self._channels)
        self.blocksize = int(blocksize)
        shape = (self.blocksize,) if self._channels == 1 else (self.blocksize, self._channels)
        self._block = np.zeros(shape, np.float32)  # preallocated; one producer at a time
        self._thread: threading.Thread | None = None
        self._stop_evt = threading.Event()

    @property
    def ring(self) -> RingBuffer:
        return self._ring

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def duration(self) -> float:
        return self.cursor.frames / self._sample_rate

    def start(self) -> None:
        """Feed the ring at real-time pace from a thread."""
        with self._lock:
            if self._running:
                return
            self._running = True
        self._stop_evt.clear()
        self._thread = threading.Thread(target=self._run, name="vjapp-synth", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            if not self._running:
                return
            self._running = False
        self._stop_evt.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def _run(self) -> None:
        clock = WallClock(self._sample_rate, max_lag=self._ring.capacity // 2)
        period = self.blocksize / self._sample_rate / 2
        while not self._stop_evt.is_set():
            try:
                due = clock.due()
                while due > 0:
                    n = min(due, self.blocksize)
                    self._write_block(self._ring, n)
                    clock.advance(n)
                    due -= n
            except Exception as exc:  # noqa: BLE001 - report, keep going
                self._report_error("synth thread", exc)
                time.sleep(0.1)
            self._stop_evt.wait(period)

    def _write_block(self, ring: RingBuffer, n: int) -> None:
        out = self._block[:n]
        self.cursor.render(out)
        ring.write(out)

    def render_into(self, seconds: float, ring: RingBuffer | None = None) -> int:
        """Write ``seconds`` of the program into ``ring`` (default: this source's ring) as fast as
        possible, in ``blocksize`` blocks. Returns frames written. Not while ``start()``-ed."""
        if self._running:
            raise RuntimeError("render_into while the real-time thread runs would make two producers")
        target = self._ring if ring is None else ring
        if target.channels != self._channels:
            raise ValueError(f"ring has {target.channels} channels, the signal {self._channels}")
        total = int(round(seconds * self._sample_rate))
        done = 0
        while done < total:
            n = min(self.blocksize, total - done)
            self._write_block(target, n)
            done += n
        return done

    @property
    def status(self) -> SourceStatus:
        return self._base_status(
            self._ring,
            device=None,
            sample_rate=self._sample_rate,
            channels=self._channels,
            block_size=self.blocksize,
            latency=None,
            xruns=0,
            fallback=False,
            fallback_reason=None,
            reconnects=0,
            position=self.cursor.position / self._sample_rate,
            duration=self.duration,
            paused=self.cursor.paused,
            finished=self.cursor.finished,
        )
