"""Live MP4 recording on its own thread: the engine hands over frames and is never blocked.

:class:`Recorder` writes what the audience sees and hears into a fragmented MP4 (H.264 + AAC,
keyframe every second, each fragment on disk as soon as it completes: see
:class:`~vjapp.output.mp4.Mp4Writer`), so a killed process leaves a playable file missing at most
about the last second (DESIGN.md section 6).

Data flow (DESIGN.md section 2)::

    engine thread ──submit(image, t)──▶ bounded queue ──▶ recorder thread ──▶ Mp4Writer
    audio source ──▶ RingBuffer ──read_since──────────────▶ recorder thread ──┘

Timing
    The recording's t = 0 is ``t0`` (engine clock time, passed to :meth:`Recorder.start`, or by
    default the ``t`` of the first frame received). Each frame goes into the video slot
    ``round((t - t0) * fps)``, so dropped frames leave holds (the previous picture stays up), not
    drift; a second frame in a slot already written (engine faster than the recording rate) is
    dropped and counted. Audio starts at ring index ``start_index`` (default: the ring's
    ``write_index`` when :meth:`Recorder.start` is called) and takes every sample from there with
    :meth:`RingBuffer.read_since`; samples the ring lost (the recorder lagged more than the ring's
    capacity) are replaced by silence of the same length, so sound never slides against picture.
    While recording, audio is written up to 0.5 s past the newest frame (or further when the ring
    is half full, e.g. the engine stalled); :meth:`Recorder.stop` writes it up to the end of the
    last frame, padding with silence if the source is a block short.

Frame size
    Frames whose size differs from the recording's (output size changed mid-recording, or an odd
    size rounded down to the even size H.264 needs) are scaled to fit with nearest-neighbour
    sampling and letterboxed in black, in numpy, inside the recorder thread. One take stays one
    file; ``frames_resized`` counts them.

Failures
    A write error (disk full, device gone, encoder error: :class:`RecordingError`) or any other
    exception in the recorder thread ends the recording, keeps what reached the disk, and is
    reported once: through ``on_error`` when there is a handler (else as one ERROR log line) and in
    :meth:`Recorder.status`; it never reaches the engine, whose :meth:`Recorder.submit` calls
    simply return False from then on. A file that holds no video fragment when its take ends
    (the disk was full from the start, or the take stopped before any frame) plays nothing and is
    deleted, so no empty ``.mp4`` is left behind (``file_removed`` in the status).
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from vjapp.audio.ring import RingBuffer
from vjapp.output.mp4 import Mp4Writer, RecordingError

__all__ = ["Recorder", "RecorderStatus", "RecordingError", "default_recording_path", "fit_frame"]

log = logging.getLogger(__name__)

AUDIO_LEAD_S = 0.5  # audio may run this far past the newest frame while recording
_POLL_S = 0.02  # recorder thread wakes at least this often to move audio
_STATE_EVERY_S = 1.0  # on_state while recording, for an elapsed-time display
_STAT_EVERY_S = 0.25  # how often the file size is read
_JOIN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RecorderStatus:
    """A snapshot of the recorder. After a recording ends (stop or failure) it keeps that
    recording's numbers with ``recording=False`` until the next :meth:`Recorder.start`.

    recording: frames are being accepted and written.
    path: the current (or last) file, None before the first start.
    elapsed_s: wall time since start (frozen when the recording ends).
    frames_written: video frames in the file.
    frames_dropped: frames not in the file: queue full, slot already written, or before t0.
    audio_seconds: audio written (including silence that replaced lost samples).
    error: why the last recording ended early (disk full, ...), else None.
    bytes_written: size of the file on disk.
    frames_resized: frames scaled to the recording's size.
    audio_lost_s: ring samples lost because the recorder lagged (written as silence).
    file_removed: the take ended with no video on disk, so its (empty) file was deleted.
    size: the recording's frame size (width, height); every frame of the take has it.
    """

    recording: bool = False
    path: Path | None = None
    elapsed_s: float = 0.0
    frames_written: int = 0
    frames_dropped: int = 0
    audio_seconds: float = 0.0
    error: str | None = None
    bytes_written: int = 0
    frames_resized: int = 0
    audio_lost_s: float = 0.0
    file_removed: bool = False
    size: tuple[int, int] | None = None

    @property
    def frames_offered(self) -> int:
        """Frames handed to this take: written or not recorded."""
        return self.frames_written + self.frames_dropped


_FRAGMENT_SCAN_BYTES = 1 << 20  # the first fragment follows the small empty moov header


def _has_video_fragment(path: Path) -> bool:
    """Whether a fragmented MP4 holds at least one media fragment (a ``moof`` box near its start),
    i.e. whether it plays anything."""
    try:
        with open(path, "rb") as f:
            return b"moof" in f.read(_FRAGMENT_SCAN_BYTES)
    except OSError:
        return False


def _remove_unplayable(path: Path) -> bool:
    """Delete ``path`` if it exists but holds no video fragment; returns whether it was deleted."""
    if not path.exists() or _has_video_fragment(path):
        return False
    try:
        path.unlink()
    except OSError as exc:
        log.warning("could not remove the empty recording %s: %s", path, exc)
        return False
    log.info("removed %s: the take left no video in it", path)
    return True


def default_recording_path(folder: str | os.PathLike[str], now: _dt.datetime | None = None) -> Path:
    """``folder/vjapp-YYYYmmdd-HHMMSS.mp4`` for ``now`` (default: local time now); if that file
    exists, ``-2``, ``-3``, ... is appended, so an existing recording is never overwritten.
    The folder is not created (:meth:`Recorder.start` creates it)."""
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    folder = Path(folder)
    path = folder / f"vjapp-{stamp}.mp4"
    n = 2
    while path.exists():
        path = folder / f"vjapp-{stamp}-{n}.mp4"
        n += 1
    return path


def _fit_indices(src_h: int, src_w: int, dst_h: int, dst_w: int) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Where a ``src`` image lands when scaled to fit ``dst`` keeping its aspect ratio:
    (top, left, source rows [h], source columns [w]) for nearest-neighbour sampling."""
    scale = min(dst_h / src_h, dst_w / src_w)
    h = min(dst_h, max(1, round(src_h * scale)))
    w = min(dst_w, max(1, round(src_w * scale)))
    rows = np.minimum(((np.arange(h) + 0.5) * (src_h / h)).astype(np.intp), src_h - 1)  # [h]
    cols = np.minimum(((np.arange(w) + 0.5) * (src_w / w)).astype(np.intp), src_w - 1)  # [w]
    return (dst_h - h) // 2, (dst_w - w) // 2, rows, cols


def fit_frame(image: np.ndarray, height: int, width: int, out: np.ndarray | None = None) -> np.ndarray:
    """Scale ``image`` [H, W, 3] to fit ``[height, width, 3]`` (nearest neighbour, aspect kept,
    black bars). ``out`` (black outside the picture area, e.g. from an earlier call with the same
    sizes) is reused when given."""
    top, left, rows, cols = _fit_indices(image.shape[0], image.shape[1], height, width)
    if out is None:
        out = np.zeros((height, width, 3), np.uint8)
    out[top : top + rows.size, left : left + cols.size] = image[rows[:, None], cols]
    return out


class _Resizer:
    """fit_frame with the index arrays and output buffer cached per source size. The buffer is
    reused: Mp4Writer copies each frame into the encoder before the next call."""

    def __init__(self, height: int, width: int) -> None:
        self.height = height
        self.width = width
        self._key: tuple[int, int] | None = None
        self._plan: tuple[int, int, np.ndarray, np.ndarray] | None = None
        self._out = np.zeros((height, width, 3), np.uint8)  # [H, W, 3]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        key = (image.shape[0], image.shape[1])
        if key != self._key:
            self._key = key
            self._plan = _fit_indices(key[0], key[1], self.height, self.width)
            self._out[:] = 0
        assert self._plan is not None
        top, left, rows, cols = self._plan
        self._out[top : top + rows.size, left : left + cols.size] = image[rows[:, None], cols]
        return self._out


class _Session:
    """One recording's hand-over state: the frame queue, the stop signal and the drop counters."""

    def __init__(self, path: Path, queue_frames: int) -> None:
        self.path = path
        self.queue: queue.Queue[tuple[np.ndarray, float]] = queue.Queue(maxsize=queue_frames)
        self.accepting = True  # submit() puts frames while True
        self.stop_event = threading.Event()
        self.dropped_submit = 0  # queue full (counted on the submitting thread)
        self.dropped_late = 0  # before t0 (recorder thread)
        self.thread: threading.Thread | None = None


class Recorder:
    """Records frames handed over by the engine, plus the audio the audience hears, to MP4.

    Args:
        on_error: called (on the recorder thread) with a message when a recording fails.
        on_state: called (on the recorder thread) with a :class:`RecorderStatus` when a recording
            starts and ends, and about once a second while it runs (for an elapsed-time display).
        queue_frames: frames that may wait for the encoder; when full, new frames are dropped.
        crf, preset: libx264 quality and speed (live: favour speed).
        encoder_threads: libx264 threads (1 leaves the other cores to the models; 0 = FFmpeg's
            choice, for large outputs on big machines).
        keyframe_interval_s: keyframe spacing = the most a crash can lose.

    Thread use: :meth:`submit` from one producer thread (the engine); :meth:`start`,
    :meth:`stop` and :meth:`status` from any thread. Callbacks must be cheap and must not call
    :meth:`stop` (it waits for the thread that calls them); emit a Qt signal instead.
    """

    def __init__(
        self,
        on_error: Callable[[str], None] | None = None,
        on_state: Callable[[RecorderStatus], None] | None = None,
        queue_frames: int = 8,
        *,
        crf: int = 20,
        preset: str = "veryfast",
        encoder_threads: int = 1,
        keyframe_interval_s: float = 1.0,
    ) -> None:
        if not isinstance(queue_frames, int) or queue_frames < 1:
            raise ValueError(f"queue_frames must be an int >= 1, got {queue_frames!r}")
        self.on_error = on_error
        self.on_state = on_state
        self.queue_frames = queue_frames
        self.crf = crf
        self.preset = preset
        self.encoder_threads = encoder_threads
        self.keyframe_interval_s = keyframe_interval_s
        self._control = threading.Lock()  # serialises start/stop
        self._lock = threading.Lock()  # guards _status
        self._status = RecorderStatus()
        self._status_session: _Session | None = None  # the session _status describes
        self._other_drops = 0  # frames_dropped in _status other than the queue-full ones
        self._session: _Session | None = None

    # ------------------------------------------------------------------ control
    def start(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        fps: float,
        audio_ring: RingBuffer | None = None,
        audio_rate: int | None = None,
        audio_channels: int | None = None,
        start_index: int | None = None,
        *,
        t0: float | None = None,
    ) -> None:
        """Open ``path`` and start recording; returns at once (the thread does the writing).

        Args:
            path: output file, overwritten if it exists (use :func:`default_recording_path` for a
                fresh name); its folder is created.
            width, height: recording size (odd values are rounded down to even; frames of any
                other size are scaled to fit, see the module docstring).
            fps: recording frame rate (the video slot grid).
            audio_ring: ring of the source the audience hears, or None for video only.
            audio_rate: that ring's sample rate (required with a ring).
            audio_channels: channels to record; default the ring's. A multichannel ring is mixed
                to mono for 1; a mono ring is copied to every channel.
            start_index: ring index of the recording's first sample (default: ``write_index`` now).
            t0: engine clock time of the recording's t = 0, e.g. ``engine.clock.now()`` taken
                with ``start_index``; default the ``t`` of the first frame received.

        Raises:
            ValueError: bad arguments.
            RecordingError: already recording, or the file cannot be created (also in status).
        """
        try:
            width, height, fps = int(width), int(height), float(fps)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"width, height and fps must be numbers: {exc}") from exc
        if width < 2 or height < 2:
            raise ValueError(f"recording size must be at least 2x2, got {width}x{height}")
        if not (math.isfinite(fps) and 0 < fps <= 1000):
            raise ValueError(f"fps must be in (0, 1000], got {fps!r}")
        out_channels = 0
        if audio_ring is not None:
            if audio_rate is None:
                raise ValueError("audio_rate is required with an audio ring")
            out_channels = audio_ring.channels if audio_channels is None else int(audio_channels)
            if not 1 <= out_channels <= 8:
                raise ValueError(f"can record 1..8 audio channels, asked for {out_channels}")
            if audio_ring.channels not in (1, out_channels) and out_channels != 1:
                raise ValueError(
                    f"cannot record a {audio_ring.channels}-channel ring as {out_channels} channels"
                )
            if start_index is not None and start_index < 0:
                raise ValueError(f"start_index must be >= 0, got {start_index}")
        if t0 is not None and not math.isfinite(t0):
            raise ValueError(f"t0 must be finite, got {t0}")
        path = Path(path)
        with self._control:
            if self._session is not None and self._session.thread is not None and self._session.thread.is_alive():
                raise RecordingError(f"already recording to {self._session.path}; stop it first")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                message = f"cannot create the recording folder {path.parent}: {exc}"
                self._set_status(RecorderStatus(path=path, error=message))
                raise RecordingError(message) from exc
            index = None
            if audio_ring is not None:
                index = audio_ring.write_index if start_index is None else int(start_index)
            try:
                writer = Mp4Writer(
                    path,
                    width - width % 2,
                    height - height % 2,
                    fps,
                    audio_rate=None if audio_ring is None else int(audio_rate),  # type: ignore[arg-type]
                    audio_channels=max(1, out_channels),
                    fragmented=True,
                    keyframe_interval_s=self.keyframe_interval_s,
                    crf=self.crf,
                    preset=self.preset,
                    threads=self.encoder_threads,
                )
            except RecordingError as exc:
                removed = _remove_unplayable(path)
                self._set_status(RecorderStatus(path=path, error=str(exc), file_removed=removed))
                raise
            session = _Session(path, self.queue_frames)
            worker = _Worker(self, session, writer, audio_ring, index, out_channels, t0)
            self._set_status(RecorderStatus(recording=True, path=path, size=(writer.width, writer.height)), session)
            session.thread = threading.Thread(target=worker.run, name="vjapp-recorder", daemon=True)
            self._session = session
            session.thread.start()
            log.info("recording to %s (%dx%d, %g fps, audio %s)", path, width, height, fps,
                     "none" if audio_ring is None else f"{audio_rate} Hz x{out_channels}")

    def stop(self) -> RecorderStatus:
        """Stop accepting frames, encode the queued ones, write the audio up to the end of the
        last frame and close the file. Idempotent; never raises; returns the final status."""
        with self._control:
            session = self._session
            if session is not None:
                session.accepting = False
                session.stop_event.set()
                if session.thread is not None:
                    session.thread.join(_JOIN_TIMEOUT_S)
                    if session.thread.is_alive():
                        log.error("recorder thread did not finish %s within %.0f s", session.path, _JOIN_TIMEOUT_S)
                        return self.status()
                self._session = None
            return self.status()

    # ------------------------------------------------------------------ engine side
    def submit(self, image: np.ndarray, t: float, copy: bool = False) -> bool:
        """Hand one frame ``[H, W, 3]`` uint8 RGB for engine time ``t`` (s) to the recorder.

        Never blocks: when the queue is full the frame is dropped and counted. Returns whether it
        was queued (False also when not recording). The array is kept, not copied: the engine's
        :class:`~vjapp.engine.engine.Frame` images are fresh arrays; pass ``copy=True`` if the
        caller reuses its buffer. Raises ValueError for an image that is not uint8 [H, W, 3]
        (a caller bug), never for recording problems.
        """
        session = self._session
        if session is None or not session.accepting:
            return False
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3
                and image.shape[2] == 3 and image.shape[0] > 0 and image.shape[1] > 0):
            desc = f"{image.dtype} {list(image.shape)}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"recorder frames must be uint8 [H, W, 3] RGB arrays, got {desc}")
        if not math.isfinite(t):
            raise ValueError(f"frame time must be finite, got {t}")
        try:
            session.queue.put_nowait((image.copy() if copy else image, float(t)))
        except queue.Full:
            session.dropped_submit += 1
            return False
        return True

    # ------------------------------------------------------------------ status
    def status(self) -> RecorderStatus:
        """The current :class:`RecorderStatus` (thread-safe)."""
        with self._lock:
            status, session, other_drops = self._status, self._status_session, self._other_drops
        if session is not None and status.recording:
            # queue-full drops are counted live on the engine thread, not only at each publish
            status = replace(status, frames_dropped=other_drops + session.dropped_submit)
        return status

    @property
    def recording(self) -> bool:
        return self.status().recording

    def _set_status(self, status: RecorderStatus, session: _Session | None = None, other_drops: int = 0) -> None:
        with self._lock:
            self._status = status
            self._status_session = session
            self._other_drops = other_drops

    def _notify_state(self, status: RecorderStatus) -> None:
        if self.on_state is None:
            return
        try:
            self.on_state(status)
        except Exception:  # a broken handler must not end the recording
            log.exception("recorder on_state handler failed")

    def _notify_error(self, message: str) -> None:
        if self.on_error is None:
            return
        try:
            self.on_error(message)
        except Exception:
            log.exception("recorder on_error handler failed")


class _Worker:
    """The recorder thread's state for one session."""

    def __init__(
        self,
        owner: Recorder,
        session: _Session,
        writer: Mp4Writer,
        ring: RingBuffer | None,
        start_index: int | None,
        out_channels: int,
        t0: float | None,
    ) -> None:
        self.owner = owner
        self.session = session
        self.writer = writer
        self.ring = ring
        self.rate = writer.audio_rate or 0
        self.out_channels = out_channels
        self.a_start = start_index or 0  # ring index of the recording's first sample
        self.a_next = self.a_start  # next ring index to write
        self.a_lost = 0
        self.t0 = t0
        self.resizer = _Resizer(writer.height, writer.width)
        self.resized = 0
        self.started = time.monotonic()
        self.ended: float | None = None
        self.error: str | None = None
        self.file_removed = False
        self.bytes = 0
        self._last_stat = self.started
        self._last_state = self.started

    # ------------------------------------------------------------------ thread
    def run(self) -> None:
        owner = self.owner
        try:
            self._publish(recording=True, stat=True)
            owner._notify_state(owner.status())
            self._loop()
            self._pump_audio(final=True)
            self.writer.close()
        except Exception as exc:  # write failure or a bug: end this recording, keep rendering
            self.session.accepting = False
            if isinstance(exc, RecordingError):
                self.error = str(exc)
            else:
                self.error = f"recording failed: {type(exc).__name__}: {exc}"
                log.exception("recorder thread failed on %s", self.session.path)
            try:
                self.writer.close()
            except Exception as close_exc:  # noqa: BLE001 - the first error is the one to report
                log.debug("closing %s after an error: %s", self.session.path, close_exc)
        finally:
            self.session.accepting = False
            self.ended = time.monotonic()
            self._drain_uncounted()
            self.file_removed = _remove_unplayable(self.session.path)
            if self.file_removed:
                self.bytes = 0
            self._publish(recording=False, stat=not self.file_removed)
            if self.error is not None:
                if owner.on_error is None:  # else the handler reports it: one message per failure
                    log.error("recording to %s stopped: %s", self.session.path, self.error)
                else:
                    log.info("recording to %s stopped: %s", self.session.path, self.error)
                owner._notify_error(self.error)
            elif self.file_removed:
                log.info("recording %s stopped before any frame; nothing saved", self.session.path)
            else:
                log.info("recording saved: %s (%d frames, %.1f s audio)", self.session.path,
                         self.writer.video_frames, self._audio_seconds())
            owner._notify_state(owner.status())

    def _loop(self) -> None:
        q = self.session.queue
        stop = self.session.stop_event
        while True:
            stopping = stop.is_set()
            try:
                image, t = q.get(timeout=_POLL_S) if not stopping else q.get_nowait()
            except queue.Empty:
                if stopping:
                    return  # submit() stopped accepting before stop_event was set: queue is final
            else:
                self._write_frame(image, t)
            self._pump_audio(final=False)
            now = time.monotonic()
            self._publish(recording=True, stat=now - self._last_stat >= _STAT_EVERY_S)
            if now - self._last_state >= _STATE_EVERY_S:
                self._last_state = now
                self.owner._notify_state(self.owner.status())

    def _write_frame(self, image: np.ndarray, t: float) -> None:
        if self.t0 is None:
            self.t0 = t
        rel = t - self.t0
        if rel < 0:
            self.session.dropped_late += 1
            return
        if image.shape[0] != self.writer.height or image.shape[1] != self.writer.width:
            image = self.resizer(image)
            self.resized += 1
        self.writer.write_video(image, t=rel)  # False (counted by the writer) for a taken slot

    # ------------------------------------------------------------------ audio
    def _pump_audio(self, final: bool) -> None:
        """Move ring audio into the file: up to AUDIO_LEAD_S past the video while recording (all
        of it once the ring is half full), exactly to the end of the last frame when final."""
        ring = self.ring
        if ring is None:
            return
        video_end = self.a_start + round(self.writer.duration_s * self.rate)  # ring index
        if final:
            limit = video_end
        else:
            limit = video_end + round(AUDIO_LEAD_S * self.rate)
            if ring.write_index - self.a_next > ring.capacity // 2:
                limit = ring.write_index
        while self.a_next < limit:
            res = ring.read_since(self.a_next, max_frames=limit - self.a_next)
            if res.lost:
                self.a_lost += res.lost
                self._write_audio(np.zeros((res.lost, ring.channels), np.float32))
            if res.data.shape[0]:
                self._write_audio(res.data)
            self.a_next = res.end if res.end > self.a_next else self.a_next
            if res.data.shape[0] == 0 and not res.lost:
                break  # the ring has nothing newer yet
        if final and self.a_next < limit:  # the source is a block short of the last frame
            self._write_audio(np.zeros((limit - self.a_next, ring.channels), np.float32))
            self.a_next = limit

    def _write_audio(self, data: np.ndarray) -> None:
        """Write ring frames ``[n]`` or ``[n, C_ring]`` as ``[n, C_out]``."""
        block = data if data.ndim == 2 else data[:, None]  # [n, C_ring]
        c_in = block.shape[1]
        if c_in != self.out_channels:
            if self.out_channels == 1:
                block = block.mean(axis=1, keepdims=True, dtype=np.float32)
            else:  # mono ring onto every channel
                block = np.repeat(block, self.out_channels, axis=1)
        self.writer.write_audio(block)

    def _audio_seconds(self) -> float:
        return self.writer.audio_samples / self.rate if self.rate else 0.0

    # ------------------------------------------------------------------ status
    def _drain_uncounted(self) -> None:
        """Frames still queued after a failure will never be written: count them as dropped."""
        q = self.session.queue
        while True:
            try:
                q.get_nowait()
            except queue.Empty:
                return
            self.session.dropped_late += 1

    def _publish(self, recording: bool, stat: bool) -> None:
        if stat:
            self._last_stat = time.monotonic()
            try:
                self.bytes = os.stat(self.session.path).st_size
            except OSError:
                pass
        end = self.ended if self.ended is not None else time.monotonic()
        s = self.session
        other_drops = s.dropped_late + self.writer.dropped_video_frames
        status = RecorderStatus(
            recording=recording,
            path=s.path,
            elapsed_s=end - self.started,
            frames_written=self.writer.video_frames,
            frames_dropped=s.dropped_submit + other_drops,
            audio_seconds=self._audio_seconds(),
            error=self.error,
            bytes_written=self.bytes,
            frames_resized=self.resized,
            audio_lost_s=self.a_lost / self.rate if self.rate else 0.0,
            file_removed=self.file_removed,
            size=(self.writer.width, self.writer.height),
        )
        self.owner._set_status(status, s, other_drops)
