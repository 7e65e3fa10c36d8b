"""LiveInput: a PortAudio input stream copied into the ring.

The sample rate and block size are those of the OPENED stream (``stream.samplerate``,
``stream.blocksize``), never a constant; the ring is created at that rate on the first successful
open and later reopens ask for the same rate so the ring's timeline stays consistent. The callback
copies ``indata`` into the ring and counts PortAudio's status flags: nothing else.

Device loss (stream no longer active, or no callback for ``stall_timeout`` s) switches to silence
fed on a wall clock (the ring keeps advancing, so the engine keeps running) and the device is
retried every ``retry_interval`` s; ``status`` reports all of it. If no device can be opened at
``start()``, the ring runs at ``samplerate`` (or 48 kHz when none was asked for) until one appears.
Note: PortAudio enumerates devices once at initialisation, so a retry finds a device that
reappears under the same name/index, not one plugged in for the first time.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

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

__all__ = ["LiveInput"]

NO_DEVICE_SAMPLE_RATE = 48_000  # only used when no device was ever opened and none was requested


class LiveInput(DeviceSource):
    """Record from an input device into a ring.

    Args:
        device: None = the default input, an index, or a case-insensitive name substring.
        samplerate: requested rate; None = the device's default rate.
        channels: requested channels; None = the device's maximum, up to 2.
        blocksize: requested frames per callback (0 = PortAudio's choice); the opened value is in
            ``status.block_size``.
        latency: PortAudio latency setting ("low", "high" or seconds).
        ring_seconds: ring capacity in seconds.
        stall_timeout: no callback for this long (s) = device lost.
        retry_interval: seconds between reopen attempts while on the silence fallback.
    """

    kind = "live"

    def __init__(
        self,
        device: int | str | None = None,
        *,
        samplerate: float | None = None,
        channels: int | None = 1,
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
        if channels is not None and not 1 <= channels <= 32:
            raise ValueError(f"channels must be 1..32 or None, got {channels}")
        if samplerate is not None and not 8_000 <= samplerate <= 384_000:
            raise ValueError(f"samplerate must be 8000..384000 Hz or None, got {samplerate}")
        self.device = device
        self.req_samplerate = samplerate
        self.req_channels = channels
        self.latency_setting = latency
        self.ring_seconds = float(ring_seconds)
        self._ring: RingBuffer | None = None
        self._sample_rate: int | None = None
        self._channels: int | None = None

    # -- AudioSource ----------------------------------------------------------------------
    @property
    def ring(self) -> RingBuffer:
        if self._ring is None:
            raise RuntimeError("LiveInput has no ring before start(): its rate comes from the device")
        return self._ring

    @property
    def sample_rate(self) -> int:
        if self._sample_rate is None:
            raise RuntimeError("LiveInput.sample_rate is known after start()")
        return self._sample_rate

    @property
    def channels(self) -> int:
        if self._channels is None:
            raise RuntimeError("LiveInput.channels is known after start()")
        return self._channels

    @property
    def status(self) -> SourceStatus:
        return self._base_status(
            self._ring,
            sample_rate=self._sample_rate or 0,
            channels=self._channels or 0,
            **self._device_status_fields(),
        )

    # -- device ---------------------------------------------------------------------------
    def _ensure_ring(self) -> None:
        if self._ring is None:
            self._sample_rate = int(self.req_samplerate or NO_DEVICE_SAMPLE_RATE)
            self._channels = int(self.req_channels or 1)
            self._ring = ring_for(self.ring_seconds, self._sample_rate, self._channels)
            logger.warning(
                "live input: no device at start; silence at %d Hz until one opens", self._sample_rate
            )

    def _open_stream(self) -> Any:
        sd = load_sounddevice()
        dev = resolve_device(self.device, "input")
        if self._ring is not None:  # reopen: keep the ring's rate and layout
            rate: float | None = self._sample_rate
            channels = self._channels
        else:
            rate = self.req_samplerate
            channels = self.req_channels or min(2, dev.max_input_channels)
        assert channels is not None
        if dev.max_input_channels < channels:
            raise AudioBackendError(
                f"device {dev.name!r} has {dev.max_input_channels} input channels, need {channels}"
            )
        stream = sd.InputStream(
            samplerate=rate,
            blocksize=self._req_blocksize,
            device=dev.index,
            channels=channels,
            dtype="float32",
            latency=self.latency_setting,
            callback=self._callback,
        )
        try:
            opened_rate = int(round(stream.samplerate))
            if self._ring is None:
                self._sample_rate = opened_rate
                self._channels = int(stream.channels)
                self._ring = ring_for(self.ring_seconds, opened_rate, self._channels)
            elif opened_rate != self._sample_rate:
                raise AudioBackendError(
                    f"device {dev.name!r} opened at {opened_rate} Hz, the ring runs at "
                    f"{self._sample_rate} Hz"
                )
            stream.start()
        except BaseException:
            stream.close(ignore_errors=True)
            raise
        return stream

    def _callback(self, indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        """PortAudio input callback: copy into the ring, count flags. Never raises."""
        try:
            if status:
                self._xruns += 1
            self._ring.write(indata)  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - never raise into PortAudio
            self._callback_failed(exc)

    def _fallback_fill(self, out: np.ndarray) -> None:
        out.fill(0.0)
