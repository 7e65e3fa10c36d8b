"""A lock-free single-producer / single-consumer audio ring buffer.

The producer is the PortAudio callback (or a source's wall-clock thread); consumers are the
engine (wants the newest N samples, many times a second) and the recorder (wants every sample).

Layout
------
Storage holds ``2 * capacity`` frames and every frame is written twice, at ``k % capacity`` and at
``k % capacity + capacity`` (``k`` = the frame's absolute index). Any run of at most ``capacity``
consecutive frames is therefore contiguous somewhere in storage, so :meth:`RingBuffer.latest`
returns a numpy *view* (no copy) of the newest ``n`` frames. ``capacity`` is a power of two so the
modulo is a mask.

Indices
-------
``write_index`` is the total number of frames ever written (a Python int: never wraps). It is
published (one attribute store, atomic under the GIL) *after* both copies of a block are in
storage, so a reader that reads ``write_index`` first only ever addresses frames that are complete.
Frames before index 0 read as zeros: the stream is treated as preceded by silence.

Thread safety
-------------
One writer thread, any number of reader threads. No locks: the GIL makes the index store atomic
and publish-after-copy orders data before index. Numpy may release the GIL while copying, so a
reader holding a view can see its oldest frames overwritten once the writer reaches more than
``capacity - n`` frames past the view's end. The writer announces its reach (``_pending_index``)
*before* copying a block and publishes ``write_index`` *after*; a reader that re-reads the reach
after using a view knows exactly whether the view was intact. Readers that keep a view must check
:meth:`RingBuffer.is_intact` afterwards, or use :meth:`latest_copy` / :meth:`read_since`, which
copy and verify.

Overflow semantics
------------------
* ``overflows`` counts writes whose block was longer than ``capacity``: only the newest
  ``capacity`` frames of that block are kept, ``write_index`` still advances by the full block.
* ``reader_overruns`` counts :meth:`read_since` calls whose requested start had already been
  overwritten (the consumer lagged more than ``capacity`` behind); the call reports how many frames
  were lost and continues from the oldest intact frame.
* ``dropped_blocks`` counts blocks rejected by :meth:`write` because of a wrong type, dtype,
  ndim or channel count; ``last_drop_reason`` says why (for the engine to show). ``write`` never
  raises.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["RingBuffer", "ReadResult", "next_pow2"]


def next_pow2(n: int) -> int:
    """Smallest power of two >= ``n`` (n >= 1)."""
    if n < 1:
        raise ValueError(f"next_pow2 needs n >= 1, got {n}")
    return 1 << (int(n) - 1).bit_length()


@dataclass(frozen=True)
class ReadResult:
    """What :meth:`RingBuffer.read_since` returns.

    ``data`` holds frames ``[start, end)`` (a copy, safe to keep); ``lost`` is the number of frames
    between the requested index and ``start`` that were overwritten before they could be read.
    Pass ``end`` as the next call's ``index``.
    """

    data: np.ndarray  # [frames] mono or [frames, channels]
    start: int
    end: int
    lost: int


class RingBuffer:
    """Float32 SPSC ring buffer; see the module docstring for layout, indices and thread safety.

    Args:
        capacity_frames: minimum number of frames kept; rounded up to a power of two.
        channels: 1 gives a mono ring whose views are 1-D ``[n]`` (writes may be ``[frames]`` or
            ``[frames, 1]``, as sounddevice delivers); >1 gives views ``[n, channels]``.
    """

    def __init__(self, capacity_frames: int, channels: int = 1) -> None:
        if not isinstance(capacity_frames, (int, np.integer)) or capacity_frames < 1:
            raise ValueError(f"RingBuffer capacity must be a positive int, got {capacity_frames!r}")
        if not isinstance(channels, (int, np.integer)) or not 1 <= channels <= 64:
            raise ValueError(f"RingBuffer channels must be an int in 1..64, got {channels!r}")
        self._capacity = next_pow2(int(capacity_frames))
        self._mask = self._capacity - 1
        self._channels = int(channels)
        shape = (2 * self._capacity,) if self._channels == 1 else (2 * self._capacity, self._channels)
        self._buf = np.zeros(shape, dtype=np.float32)  # [2*capacity] or [2*capacity, C]
        self._write_index = 0  # published after a block's data is in place
        self._pending_index = 0  # announced before a block's copy starts: the writer's reach
        self._overflows = 0
        self._dropped_blocks = 0
        self._reader_overruns = 0
        self.last_drop_reason: str | None = None

    # ------------------------------------------------------------------ properties
    @property
    def capacity(self) -> int:
        """Frames kept (a power of two)."""
        return self._capacity

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def write_index(self) -> int:
        """Total frames ever written; the newest frame is ``write_index - 1``."""
        return self._write_index

    @property
    def overflows(self) -> int:
        """Writes longer than ``capacity`` (their oldest frames were discarded)."""
        return self._overflows

    @property
    def dropped_blocks(self) -> int:
        """Blocks rejected by :meth:`write` (wrong type/dtype/shape)."""
        return self._dropped_blocks

    @property
    def reader_overruns(self) -> int:
        """:meth:`read_since` calls that found their start already overwritten."""
        return self._reader_overruns

    # ------------------------------------------------------------------ producer
    def write(self, block: np.ndarray) -> bool:
        """Append ``block`` (``[frames]`` or ``[frames, channels]`` float32). Never raises.

        Copies into preallocated storage (no array allocation, no locks), then publishes the new
        write index. Returns False if the block was dropped (counted in ``dropped_blocks``).
        """
        try:
            frames = self._validate(block)
            if frames < 0:
                return False
            if frames == 0:
                return True
            cap = self._capacity
            src = block if block.ndim == 1 or self._channels > 1 else block[:, 0]
            total = frames
            if frames > cap:
                self._overflows += 1
                src = src[frames - cap :]
                frames = cap
            # Frames [w, w + frames) are stored at (k % cap) and (k % cap) + cap.
            w = self._write_index + (total - frames)
            self._pending_index = w + frames  # announce the reach before touching storage
            p = w & self._mask
            buf = self._buf
            buf[p : p + frames] = src  # p + frames <= 2 * cap always
            q = p + cap  # mirror copy, folds past the end of storage
            direct = min(frames, 2 * cap - q)
            buf[q : q + direct] = src[:direct]
            if direct < frames:
                buf[: frames - direct] = src[direct:]
            self._write_index = w + frames  # publish after the data is in place
            return True
        except Exception as exc:  # noqa: BLE001 - the callback path must never raise
            self._dropped_blocks += 1
            self.last_drop_reason = f"write failed: {type(exc).__name__}: {exc}"
            return False

    def _validate(self, block: object) -> int:
        """Frames in ``block``, or -1 after counting it as dropped."""
        reason = None
        if not isinstance(block, np.ndarray):
            reason = f"block is {type(block).__name__}, not a numpy array"
        elif block.dtype != np.float32:
            reason = f"block dtype {block.dtype}, expected float32"
        elif block.ndim == 1:
            if self._channels != 1:
                reason = f"mono block for a {self._channels}-channel ring"
        elif block.ndim == 2:
            if block.shape[1] != self._channels:
                reason = f"block has {block.shape[1]} channels, ring has {self._channels}"
        else:
            reason = f"block has {block.ndim} dimensions, expected 1 or 2"
        if reason is not None:
            self._dropped_blocks += 1
            self.last_drop_reason = reason
            return -1
        return int(block.shape[0])

    # ------------------------------------------------------------------ consumers
    def _check_n(self, n: int) -> int:
        n = int(n)
        if not 0 <= n <= self._capacity:
            raise ValueError(f"can read 0..{self._capacity} frames from this ring, asked for {n}")
        return n

    def latest(self, n: int) -> tuple[np.ndarray, int]:
        """The newest ``n`` frames as a contiguous read-only VIEW, and the index just past them.

        ``view[i]`` is frame ``end_index - n + i``. The view is not copied: it stays correct while
        ``is_intact(end_index, n)`` holds (see the module docstring).
        """
        n = self._check_n(n)
        end = self._write_index  # read once
        e = (end & self._mask) + self._capacity
        view = self._buf[e - n : e]
        view = view.view()
        view.flags.writeable = False
        return view, end

    def is_intact(self, end_index: int, n: int) -> bool:
        """True if frames ``[end_index - n, end_index)`` have not been (and are not being)
        overwritten: the writer's reach is at most ``capacity`` past their start."""
        return self._pending_index - (end_index - n) <= self._capacity

    def latest_copy(self, n: int, retries: int = 3) -> tuple[np.ndarray, int]:
        """Like :meth:`latest` but returns a verified copy (retries if the writer lapped it).

        Raises RuntimeError if the writer keeps overwriting the window (``n`` too close to
        ``capacity`` for the block size): a configuration error, not a runtime condition.
        """
        n = self._check_n(n)
        for _ in range(max(1, retries)):
            view, end = self.latest(n)
            out = view.copy()
            if self.is_intact(end, n):
                return out, end
        raise RuntimeError(
            f"ring writer overwrote a {n}-frame window {retries} times; capacity {self._capacity}"
            " leaves no room for the writer's blocks"
        )

    def read_since(self, index: int, max_frames: int | None = None) -> ReadResult:
        """Copy frames from ``index`` onwards (at most ``max_frames``), for consumers that need
        every sample. If ``index`` was already overwritten, the result starts at the oldest intact
        frame, ``lost`` says how many were skipped and ``reader_overruns`` is incremented.
        ``index`` beyond ``write_index`` returns no frames and ``end == index``.
        """
        index = int(index)
        if index < 0:
            raise ValueError(f"read index must be >= 0, got {index}")
        limit = self._capacity if max_frames is None else min(int(max_frames), self._capacity)
        if limit < 0:
            raise ValueError(f"max_frames must be >= 0, got {max_frames}")
        w = self._write_index
        oldest = max(0, self._pending_index - self._capacity)
        start = max(index, oldest)
        end = max(start, min(w, start + limit))
        p = start & self._mask
        data = self._buf[p : p + (end - start)].copy()
        # Verify: anything the writer may have reached during the copy is discarded from the front.
        safe = max(0, self._pending_index - self._capacity)
        if safe > start:
            cut = min(safe, end) - start
            data = data[cut:]
            start += cut
        lost = max(0, start - index) if index < w else 0
        if lost:
            self._reader_overruns += 1
        return ReadResult(data=data, start=start, end=max(end, start), lost=lost)

    def __repr__(self) -> str:
        return (
            f"RingBuffer(capacity={self._capacity}, channels={self._channels},"
            f" write_index={self._write_index}, overflows={self._overflows},"
            f" dropped_blocks={self._dropped_blocks})"
        )
