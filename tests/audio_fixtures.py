"""Helpers that write test audio files: good files through soundfile/PyAV, bad ones byte by byte."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np


def tone(
    sample_rate: int = 44_100,
    seconds: float = 0.5,
    freq: float = 440.0,
    channels: int = 1,
    amp: float = 0.5,
) -> np.ndarray:
    """A sine, ``[frames, channels]`` float32; channel c is multiplied by (-1)**c so channels
    differ."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    x = amp * np.sin(2 * np.pi * freq * t)
    sign = (-1.0) ** np.arange(channels)
    return (x[:, None] * sign[None, :]).astype(np.float32)


def ramp(frames: int, channels: int = 1) -> np.ndarray:
    """Frame i holds 0.9 * i / frames (+ 0.001 * channel): each sample says where it came from."""
    base = 0.9 * np.arange(frames, dtype=np.float64) / frames
    x = base[:, None] + 0.001 * np.arange(channels)[None, :]
    return x.astype(np.float32)


def write_sf(path: Path, data: np.ndarray, sample_rate: int, fmt: str, subtype: str | None = None) -> Path:
    """Write ``data`` with soundfile (WAV, FLAC, OGG, MP3...)."""
    import soundfile as sf

    sf.write(str(path), data, sample_rate, format=fmt, subtype=subtype)
    return path


def write_wav_raw(
    path: Path,
    sample_rate: int,
    channels: int,
    data: bytes,
    bits: int = 16,
    float_format: bool = False,
    declared_data_bytes: int | None = None,
) -> Path:
    """A RIFF/WAVE file written byte by byte, so headers soundfile refuses to write (rate 0,
    33 channels, 4 kHz, a data chunk longer than the file) can be made."""
    block_align = channels * bits // 8
    fmt_tag = 3 if float_format else 1
    fmt = struct.pack("<HHIIHH", fmt_tag, channels, sample_rate, sample_rate * block_align, block_align, bits)
    size = len(data) if declared_data_bytes is None else declared_data_bytes
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return path


def pcm16(x: np.ndarray) -> bytes:
    """float [-1, 1] ``[frames, channels]`` -> interleaved little-endian int16 bytes."""
    return (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()


def write_m4a(path: Path, data: np.ndarray, sample_rate: int) -> Path:
    """AAC in an MP4 container via PyAV (soundfile cannot write or read it)."""
    import av

    layout = "mono" if data.shape[1] == 1 else "stereo"
    with av.open(str(path), "w") as c:
        stream = c.add_stream("aac", rate=sample_rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data.T), format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)
    return path


def peak_frequency(x: np.ndarray, sample_rate: float) -> float:
    """Frequency (Hz) of the largest FFT bin of a mono signal (Hann window)."""
    x = np.asarray(x, dtype=np.float64)
    spec = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1.0 / sample_rate)[spec.argmax()])
