"""What every audio source shares: the status snapshot, error reporting, the wall clock, the
device-watching monitor thread, and PortAudio device listing.

A source feeds one :class:`~vjapp.audio.ring.RingBuffer`; the engine reads that ring. Concrete
sources live in ``synth.py`` (:class:`SyntheticSource`), ``player.py`` (:class:`FilePlayer`) and
``live.py`` (:class:`LiveInput`).

Threads and errors
------------------
* A PortAudio callback only copies into the ring (and, for playback, into the output buffer),
  counts status flags, and on an exception stores it in a one-slot field and counts it. It never
  logs (logging takes locks) and never raises.
* One monitor thread per device source reports those callback errors (log + ``status.last_error``
  + the ``on_error`` callback), detects device loss (stream inactive, or the ring not advancing for
  ``stall_timeout`` s; a freshly opened stream gets ``start_grace`` s, because PulseAudio can take
  about two seconds to deliver its first block), feeds the ring from a wall clock while no device
  is open (silence for a live input, the file for a player) and retries opening the device every
  ``retry_interval`` s. The wall clock resumes the timeline from the last block the device
  delivered, so the ring's index keeps tracking real time across a loss.
* ``on_error(exc)`` is called from a source thread, never from the PortAudio callback: keep it
  quick and thread-safe (put into a queue, emit a Qt signal).

sounddevice is imported lazily: without libportaudio2 ``import sounddevice`` raises OSError, and a
source then runs on its wall clock and says so in its status.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from .ring import RingBuffer, next_pow2

logger = logging.getLogger(__name__)

__all__ = [
    "SourceStatus",
    "AudioSource",
    "InputDeviceInfo",
    "AudioBackendError",
    "list_input_devices",
    "list_output_devices",
    "resolve_device",
    "load_sounddevice",
]

ErrorCallback = Callable[[BaseException], None]


class AudioBackendError(RuntimeError):
    """PortAudio is missing, or a device could not be found or opened."""


@dataclass(frozen=True)
class SourceStatus:
    """A consistent snapshot of a source, safe to read from any thread."""

    kind: str  # "synthetic" | "file" | "live"
    running: bool
    device: str | None  # the opened device's name; None while on the wall clock
    sample_rate: int  # Hz, the ring's rate
    channels: int
    block_size: int  # frames per callback as opened (0 = variable, PortAudio's choice)
    latency: float | None  # seconds, as reported by the opened stream
    xruns: int  # input overflows / output underflows flagged by PortAudio
    ring_overflows: int
    dropped_blocks: int
    errors: int  # exceptions caught in callbacks and source threads
    last_error: str | None
    fallback: bool  # True while the ring is fed from a wall clock instead of a device
    fallback_reason: str | None
    reconnects: int  # successful re-opens after a loss
    write_index: int  # ring frames written so far
    position: float | None = None  # seconds into the file/program (player, synthetic)
    duration: float | None = None  # seconds (player, synthetic)
    paused: bool = False
    finished: bool = False  # player reached the end without loop


def load_sounddevice() -> ModuleType:
    """Import sounddevice, turning a missing PortAudio library into :class:`AudioBackendError`."""
    try:
        import sounddevice as sd
    except OSError as exc:  # the Linux wheel needs the system's libportaudio2
        raise AudioBackendError(f"PortAudio is not available ({exc}); install libportaudio2") from exc
    return sd


@dataclass(frozen=True)
class InputDeviceInfo:
    """One PortAudio device as offered to the user."""

    index: int
    name: str
    hostapi: str
    max_input_channels: int
    max_output_channels: int
    default_samplerate: float
    is_default: bool


def _list_devices(kind: str) -> list[InputDeviceInfo]:
    try:
        sd = load_sounddevice()
        devices = sd.query_devices()
        hostapis = sd.query_hostapis()
        default_in, default_out = sd.default.device
    except Exception as exc:  # noqa: BLE001 - no backend means no devices, not a crash
        logger.info("no audio devices: %s", exc)
        return []
    key = "max_input_channels" if kind == "input" else "max_output_channels"
    default = default_in if kind == "input" else default_out
    out = []
    for d in devices:
        if d[key] <= 0:
            continue
        out.append(
            InputDeviceInfo(
                index=int(d["index"]),
                name=str(d["name"]),
                hostapi=str(hostapis[d["hostapi"]]["name"]),
                max_input_channels=int(d["max_input_channels"]),
                max_output_channels=int(d["max_output_channels"]),
                default_samplerate=float(d["default_samplerate"]),
                is_default=int(d["index"]) == default,
            )
        )
    return out


def list_input_devices() -> list[InputDeviceInfo]:
    """Devices that can record (index, name, host API, channels, default rate). Empty when there is
    no sound card or no PortAudio; never raises."""
    return _list_devices("input")


def list_output_devices() -> list[InputDeviceInfo]:
    """Devices that can play; empty when there is none. Never raises."""
    return _list_devices("output")


def resolve_device(spec: int | str | None, kind: str) -> InputDeviceInfo:
    """Pick a device: ``None`` = the default, an int = that index, a str = the first device whose
    name contains it (case-insensitive; an exact name wins). Raises AudioBackendError."""
    devices = _list_devices(kind)
    if not devices:
        raise AudioBackendError(f"no {kind} audio devices")
    if spec is None:
        for d in devices:
            if d.is_default:
                return d
        return devices[0]
    if isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        for d in devices:
            if d.index == int(spec):
                return d
        raise AudioBackendError(f"no {kind} device with index {spec}")
    if isinstance(spec, str):
        want = spec.casefold()
        exact = [d for d in devices if d.name.casefold() == want]
        if exact:
            return exact[0]
        partial = [d for d in devices if want in d.name.casefold()]
        if partial:
            return partial[0]
        names = ", ".join(repr(d.name) for d in devices)
        raise AudioBackendError(f"no {kind} device matching {spec!r}; available: {names}")
    raise AudioBackendError(f"device must be None, an index or a name, got {spec!r}")


class WallClock:
    """Says how many frames are due at ``sample_rate`` since ``t0`` (no drift: absolute target).

    If the consumer falls more than ``max_lag`` frames behind (a starved thread), the clock skips
    ahead instead of bursting, and counts the skip.
    """

    def __init__(self, sample_rate: int, t0: float | None = None, max_lag: int | None = None):
        self.sample_rate = int(sample_rate)
        self.t0 = time.monotonic() if t0 is None else t0
        self.done = 0
        self.max_lag = max_lag
        self.skipped = 0

    def due(self, now: float | None = None) -> int:
        now = time.monotonic() if now is None else now
        target = int((now - self.t0) * self.sample_rate)
        lag = target - self.done
        if self.max_lag is not None and lag > self.max_lag:
            self.skipped += lag - self.max_lag
            self.done = target - self.max_lag
            lag = self.max_lag
        return max(0, lag)

    def advance(self, frames: int) -> None:
        self.done += frames


class AudioSource(ABC):
    """Common interface: ``start()``, ``stop()``, ``ring``, ``sample_rate``, ``channels``,
    ``status`` (a :class:`SourceStatus` snapshot) and an optional ``on_error`` callback.

    Sources are context managers (``with source: ...`` starts and stops them).
    """

    kind = "source"

    def __init__(self, on_error: ErrorCallback | None = None) -> None:
        self.on_error = on_error
        self._lock = threading.Lock()  # guards the str fields below and state changes
        self._errors = 0
        self._last_error: str | None = None
        self._running = False

    # -- interface -------------------------------------------------------------------------
    @property
    @abstractmethod
    def ring(self) -> RingBuffer: ...

    @property
    @abstractmethod
    def sample_rate(self) -> int: ...

    @property
    @abstractmethod
    def channels(self) -> int: ...

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @property
    @abstractmethod
    def status(self) -> SourceStatus: ...

    @property
    def running(self) -> bool:
        return self._running

    def __enter__(self) -> AudioSource:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers ---------------------------------------------------------------------------
    def _report_error(self, where: str, exc: BaseException, count: bool = True) -> None:
        """Count, store, log and forward an exception caught in a source thread.

        ``count=False`` for exceptions already counted where they happened (audio callbacks)."""
        msg = f"{where}: {type(exc).__name__}: {exc}"
        with self._lock:
            if count:
                self._errors += 1
            self._last_error = msg
        logger.error("%s %s", self.kind, msg, exc_info=(type(exc), exc, exc.__traceback__))
        cb = self.on_error
        if cb is not None:
            try:
                cb(exc)
            except Exception:  # noqa: BLE001 - a bad handler must not kill the source thread
                logger.exception("%s: the on_error callback raised", self.kind)

    def _base_status(self, ring: RingBuffer | None, **fields: Any) -> SourceStatus:
        with self._lock:
            errors, last_error = self._errors, self._last_error
        return SourceStatus(
            kind=self.kind,
            running=self._running,
            errors=errors,
            last_error=last_error,
            ring_overflows=ring.overflows if ring is not None else 0,
            dropped_blocks=ring.dropped_blocks if ring is not None else 0,
            write_index=ring.write_index if ring is not None else 0,
            **fields,
        )


def ring_for(seconds: float, sample_rate: int, channels: int) -> RingBuffer:
    """A ring holding at least ``seconds`` of audio at ``sample_rate``."""
    return RingBuffer(next_pow2(max(1, int(np.ceil(seconds * sample_rate)))), channels)


class DeviceSource(AudioSource):
    """Base of sources backed by a PortAudio stream, with the monitor thread described in the
    module docstring. Subclasses implement ``_open_stream`` (open and start a stream whose callback
    writes the ring, return it) and ``_fallback_fill(out)`` (produce the frames the wall clock
    writes while no stream is open)."""

    def __init__(
        self,
        *,
        blocksize: int,
        stall_timeout: float,
        retry_interval: float,
        on_error: ErrorCallback | None,
    ) -> None:
        super().__init__(on_error)
        if blocksize < 0:
            raise ValueError(f"blocksize must be >= 0, got {blocksize}")
        if stall_timeout <= 0 or retry_interval <= 0:
            raise ValueError("stall_timeout and retry_interval must be positive")
        self._req_blocksize = int(blocksize)
        self.stall_timeout = float(stall_timeout)
        self.retry_interval = float(retry_interval)
        self.start_grace = 3.0  # seconds a freshly opened stream may take to deliver audio
        self._opened_at = 0.0
        self._stream: Any = None
        self._device_name: str | None = None
        self._block_size = 0
        self._latency: float | None = None
        self._fallback_reason: str | None = "not started"
        self._reconnects = 0
        self._ever_opened = False
        self._xruns = 0  # written by the callback only
        self._cb_errors = 0  # written by the callback only
        self._cb_exc: BaseException | None = None  # one-slot mailbox callback -> monitor
        self._stop_evt = threading.Event()
        self._monitor: threading.Thread | None = None
        self._fallback_buf: np.ndarray | None = None

    # -- subclass hooks --------------------------------------------------------------------
    @abstractmethod
    def _open_stream(self) -> Any:
        """Open and start the PortAudio stream; raise on failure."""

    @abstractmethod
    def _fallback_fill(self, out: np.ndarray) -> None:
        """Fill ``out`` ([frames] or [frames, channels] float32) with what the wall clock feeds."""

    def _ensure_ring(self) -> None:
        """Create the ring if opening the device did not (LiveInput with no device)."""

    def _fallback_blocksize(self) -> int:
        return self._req_blocksize or 512

    # -- callback helpers ------------------------------------------------------------------
    def _callback_failed(self, exc: BaseException) -> None:
        """Called inside a PortAudio callback's except clause: count and park, nothing else."""
        self._cb_errors += 1
        self._cb_exc = exc

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Open the device (or fall back to the wall clock) and start the monitor thread."""
        with self._lock:
            if self._running:
                return
            self._running = True
        self._stop_evt.clear()
        self._try_open(initial=True)
        self._ensure_ring()
        self._monitor = threading.Thread(
            target=self._monitor_loop, name=f"vjapp-{self.kind}-monitor", daemon=True
        )
        self._monitor.start()

    def stop(self) -> None:
        """Stop feeding the ring and close the device. Idempotent."""
        with self._lock:
            if not self._running:
                return
            self._running = False
        self._stop_evt.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5.0)
            if self._monitor.is_alive():
                logger.error("%s monitor thread did not stop within 5 s", self.kind)
            self._monitor = None
        self._detach_stream("stopped")

    def _detach_stream(self, reason: str) -> None:
        """Take the stream out and say why in one step under the lock, so a status that says
        ``fallback`` always carries its reason (status is a snapshot); then close the stream."""
        with self._lock:
            stream, self._stream = self._stream, None
            self._fallback_reason = reason
            self._device_name = None
        if stream is None:
            return
        try:
            stream.abort(ignore_errors=True)
            stream.close(ignore_errors=True)
        except Exception as exc:  # noqa: BLE001 - a dead device may fail to close
            logger.warning("%s: closing the stream failed: %s", self.kind, exc)

    def _try_open(self, initial: bool = False) -> bool:
        try:
            stream = self._open_stream()
        except Exception as exc:  # noqa: BLE001 - any failure means: stay on the wall clock
            reason = f"{type(exc).__name__}: {exc}"
            with self._lock:
                changed = self._fallback_reason != reason
                self._fallback_reason = reason
            if changed:
                logger.warning("%s: no device (%s); feeding the ring from a wall clock", self.kind, reason)
            return False
        self._opened_at = time.monotonic()
        self._stream = stream
        with self._lock:
            self._device_name = self._describe_device(stream)
            self._block_size = int(stream.blocksize)
            lat = stream.latency
            self._latency = float(lat if np.isscalar(lat) else max(lat))
            self._fallback_reason = None
            if self._ever_opened and not initial:
                self._reconnects += 1
            self._ever_opened = True
        logger.info(
            "%s: opened %r at %d Hz, block %d", self.kind, self._device_name,
            int(stream.samplerate), int(stream.blocksize),
        )
        return True

    def _describe_device(self, stream: Any) -> str:
        try:
            sd = load_sounddevice()
            dev = stream.device if np.isscalar(stream.device) else stream.device[0]
            return str(sd.query_devices(dev)["name"])
        except Exception:  # noqa: BLE001
            return str(stream.device)

    def _device_lost(self, reason: str) -> None:
        logger.warning("%s: device %r lost (%s); falling back", self.kind, self._device_name, reason)
        # The error is counted before the status flips, so whoever sees the fallback sees it too.
        self._report_error("device", AudioBackendError(f"audio device lost: {reason}"))
        self._detach_stream(f"device lost: {reason}")

    # -- the monitor thread ----------------------------------------------------------------
    def _monitor_loop(self) -> None:
        ring = self.ring
        last_index = ring.write_index + ring.dropped_blocks
        last_progress = time.monotonic()
        next_retry = last_progress + self.retry_interval
        clock: WallClock | None = None
        while not self._stop_evt.is_set():
            try:
                exc, self._cb_exc = self._cb_exc, None
                if exc is not None:
                    self._report_error("audio callback", exc, count=False)
                now = time.monotonic()
                progress = ring.write_index + ring.dropped_blocks
                if progress != last_index:
                    last_index, last_progress = progress, now
                stream = self._stream
                if stream is not None:
                    clock = None
                    block_s = (self._block_size or 0) / max(1, self.sample_rate)
                    # Some backends (PulseAudio) take a second or two to deliver the first block.
                    stalled = (
                        now - last_progress > max(self.stall_timeout, 4 * block_s)
                        and now - self._opened_at > self.start_grace
                    )
                    if not stream.active or stream.closed or stalled:
                        self._device_lost("stream stopped" if not stream.active else
                                          f"no audio for {now - last_progress:.1f} s")
                        next_retry = now + self.retry_interval
                        # Resume the timeline where the device stopped delivering.
                        clock = WallClock(self.sample_rate, t0=last_progress, max_lag=ring.capacity // 2)
                else:
                    if clock is None:
                        clock = WallClock(self.sample_rate, t0=now, max_lag=ring.capacity // 2)
                    self._feed_from_clock(clock)
                    if now >= next_retry:
                        next_retry = now + self.retry_interval
                        if self._try_open():
                            clock = None
                            last_index = ring.write_index + ring.dropped_blocks
                            last_progress = time.monotonic()
                wait = 0.005 if self._stream is None else 0.05
                self._stop_evt.wait(wait)
            except Exception as exc:  # noqa: BLE001 - report and keep the show running
                self._report_error("monitor thread", exc)
                self._stop_evt.wait(0.1)

    def _feed_from_clock(self, clock: WallClock) -> None:
        ring = self.ring
        bs = self._fallback_blocksize()
        if self._fallback_buf is None or self._fallback_buf.shape[0] != bs:
            shape = (bs,) if ring.channels == 1 else (bs, ring.channels)
            self._fallback_buf = np.zeros(shape, dtype=np.float32)
        due = clock.due()
        while due > 0 and not self._stop_evt.is_set():
            n = min(due, bs)
            out = self._fallback_buf[:n]
            self._fallback_fill(out)
            ring.write(out)
            clock.advance(n)
            due -= n

    def _device_status_fields(self) -> dict[str, Any]:
        with self._lock:
            return dict(
                device=self._device_name if self._stream is not None else None,
                block_size=self._block_size if self._stream is not None else self._fallback_blocksize(),
                latency=self._latency if self._stream is not None else None,
                fallback=self._stream is None,
                fallback_reason=self._fallback_reason,
                reconnects=self._reconnects,
                xruns=self._xruns,
            )

    def _base_status(self, ring: RingBuffer | None, **fields: Any) -> SourceStatus:
        st = super()._base_status(ring, **fields)
        # Callback errors are counted in the callback itself (no locks there): add them.
        return dataclasses.replace(st, errors=st.errors + self._cb_errors)
