"""A play head over a fixed array: the transport shared by FilePlayer and SyntheticSource.

``render(out)`` is called by exactly one producer at a time (the PortAudio callback or a wall-clock
thread) and fills ``out`` with the next frames: file content, silence while paused or after the
end, wrapping when looping. Control methods (``play``, ``pause``, ``seek``, ``loop``) may be
called from any thread: they only store plain attributes (atomic under the GIL); a seek is a
(serial, frame) request that the producer applies on its next render, so no request is lost.
``render`` allocates nothing.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["ArrayCursor", "SeekRequests"]


class SeekRequests:
    """The seek protocol of a play head: controllers post (serial, frame) requests from any
    thread; the one producer takes the newest at its next render, so no request is lost and the
    producer never takes a lock. Subclasses set :attr:`frames`."""

    frames: int

    def _init_seeks(self) -> None:
        self._pos = 0  # producer-owned
        self._seek_req: tuple[int, int] = (0, 0)  # (serial, frame), written by controllers
        self._seek_done = 0  # producer-owned
        self._ctl = threading.Lock()  # serialises controllers (never taken by the producer)

    @property
    def position(self) -> int:
        """Frame the next render starts at (a pending seek counts as done)."""
        serial, frame = self._seek_req
        return frame if serial != self._seek_done else self._pos

    def seek(self, frame: int) -> None:
        """Move the play head (clamped to [0, frames]); applied at the next render."""
        frame = int(min(max(0, frame), self.frames))
        with self._ctl:
            self._seek_req = (self._seek_req[0] + 1, frame)

    def _take_seek(self) -> bool:
        """Producer: apply a pending seek to the play head; True if there was one."""
        serial, frame = self._seek_req
        if serial == self._seek_done:
            return False
        self._seek_done = serial
        self._pos = frame
        return True


class ArrayCursor(SeekRequests):
    """Play head over ``samples`` ([frames] or [frames, channels] float32)."""

    def __init__(self, samples: np.ndarray, loop: bool = False, paused: bool = False) -> None:
        if samples.dtype != np.float32 or samples.ndim not in (1, 2) or samples.shape[0] == 0:
            raise ValueError(
                f"ArrayCursor needs non-empty float32 [frames] or [frames, channels], got "
                f"{samples.dtype} {samples.shape}"
            )
        self.samples = np.ascontiguousarray(samples)
        self.loop = bool(loop)
        self.paused = bool(paused)
        self.finished = False
        self.loops = 0  # times playback wrapped around
        self._init_seeks()

    @property
    def frames(self) -> int:
        return int(self.samples.shape[0])

    def render(self, out: np.ndarray) -> int:
        """Fill ``out`` with the next ``len(out)`` frames; returns the number of content frames
        (the rest is silence). Never raises for valid ``out`` shapes."""
        if self._take_seek():
            self.finished = False
        n = out.shape[0]
        if self.paused or self.finished:
            out.fill(0.0)
            return 0
        data = self.samples
        total = data.shape[0]
        pos = self._pos
        filled = 0
        while filled < n:
            if pos >= total:
                if self.loop:
                    pos = 0
                    self.loops += 1
                else:
                    out[filled:] = 0.0
                    self.finished = True
                    break
            take = min(n - filled, total - pos)
            out[filled : filled + take] = data[pos : pos + take]
            filled += take
            pos += take
        if pos >= total and not self.loop:
            self.finished = True
        self._pos = pos
        return filled
