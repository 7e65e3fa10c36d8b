"""Regenerate ``demo.ogg``: 36 s of synthesized nature sounds the app plays when no source is chosen.

The demo moves through the sound types of synthscapes (DESIGN.md section 5), so a performer (and
the models) hear clearly different scenes: light rain, a thunderstorm, wind, fire crackling,
underwater bubbling, a waterfall with splashes. Everything is numpy noise shaped in the frequency
domain plus enveloped events, seeded, so the same samples come out every time (the OGG bytes differ
only in the container's random stream serial number):

    python resources/demo/make_demo.py            # writes resources/demo/demo.ogg
    python resources/demo/make_demo.py -o x.flac  # any format soundfile writes
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import numpy as np
import soundfile as sf

SAMPLE_RATE = 22_050
SCENE_SECONDS = 6.0
FADE_SECONDS = 1.0
SEED = 20261122


def shaped_noise(rng: np.random.Generator, n: int, gain_of_hz: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """White noise filtered by a magnitude response given per frequency (Hz), unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    y = np.fft.irfft(spectrum * gain_of_hz(freqs), n)
    return y / (np.sqrt(np.mean(y**2)) + 1e-12)


def lowpass(fc: float, order: float = 2.0) -> Callable[[np.ndarray], np.ndarray]:
    return lambda f: 1.0 / np.sqrt(1.0 + (f / fc) ** (2 * order))


def highpass(fc: float, order: float = 2.0) -> Callable[[np.ndarray], np.ndarray]:
    return lambda f: 1.0 / np.sqrt(1.0 + (fc / np.maximum(f, 1e-3)) ** (2 * order))


def bandpass(lo: float, hi: float) -> Callable[[np.ndarray], np.ndarray]:
    lp, hp = lowpass(hi), highpass(lo)
    return lambda f: lp(f) * hp(f)


def smooth_envelope(rng: np.random.Generator, n: int, points: int, lo: float, hi: float) -> np.ndarray:
    """A slow random gain curve between ``lo`` and ``hi`` (cosine-interpolated control points)."""
    knots = rng.uniform(lo, hi, points)
    x = np.linspace(0, points - 1, n)
    i = np.minimum(x.astype(int), points - 2)
    frac = (1 - np.cos(np.pi * (x - i))) / 2
    return knots[i] * (1 - frac) + knots[i + 1] * frac


def add_event(out: np.ndarray, start: int, event: np.ndarray) -> None:
    end = min(out.size, start + event.size)
    if end > start:
        out[start:end] += event[: end - start]


def rain(rng: np.random.Generator, n: int) -> np.ndarray:
    bed = 0.12 * shaped_noise(rng, n, bandpass(800, 9000)) * smooth_envelope(rng, n, 6, 0.7, 1.0)
    for start in rng.integers(0, n, size=int(n / SAMPLE_RATE * 90)):  # ~90 drops per second
        length = int(SAMPLE_RATE * rng.uniform(0.004, 0.02))
        t = np.arange(length) / SAMPLE_RATE
        f = rng.uniform(2500, 7000)
        add_event(bed, int(start), rng.uniform(0.05, 0.25) * np.sin(2 * np.pi * f * t) * np.exp(-t * 300))
    return bed


def thunderstorm(rng: np.random.Generator, n: int) -> np.ndarray:
    out = 0.8 * rain(rng, n)
    for start_s in (0.6, 3.4):
        start = int(start_s * SAMPLE_RATE)
        length = int(SAMPLE_RATE * 2.6)
        t = np.arange(length) / SAMPLE_RATE
        rumble = shaped_noise(rng, length, lowpass(120, 3)) * (1 - np.exp(-t * 12)) * np.exp(-t * 1.4)
        wobble = 1 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6))
        crack = shaped_noise(rng, length, highpass(1500)) * np.exp(-t * 30)
        add_event(out, start, 0.75 * rumble * wobble + 0.35 * crack)
    return out


def wind(rng: np.random.Generator, n: int) -> np.ndarray:
    out = np.zeros(n)
    gusts = smooth_envelope(rng, n, 7, 0.1, 1.0)
    for lo, hi in ((150, 400), (300, 800), (600, 1500)):
        out += shaped_noise(rng, n, bandpass(lo, hi)) * smooth_envelope(rng, n, 9, 0.2, 1.0)
    return 0.18 * out * gusts


def fire(rng: np.random.Generator, n: int) -> np.ndarray:
    out = 0.1 * shaped_noise(rng, n, lowpass(400, 2)) * smooth_envelope(rng, n, 8, 0.5, 1.0)
    density = smooth_envelope(rng, n, 6, 5, 40)  # crackles per second, changing
    p = density / SAMPLE_RATE
    for start in np.nonzero(rng.random(n) < p)[0]:
        length = int(SAMPLE_RATE * rng.uniform(0.002, 0.012))
        burst = rng.standard_normal(length) * np.exp(-np.arange(length) / (length / 4))
        add_event(out, int(start), rng.uniform(0.2, 0.9) * burst)
    return out


def bubbles(rng: np.random.Generator, n: int) -> np.ndarray:
    out = 0.08 * shaped_noise(rng, n, lowpass(250, 3))  # muffled underwater bed
    for start in rng.integers(0, n, size=int(n / SAMPLE_RATE * 14)):
        length = int(SAMPLE_RATE * rng.uniform(0.04, 0.12))
        t = np.arange(length) / SAMPLE_RATE
        f0 = rng.uniform(300, 1100)
        phase = 2 * np.pi * np.cumsum(f0 * np.exp(t * rng.uniform(4, 10))) / SAMPLE_RATE  # rising chirp
        env = np.sin(np.pi * t / t[-1]) ** 2 * np.exp(-t * 20)
        add_event(out, int(start), rng.uniform(0.2, 0.5) * np.sin(phase) * env)
    return out


def waterfall(rng: np.random.Generator, n: int) -> np.ndarray:
    roar = shaped_noise(rng, n, lambda f: lowpass(2500, 1)(f) * highpass(60)(f))
    out = 0.3 * roar * smooth_envelope(rng, n, 10, 0.85, 1.0)
    for start in rng.integers(0, n, size=int(n / SAMPLE_RATE * 2)):  # splashes
        length = int(SAMPLE_RATE * 0.35)
        t = np.arange(length) / SAMPLE_RATE
        add_event(out, int(start), 0.4 * shaped_noise(rng, length, bandpass(400, 5000)) * np.exp(-t * 10))
    return out


SCENES: tuple[tuple[str, Callable[[np.random.Generator, int], np.ndarray]], ...] = (
    ("raining", rain),
    ("thunderstorm", thunderstorm),
    ("wind", wind),
    ("fire crackling", fire),
    ("underwater bubbling", bubbles),
    ("waterfall", waterfall),
)


def make_demo(seed: int = SEED) -> np.ndarray:
    """The whole demo, mono float32 in [-1, 1]: the scenes in order with 1 s crossfades."""
    rng = np.random.default_rng(seed)
    n = int(SCENE_SECONDS * SAMPLE_RATE)
    fade = int(FADE_SECONDS * SAMPLE_RATE)
    total = len(SCENES) * n + fade
    out = np.zeros(total)
    ramp_in = np.sin(np.linspace(0, np.pi / 2, fade)) ** 2
    for k, (_, scene) in enumerate(SCENES):
        x = scene(rng, n + fade)
        x[:fade] *= ramp_in
        x[-fade:] *= ramp_in[::-1]
        out[k * n : k * n + n + fade] += x
    out *= 0.8 / np.max(np.abs(out))
    return out.astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).with_name("demo.ogg"))
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    audio = make_demo(args.seed)
    sf.write(args.output, audio, SAMPLE_RATE)
    print(f"wrote {args.output}: {audio.size / SAMPLE_RATE:.1f} s at {SAMPLE_RATE} Hz, "
          f"{args.output.stat().st_size / 1024:.0f} KiB; scenes: {', '.join(name for name, _ in SCENES)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
