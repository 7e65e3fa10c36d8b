"""Sound synthesis primitives for synthscapes: filtered noise, envelopes, event trains.

Everything is numpy, vectorised over samples, and draws its randomness from a caller's
``np.random.Generator`` so a clip is a pure function of its seed. Filters work in the frequency
domain (one ``rfft``/``irfft`` pair over the whole clip, zero phase): clips are a few seconds long,
so this is both simpler and faster than running IIR filters sample by sample. The filters are
circular; they are applied to stationary noise *before* envelopes are multiplied in, so nothing
loud wraps from the end of a clip to its start.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "white",
    "coloured_noise",
    "band",
    "smooth_curve",
    "event_envelope",
    "impulse_train",
    "fft_convolve",
    "decaying_tone",
    "frame_means",
    "normalize_peak",
]


def white(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` samples of unit-variance white noise, float32."""
    return rng.standard_normal(n, dtype=np.float32)


def _gain(freqs: np.ndarray, lo: float | None, hi: float | None, order: int, tilt: float) -> np.ndarray:
    """Magnitude response: Butterworth-like high-pass at ``lo``, low-pass at ``hi``, ``f**tilt`` slope."""
    f = np.maximum(freqs, 1.0)
    g = np.ones_like(f)
    if lo is not None:
        g /= np.sqrt(1.0 + (lo / f) ** (2 * order))
    if hi is not None:
        g /= np.sqrt(1.0 + (f / hi) ** (2 * order))
    if tilt:
        g *= (f / 1000.0) ** tilt
    g[0] = 0.0  # no DC
    return g


def band(
    x: np.ndarray, sr: int, lo: float | None = None, hi: float | None = None, order: int = 2, tilt: float = 0.0
) -> np.ndarray:
    """Zero-phase band-pass of ``x`` [S] (either edge optional) with an optional spectral tilt
    (``tilt=-0.5`` pink, ``-1`` brown), rescaled to unit RMS so levels are set by the caller."""
    spec = np.fft.rfft(x)
    spec *= _gain(np.fft.rfftfreq(x.shape[0], 1.0 / sr), lo, hi, order, tilt)
    y = np.fft.irfft(spec, n=x.shape[0]).astype(np.float32)
    rms = float(np.sqrt(np.mean(y * y)))
    return y / rms if rms > 0 else y


def coloured_noise(
    rng: np.random.Generator, n: int, sr: int, lo: float | None = None, hi: float | None = None,
    tilt: float = 0.0, order: int = 2,
) -> np.ndarray:
    """Unit-RMS noise [n] band-limited to [lo, hi] Hz with spectral slope ``f**tilt``."""
    return band(white(rng, n), sr, lo, hi, order, tilt)


def smooth_curve(
    rng: np.random.Generator, n: int, rate: float, knots_per_second: float, lo: float, hi: float
) -> np.ndarray:
    """A slowly varying random curve [n] in [lo, hi] (values at random knots, cosine-interpolated).

    ``rate`` is the curve's sample rate; ``knots_per_second`` sets how fast it wanders.
    """
    seconds = n / rate
    k = max(2, int(np.ceil(seconds * knots_per_second)) + 2)
    values = rng.uniform(lo, hi, size=k).astype(np.float32)
    pos = np.arange(n, dtype=np.float64) / rate * knots_per_second  # knot coordinate of each sample
    i = np.minimum(pos.astype(np.int64), k - 2)
    frac = (pos - i).astype(np.float32)
    w = 0.5 - 0.5 * np.cos(np.pi * frac)
    return values[i] * (1 - w) + values[i + 1] * w


def event_envelope(
    n: int, sr: int, times: np.ndarray, amps: np.ndarray, attack: float | np.ndarray, decay: float | np.ndarray
) -> np.ndarray:
    """Sum of attack/decay envelopes [n]: each event rises linearly over ``attack`` seconds from its
    time, then decays exponentially with time constant ``decay`` (seconds, per event or shared)."""
    env = np.zeros(n, np.float32)
    attack = np.broadcast_to(np.asarray(attack, np.float64), times.shape)
    decay = np.broadcast_to(np.asarray(decay, np.float64), times.shape)
    for t0, a, att, dec in zip(times, amps, attack, decay):
        start = int(round(t0 * sr))
        if start >= n:
            continue
        stop = min(n, start + int((att + 7 * dec) * sr) + 1)
        t = np.arange(stop - start, dtype=np.float32) / sr
        shape = np.where(t < att, t / max(att, 1e-6), np.exp(-(t - att) / dec)).astype(np.float32)
        lo = max(start, 0)
        env[lo:stop] += a * shape[lo - start :]
    return env


def impulse_train(n: int, sr: int, times: np.ndarray, amps: np.ndarray) -> np.ndarray:
    """Impulses [n] of ``amps`` at ``times`` (seconds); several in one sample add up."""
    x = np.zeros(n, np.float32)
    idx = np.round(np.asarray(times) * sr).astype(np.int64)
    keep = (idx >= 0) & (idx < n)
    np.add.at(x, idx[keep], np.asarray(amps, np.float32)[keep])
    return x


def fft_convolve(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Linear convolution of ``x`` [n] with ``kernel`` [k], truncated to [n] (causal)."""
    n = x.shape[0] + kernel.shape[0]
    size = 1 << int(np.ceil(np.log2(n)))
    y = np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(kernel, size), size)
    return y[: x.shape[0]].astype(np.float32)


def decaying_tone(sr: int, freq: float, decay: float, chirp: float = 0.0, seconds: float | None = None) -> np.ndarray:
    """A damped sinusoid starting at ``freq`` Hz whose pitch glides by a factor ``1 + chirp`` per
    decay time constant (bubbles rise in pitch, squelches fall); unit peak, ~6 time constants long."""
    length = seconds if seconds is not None else 6 * decay
    t = np.arange(max(1, int(length * sr)), dtype=np.float64) / sr
    inst = freq * (1.0 + chirp * t / decay)  # instantaneous frequency
    phase = 2 * np.pi * np.cumsum(inst) / sr
    return (np.sin(phase) * np.exp(-t / decay)).astype(np.float32)


def frame_means(x: np.ndarray, sr: int, fps: float, frames: int) -> np.ndarray:
    """Mean of ``x`` [S] over each video frame's span [n/fps, (n+1)/fps) -> [frames] float32."""
    edges = np.minimum(np.round(np.arange(frames + 1) * sr / fps).astype(np.int64), x.shape[0])
    c = np.concatenate([[0.0], np.cumsum(x, dtype=np.float64)])
    width = np.maximum(edges[1:] - edges[:-1], 1)
    return ((c[edges[1:]] - c[edges[:-1]]) / width).astype(np.float32)


def normalize_peak(x: np.ndarray, peak: float = 0.9) -> np.ndarray:
    """Scale ``x`` so its largest magnitude is ``peak`` (silence stays silence); float32, finite."""
    x = np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    m = float(np.abs(x).max()) if x.size else 0.0
    return x * (peak / m) if m > 0 else x
