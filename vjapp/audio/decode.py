"""Decode audio files into validated float32 arrays; mono mixdown; resampling.

``decode_audio`` reads WAV/FLAC/OGG/MP3 (and the other libsndfile formats) with soundfile and falls
back to PyAV (FFmpeg) for containers libsndfile cannot read (MP4/M4A/AAC, Matroska/WebM, ...).
Whatever comes out is validated (DESIGN.md section 6): finite float32 in [-1, 1], 1..32 channels,
8..384 kHz, not empty, not truncated. Every failure is one :class:`AudioDecodeError` whose message
names the file and the problem.

Decisions:
* Lossy codecs (MP3, Vorbis, AAC) legitimately overshoot full scale a little when the source was
  mastered hot, and float files may too. Peaks up to ``overshoot_limit`` (default 1.5, +3.5 dB) are
  clipped to [-1, 1] with a log line; beyond that the file is rejected (it is not audio at the
  scale we expect, e.g. an unnormalised float dump). NaN/Inf are always rejected.
* Truncation: a WAV whose data chunk declares more bytes than the file holds, or a file that
  decodes to fewer frames than its header declares, is rejected. (libsndfile itself silently
  shortens truncated WAVs, so the RIFF header is checked here.)
* ``resample`` uses soxr (libsoxr, high quality, vectorised over channels). It runs off the audio
  callback: the engine reads the ring at the stream's rate and resamples for the models.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "AudioDecodeError",
    "DecodedAudio",
    "decode_audio",
    "validate_samples",
    "to_mono",
    "resample",
    "MIN_SAMPLE_RATE",
    "MAX_SAMPLE_RATE",
    "MAX_CHANNELS",
]

MIN_SAMPLE_RATE = 8_000
MAX_SAMPLE_RATE = 384_000
MAX_CHANNELS = 32
DEFAULT_MAX_SECONDS = 3 * 3600.0  # 3 h of stereo 48 kHz float32 is ~4 GB: refuse beyond that

# Container formats (FFmpeg demuxer names) accepted from the PyAV fallback. An allowlist keeps
# FFmpeg's permissive probing from "decoding" arbitrary bytes as some obscure format.
_PYAV_FORMATS = {
    "mov,mp4,m4a,3gp,3g2,mj2",
    "matroska,webm",
    "aac",
    "mp3",
    "ogg",
    "flac",
    "wav",
    "aiff",
    "caf",
    "asf",
    "w64",
}
# Magic bytes of formats libsndfile handles; for these PyAV is not tried (its verdict on a
# damaged WAV/FLAC/OGG would only hide the damage).
_SNDFILE_MAGIC = (b"RIFF", b"RIFX", b"RF64", b"fLaC", b"OggS", b"FORM", b"wvpk", b"caff")


class AudioDecodeError(ValueError):
    """An audio file could not be decoded or failed validation; the message says which and why."""

    def __init__(self, path: str | os.PathLike[str] | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{problem}")


@dataclass(frozen=True)
class DecodedAudio:
    """Validated audio: ``samples`` is finite float32 in [-1, 1], shape ``[frames, channels]``."""

    samples: np.ndarray  # [frames, channels] float32
    sample_rate: int
    path: str | None = None

    @property
    def frames(self) -> int:
        return int(self.samples.shape[0])

    @property
    def channels(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        """Seconds."""
        return self.frames / self.sample_rate


# ---------------------------------------------------------------------------------- validation
def _check_rate_channels(path: str | None, sample_rate: float, channels: int) -> None:
    if not np.isfinite(sample_rate) or sample_rate <= 0:
        raise AudioDecodeError(path, f"invalid sample rate {sample_rate} (zero or negative)")
    if int(sample_rate) != sample_rate:
        raise AudioDecodeError(path, f"non-integer sample rate {sample_rate}")
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(
            path,
            f"sample rate {int(sample_rate)} Hz is outside the supported "
            f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz",
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioDecodeError(
            path, f"{channels} channels; supported are 1..{MAX_CHANNELS}"
        )


def validate_samples(
    samples: np.ndarray,
    sample_rate: float,
    path: str | os.PathLike[str] | None = None,
    overshoot_limit: float = 1.5,
) -> DecodedAudio:
    """Check decoded (or synthesized) audio and return it as :class:`DecodedAudio`.

    ``samples`` is ``[frames]`` or ``[frames, channels]`` of any real dtype. Rejects NaN/Inf, empty
    audio, bad rates/channel counts and peaks above ``overshoot_limit``; clips smaller overshoot.
    """
    p = None if path is None else str(path)
    x = np.asarray(samples)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise AudioDecodeError(p, f"samples have {x.ndim} dimensions, expected [frames, channels]")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise AudioDecodeError(p, f"samples have dtype {x.dtype}, expected real numbers")
    _check_rate_channels(p, float(sample_rate), int(x.shape[1]))
    if x.shape[0] == 0:
        raise AudioDecodeError(p, "no audio frames (empty)")
    x = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(x)
    if not finite.all():
        bad = x[~finite]
        n_nan = int(np.isnan(bad).sum())
        raise AudioDecodeError(
            p, f"{n_nan} NaN and {bad.size - n_nan} infinite samples; audio must be finite"
        )
    peak = float(np.abs(x).max())
    if peak > 1.0:
        if peak > overshoot_limit:
            raise AudioDecodeError(
                p,
                f"samples reach {peak:.3g}, outside [-1, 1] beyond the {overshoot_limit} "
                "overshoot tolerance; normalize the file",
            )
        logger.info("%s: clipping decoder overshoot (peak %.3f) to [-1, 1]", p, peak)
        np.clip(x, -1.0, 1.0, out=x)
    return DecodedAudio(samples=x, sample_rate=int(sample_rate), path=p)


# ---------------------------------------------------------------------------------- WAV header
def _check_riff_header(path: str, head: bytes, file_size: int) -> None:
    """Checks libsndfile does not do for RIFF/WAVE: zero rate/channels, a truncated data chunk."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return  # RF64/RIFX or not a WAV: leave it to libsndfile
    pos = 12
    fmt_seen = False
    while pos + 8 <= len(head):
        cid = head[pos : pos + 4]
        (size,) = struct.unpack("<I", head[pos + 4 : pos + 8])
        body = pos + 8
        if cid == b"fmt ":
            if size < 16 or body + 16 > len(head):
                raise AudioDecodeError(path, "WAV 'fmt ' chunk is truncated")
            _, channels, rate = struct.unpack("<HHI", head[body : body + 8])
            if rate == 0:
                raise AudioDecodeError(path, "invalid sample rate 0 in the WAV header")
            if channels == 0:
                raise AudioDecodeError(path, "0 channels in the WAV header")
            fmt_seen = True
        elif cid == b"data":
            if not fmt_seen:
                raise AudioDecodeError(path, "WAV 'data' chunk before its 'fmt ' chunk")
            available = file_size - body
            # 0 and 0xFFFFFFFF are written by streaming encoders that do not know the length.
            if size not in (0, 0xFFFFFFFF) and size < 0x7FFFF000 and size > available:
                raise AudioDecodeError(
                    path,
                    f"truncated WAV: data chunk declares {size} bytes, the file holds {available}",
                )
            return
        pos = body + size + (size & 1)
    if pos > file_size:
        raise AudioDecodeError(path, "truncated WAV: a chunk runs past the end of the file")
    # A header that never reached 'data' within the bytes we read: let libsndfile decide.


# ---------------------------------------------------------------------------------- decoders
def _decode_soundfile(path: str, max_seconds: float | None) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with sf.SoundFile(path) as f:
        rate, channels, declared = f.samplerate, f.channels, f.frames
        _check_rate_channels(path, float(rate), int(channels))
        if max_seconds is not None and declared > max_seconds * rate:
            raise AudioDecodeError(
                path, f"{declared / rate:.0f} s long; the limit is {max_seconds:.0f} s"
            )
        data = f.read(dtype="float32", always_2d=True)  # [frames, channels]
        fmt = f.format
    if data.shape[0] < declared:
        # MP3 frame counts come from a Xing/LAME header or a bitrate estimate: allow slack.
        slack = max(4608, declared // 50) if fmt == "MP3" else 0
        if declared - data.shape[0] > slack:
            raise AudioDecodeError(
                path,
                f"truncated or corrupt: header declares {declared} frames, "
                f"only {data.shape[0]} decode",
            )
    return data, int(rate)


def _decode_pyav(path: str, max_seconds: float | None) -> tuple[np.ndarray, int]:
    import av

    try:
        container = av.open(path)
    except av.error.FFmpegError as exc:
        raise AudioDecodeError(path, f"not a readable audio file ({exc.strerror or exc})") from exc
    with container:
        if container.format.name not in _PYAV_FORMATS:
            raise AudioDecodeError(
                path, f"unsupported container '{container.format.name}' (no audio decoder trusted)"
            )
        if not container.streams.audio:
            raise AudioDecodeError(path, "the file has no audio track")
        stream = container.streams.audio[0]
        rate = stream.rate or (stream.codec_context.sample_rate if stream.codec_context else 0)
        channels = stream.channels
        _check_rate_channels(path, float(rate or 0), int(channels))
        # Planar float at the stream's own rate/layout: to_ndarray() gives [channels, samples].
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=rate)
        chunks: list[np.ndarray] = []
        total = 0
        limit = None if max_seconds is None else int(max_seconds * rate)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    arr = out.to_ndarray()  # [channels, samples]
                    chunks.append(arr)
                    total += arr.shape[1]
                if limit is not None and total > limit:
                    raise AudioDecodeError(
                        path, f"longer than the {max_seconds:.0f} s limit"
                    )
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
        except av.error.FFmpegError as exc:
            raise AudioDecodeError(path, f"corrupt audio stream ({exc.strerror or exc})") from exc
    if not chunks:
        raise AudioDecodeError(path, "no audio frames (empty)")
    data = np.concatenate(chunks, axis=1).T  # [frames, channels]
    return data, int(rate)


def check_file(p: str) -> tuple[bytes, int]:
    """The file's first 64 KiB and its size, after the checks every reader makes first: it exists,
    is a regular non-empty file, and a RIFF/WAV header does not promise more data than there is."""
    fp = Path(p)
    if not fp.exists():
        raise AudioDecodeError(p, "file not found")
    if not fp.is_file():
        raise AudioDecodeError(p, "not a regular file")
    size = fp.stat().st_size
    if size == 0:
        raise AudioDecodeError(p, "empty file (0 bytes)")
    with open(p, "rb") as fh:
        head = fh.read(1 << 16)
    _check_riff_header(p, head, size)
    return head, size


def decode_audio(
    path: str | os.PathLike[str],
    *,
    overshoot_limit: float = 1.5,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> DecodedAudio:
    """Decode a whole audio file to validated float32 ``[frames, channels]``.

    Raises :class:`AudioDecodeError` (a ValueError) for a missing, unreadable, corrupt, truncated,
    empty or out-of-range file; the message names the file and the problem.
    """
    p = str(path)
    head, size = check_file(p)

    import soundfile as sf

    try:
        data, rate = _decode_soundfile(p, max_seconds)
    except AudioDecodeError:
        raise
    except (sf.SoundFileError, RuntimeError, OSError) as exc:
        sf_problem = str(exc).replace(f"Error opening '{p}': ", "").replace(f"Error opening {p!r}: ", "")
        if head[:4] in _SNDFILE_MAGIC:
            raise AudioDecodeError(p, f"corrupt or unsupported audio ({sf_problem})") from exc
        logger.debug("%s: soundfile cannot read it (%s); trying PyAV", p, sf_problem)
        data, rate = _decode_pyav(p, max_seconds)
    return validate_samples(data, rate, p, overshoot_limit=overshoot_limit)


# ---------------------------------------------------------------------------------- transforms
def to_mono(x: np.ndarray) -> np.ndarray:
    """Average channels: ``[frames, channels]`` -> ``[frames]`` float32; 1-D input is returned as
    float32 unchanged (no copy if already float32)."""
    a = np.asarray(x)
    if a.ndim == 1:
        return a.astype(np.float32, copy=False)
    if a.ndim != 2:
        raise ValueError(f"to_mono expects [frames] or [frames, channels], got shape {a.shape}")
    if a.shape[1] == 1:
        return np.ascontiguousarray(a[:, 0], dtype=np.float32)
    return a.mean(axis=1, dtype=np.float32)


def resample(x: np.ndarray, from_sr: float, to_sr: float, quality: str = "HQ") -> np.ndarray:
    """Resample ``[frames]`` or ``[frames, channels]`` audio from ``from_sr`` to ``to_sr`` Hz.

    Band-limited (libsoxr, ``quality`` one of QQ/LQ/MQ/HQ/VHQ); output is float32 with
    ``round(frames * to_sr / from_sr)`` frames. Same rate returns the input as float32.
    Not for the audio callback: it allocates.
    """
    for name, sr in (("from_sr", from_sr), ("to_sr", to_sr)):
        if not np.isfinite(sr) or sr <= 0:
            raise ValueError(f"resample: {name} must be a positive rate, got {sr}")
    a = np.asarray(x)
    if a.ndim not in (1, 2):
        raise ValueError(f"resample expects [frames] or [frames, channels], got shape {a.shape}")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if from_sr == to_sr or a.shape[0] == 0:
        return a
    try:
        import soxr
    except ImportError as exc:  # a core dependency; say so rather than fail deep inside
        raise RuntimeError("resample needs the 'soxr' package (pip install soxr)") from exc

    return soxr.resample(a, float(from_sr), float(to_sr), quality=quality)
