"""MP4 recording: H.264 video + AAC audio through PyAV (FFmpeg).

:class:`Mp4Writer` takes uint8 RGB frames ``[H, W, 3]`` and float32 audio ``[frames, channels]`` in
blocks of any size and writes one MP4 file. Timestamps: video frame ``n`` is at ``n / fps`` (or at
the time passed with it) and audio sample ``k`` at ``k / audio_rate``; both streams start at 0, so
the caller feeds audio from the moment of the first frame and picture and sound stay in sync.

Two layouts:

* ``fragmented=False`` (render): a normal MP4 with B-frames; FFmpeg writes edit lists, so the AAC
  encoder's priming samples are hidden and the first frame is at t = 0.
* ``fragmented=True`` (live recording, DESIGN.md section 6): ``frag_keyframe+empty_moov+
  default_base_moof`` with a keyframe every ``keyframe_interval_s``; each fragment reaches the OS
  as soon as the next keyframe arrives (the file is opened unbuffered), so a killed process leaves
  a playable file missing about the last second. Fragmented files carry no edit lists, so here the
  writer disables B-frames (no negative decode times, first frame at t = 0) and drops the first
  ``priming`` input samples while shifting audio timestamps by the same amount: the decoder's
  priming output then fills exactly the dropped span and later samples play at their true time.

Any ``OSError`` (disk full, device gone) or FFmpeg error while writing raises
:class:`RecordingError` from ``write_*``; the writer is then failed, later writes raise again at
once, and :meth:`Mp4Writer.close` cleans up without raising, so the caller can stop recording and
keep rendering. Bad input (wrong shape or dtype) is a caller bug and raises ``ValueError``.

One writer is used from one thread (the recorder thread).
"""

from __future__ import annotations

import logging
import math
import os
from fractions import Fraction
from types import TracebackType
from typing import Any, BinaryIO

import av
import av.error
import numpy as np

__all__ = ["RecordingError", "Mp4Writer", "probe_mp4"]

log = logging.getLogger(__name__)

FRAGMENT_MOVFLAGS = "frag_keyframe+empty_moov+default_base_moof"
_WRITE_ERRORS = (OSError, av.error.FFmpegError)


class RecordingError(RuntimeError):
    """Writing the recording failed (disk full, I/O error, encoder error); rendering can go on."""


def _open_output(path: str) -> BinaryIO:
    """Open the output file unbuffered, so every muxer flush reaches the OS (tests patch this)."""
    return open(path, "wb", buffering=0)


_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def _layout_name(channels: int) -> str:
    """FFmpeg's default layout name for 1..8 channels (the ones AAC can carry)."""
    return _LAYOUTS[channels]


def _aac_rate(rate: int) -> int:
    """``rate`` if AAC supports it, else the lowest supported rate above it (or the highest)."""
    rates = sorted(av.codec.Codec("aac", "w").audio_rates or (44100, 48000))
    if rate in rates:
        return rate
    above = [r for r in rates if r >= rate]
    return above[0] if above else rates[-1]


def _aac_framing(rate: int, layout: str, bit_rate: int) -> tuple[int, int]:
    """(frame_size, priming samples) of FFmpeg's AAC encoder, measured with a throwaway encoder."""
    ctx: Any = av.CodecContext.create("aac", "w")
    ctx.sample_rate = rate
    ctx.layout = layout
    ctx.format = "fltp"
    ctx.bit_rate = bit_rate
    ctx.time_base = Fraction(1, rate)
    ctx.open()
    frame_size = int(ctx.frame_size) or 1024
    channels = av.AudioLayout(layout).nb_channels
    frame = av.AudioFrame.from_ndarray(
        np.zeros((channels, frame_size), np.float32), format="fltp", layout=layout
    )
    frame.sample_rate = rate
    frame.pts = 0
    frame.time_base = Fraction(1, rate)
    packets = list(ctx.encode(frame)) + list(ctx.encode(None))
    first = min((p.pts for p in packets if p.pts is not None), default=0)
    return frame_size, max(0, -int(first))


def _to_fraction(fps: float | int | Fraction) -> Fraction:
    value = float(fps)
    if not (math.isfinite(value) and 0 < value <= 1000):
        raise ValueError(f"fps must be in (0, 1000], got {fps!r}")
    if isinstance(fps, Fraction):
        return fps
    return Fraction(value).limit_denominator(1001)


class Mp4Writer:
    """Write H.264 (libx264, yuv420p) + AAC to an MP4 file.

    Args:
        path: output file (created or truncated).
        width, height: frame size in pixels; both even (yuv420p halves chroma).
        fps: nominal frame rate (video time base is ``1/fps``).
        audio_rate: input sample rate in Hz, or None for video only. Rates AAC lacks are resampled
            to the next supported rate.
        audio_channels: channels of the input audio (1..8).
        fragmented: fragmented MP4 that survives a crash (live recording).
        keyframe_interval_s: seconds between keyframes (the fragment length when fragmented).
        crf, preset, tune: libx264 quality (lower crf = better), speed preset, optional psy tune
            ("film", "animation", ...).
        low_latency: add x264's "zerolatency" tune (no lookahead, no frame-thread delay), so each
            frame reaches the file within its fragment instead of ~12 frames later. Default: on
            when fragmented (what a crash can lose is then one fragment), off otherwise.
        threads: encoder threads (0 = FFmpeg's choice); 1 keeps a 2-core machine free for the
            models.
        audio_bitrate: AAC bit rate in bit/s.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        fps: float | int | Fraction,
        audio_rate: int | None = None,
        audio_channels: int = 2,
        *,
        fragmented: bool = False,
        keyframe_interval_s: float = 1.0,
        crf: int = 20,
        preset: str = "veryfast",
        tune: str | None = None,
        low_latency: bool | None = None,
        threads: int = 0,
        audio_bitrate: int = 160_000,
    ) -> None:
        self.path = os.fspath(path)
        for name, value in (("width", width), ("height", height)):
            if not isinstance(value, (int, np.integer)) or not 2 <= value <= 8192:
                raise ValueError(f"{name} must be an int in 2..8192, got {value!r}")
        if width % 2 or height % 2:
            raise ValueError(f"H.264 yuv420p needs even width and height, got {width}x{height}")
        if not (math.isfinite(keyframe_interval_s) and keyframe_interval_s > 0):
            raise ValueError(f"keyframe_interval_s must be > 0, got {keyframe_interval_s}")
        if not 0 <= crf <= 51:
            raise ValueError(f"crf must be in 0..51, got {crf}")
        if audio_rate is not None:
            if not isinstance(audio_rate, (int, np.integer)) or not 8000 <= audio_rate <= 384000:
                raise ValueError(f"audio_rate must be an int in 8000..384000 Hz, got {audio_rate!r}")
            if not isinstance(audio_channels, (int, np.integer)) or not 1 <= audio_channels <= 8:
                raise ValueError(f"audio_channels must be 1..8, got {audio_channels!r}")
        self.width = int(width)
        self.height = int(height)
        self.fps = _to_fraction(fps)
        self.fragmented = bool(fragmented)
        self.audio_rate = None if audio_rate is None else int(audio_rate)
        self.audio_channels = int(audio_channels)

        self.video_frames = 0  # frames encoded
        self.dropped_video_frames = 0  # frames refused because their slot was already written
        self.audio_samples = 0  # input samples accepted (per channel)
        self._last_pts = -1
        self._failed: BaseException | None = None
        self._closed = False
        self._file: BinaryIO | None = None
        self._container: Any = None
        self._audio: Any = None

        try:
            self._file = _open_output(self.path)
            options = {}
            if self.fragmented:
                # Fragments per keyframe, flushed as they complete. Cap the muxer's interleaving
                # wait: by default it holds packets up to 10 s for a stream that went quiet (e.g.
                # the audio source stalled), and a crash would lose all of them.
                options = {"movflags": FRAGMENT_MOVFLAGS, "max_interleave_delta": "100000"}
            self._container = av.open(self._file, "w", format="mp4", container_options=options)
            if low_latency is None:
                low_latency = self.fragmented
            tunes = [t for t in (tune, "zerolatency" if low_latency else None) if t]
            self._setup_video(keyframe_interval_s, crf, preset, ",".join(tunes), threads)
            if self.audio_rate is not None:
                self._setup_audio(audio_bitrate)
        except _WRITE_ERRORS as exc:
            self._abort()
            raise RecordingError(f"cannot start recording to {self.path}: {exc}") from exc
        except Exception:
            self._abort()
            raise

    # ------------------------------------------------------------------------ setup
    def _setup_video(
        self, keyframe_interval_s: float, crf: int, preset: str, tune: str, threads: int
    ) -> None:
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width = self.width
        stream.height = self.height
        stream.pix_fmt = "yuv420p"
        self._video_tb = 1 / self.fps
        stream.codec_context.time_base = self._video_tb
        stream.codec_context.gop_size = max(1, round(keyframe_interval_s * float(self.fps)))
        if threads > 0:
            stream.codec_context.thread_count = int(threads)
        if self.fragmented:
            stream.codec_context.max_b_frames = 0  # no edit lists in fragments: keep dts == pts
        options = {"crf": str(int(crf)), "preset": preset}
        if tune:
            options["tune"] = tune
        stream.options = options
        self._video = stream

    def _setup_audio(self, bit_rate: int) -> None:
        assert self.audio_rate is not None
        self._enc_rate = _aac_rate(self.audio_rate)
        self._layout = _layout_name(self.audio_channels)
        stream = self._container.add_stream("aac", rate=self._enc_rate, layout=self._layout)
        stream.codec_context.bit_rate = int(bit_rate)
        stream.codec_context.time_base = Fraction(1, self._enc_rate)
        self._audio = stream
        self._frame_size, priming = _aac_framing(self._enc_rate, self._layout, int(bit_rate))
        # Fragmented: drop the priming span of input and shift pts by it (see module docstring).
        self._skip = priming if self.fragmented else 0
        self._pts_offset = priming if self.fragmented else 0
        self._fifo = np.zeros((self.audio_channels, self._frame_size), np.float32)  # [C, frame_size]
        self._fill = 0
        self._audio_pts = 0  # samples sent to the encoder, at the encoder rate
        self._resampler: Any = None
        self._in_pts = 0
        if self._enc_rate != self.audio_rate:
            log.info("AAC has no %d Hz; resampling to %d Hz", self.audio_rate, self._enc_rate)
            self._resampler = av.AudioResampler(format="fltp", layout=self._layout, rate=self._enc_rate)

    # ------------------------------------------------------------------------ state
    @property
    def failed(self) -> bool:
        return self._failed is not None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def duration_s(self) -> float:
        """Time covered by the video written so far."""
        return (self._last_pts + 1) * float(self._video_tb) if self._last_pts >= 0 else 0.0

    def _check_open(self) -> None:
        if self._failed is not None:
            raise RecordingError(f"recording to {self.path} already failed: {self._failed}")
        if self._closed:
            raise RecordingError(f"recording to {self.path} is closed")

    def _fail(self, exc: BaseException) -> RecordingError:
        self._failed = exc
        if isinstance(exc, OSError) and exc.errno is not None:
            reason = os.strerror(exc.errno)
        else:
            reason = str(exc)
        # raised to the caller, who reports it once (a log line here would say it a second time)
        log.debug("recording to %s failed: %s", self.path, reason)
        return RecordingError(f"recording to {self.path} failed: {reason}")

    def _mux(self, packets: Any) -> None:
        if packets:
            self._container.mux(packets)

    # ------------------------------------------------------------------------ video
    def write_video(self, frame: Any, t: float | None = None) -> bool:
        """Encode one RGB frame ``[height, width, 3]`` uint8.

        ``t`` (s) places it at ``round(t * fps)``; by default frames follow each other. A frame
        whose slot was already written (``t`` too early) is dropped and counted; returns whether
        the frame was written. Raises RecordingError on write failure.
        """
        self._check_open()
        arr = np.asarray(frame)
        if arr.dtype != np.uint8 or arr.shape != (self.height, self.width, 3):
            raise ValueError(
                f"frame must be uint8 [{self.height}, {self.width}, 3] RGB, got {arr.dtype} {list(arr.shape)}"
            )
        if t is None:
            pts = self._last_pts + 1
        else:
            if not (math.isfinite(t) and t >= 0):
                raise ValueError(f"frame time must be finite and >= 0, got {t}")
            pts = round(t * self.fps)
            if pts <= self._last_pts:
                self.dropped_video_frames += 1
                return False
        vframe = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
        vframe.pts = pts
        vframe.time_base = self._video_tb
        try:
            self._mux(self._video.encode(vframe))
        except _WRITE_ERRORS as exc:
            raise self._fail(exc) from exc
        self._last_pts = pts
        self.video_frames += 1
        return True

    # ------------------------------------------------------------------------ audio
    def write_audio(self, samples: Any) -> None:
        """Encode float audio ``[frames, channels]`` (or ``[frames]`` when mono), any block size.

        Non-finite samples become 0 and values are clipped to [-1, 1]. Raises RecordingError on
        write failure.
        """
        self._check_open()
        if self._audio is None:
            raise ValueError("this writer was created without audio (audio_rate=None)")
        arr = np.asarray(samples)
        if arr.ndim == 1 and self.audio_channels == 1:
            arr = arr[:, None]
        if arr.ndim != 2 or arr.shape[1] != self.audio_channels or arr.dtype.kind != "f":
            raise ValueError(
                f"audio must be float [frames, {self.audio_channels}], got {arr.dtype} {list(arr.shape)}"
            )
        if arr.shape[0] == 0:
            return
        planar = np.clip(np.nan_to_num(arr.T.astype(np.float32), nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
        try:
            if self._resampler is None:
                self._push_planar(planar)
            else:
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar), format="fltp", layout=self._layout)
                frame.sample_rate = self.audio_rate
                frame.pts = self._in_pts
                frame.time_base = Fraction(1, self.audio_rate)
                self._in_pts += planar.shape[1]
                for out in self._resampler.resample(frame):
                    self._push_planar(out.to_ndarray())
        except _WRITE_ERRORS as exc:
            raise self._fail(exc) from exc
        self.audio_samples += arr.shape[0]

    def _push_planar(self, planar: np.ndarray) -> None:
        """Queue ``[C, n]`` samples at the encoder rate; encode every full frame."""
        pos = 0
        n = planar.shape[1]
        if self._skip:
            pos = min(self._skip, n)
            self._skip -= pos
        size = self._frame_size
        while pos < n:
            take = min(size - self._fill, n - pos)
            self._fifo[:, self._fill : self._fill + take] = planar[:, pos : pos + take]
            self._fill += take
            pos += take
            if self._fill == size:
                self._encode_audio(size)

    def _encode_audio(self, n: int) -> None:
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(self._fifo[:, :n]), format="fltp", layout=self._layout
        )
        frame.sample_rate = self._enc_rate
        frame.pts = self._audio_pts + self._pts_offset
        frame.time_base = Fraction(1, self._enc_rate)
        self._audio_pts += n
        self._fill = 0
        self._mux(self._audio.encode(frame))

    # ------------------------------------------------------------------------ close
    def close(self) -> None:
        """Flush both encoders and finish the file. Idempotent; never raises after a failure.

        Raises RecordingError if finishing a healthy recording fails (e.g. disk full at the end).
        """
        if self._closed:
            return
        self._closed = True
        if self._failed is not None:
            self._abort()
            return
        try:
            if self._audio is not None:
                if self._resampler is not None:
                    for out in self._resampler.resample(None):
                        self._push_planar(out.to_ndarray())
                if self._fill:
                    self._encode_audio(self._fill)  # AAC accepts a short last frame
                self._mux(self._audio.encode(None))
            self._mux(self._video.encode(None))
            self._container.close()
        except _WRITE_ERRORS as exc:
            err = self._fail(exc)
            self._abort()
            raise err from exc
        finally:
            self._close_file()

    def _abort(self) -> None:
        """Release everything after a failure; log, never raise."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception as exc:  # noqa: BLE001 - already failed; the first error was raised
                log.debug("closing failed recording %s: %s", self.path, exc)
            self._container = None
        self._close_file()

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                log.debug("closing %s: %s", self.path, exc)
            self._file = None

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:  # don't mask the original error with a close error
            try:
                self.close()
            except RecordingError as close_exc:
                log.error("closing %s after an error: %s", self.path, close_exc)


# ---------------------------------------------------------------------------------------------
def probe_mp4(path: str | os.PathLike[str], decode: bool = True) -> dict[str, Any]:
    """Describe a media file: streams, codecs, frame/sample counts, first times and durations.

    Returns ``{"path", "size_bytes", "format", "streams": [...], "video": first video stream or
    None, "audio": first audio stream or None, "error": None or the message where reading stopped
    (e.g. a truncated last fragment)}``. Each stream: ``index, type, codec, packets,
    first_pts_s, duration_s`` (from packet times; AAC priming shows as a negative first pts),
    ``first_frame_s`` (time of the first decoded frame) plus, for video, ``width, height,
    frames`` (decoded when ``decode``) and, for audio, ``sample_rate, channels, samples`` (decoded) with
    ``decoded_duration_s``.
    """
    path = os.fspath(path)
    size = os.path.getsize(path)  # FileNotFoundError for a missing file
    try:
        container = av.open(path)
    except av.error.FFmpegError as exc:
        raise ValueError(f"cannot read {path} as a media file: {exc}") from exc
    error: str | None = None
    with container:
        info: dict[int, dict[str, Any]] = {}
        spans: dict[int, list[Any]] = {}
        for s in container.streams:
            entry: dict[str, Any] = {
                "index": s.index,
                "type": s.type,
                "codec": s.codec_context.name if s.codec_context else None,
                "packets": 0,
                "first_pts_s": None,
                "first_frame_s": None,
                "duration_s": 0.0,
            }
            if s.type == "video":
                entry.update(width=s.codec_context.width, height=s.codec_context.height, frames=0)
            elif s.type == "audio":
                entry.update(sample_rate=s.codec_context.sample_rate, channels=s.codec_context.channels, samples=0)
            info[s.index] = entry
            spans[s.index] = [None, None]  # [min pts, max pts + duration] in time_base units
        try:
            for packet in container.demux():
                idx = packet.stream.index
                if packet.pts is not None and packet.size:
                    tb = packet.time_base
                    lo = packet.pts * tb
                    hi = (packet.pts + (packet.duration or 0)) * tb
                    span = spans[idx]
                    span[0] = lo if span[0] is None else min(span[0], lo)
                    span[1] = hi if span[1] is None else max(span[1], hi)
                if packet.size:
                    info[idx]["packets"] += 1
                if decode and packet.stream.type in ("video", "audio"):
                    for frame in packet.decode():
                        if info[idx]["first_frame_s"] is None and frame.time is not None:
                            info[idx]["first_frame_s"] = float(frame.time)
                        if packet.stream.type == "video":
                            info[idx]["frames"] += 1
                        else:
                            info[idx]["samples"] += frame.samples
        except av.error.FFmpegError as exc:
            error = str(exc)
    streams = []
    for idx, entry in info.items():
        lo, hi = spans[idx]
        if lo is not None:
            entry["first_pts_s"] = float(lo)
            entry["duration_s"] = float(hi - lo)
        if entry["type"] == "audio" and decode and entry["sample_rate"]:
            entry["decoded_duration_s"] = entry["samples"] / entry["sample_rate"]
        streams.append(entry)
    return {
        "path": path,
        "size_bytes": size,
        "format": container.format.name,
        "streams": streams,
        "video": next((s for s in streams if s["type"] == "video"), None),
        "audio": next((s for s in streams if s["type"] == "audio"), None),
        "error": error,
    }
