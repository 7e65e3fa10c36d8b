"""Read an audio file in blocks, with memory that does not grow with its duration.

:func:`open_audio` returns an :class:`AudioStream`: ``read(n)`` gives the next ``n`` frames as
validated float32 ``[frames, channels]``, ``seek(frame)`` jumps (libsndfile seeks in the file;
FFmpeg seeks to the nearest packet and decodes up to the frame). WAV/FLAC/OGG/MP3 and the other
libsndfile formats go through ``soundfile.SoundFile``; containers libsndfile cannot read
(MP4/M4A/AAC, Matroska/WebM, ...) through PyAV, with the same allowlist as :func:`decode_audio`.

Validation is :func:`~vjapp.audio.decode.decode_audio`'s, block by block: the file, its header
and its rate and channel count are checked at open, and the first second is decoded there, so a
file that is not audio fails at once. Later blocks must be finite and within the overshoot
tolerance (smaller overshoot is clipped); a block that is not raises :class:`BadBlockError`
(an :class:`AudioDecodeError` that says where and how many frames it skipped). A file that ends
well before the frame count its header declares raises ``AudioDecodeError`` ("truncated") when
the reader reaches that end. Every message names the file.

``frames`` is the header's count: exact for WAV/FLAC/OGG, an estimate for MP3 and for most PyAV
containers (``exact_length`` says which); the true end is where ``read`` returns a short block.
"""

from __future__ import annotations

import logging
import os
from types import TracebackType
from typing import Any

import numpy as np

from .decode import (
    _PYAV_FORMATS,
    _SNDFILE_MAGIC,
    AudioDecodeError,
    _check_rate_channels,
    check_file,
)

logger = logging.getLogger(__name__)

__all__ = ["AudioStream", "BadBlockError", "open_audio", "stereo_matrix", "downmix_stereo"]

_PROBE_SECONDS = 1.0  # decoded at open, so a file that is not audio fails there
# Lossy decoders restart cold after a seek (MDCT overlap, MP3's bit reservoir: libsndfile's MP3
# seek gave ~2900 wrong samples): seeks land this many frames early and the decoder warms up on them.
_PREROLL_FRAMES = 4608


class BadBlockError(AudioDecodeError):
    """A block failed validation (NaN/Inf, or beyond the overshoot tolerance); the stream moved
    past it. ``frames`` is how many frames it held, ``start`` its first frame."""

    def __init__(self, path: str | None, problem: str, start: int, frames: int) -> None:
        super().__init__(path, problem)
        self.start = start
        self.frames = frames


def _clock(frame: int, rate: int) -> str:
    s = frame / rate
    return f"{int(s // 60)}:{s % 60:06.3f}"


# ---------------------------------------------------------------------------------- backends
class _SoundFileReader:
    """libsndfile: exact frame counts and seeks (not used for MP3: libsndfile 1.2.2 decodes MP3
    wrongly when it is read in blocks, and its MP3 seeks start with ~2900 wrong samples)."""

    def __init__(self, path: str) -> None:
        import soundfile as sf

        self._f = sf.SoundFile(path)
        self.rate = int(self._f.samplerate)
        self.channels = int(self._f.channels)
        self.frames = int(self._f.frames)
        self.format = str(self._f.format)
        self.exact = True
        self.slack = 0

    def read(self, n: int) -> np.ndarray:
        return self._f.read(n, dtype="float32", always_2d=True)

    def seek(self, frame: int) -> None:
        self._f.seek(frame)

    def close(self) -> None:
        self._f.close()


class _PyAVReader:
    """FFmpeg through PyAV: decodes packets as they are needed and keeps the leftover of the last
    decoded frame; a seek goes to the packet before the frame and drops the samples up to it."""

    def __init__(self, path: str) -> None:
        import av

        self._av = av
        try:
            self._c = av.open(path)
        except av.error.FFmpegError as exc:
            raise AudioDecodeError(path, f"not a readable audio file ({exc.strerror or exc})") from exc
        try:
            if self._c.format.name not in _PYAV_FORMATS:
                raise AudioDecodeError(
                    path, f"unsupported container '{self._c.format.name}' (no audio decoder trusted)"
                )
            if not self._c.streams.audio:
                raise AudioDecodeError(path, "the file has no audio track")
            self._s = self._c.streams.audio[0]
            ctx = self._s.codec_context
            self.rate = int(self._s.rate or (ctx.sample_rate if ctx else 0) or 0)
            self.channels = int(self._s.channels)
            _check_rate_channels(path, float(self.rate), self.channels)
        except BaseException:
            self._c.close()
            raise
        self.frames = self._estimate_frames()
        self.exact = False
        self.slack = max(self.rate, self.frames // 50)  # container durations are estimates
        self._path = path
        self._origin: int | None = None  # FFmpeg's timestamp of the file's first sample
        self._restart(0)

    def _estimate_frames(self) -> int:
        s = self._s
        if s.duration is not None and s.time_base is not None:
            return int(round(float(s.duration * s.time_base) * self.rate))
        if self._c.duration is not None:
            return int(round(self._c.duration / 1_000_000 * self.rate))
        return 0

    def _restart(self, frame: int) -> None:
        self._resampler = self._av.AudioResampler(format="fltp", layout=self._s.layout, rate=self.rate)
        self._frames_iter = self._c.decode(self._s)
        self._pending: list[np.ndarray] = []  # [channels, n] pieces, in order
        self._pending_n = 0
        self._drop_until = frame  # samples before this frame are decoded and dropped
        self._pos: int | None = None  # frame index of the next decoded sample, once known
        self._eof = False

    def _frame_index(self, frame: Any) -> int | None:
        """Where a decoded frame starts, in samples of FFmpeg's timeline (None without a pts)."""
        tb = frame.time_base or self._s.time_base
        if frame.pts is None or tb is None:
            return None
        return int(round(float(frame.pts * tb) * self.rate))

    def _decode_more(self) -> bool:
        """Append the next decoded frame's samples to ``_pending``; False at the end."""
        av = self._av
        if self._eof:
            return False
        try:
            frame = next(self._frames_iter, None)
            outs = self._resampler.resample(frame)
        except av.error.FFmpegError as exc:
            raise AudioDecodeError(self._path, f"corrupt audio stream ({exc.strerror or exc})") from exc
        if frame is None:
            self._eof = True
        elif self._pos is None:
            # The file's first sample is where its first frame starts (MP3 starts after the
            # encoder delay); a frame after a seek is placed relative to it.
            at = self._frame_index(frame)
            if self._origin is None:
                self._origin = at or 0
            self._pos = 0 if at is None else at - self._origin
            if self._pos > self._drop_until:  # the seek landed past the frame: go further back
                self._seek_from(self._drop_until, self._drop_until - self._pos - 4 * _PREROLL_FRAMES)
                return True
        for out in outs:
            arr = out.to_ndarray()  # [channels, n]
            assert self._pos is not None
            if self._pos + arr.shape[1] <= self._drop_until:
                self._pos += arr.shape[1]
                continue
            if self._pos < self._drop_until:
                arr = arr[:, self._drop_until - self._pos:]
                self._pos = self._drop_until
            self._pending.append(arr)
            self._pending_n += arr.shape[1]
            self._pos += arr.shape[1]
        return not self._eof or bool(outs)

    def read(self, n: int) -> np.ndarray:
        while self._pending_n < n and self._decode_more():
            pass
        take = min(n, self._pending_n)
        out = np.empty((take, self.channels), np.float32)
        filled = 0
        while filled < take:
            piece = self._pending[0]
            k = min(take - filled, piece.shape[1])
            out[filled:filled + k] = piece[:, :k].T
            filled += k
            if k == piece.shape[1]:
                self._pending.pop(0)
            else:
                self._pending[0] = piece[:, k:]
        self._pending_n -= take
        return out

    def seek(self, frame: int) -> None:
        self._seek_from(frame, -max(_PREROLL_FRAMES, self.rate // 10))

    def _seek_from(self, frame: int, back: int) -> None:
        """Seek to ``back`` (< 0) frames before ``frame`` and decode up to it (a keyframe seek
        lands anywhere before its target; decoders restart cold). From the start: reopen."""
        av = self._av
        start = frame + back
        try:
            if start <= 0:  # reopen: decodes exactly as a fresh read does
                self._c.close()
                self._c = av.open(self._path)
                self._s = self._c.streams.audio[0]
            else:
                target = int(start / self.rate / float(self._s.time_base)) + int(self._origin_ts())
                self._c.seek(target, stream=self._s, backward=True, any_frame=False)
                self._s.codec_context.flush_buffers()  # no overlap from before the seek
        except av.error.FFmpegError as exc:
            raise AudioDecodeError(self._path, f"cannot seek ({exc.strerror or exc})") from exc
        self._restart(frame)

    def _origin_ts(self) -> float:
        """The file's first sample in the stream's time base."""
        return (self._origin or 0) / self.rate / float(self._s.time_base)

    def close(self) -> None:
        self._c.close()


# ---------------------------------------------------------------------------------- stream
class AudioStream:
    """A validated block reader over one audio file; see the module docstring.

    One thread uses it at a time. ``position`` is the frame the next ``read`` starts at.
    """

    def __init__(self, reader: _SoundFileReader | _PyAVReader, path: str, overshoot_limit: float) -> None:
        self._r = reader
        self.path = path
        self.sample_rate = reader.rate
        self.channels = reader.channels
        self.frames = reader.frames  # as declared; see exact_length
        self.exact_length = reader.exact
        self.overshoot_limit = float(overshoot_limit)
        self.position = 0
        self.clipped_blocks = 0
        self._closed = False

    @property
    def duration(self) -> float:
        """Seconds, from the declared frame count (0.0 when the container does not say)."""
        return self.frames / self.sample_rate

    def read(self, n: int) -> np.ndarray:
        """The next ``n`` frames (fewer only at the end), finite float32 in [-1, 1].

        Raises :class:`BadBlockError` for a block with NaN/Inf or a peak beyond the tolerance (the
        stream has moved past it) and :class:`AudioDecodeError` for a truncated or corrupt file.
        """
        if n <= 0:
            return np.zeros((0, self.channels), np.float32)
        start = self.position
        try:
            block = self._r.read(int(n))
        except AudioDecodeError:
            raise
        except (RuntimeError, OSError) as exc:  # libsndfile: a damaged frame inside the file
            raise AudioDecodeError(self.path, f"corrupt audio at {_clock(start, self.sample_rate)} ({exc})") from exc
        self.position = start + block.shape[0]
        if block.shape[0] < n:
            self._check_length(self.position)
        if block.shape[0]:
            self._validate(block, start)
        return block

    def _check_length(self, end: int) -> None:
        short = self.frames - end
        if short > self._r.slack and (self.exact_length or self.frames > 0):
            raise AudioDecodeError(
                self.path,
                f"truncated or corrupt: header declares {self.frames} frames, only {end} decode",
            )

    def _validate(self, block: np.ndarray, start: int) -> None:
        finite = np.isfinite(block)
        if not finite.all():
            bad = block[~finite]
            n_nan = int(np.isnan(bad).sum())
            raise BadBlockError(
                self.path,
                f"{n_nan} NaN and {bad.size - n_nan} infinite samples at "
                f"{_clock(start, self.sample_rate)}; audio must be finite",
                start, block.shape[0],
            )
        peak = float(np.abs(block).max())
        if peak > 1.0:
            if peak > self.overshoot_limit:
                raise BadBlockError(
                    self.path,
                    f"samples reach {peak:.3g} at {_clock(start, self.sample_rate)}, outside [-1, 1] "
                    f"beyond the {self.overshoot_limit} overshoot tolerance; normalize the file",
                    start, block.shape[0],
                )
            if self.clipped_blocks == 0:
                logger.info("%s: clipping decoder overshoot (peak %.3f) to [-1, 1]", self.path, peak)
            self.clipped_blocks += 1
            np.clip(block, -1.0, 1.0, out=block)

    def seek(self, frame: int) -> None:
        """Make the next ``read`` start at ``frame`` (clamped to >= 0)."""
        frame = max(0, int(frame))
        try:
            self._r.seek(frame)
        except AudioDecodeError:
            raise
        except (RuntimeError, OSError) as exc:
            raise AudioDecodeError(self.path, f"cannot seek to {_clock(frame, self.sample_rate)} ({exc})") from exc
        self.position = frame

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._r.close()

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def open_audio(path: str | os.PathLike[str], *, overshoot_limit: float = 1.5) -> AudioStream:
    """Open ``path`` for block reading; raises :class:`AudioDecodeError` for a missing, unreadable,
    empty, out-of-range or non-audio file (the first second is decoded and validated here)."""
    p = str(path)
    head, size = check_file(p)

    import soundfile as sf

    reader: Any
    try:
        reader = _SoundFileReader(p)
        if reader.format == "MP3":
            reader.close()
            reader = _PyAVReader(p)
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        problem = str(exc).replace(f"Error opening '{p}': ", "").replace(f"Error opening {p!r}: ", "")
        if head[:4] in _SNDFILE_MAGIC:
            raise AudioDecodeError(p, f"corrupt or unsupported audio ({problem})") from exc
        logger.debug("%s: soundfile cannot read it (%s); trying PyAV", p, problem)
        reader = _PyAVReader(p)
    stream = AudioStream(reader, p, overshoot_limit)
    try:
        _check_rate_channels(p, float(stream.sample_rate), stream.channels)
        probe = stream.read(max(1, int(_PROBE_SECONDS * stream.sample_rate)))
        if probe.shape[0] == 0:
            raise AudioDecodeError(p, "no audio frames (empty)")
        stream.seek(0)
        stream.clipped_blocks = 0
    except BaseException:
        stream.close()
        raise
    return stream


# ---------------------------------------------------------------------------------- downmix
# FFmpeg's default channel orders for 3..8 channels (WAV/FLAC use the same order).
_ORDERS = {
    3: ("FL", "FR", "FC"),
    4: ("FL", "FR", "FC", "BC"),
    5: ("FL", "FR", "FC", "BL", "BR"),
    6: ("FL", "FR", "FC", "LFE", "BL", "BR"),
    7: ("FL", "FR", "FC", "LFE", "BC", "SL", "SR"),
    8: ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR"),
}
_TO_STEREO = {  # (left gain, right gain) per channel, before normalisation
    "FL": (1.0, 0.0), "FR": (0.0, 1.0), "FC": (0.7071, 0.7071), "LFE": (0.5, 0.5),
    "BL": (0.7071, 0.0), "BR": (0.0, 0.7071), "SL": (0.7071, 0.0), "SR": (0.0, 0.7071),
    "BC": (0.5, 0.5),
}


def stereo_matrix(channels: int) -> np.ndarray:
    """``[channels, 2]`` gains that fold ``channels`` (> 2) into stereo, every channel included.

    3..8 channels are read in FFmpeg's default layout (3.0, 4.0, 5.0, 5.1, 6.1, 7.1): left
    channels to the left, right to the right, centre, LFE and back centre to both. More than 8
    (no standard layout) go equally to both sides. Each side is scaled so its gains sum to 1, so
    full scale in every channel at once cannot clip.
    """
    if channels <= 2:
        raise ValueError(f"stereo_matrix is for more than 2 channels, got {channels}")
    order = _ORDERS.get(channels)
    m = np.array([_TO_STEREO[c] for c in order], np.float32) if order else np.ones((channels, 2), np.float32)
    return m / m.sum(axis=0, keepdims=True)


def downmix_stereo(block: np.ndarray) -> np.ndarray:
    """``[frames, channels > 2]`` -> ``[frames, 2]`` float32 with :func:`stereo_matrix`."""
    return np.ascontiguousarray(block @ stereo_matrix(block.shape[1]), dtype=np.float32)
