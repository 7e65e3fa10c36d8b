"""FilePlayer: plays a file to the output device and feeds the ring with exactly what is heard
(DESIGN.md section 2), or runs on a wall clock when there is no output device.

A file given by path is streamed: a reader thread decodes it a few seconds ahead into preallocated
slots (:class:`~vjapp.audio.stream_cursor.StreamCursor`), so memory does not grow with the file's
length (a 2-hour set plays in the same few MB as a song) and a seek is a jump of the reader, not
of an array. Audio already decoded (:class:`DecodedAudio`) plays from memory
(:class:`~vjapp.audio.cursor.ArrayCursor`).

The PortAudio output callback asks the cursor for the next block (a copy, nothing decoded there),
written straight into PortAudio's output buffer, then copies that same buffer into the ring.
Paused, or past the end without loop, both get silence, and the ring keeps advancing with it: the
engine always sees what the audience hears, and its clock never stalls.

With no output device (``sd.query_devices()`` empty, PortAudio missing, or ``PortAudioError`` on
open), with ``play_audio=False``, or after the device is lost, the monitor thread runs the same
cursor on a wall clock at real-time pace and ``status.fallback`` says so; a lost device is retried.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from .cursor import ArrayCursor
from .decode import DecodedAudio, to_mono
from .stream import open_audio
from .stream_cursor import StreamCursor
from .ring import RingBuffer
from .sources import (
    AudioBackendError,
    DeviceSource,
    ErrorCallback,
    SourceStatus,
    load_sounddevice,
    resolve_device,
    ring_for,
)

logger = logging.getLogger(__name__)

__all__ = ["FilePlayer"]


class FilePlayer(DeviceSource):
    """Play ``audio`` (a :class:`DecodedAudio`, or a path streamed from disk) and feed the ring.

    Args:
        audio: decoded audio or a file path (``AudioDecodeError`` if it does not open or its first
            second does not decode; later decode errors are reported through ``on_error`` and
            ``status`` and play as silence).
        output_device: None = default output, an index, or a name substring.
        play_audio: False never opens a device (headless; the wall clock drives the ring).
        loop: wrap at the end; otherwise silence and ``finished`` after it.
        autoplay: start playing on ``start()``; otherwise start paused.
        blocksize: frames per callback requested from PortAudio (and per wall-clock write).
        ring_seconds: ring capacity in seconds (rounded up to a power of two of frames).
        stall_timeout: no callback for this long (s) = device lost.
        retry_interval: seconds between attempts to reopen a lost device.

    Files with more than 2 channels are mixed to mono at load (what a PA plays and what the
    models want); mono and stereo are played as they are. The ring has the played channel count
    and the file's sample rate.
    """

    kind = "file"

    def __init__(
        self,
        audio: DecodedAudio | str | os.PathLike[str],
        *,
        output_device: int | str | None = None,
        play_audio: bool = True,
        loop: bool = False,
        autoplay: bool = True,
        blocksize: int = 512,
        latency: str | float = "low",
        ring_seconds: float = 8.0,
        stall_timeout: float = 1.0,
        retry_interval: float = 2.0,
        on_error: ErrorCallback | None = None,
    ) -> None:
        super().__init__(
            blocksize=blocksize, stall_timeout=stall_timeout, retry_interval=retry_interval,
            on_error=on_error,
        )
        self.cursor: ArrayCursor | StreamCursor
        if isinstance(audio, DecodedAudio):
            self.audio: DecodedAudio | None = audio
            self.path = audio.path
            samples = audio.samples  # [frames, channels]
            if audio.channels > 2:
                logger.info("%s: mixing %d channels to mono for playback", audio.path, audio.channels)
                samples = to_mono(samples)[:, None]
            self._channels = int(samples.shape[1])
            self._sample_rate = int(audio.sample_rate)
            data = np.ascontiguousarray(samples[:, 0]) if self._channels == 1 else samples
            self.cursor = ArrayCursor(data, loop=loop, paused=not autoplay)  # [frames] or [frames, 2]
        else:
            self.audio = None
            stream = open_audio(audio)
            self.path = stream.path
            if stream.channels > 2:
                logger.info("%s: mixing %d channels to mono for playback", stream.path, stream.channels)
            self._sample_rate = int(stream.sample_rate)
            self.cursor = StreamCursor(stream, mono=stream.channels > 2, loop=loop, paused=not autoplay,
                                       on_error=lambda exc: self._report_error("file reader", exc))
            self._channels = self.cursor.channels
        self._ring = ring_for(ring_seconds, self._sample_rate, self._channels)
        self.output_device = output_device
        self.play_audio = bool(play_audio)
        self.latency_setting = latency

    # -- AudioSource ----------------------------------------------------------------------
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
    def status(self) -> SourceStatus:
        return self._base_status(
            self._ring,
            sample_rate=self._sample_rate,
            channels=self._channels,
            position=self.position,
            duration=self.duration,
            paused=self.cursor.paused,
            finished=self.cursor.finished,
            **self._device_status_fields(),
        )

    @property
    def heard_latency(self) -> float:
        """Seconds from a sample entering the ring to the room hearing it: the output stream's
        latency while it plays to a device, 0 on the wall clock (nothing is heard)."""
        status = self.status
        return float(status.latency or 0.0) if not status.fallback else 0.0

    # -- transport ------------------------------------------------------------------------
    @property
    def duration(self) -> float:
        """Seconds."""
        return self.cursor.frames / self._sample_rate

    @property
    def position(self) -> float:
        """Seconds into the file of the next block to be produced (a pending seek counts).
        What is heard lags this by the output latency."""
        return self.cursor.position / self._sample_rate

    @property
    def finished(self) -> bool:
        """End reached without loop (cleared by seek/play)."""
        return self.cursor.finished

    @property
    def paused(self) -> bool:
        return self.cursor.paused

    @property
    def loop(self) -> bool:
        return self.cursor.loop

    @loop.setter
    def loop(self, value: bool) -> None:
        self.cursor.loop = bool(value)

    def play(self) -> None:
        """Resume; after the end (not looping) play restarts from the beginning."""
        if self.cursor.finished:
            self.cursor.seek(0)
        self.cursor.paused = False

    def pause(self) -> None:
        """Silence from the next block on; the position stays (the ring keeps advancing)."""
        self.cursor.paused = True

    def seek(self, seconds: float) -> None:
        """Jump to ``seconds`` (clamped to [0, duration]) at the next block."""
        if not np.isfinite(seconds):
            raise ValueError(f"seek needs a finite time, got {seconds}")
        self.cursor.seek(int(round(seconds * self._sample_rate)))

    def start(self) -> None:
        if isinstance(self.cursor, StreamCursor):
            self.cursor.start()
        super().start()

    def stop(self) -> None:
        super().stop()
        if isinstance(self.cursor, StreamCursor):
            self.cursor.stop()

    # -- device ---------------------------------------------------------------------------
    def _open_stream(self) -> Any:
        if not self.play_audio:
            raise AudioBackendError("playback disabled (play_audio=False)")
        sd = load_sounddevice()
        dev = resolve_device(self.output_device, "output")
        if dev.max_output_channels < self._channels:
            raise AudioBackendError(
                f"device {dev.name!r} has {dev.max_output_channels} output channels, "
                f"the file needs {self._channels}"
            )
        stream = sd.OutputStream(
            samplerate=self._sample_rate,
            blocksize=self._req_blocksize,
            device=dev.index,
            channels=self._channels,
            dtype="float32",
            latency=self.latency_setting,
            callback=self._callback,
        )
        try:
            if int(stream.samplerate) != self._sample_rate:
                raise AudioBackendError(
                    f"device opened at {stream.samplerate} Hz, the file is {self._sample_rate} Hz"
                )
            stream.start()
        except BaseException:
            stream.close(ignore_errors=True)
            raise
        return stream

    def _callback(self, outdata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        """PortAudio output callback: next block -> speakers and ring. Never raises."""
        try:
            if status:
                self._xruns += 1
            out = outdata if self._channels > 1 else outdata[:, 0]
            self.cursor.render(out)
            self._ring.write(outdata)
        except Exception as exc:  # noqa: BLE001 - never raise into PortAudio
            outdata.fill(0.0)
            self._callback_failed(exc)

    def _fallback_fill(self, out: np.ndarray) -> None:
        self.cursor.render(out)
