"""A play head over a file that is decoded as it plays: :class:`StreamCursor`.

Same interface as :class:`~vjapp.audio.cursor.ArrayCursor` (``render``, ``seek``, ``position``,
``frames``, ``paused``, ``loop``, ``finished``, ``loops``), so :class:`FilePlayer` drives either.
A reader thread decodes the file (an :class:`~vjapp.audio.stream.AudioStream`) into a fixed set of
preallocated slots, a few seconds ahead of the play head; ``render`` (the PortAudio callback)
only copies out of those slots. Memory is the slots, whatever the file's length.

Slots are a single-producer / single-consumer queue: the reader fills slot ``w % n`` and then
publishes ``w + 1``; ``render`` empties slot ``r % n`` and then publishes ``r + 1`` (plain int
stores, atomic under the GIL; nothing locks in ``render``). Each slot carries the seek serial it
was decoded for and the file frame it starts at; a seek bumps the serial, ``render`` drops slots
of older serials and plays silence (without advancing) until the reader has the new position,
which takes a few milliseconds. A slot with no frames marks the end of the file.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import numpy as np

from .cursor import SeekRequests
from .decode import AudioDecodeError, to_mono
from .stream import AudioStream, BadBlockError

logger = logging.getLogger(__name__)

__all__ = ["StreamCursor"]


class StreamCursor(SeekRequests):
    """Play head over ``stream``, decoded ahead on a reader thread (see the module docstring).

    Args:
        stream: an open stream (the cursor owns and closes it).
        mono: mix all channels to one (files with more than 2 channels).
        slot_frames, slots: the read-ahead: ``slots * slot_frames`` frames (default ~3 s at 48 kHz).
        on_error: called from the reader thread with a decode error (a bad block is played as
            silence; a truncated file ends where it ends).
    """

    def __init__(
        self,
        stream: AudioStream,
        *,
        mono: bool = False,
        loop: bool = False,
        paused: bool = False,
        slot_frames: int = 4096,
        slots: int = 36,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.stream = stream
        self.mono = bool(mono)
        self.channels = 1 if mono else stream.channels
        shape = (slots, slot_frames) if self.channels == 1 else (slots, slot_frames, self.channels)
        self._data = np.zeros(shape, np.float32)
        self._count = [0] * slots  # frames in each slot (0 = end of file)
        self._start = [0] * slots  # file frame each slot starts at
        self._serial = [0] * slots  # seek serial each slot was decoded for
        self._wrapped = [False] * slots  # the slot starts a new loop
        self._slots = slots
        self._slot_frames = slot_frames
        self._w = 0  # slots published by the reader
        self._r = 0  # slots consumed by render
        self._off = 0  # frames of slot r already played (render-owned)
        self.loop = bool(loop)
        self.paused = bool(paused)
        self.finished = False
        self.loops = 0
        self.underruns = 0  # renders that found no decoded audio (not counting right after a seek)
        self._init_seeks()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.on_error = on_error
        self._thread: threading.Thread | None = None
        self._reader_serial = -1  # the seek serial the stream is positioned for
        self.start()

    # ------------------------------------------------------------------ controllers
    @property
    def frames(self) -> int:
        return int(self.stream.frames)

    def seek(self, frame: int) -> None:
        super().seek(frame)
        self._wake.set()  # the reader decodes from there at once

    def start(self) -> None:
        """Start the reader thread (it starts with the cursor; again after :meth:`stop`)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._reader, name="vjapp-file-reader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the reader thread (what is decoded stays; the file stays open)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def close(self) -> None:
        """Stop the reader thread and close the file."""
        self.stop()
        self.stream.close()

    # ------------------------------------------------------------------ the callback side
    def render(self, out: np.ndarray) -> int:
        """Fill ``out`` with the next frames; silence while paused, after the end, or while the
        reader has not caught up. Allocates nothing, takes no lock."""
        if self._take_seek():
            self.finished = False
        serial = self._seek_done  # the seek this render plays from
        n = out.shape[0]
        if self.paused or self.finished:
            out.fill(0.0)
            return 0
        filled = 0
        while filled < n:
            if self._r == self._w:  # nothing decoded yet
                if filled == 0 and self._serial[(self._r - 1) % self._slots] == serial:
                    self.underruns += 1
                break
            i = self._r % self._slots
            s = self._serial[i]
            if s < serial:  # decoded before the newest seek
                self._r += 1
                self._off = 0
                continue
            if s > serial:  # a seek newer than this render: next time
                break
            count = self._count[i]
            if count == 0:  # end of file
                self.finished = True
                break
            if self._off == 0 and self._wrapped[i]:
                self.loops += 1
            take = min(n - filled, count - self._off)
            out[filled:filled + take] = self._data[i, self._off:self._off + take]
            filled += take
            self._off += take
            self._pos = self._start[i] + self._off
            if self._off == count:
                self._off = 0
                self._r += 1
        if filled < n:
            out[filled:] = 0.0
        return filled

    # ------------------------------------------------------------------ the reader thread
    def _reader(self) -> None:
        serial = self._reader_serial
        wrapped = False
        at_end = False
        while not self._stop.is_set():
            req_serial, req_frame = self._seek_req
            try:
                if req_serial != serial:
                    serial = self._reader_serial = req_serial
                    self.stream.seek(req_frame)
                    at_end, wrapped = False, False
                if at_end or self._w - self._r >= self._slots:
                    self._wake.wait(0.01)
                    self._wake.clear()
                    continue
                i = self._w % self._slots
                start = self.stream.position
                try:
                    block = self.stream.read(self._slot_frames)
                except BadBlockError as exc:
                    self._report(exc)
                    block = np.zeros((exc.frames, self.stream.channels), np.float32)
                except AudioDecodeError as exc:  # truncated or corrupt: the file ends here
                    self._report(exc)
                    block = np.zeros((0, self.stream.channels), np.float32)
                if block.shape[0] == 0:
                    if self.loop and start > 0:
                        self.stream.seek(0)
                        wrapped = True
                        continue
                    at_end = True
                m = block.shape[0]
                if m:
                    self._data[i, :m] = to_mono(block) if self.channels == 1 else block
                self._count[i], self._start[i], self._serial[i] = m, start, serial
                self._wrapped[i], wrapped = wrapped, False
                if self._seek_req[0] != serial:
                    continue  # a seek came while decoding: do not publish stale audio
                self._w += 1
            except Exception as exc:  # noqa: BLE001 - keep playing what we have; report
                self._report(exc)
                self._stop.wait(0.1)

    def _report(self, exc: BaseException) -> None:
        if self.on_error is None:
            logger.warning("%s", exc)
        else:
            try:
                self.on_error(exc)
            except Exception:  # noqa: BLE001
                logger.exception("the on_error callback raised")
