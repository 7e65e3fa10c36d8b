"""Synthetic drum loops of known tempo: kick, hi-hat and bass, for the beat benchmark and tests.

Every hit's time is known exactly (:class:`Loop.kicks`, :class:`Loop.hats`), so what the rhythm
layer does can be measured against it. The sounds are simple but shaped like the real thing: a
kick is a sine sweeping 150 -> 50 Hz with a fast decay and a click, a hat a burst of high-passed
noise of 40 ms, the bass a 55 Hz saw-ish tone on the off-beats. Seeds make the noise repeatable.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Loop", "make_loop", "kick", "hat", "bass_note"]


@dataclass
class Loop:
    """A rendered loop: mono float32 samples and the times (s) of its hits."""

    samples: np.ndarray
    sample_rate: int
    kicks: list[float] = field(default_factory=list)
    hats: list[float] = field(default_factory=list)
    bass: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.samples.size / self.sample_rate


def kick(sample_rate: int, seconds: float = 0.35) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    freq = 50.0 + 100.0 * np.exp(-t / 0.03)
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    body = np.sin(phase) * np.exp(-t / 0.12)
    click = np.exp(-t / 0.002) * 0.3
    return (body + click).astype(np.float32)


def hat(sample_rate: int, rng: np.random.Generator, seconds: float = 0.04) -> np.ndarray:
    n = int(seconds * sample_rate)
    noise = rng.standard_normal(n)
    hp = np.diff(noise, prepend=0.0)  # first difference: a crude high-pass
    hp = np.diff(hp, prepend=0.0)
    t = np.arange(n) / sample_rate
    return (0.25 * hp * np.exp(-t / 0.012)).astype(np.float32)


def bass_note(sample_rate: int, seconds: float, freq: float = 55.0) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = np.sin(2 * np.pi * freq * t) + 0.3 * np.sin(4 * np.pi * freq * t)
    env = np.minimum(1.0, t / 0.01) * np.exp(-t / 0.3)
    return (0.35 * tone * env).astype(np.float32)


def _add(out: np.ndarray, sound: np.ndarray, at: int) -> None:
    end = min(out.size, at + sound.size)
    if at < out.size:
        out[at:end] += sound[: end - at]


def make_loop(
    bpm: float | list[tuple[float, float]],
    seconds: float,
    sample_rate: int = 44_100,
    kicks: bool = True,
    hats: bool = False,
    bass: bool = False,
    level: float = 0.8,
    seed: int = 0,
    start: float = 0.0,
) -> Loop:
    """A loop of ``seconds``: kick on every beat, hats on the eighths, bass on the off-beats.

    ``bpm`` is a tempo, or a list of ``(from_second, bpm)`` for tempo changes. ``start`` delays
    the first beat. ``level`` scales the whole mix (its peak is about ``level``).
    """
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * sample_rate), dtype=np.float32)
    changes = [(0.0, float(bpm))] if isinstance(bpm, (int, float)) else sorted((float(a), float(b)) for a, b in bpm)
    loop = Loop(out, sample_rate)
    k = kick(sample_rate)
    t = start
    while t < seconds:
        tempo = [b for a, b in changes if a <= t + 1e-9][-1]
        period = 60.0 / tempo
        at = int(round(t * sample_rate))
        if kicks:
            _add(out, k, at)
            loop.kicks.append(t)
        if hats:
            _add(out, hat(sample_rate, rng), at)
            _add(out, hat(sample_rate, rng) * 0.7, int(round((t + period / 2) * sample_rate)))
            loop.hats.extend([t, t + period / 2])
        if bass:
            _add(out, bass_note(sample_rate, period / 2), int(round((t + period / 2) * sample_rate)))
            loop.bass.append(t + period / 2)
        t += period
    peak = float(np.abs(out).max()) or 1.0
    loop.samples = (out * (level / peak)).astype(np.float32)
    return loop
