"""The nine synthscapes scenes: for each Landscape class, one sound and the picture it drives.

Each scene first draws its random parameters, then builds *driver curves* at the audio rate
(thunder loudness, crackle density, rain density, wind strength, bubble and splash events, ...),
synthesises the sound from them, and finally renders the picture from the same curves averaged
over each video frame's span ``[n/fps, (n+1)/fps)``. So a frame shows what is heard while it is
on screen: the flash is as bright as the thunder is loud, the flames flicker with the crackles,
a bubble appears when its blip sounds. Sound and picture of one class live side by side here so
the coupling can be read in one place.

Classes are kept apart on purpose, by colour and layout (dark blue sky over hills; a white
column between mossy cliffs; a red cone; brown mud; blue sky over green grass; flames on black;
grey rain over a street; deep blue water; turquoise sea under a light sky) and by sound
(low rumble with cracks; steady broadband roar; sub-bass rumble with eruptions; wet low-mid
squelches; swelling band noise with a whistle; sparse clicks over a soft roar; dense
high-frequency hiss and patter; pitched rising blips; bright bursts with droplets).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .synth_audio import (
    coloured_noise,
    decaying_tone,
    event_envelope,
    fft_convolve,
    frame_means,
    impulse_train,
    smooth_curve,
    white,
)
from .synth_video import (
    blur3,
    grid,
    jitter_colour,
    mix,
    periodic_noise,
    scroll,
    splat,
    vertical_gradient,
)

__all__ = ["SceneContext", "SceneResult", "SCENES", "CAPTIONS"]


@dataclass
class SceneContext:
    """What a scene renders: sizes and rates, and the clip's random generator."""

    rng: np.random.Generator
    seconds: float
    fps: float
    sample_rate: int
    size: int

    @property
    def frames(self) -> int:
        return max(1, int(round(self.seconds * self.fps)))

    @property
    def samples(self) -> int:
        return max(1, int(round(self.seconds * self.sample_rate)))

    @property
    def times(self) -> np.ndarray:
        """Start time (s) of each frame [T]."""
        return np.arange(self.frames, dtype=np.float32) / np.float32(self.fps)

    def per_frame(self, curve: np.ndarray) -> np.ndarray:
        """An audio-rate curve [S] averaged over each frame's span -> [T]."""
        return frame_means(curve, self.sample_rate, self.fps, self.frames)


@dataclass
class SceneResult:
    audio: np.ndarray  # [S] float32, not yet normalised
    frames: np.ndarray  # [T, H, W, 3] float32 in [0, 1]
    drive: np.ndarray  # [T] float32: the main sound parameter each frame shows
    variant: str  # palette / time-of-day variant
    events: list[float] = field(default_factory=list)  # times (s) of the class's sound events
    extra: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------- helpers
def _event_times(rng: np.random.Generator, seconds: float, per_second: float, margin: float = 0.25) -> np.ndarray:
    """Sorted event times in [0.05, seconds - margin]: Poisson count, at least one."""
    hi = max(0.1, seconds - margin)
    n = max(1, int(rng.poisson(seconds * per_second)))
    return np.sort(rng.uniform(0.05, hi, n)).astype(np.float64)


def _thinned_times(rng: np.random.Generator, seconds: float, rate: np.ndarray, sr: int, max_rate: float) -> np.ndarray:
    """Times of an inhomogeneous Poisson process whose rate (events/s) follows ``rate`` [S]."""
    cand = np.sort(rng.uniform(0.0, seconds, rng.poisson(max_rate * seconds)))
    idx = np.minimum((cand * sr).astype(np.int64), rate.shape[0] - 1)
    keep = rng.random(cand.shape[0]) < rate[idx] / max_rate
    return cand[keep]


def _add_at(dst: np.ndarray, src: np.ndarray, start: int, gain: float = 1.0) -> None:
    """dst[start:start+len(src)] += gain * src, clipped to dst's bounds."""
    if start >= dst.shape[0]:
        return
    stop = min(dst.shape[0], start + src.shape[0])
    dst[start:stop] += gain * src[: stop - start]


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _colour_ramp(v: np.ndarray, stops: list[tuple[float, tuple[float, float, float]]]) -> np.ndarray:
    """Map ``v`` [...] in [0, 1] through piecewise-linear colour stops -> [..., 3]."""
    xs = np.array([s[0] for s in stops], np.float32)
    out = np.empty(v.shape + (3,), np.float32)
    for c in range(3):
        out[..., c] = np.interp(v, xs, np.array([s[1][c] for s in stops], np.float32))
    return out


def _frames_of(static: np.ndarray, t: int) -> np.ndarray:
    """A static [H, W, 3] layer repeated over T frames (a writable copy)."""
    return np.repeat(static[None], t, axis=0)


# ------------------------------------------------------------------------------- 1 thunderstorm
def thunderstorm(c: SceneContext) -> SceneResult:
    rng, sr, S, T, H = c.rng, c.sample_rate, c.samples, c.frames, c.size
    variant = "night" if rng.random() < 0.5 else "dusk"
    times = _event_times(rng, c.seconds, rng.uniform(0.4, 0.7))
    amps = rng.uniform(0.55, 1.0, times.shape[0])
    decays = rng.uniform(0.3, 0.7, times.shape[0])
    env = event_envelope(S, sr, times, amps, 0.01, decays)
    roll = 0.65 + 0.35 * smooth_curve(rng, S, sr, 7.0, 0.0, 1.0)  # rolling of the rumble
    loud = env * roll  # thunder loudness [S]
    crack_env = event_envelope(S, sr, times, amps, 0.002, 0.05)
    audio = (
        loud * coloured_noise(rng, S, sr, 30, 320, tilt=-1.0)
        + 0.5 * crack_env * coloured_noise(rng, S, sr, 700, 7000)
        + 0.035 * coloured_noise(rng, S, sr, 1500, 8000, tilt=-0.5)  # distant rain
        + 0.03 * coloured_noise(rng, S, sr, 40, 200)
    )
    flash = np.clip(1.6 * c.per_frame(loud), 0.0, 1.3)  # [T] flash brightness follows loudness

    if variant == "night":
        top, horizon = jitter_colour(rng, (0.03, 0.04, 0.10)), jitter_colour(rng, (0.15, 0.17, 0.26))
    else:
        top, horizon = jitter_colour(rng, (0.09, 0.06, 0.15)), jitter_colour(rng, (0.30, 0.22, 0.30))
    y, x = grid(H, H)
    sky = vertical_gradient(top, horizon, H, H, gamma=0.8)
    clouds_tex = periodic_noise(rng, H, 2 * H, 3, 6)
    speed = rng.uniform(0.03, 0.08) * H  # px/s
    clouds = _smoothstep(0.35, 0.75, scroll(clouds_tex, np.zeros(T), c.times * speed, H, H))  # [T,H,W]
    frames = _frames_of(sky, T)
    fl = flash[:, None, None, None]
    cloud_col = jitter_colour(rng, (0.10, 0.10, 0.14)) + fl * np.array([0.6, 0.6, 0.75], np.float32)
    frames = frames + fl * np.array([0.5, 0.5, 0.62], np.float32) * (1.0 - 0.5 * y)[None, :, :, None]
    frames = mix(frames, cloud_col, 0.75 * clouds)
    # Lightning bolts: a jagged path from the clouds to the hills while the thunder starts.
    bolt = np.zeros((T, H, H), np.float32)
    rows = np.arange(int(0.75 * H), dtype=np.float32)
    for t0, a in zip(times, amps):
        x_path = rng.uniform(0.2, 0.8) * H + np.cumsum(rng.normal(0.0, 0.9, rows.shape[0]))
        on = np.nonzero((c.times + 1.0 / c.fps > t0) & (c.times < t0 + 0.15))[0]
        if on.size:
            tt = np.repeat(on, rows.shape[0])
            bolt += splat(T, H, H, tt, np.tile(rows, on.size), np.tile(x_path, on.size), 1.5 * a)
    frames = mix(frames, np.array([0.95, 0.95, 1.0], np.float32), np.clip(blur3(bolt) * 2.0, 0, 1))
    # Hills in front of everything.
    phase = rng.uniform(0, 2 * np.pi, 2)
    ridge = 0.74 + 0.05 * np.sin(2 * np.pi * 1.3 * x + phase[0]) + 0.025 * np.sin(2 * np.pi * 3.7 * x + phase[1])
    hills = (y > ridge).astype(np.float32)  # [H, W]
    hill_col = jitter_colour(rng, (0.02, 0.04, 0.03))
    frames = mix(frames, hill_col + 0.1 * fl, np.broadcast_to(hills, (T, H, H)))
    return SceneResult(audio, frames, flash, variant, times.tolist(), {"bolts": float(times.shape[0])})


# ------------------------------------------------------------------------------- 2 waterfall
def waterfall(c: SceneContext) -> SceneResult:
    rng, sr, S, T, H = c.rng, c.sample_rate, c.samples, c.frames, c.size
    variant = "sunny" if rng.random() < 0.6 else "cloudy"
    level = smooth_curve(rng, S, sr, 1.2, 0.45, 1.0)  # roar level [S]
    spray = 0.7 + 0.3 * smooth_curve(rng, S, sr, 25.0, 0.0, 1.0)
    audio = level * (
        coloured_noise(rng, S, sr, 120, 5000, tilt=-0.3)
        + 0.35 * spray * coloured_noise(rng, S, sr, 2000, 9000)
        + 0.5 * coloured_noise(rng, S, sr, 30, 150, tilt=-1.0)
    )
    roar = c.per_frame(level)  # [T]

    y, x = grid(H, H)
    sky_top = (0.55, 0.72, 0.9) if variant == "sunny" else (0.6, 0.63, 0.66)
    frames_static = vertical_gradient(jitter_colour(rng, sky_top), jitter_colour(rng, (0.85, 0.9, 0.92)), H, H)
    rock_tex = periodic_noise(rng, H, H, 4, 4)
    rock = mix(
        np.broadcast_to(jitter_colour(rng, (0.13, 0.17, 0.11)), (H, H, 3)),
        jitter_colour(rng, (0.30, 0.34, 0.24)),
        rock_tex,
    )
    cliff_top = 0.12 + 0.05 * np.sin(2 * np.pi * x * 2.0 + rng.uniform(0, 6))
    frames_static = mix(frames_static, rock, (y > cliff_top).astype(np.float32))
    cx = 0.5 + rng.uniform(-0.08, 0.08)
    half = rng.uniform(0.11, 0.16) * (1.0 + 0.35 * y)  # [H, 1] widening downwards
    lip, pool_y = 0.14, 0.78
    column = (np.abs(x - cx) < half) & (y > lip) & (y < pool_y)  # [H, W]
    pool = (y >= pool_y).astype(np.float32) * np.ones_like(x)
    frames = _frames_of(mix(frames_static, jitter_colour(rng, (0.10, 0.33, 0.38)), pool), T)
    # Falling streaks: a texture fine across, coarse along, scrolled downwards.
    streak_tex = periodic_noise(rng, 2 * H, H, 1, 24, octaves=2)
    fall_speed = (1.0 + 1.2 * roar) * H  # px/s, faster when louder
    offset = -np.cumsum(fall_speed) / c.fps
    streaks = scroll(streak_tex, offset, np.zeros(T), H, H)  # [T, H, W]
    water = mix(
        np.broadcast_to(np.array([0.5, 0.72, 0.82], np.float32), (T, H, H, 3)),
        np.array([0.97, 0.99, 1.0], np.float32),
        0.35 + 0.65 * streaks,
    )
    frames = np.where(column[None, :, :, None], water, frames)
    # Foam and mist at the foot of the fall grow with the roar.
    r = roar[:, None, None]
    rx = half[-1, 0] * (1.2 + 1.4 * r)
    ry = 0.04 + 0.08 * r
    d2 = ((x - cx) / rx) ** 2 + ((y - pool_y) / ry) ** 2  # [T, H, W]
    foam_tex = scroll(periodic_noise(rng, H, H, 6, 6), c.times * 0, c.times * 0.3 * H, H, H)
    foam = np.clip(1.0 - d2, 0.0, 1.0) * (0.55 + 0.45 * foam_tex) * (0.5 + 0.6 * r)
    frames = mix(frames, np.array([0.96, 0.98, 1.0], np.float32), np.clip(1.6 * foam, 0, 1))
    mist = np.clip(1.0 - np.abs(y - pool_y) / 0.25, 0, 1) * 0.25 * r
    frames = mix(frames, np.array([0.92, 0.95, 0.97], np.float32), mist)
    return SceneResult(audio, frames, roar, variant, [], {"mean_roar": float(roar.mean())})


# ------------------------------------------------------------------------------- 3 volcano
def volcano(c: SceneContext) -> SceneResult:
    rng, sr, S, T, H = c.rng, c.sample_rate, c.samples, c.frames, c.size
    variant = "night" if rng.random() < 0.5 else "ashen"
    times = _event_times(rng, c.seconds, rng.uniform(0.3, 0.6), margin=0.4)
    amps = rng.uniform(0.6, 1.0, times.shape[0])
    erupt = event_envelope(S, sr, times, amps, rng.uniform(0.08, 0.2), rng.uniform(0.5, 1.0, times.shape[0]))
    base = rng.uniform(0.15, 0.3)
    E = base + erupt  # eruption strength [S]
    flutter = 0.65 + 0.35 * smooth_curve(rng, S, sr, 12.0, 0.0, 1.0)
    audio = (
        0.6 * (0.5 + E) * coloured_noise(rng, S, sr, 18, 110, tilt=-1.0, order=3)
        + erupt * flutter * coloured_noise(rng, S, sr, 50, 450, tilt=-0.5)
        + 0.04 * (0.5 + E) * coloured_noise(rng, S, sr, 2500, 8000)  # sizzle
    )
    glow = np.clip(c.per_frame(E), 0.0, 1.5)  # [T]

    y, x = grid(H, H)
    if variant == "night":
        sky = vertical_gradient(jitter_colour(rng, (0.05, 0.02, 0.04)), jitter_colour(rng, (0.32, 0.10, 0.06)), H, H)
    else:
        sky = vertical_gradient(jitter_colour(rng, (0.22, 0.16, 0.16)), jitter_colour(rng, (0.45, 0.20, 0.12)), H, H)
    frames = _frames_of(sky, T)
    smoke = _smoothstep(0.4, 0.8, scroll(periodic_noise(rng, 2 * H, H, 4, 3), c.times * 0.08 * H, c.times * 0.02 * H, H, H))
    frames = mix(frames, jitter_colour(rng, (0.16, 0.12, 0.12)), 0.55 * smoke * (1 - y)[None])
    cx = 0.5 + rng.uniform(-0.1, 0.1)
    apex = rng.uniform(0.36, 0.44)
    slope = rng.uniform(0.55, 0.75)
    cone = (y > apex) & (np.abs(x - cx) < 0.06 + (y - apex) * slope)  # [H, W]
    g = glow[:, None, None]
    dist = np.sqrt((x - cx) ** 2 + ((y - apex) * 1.5) ** 2)  # [H, W]
    halo = np.exp(-dist / (0.06 + 0.12 * g)) * (0.3 + 0.7 * g)  # [T, H, W]
    frames = frames + halo[..., None] * np.array([0.9, 0.35, 0.08], np.float32)
    rock = mix(
        np.broadcast_to(jitter_colour(rng, (0.09, 0.06, 0.06)), (H, H, 3)),
        jitter_colour(rng, (0.2, 0.13, 0.1)),
        0.5 * periodic_noise(rng, H, H, 6, 6),
    )
    frames = np.where(cone[None, :, :, None], rock[None] + 0.15 * halo[..., None] * np.array([1, 0.4, 0.1], np.float32), frames)
    # Lava rivers down the flanks, brighter with the eruption.
    lava = np.zeros((H, H), np.float32)
    for _ in range(int(rng.integers(2, 4))):
        k = rng.uniform(-0.5, 0.5)
        path = cx + k * slope * (y - apex) + 0.015 * np.sin(2 * np.pi * (y * rng.uniform(3, 6)) + rng.uniform(0, 6))
        lava = np.maximum(lava, np.exp(-(((x - path) / 0.012) ** 2)) * (y > apex + 0.02) * (1.2 - y))
    lava = lava * cone
    frames = mix(frames, np.array([1.0, 0.45, 0.08], np.float32), lava[None] * np.clip(0.35 + 0.6 * g, 0, 1))
    # Ejecta: particles launched from the crater, more and higher when the eruption is strong.
    pmf = glow**2 + 1e-6
    n = int(np.clip(50 * (glow**2).sum() / c.fps, 8, 600))
    spawn_f = rng.choice(T, size=n, p=pmf / pmf.sum())
    t_spawn = (spawn_f + rng.random(n)) / c.fps
    strength = glow[spawn_f]
    vx = rng.normal(0.0, 0.18, n)
    vy = -rng.uniform(0.45, 0.95, n) * (0.5 + 0.6 * strength)
    age = c.times[None, :] - t_spawn[:, None]  # [n, T]
    alive = (age >= 0) & (age < 1.4)
    px = (cx + vx[:, None] * age) * H
    py = (apex + vy[:, None] * age + 0.7 * age**2) * H
    tt = np.broadcast_to(np.arange(T)[None, :], age.shape)
    sparks = splat(T, H, H, tt[alive], py[alive], px[alive], 1.3)
    frames = mix(frames, np.array([1.0, 0.75, 0.2], np.float32), np.clip(blur3(sparks) * 2.5, 0, 1))
    return SceneResult(audio, frames, glow, variant, times.tolist(), {"ejecta": float(n)})


# ------------------------------------------------------------------------------- 4 squishing water
def squishing_water(c: SceneContext) -> SceneResult:
    rng, sr, S, T, H = c.rng, c.sample_rate, c.samples, c.frames, c.size
    variant = "mud" if rng.random() < 0.6 else "clay"
    rate = rng.uniform(1.3, 2.5)
    first = rng.uniform(0.05, min(0.5, 1.0 / rate))
    times = first + np.arange(int(c.seconds * rate) + 1) / rate + rng.normal(0.0, 0.06, int(c.seconds * rate) + 1)
    times = np.sort(times[(times >= 0.02) & (times < max(0.1, c.seconds - 0.15))])
    if times.size == 0:
        times = np.array([min(0.2, c.seconds / 3)])
    amps = rng.uniform(0.55, 1.0, times.shape[0])
    decays = rng.uniform(0.06, 0.12, times.shape[0])
    Q = event_envelope(S, sr, times, amps, 0.02, decays)  # squish pressure [S]
    t = np.arange(S, dtype=np.float32) / sr
    gurgle = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(22, 40) * t + rng.uniform(0, 6)).astype(np.float32)
    audio = Q * gurgle * coloured_noise(rng, S, sr, 180, 1600, tilt=-0.5)
    for t0, a in zip(times, amps):  # wet pitched squelches inside each squish
        for _ in range(int(rng.integers(2, 5))):
            tone = decaying_tone(sr, rng.uniform(220, 650), rng.uniform(0.015, 0.035), chirp=rng.uniform(-0.6, 1.2))
            _add_at(audio, tone, int((t0 + rng.uniform(0.0, 0.12)) * sr), 0.5 * a)
    audio += 0.015 * coloured_noise(rng, S, sr, 100, 1000)
    press = np.clip(c.per_frame(Q), 0.0, 1.2)  # [T]

    y, x = grid(H, H)
    dark, light = ((0.26, 0.17, 0.09), (0.44, 0.31, 0.18)) if variant == "mud" else ((0.36, 0.22, 0.12), (0.55, 0.38, 0.22))
    tex = periodic_noise(rng, H, H, 5, 5)
    ground = mix(np.broadcast_to(jitter_colour(rng, dark), (H, H, 3)), jitter_colour(rng, light), tex)
    wet = _smoothstep(0.55, 0.7, periodic_noise(rng, H, H, 2, 2))
    ground = mix(ground, jitter_colour(rng, (0.20, 0.17, 0.14)), 0.8 * wet)
    gloss = _smoothstep(0.8, 0.95, periodic_noise(rng, H, H, 8, 8)) * wet
    ground = ground + 0.25 * gloss[..., None]
    frames = _frames_of(ground, T)
    # Each squish presses a dark wet dent with a glossy rim, as deep as the squish is loud.
    for t0, a, dec in zip(times, amps, decays):
        e = c.per_frame(event_envelope(S, sr, np.array([t0]), np.array([a]), 0.02, np.array([dec])))  # [T]
        cy, cxx = rng.uniform(0.25, 0.8), rng.uniform(0.2, 0.8)
        k = np.nonzero(e > 0.01)[0]  # frames this squish shows in
        if k.size == 0:
            continue
        # Work on the dent's bounding box only: radius at most 0.04 + 0.14 * 1.2, plus the rim.
        y0, y1 = max(0, int((cy - 0.25) * H)), min(H, int((cy + 0.25) * H) + 1)
        x0, x1 = max(0, int((cxx - 0.25) * H)), min(H, int((cxx + 0.25) * H) + 1)
        d = np.sqrt((x[:, x0:x1] - cxx) ** 2 + (y[y0:y1] - cy) ** 2)  # [h, w]
        rad = (0.04 + 0.14 * np.clip(e[k], 0, 1.2))[:, None, None]  # [K, 1, 1]
        dent = _smoothstep(0.0, 0.02, rad - d)  # [K, h, w]
        rim = np.exp(-(((d - rad) / 0.012) ** 2)) * (e[k, None, None] > 0.05)
        patch = frames[k, y0:y1, x0:x1]
        patch = mix(patch, np.array([0.13, 0.10, 0.08], np.float32), 0.85 * dent)
        frames[k, y0:y1, x0:x1] = mix(patch, np.array([0.75, 0.68, 0.58], np.float32), 0.7 * rim)
    return SceneResult(audio, frames, press, variant, times.tolist(), {"rate": float(rate)})


# ------------------------------------------------------------------------------- 5 wind
def wind(c: SceneContext) -> SceneResult:
    rng, sr, S, T, H = c.rng, c.sample_rate, c.samples, c.frames, c.size
    variant = "bright" if rng.random() < 0.6 else "golden"
    gusts = _event_times(rng, c.seconds, rng.uniform(0.3, 0.7), margin=0.3)
    strength = smooth_curve(rng, S, sr, 1.5, 0.15, 0.85) + event_envelope(
        S, sr, gusts, rng.uniform(0.2, 0.45, gusts.shape[0]), 0.3, 0.4
    )
    Wt = np.clip(strength, 0.0, 1.3)  # wind strength [S]
    fw = rng.uniform(600, 1100)
    audio = Wt * (
        (1.0 - 0.5 * Wt) * coloured_noise(rng, S, sr, 150, 700, tilt=-0.5)
        + 0.6 * Wt * coloured_noise(rng, S, sr, 700, 2500)
        + 0.4 * Wt * coloured_noise(rng, S, sr, fw * 0.96, fw * 1.04, order=4)  # whistle
        + 0.5 * coloured_noise(rng, S, sr, 20, 120, tilt=-1.0)  # buffeting
    )
    w = c.per_frame(Wt)  # [T]

    y, x = grid(H, H)
    if variant == "bright":
        sky = vertical_gradient(jitter_colour(rng, (0.30, 0.55, 0.92)), jitter_colour(rng, (0.72, 0.86, 0.98)), H, H)
    else:
        sky = vertical_gradient(jitter_colour(rng, (0.42, 0.52, 0.80)), jitter_colour(rng, (0.98, 0.82, 0.58)), H, H)
    frames = _frames_of(sky, T)
    cloud_dx = np.cumsum((0.05 + 0.9 * w) * H) / c.fps  # clouds travel with the wind
    clouds = _smoothstep(0.45, 0.75, scroll(periodic_noise(rng, H, 2 * H, 2, 5), np.zeros(T), cloud_dx, H, H))
    frames = mix(frames, np.array([0.98, 0.98, 0.98], np.float32), 0.9 * clouds * (y < 0.62)[None])
    # Grass: vertical blade stripes sheared sideways, the tips bending most.
    horizon = 0.6 + 0.03 * np.sin(2 * np.pi * x * 1.5 + rng.uniform(0, 6))  # [1, W]
    blades = periodic_noise(rng, H, H, 2, max(8, H // 3), octaves=1)  # [H, W]
    flutter = 0.2 * np.sin(2 * np.pi * 2.3 * c.times + rng.uniform(0, 6))
    bend = (w * (1.0 + flutter)) * 0.18 * H  # [T] px at the top of the grass
    depth = np.clip((np.arange(H, dtype=np.float32) / H - 0.58) / 0.42, 0, 1)  # [H] 0 at tips
    shift = bend[:, None] * (1.0 - depth)[None, :] ** 1.5  # [T, H]
    cols = (np.arange(H)[None, None, :] + shift[:, :, None]).astype(np.int64) % H  # [T, H, W]
    bent = blades[np.arange(H)[None, :, None], cols]  # [T, H, W]
    g_dark, g_light = jitter_colour(rng, (0.12, 0.32, 0.06)), jitter_colour(rng, (0.55, 0.72, 0.20))
    grass = mix(np.broadcast_to(g_dark, (T, H, H, 3)), g_light, bent * (1.1 - 0.6 * y)[None])
    frames = np.where((y > horizon)[None, :, :, None], grass, frames)
    return SceneResult(audio, frames, w, variant, gusts.tolist(), {"whistle_hz": float(fw)})


# ------------------------------------------------------------------------------- 6 fire crackling
def fire_crackling(c: SceneContext) -> SceneResult:
    rng, sr, S, T, H = c.rng, c.sample_rate, c.samples, c.frames, c.size
    variant = "campfire" if rng.random() < 0.5 else "hearth fire"
    D = smooth_curve(rng, S, sr, 1.6, 0.05, 1.0)  # crackle density [S]
    rate = 6.0 + 70.0 * D**1.5
    times = _thinned_times(rng, c.seconds, rate, sr, 76.0)
    amps = (0.15 + 0.85 * rng.random(times.shape[0]) ** 3).astype(np.float32)
    clicks = impulse_train(S, sr, times, amps)
    klen = int(0.004 * sr) + 1
    kernel = white(rng, klen) * np.exp(-np.arange(klen, dtype=np.float32) / (0.0008 * sr))
    crackle = fft_convolve(clicks, kernel)
    crackle = crackle - fft_convolve(crackle, np.full(8, 1 / 8, np.float32))  # crude high-pass
    audio = 3.0 * crackle + 0.05 * (0.5 + 0.5 * D) * coloured_noise(rng, S, sr, 60, 500, tilt=-1.0)
    # What the eye follows: crackle energy smoothed over ~40 ms.
    win = np.hanning(max(3, int(0.04 * sr))).astype(np.float32)
    energy = fft_convolve(clicks**2, win / win.sum())
    flick = c.per_frame(energy)
    flick = np.clip(flick / (np.percentile(flick, 95) + 1e-6), 0.0, 1.3)  # [T]

    y, x = grid(H, H)
    bg = vertical_gradient(jitter_colour(rng, (0.02, 0.01, 0.02)), jitter_colour(rng, (0.07, 0.04, 0.03)), H, H)
    frames = _frames_of(bg, T)
    cx = 0.5 + rng.uniform(-0.06, 0.06)
    base = rng.uniform(0.80, 0.86)
    f = flick[:, None, None]
    dens = c.per_frame(D)[:, None, None]
    glow = np.exp(-np.sqrt((x - cx) ** 2 + (y - base + 0.15) ** 2) / 0.22)[None] * (0.15 + 0.35 * f)
    frames = frames + glow[..., None] * np.array([0.7, 0.25, 0.05], np.float32)
    height = 0.30 + 0.15 * dens + 0.18 * f  # [T, 1, 1]
    v = (base - y)[None] / height  # 0 at the base, 1 at the tip
    sway = 0.03 * np.sin(2 * np.pi * (1.7 * c.times[:, None, None] + 2.0 * y[None]))
    width = 0.15 * np.clip(1.0 - v, 0, 1) ** 0.6 * (0.9 + 0.3 * f)
    inside = np.clip(1.0 - np.abs(x - cx - sway * v) / (width + 1e-3), 0, 1) * (v > -0.05)
    turb = scroll(periodic_noise(rng, 2 * H, H, 6, 4), c.times * 1.2 * H, np.zeros(T), H, H)  # rises
    heat = np.clip(inside * (1.25 - 0.9 * np.clip(v, 0, 1)) - 0.45 * turb * np.clip(v + 0.2, 0, 1), 0, 1)
    heat = heat * (0.55 + 0.55 * f)
    flame = _colour_ramp(
        np.clip(heat, 0, 1),
        [(0.0, (0.0, 0.0, 0.0)), (0.25, (0.55, 0.05, 0.0)), (0.55, (1.0, 0.42, 0.04)), (0.8, (1.0, 0.8, 0.25)), (1.0, (1.0, 0.98, 0.75))],
    )
    frames = mix(frames, flame, np.clip(heat * 3.0, 0, 1))
    # Logs under the flames.
    logs = (np.abs(y - base - 0.03) < 0.035) & (np.abs(x - cx) < 0.28)
    frames = np.where(logs[None, :, :, None], jitter_colour(rng, (0.22, 0.12, 0.06)) + 0.2 * f[..., None] * np.array([0.6, 0.2, 0.0], np.float32), frames)
    # A spark flies up from each loud crackle.
    loud = times[amps > 0.45]
    if loud.size:
        n = loud.shape[0]
        sx = cx + rng.normal(0, 0.05, n)
        vy = rng.uniform(0.35, 0.7, n)
        vx = rng.normal(0, 0.12, n)
        age = c.times[None, :] + 1.0 / c.fps - loud[:, None]  # [n, T]
        alive = (age >= 0) & (age < 0.9)
        px = (sx[:, None] + vx[:, None] * age) * H
        py = (base - 0.15 - vy[:, None] * age) * H
        tt = np.broadcast_to(np.arange(T)[None], age.shape)
        sp = splat(T, H, H, tt[alive], py[alive], px[alive], 1.5)
        frames = mix(frames, np.array([1.0, 0.85, 0.35], np.float32), np.clip(sp * 1.5, 0, 1))
    return SceneResult(audio, frames, flick, variant, times.tolist(), {"crackles": float(times.shape[0])})


# ------------------------------------------------------------------------------- 7 raining
def raining(c: SceneContext) -> SceneResult:
    rng, sr, S, T, H = c.rng, c.sample_rate, c.samples, c.frames, c.size
    variant = "day" if rng.random() < 0.6 else "night"
    R = smooth_curve(rng, S, sr, 1.0, 0.2, 1.0)  # rain density [S]
    drops = _thinned_times(rng, c.seconds, 900.0 * R, sr, 900.0)
    amps = (0.1 + 0.9 * rng.random(drops.shape[0]) ** 2).astype(np.float32)
    group = rng.integers(0, 3, drops.shape[0])
    patter = np.zeros(S, np.float32)
    for gi, freq in enumerate((2600.0, 3600.0, 4900.0)):
        sel = group == gi
        patter += fft_convolve(impulse_train(S, sr, drops[sel], amps[sel]), decaying_tone(sr, freq, 0.003))
    audio = R * (
        0.5 * coloured_noise(rng, S, sr, 2500, 10000, tilt=-0.3) + 0.2 * coloured_noise(rng, S, sr, 300, 2500, tilt=-0.5)
    ) + 0.5 * patter
    dens = c.per_frame(R)  # [T]

    y, x = grid(H, H)
    if variant == "day":
        sky = vertical_gradient(jitter_colour(rng, (0.45, 0.47, 0.50)), jitter_colour(rng, (0.63, 0.65, 0.67)), H, H)
        street = (0.20, 0.21, 0.23)
    else:
        sky = vertical_gradient(jitter_colour(rng, (0.12, 0.13, 0.17)), jitter_colour(rng, (0.26, 0.27, 0.31)), H, H)
        street = (0.09, 0.09, 0.11)
    img = sky.copy()
    # Skyline of grey blocks.
    n_b = int(rng.integers(4, 8))
    edges = np.sort(rng.uniform(0, 1, n_b - 1))
    lo = np.concatenate([[0.0], edges])
    hi = np.concatenate([edges, [1.0]])
    tops = rng.uniform(0.28, 0.5, n_b)
    bcol = jitter_colour(rng, (0.33, 0.34, 0.37) if variant == "day" else (0.16, 0.16, 0.19))
    for l, h, tp in zip(lo, hi, tops):
        img = np.where(((x >= l) & (x < h) & (y > tp))[..., None], bcol * rng.uniform(0.85, 1.1), img)
    ground_y = 0.62
    refl = img[::-1] * 0.35  # a dim mirror of the scene in the wet street
    ground = jitter_colour(rng, street) + refl
    img = np.where((y > ground_y)[..., None], ground, img)
    frames = _frames_of(img.astype(np.float32), T)
    # Rain streaks: a fixed pool; the first count(t) of them fall in frame t.
    max_streaks = int(1.2 * H * 3)
    x0 = rng.uniform(-0.1, 1.1, max_streaks)
    y0 = rng.uniform(0, 1.2, max_streaks)
    speed = rng.uniform(1.6, 2.6, max_streaks)
    slant = rng.uniform(-0.18, 0.18)
    length = rng.uniform(0.05, 0.09)
    count = np.round(dens * max_streaks).astype(np.int64)  # [T]
    t_idx, s_idx = np.nonzero(np.arange(max_streaks)[None, :] < count[:, None])
    head = (y0[s_idx] + speed[s_idx] * c.times[t_idx]) % 1.2 - 0.1
    k = np.linspace(0.0, 1.0, 6, dtype=np.float32)
    py = head[:, None] - length * k[None, :]
    px = x0[s_idx, None] + slant * py
    rain = splat(T, H, H, np.repeat(t_idx, k.shape[0]), py.ravel() * H, px.ravel() * H, 0.35)
    frames = mix(frames, np.array([0.85, 0.87, 0.9], np.float32), np.clip(rain, 0, 0.8))
    # Drops hitting the street.
    nh = int(dens.sum() * H * 0.6)
    ht = rng.choice(T, size=nh, p=dens / dens.sum())
    hits = splat(T, H, H, ht, rng.uniform(ground_y, 1.0, nh) * H, rng.uniform(0, 1, nh) * H, 0.8)
    frames = mix(frames, np.array([0.8, 0.82, 0.85], np.float32), np.clip(hits, 0, 0.7))
    return SceneResult(audio, frames, dens, variant, [], {"max_streaks": float(max_streaks)})


# ------------------------------------------------------------------------------- 8 underwater bubbling
def underwater_bubbling(c: SceneContext) -> SceneResult:
    rng, sr, S, T, H = c.rng, c.sample_rate, c.samples, c.frames, c.size
    variant = "shallow" if rng.random() < 0.5 else "deep"
    B = smooth_curve(rng, S, sr, 1.0, 0.15, 1.0)  # bubble rate [S]
    times = _thinned_times(rng, c.seconds, 4.0 + 26.0 * B, sr, 30.0)
    if times.size == 0:
        times = np.array([c.seconds / 2])
    n = times.shape[0]
    freqs = rng.uniform(350, 1400, n)  # small bubbles ring high
    amps = rng.uniform(0.3, 1.0, n)
    audio = np.zeros(S, np.float32)
    for t0, f0, a in zip(times, freqs, amps):
        _add_at(audio, decaying_tone(sr, f0, rng.uniform(0.012, 0.04), chirp=rng.uniform(0.4, 1.2)), int(t0 * sr), a)
    audio += 0.25 * (0.6 + 0.4 * smooth_curve(rng, S, sr, 2.0, 0, 1)) * coloured_noise(rng, S, sr, 20, 350, tilt=-1.0)
    rate_f = c.per_frame(B)  # [T]

    y, x = grid(H, H)
    if variant == "shallow":
        top, bottom = jitter_colour(rng, (0.15, 0.58, 0.68)), jitter_colour(rng, (0.02, 0.16, 0.32))
    else:
        top, bottom = jitter_colour(rng, (0.08, 0.35, 0.60)), jitter_colour(rng, (0.01, 0.05, 0.18))
    frames = _frames_of(vertical_gradient(top, bottom, H, H), T)
    phase = rng.uniform(0, 6)
    rays = (0.5 + 0.5 * np.sin(2 * np.pi * (3.0 * (x + 0.35 * y))[None] + phase + 0.6 * c.times[:, None, None])) ** 6
    frames = frames + (rays * (1 - y)[None] * 0.18)[..., None] * np.array([0.7, 1.0, 1.0], np.float32)
    caust = scroll(periodic_noise(rng, H, H, 5, 5), c.times * 0.05 * H, c.times * 0.1 * H, H, H)
    frames = frames + (_smoothstep(0.6, 0.9, caust) * (1 - y)[None] ** 3 * 0.2)[..., None]
    # One bubble per blip: it appears when it sounds and rises, bigger for lower pitches.
    vents = rng.uniform(0.15, 0.85, int(rng.integers(1, 4)))
    bx = vents[rng.integers(0, vents.shape[0], n)] + rng.normal(0, 0.04, n)
    radius = (0.012 + 0.035 * (1400 - freqs) / 1050) * H  # px
    rise = rng.uniform(0.3, 0.5, n) + 0.2 * radius / H * 10
    age = c.times[None, :] + 1.0 / c.fps - times[:, None]  # [n, T]
    alive = (age >= 0) & (age < 2.5)
    cy = (0.95 - rise[:, None] * age) * H
    cxp = (bx[:, None] + 0.02 * np.sin(2 * np.pi * 2.5 * age + freqs[:, None])) * H
    ang = np.linspace(0, 2 * np.pi, 16, endpoint=False, dtype=np.float32)
    bi, ti = np.nonzero(alive)
    ry = cy[bi, ti][:, None] + radius[bi][:, None] * np.sin(ang)[None]
    rx = cxp[bi, ti][:, None] + radius[bi][:, None] * np.cos(ang)[None]
    ring = splat(T, H, H, np.repeat(ti, ang.shape[0]), ry.ravel(), rx.ravel(), 0.6)
    core = splat(T, H, H, ti, cy[bi, ti], cxp[bi, ti], 0.5 * radius[bi])
    frames = mix(frames, np.array([0.8, 0.95, 1.0], np.float32), np.clip(blur3(ring) * 1.6 + blur3(core) * 0.3, 0, 0.95))
    return SceneResult(audio, frames, rate_f, variant, times.tolist(), {"bubbles": float(n)})


# ------------------------------------------------------------------------------- 9 splashing water
def splashing_water(c: SceneContext) -> SceneResult:
    rng, sr, S, T, H = c.rng, c.sample_rate, c.samples, c.frames, c.size
    variant = "sunny" if rng.random() < 0.6 else "sunset"
    times = _event_times(rng, c.seconds, rng.uniform(0.6, 1.2), margin=0.3)
    amps = rng.uniform(0.45, 1.0, times.shape[0])
    burst_env = event_envelope(S, sr, times, amps, 0.004, rng.uniform(0.08, 0.18, times.shape[0]))
    tail_env = event_envelope(S, sr, times + 0.03, 0.4 * amps, 0.03, 0.25)
    audio = burst_env * coloured_noise(rng, S, sr, 400, 9000, tilt=-0.3) + tail_env * coloured_noise(rng, S, sr, 200, 3000)
    for t0, a in zip(times, amps):  # droplets falling back
        for _ in range(int(rng.integers(3, 8))):
            tone = decaying_tone(sr, rng.uniform(900, 2500), rng.uniform(0.008, 0.02), chirp=0.8)
            _add_at(audio, tone, int((t0 + rng.uniform(0.1, 0.6)) * sr), 0.25 * a)
    t = np.arange(S, dtype=np.float32) / sr
    lap = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.3, 0.7) * t + rng.uniform(0, 6))
    audio += 0.08 * lap * coloured_noise(rng, S, sr, 80, 900, tilt=-0.7)
    splash = np.clip(c.per_frame(burst_env + tail_env), 0.0, 1.3)  # [T]

    y, x = grid(H, H)
    horizon = rng.uniform(0.35, 0.45)
    if variant == "sunny":
        sky = vertical_gradient(jitter_colour(rng, (0.50, 0.72, 0.95)), jitter_colour(rng, (0.86, 0.93, 1.0)), H, H)
    else:
        sky = vertical_gradient(jitter_colour(rng, (0.45, 0.42, 0.68)), jitter_colour(rng, (1.0, 0.72, 0.52)), H, H)
    sea = vertical_gradient(jitter_colour(rng, (0.12, 0.55, 0.62)), jitter_colour(rng, (0.02, 0.28, 0.38)), H, H)
    frames = _frames_of(np.where((y > horizon)[..., None], sea, sky), T)
    waves = scroll(periodic_noise(rng, H, H, 12, 3), c.times * 0.02 * H, c.times * 0.06 * H, H, H)
    frames = frames + (_smoothstep(0.6, 0.85, waves) * (y > horizon)[None] * 0.25)[..., None]
    for t0, a in zip(times, amps):
        ex, ey = rng.uniform(0.25, 0.75), rng.uniform(horizon + 0.2, 0.85)
        age = c.times + 1.0 / c.fps - t0  # [T]
        fade = np.exp(-np.clip(age, 0, None) / 0.6) * a
        k = np.nonzero((age >= 0) & (fade > 0.03))[0]  # frames this splash shows in
        if k.size == 0:
            continue
        ak = age[k]  # [K]
        # Expanding, fading ripple ring (flattened: the water is seen at a slant).
        d = np.sqrt((x - ex) ** 2 + ((y - ey) / 0.4) ** 2)  # [H, W]
        r = 0.04 + 0.35 * ak
        ring = np.exp(-(((d[None] - r[:, None, None]) / 0.015) ** 2)) * fade[k, None, None]
        e = c.per_frame(
            event_envelope(S, sr, np.array([t0]), np.array([a]), 0.004, 0.15)
            + event_envelope(S, sr, np.array([t0 + 0.03]), np.array([0.4 * a]), 0.03, 0.25)
        )
        foam = np.exp(-(d / 0.08) ** 2)[None] * np.clip(e[k], 0, 1)[:, None, None]
        part = mix(frames[k], np.array([0.95, 0.98, 1.0], np.float32), np.clip(0.8 * ring + 1.2 * foam, 0, 1))
        # A crown of droplets thrown up, falling back to the surface.
        n = int(20 + 40 * a)
        vx = rng.normal(0, 0.25, n) * a
        vy = -rng.uniform(0.5, 1.1, n) * a
        px = (ex + vx[:, None] * ak[None]) * H  # [n, K]
        py = (ey + vy[:, None] * ak[None] + 1.2 * ak[None] ** 2) * H
        alive = (py < ey * H + 1) & (ak[None] < 2.0)
        tt = np.broadcast_to(np.arange(k.size)[None], alive.shape)
        drops = splat(k.size, H, H, tt[alive], py[alive], px[alive], 1.2)
        frames[k] = mix(part, np.array([0.97, 0.99, 1.0], np.float32), np.clip(blur3(drops) * 2.5, 0, 1))
    return SceneResult(audio, frames, splash, variant, times.tolist(), {"splashes": float(times.shape[0])})


# ------------------------------------------------------------------------------- registry
# In the order of model.bundle.LANDSCAPE_LABELS.
SCENES: dict[str, Callable[[SceneContext], SceneResult]] = {
    "thunderstorm": thunderstorm,
    "waterfall": waterfall,
    "volcano": volcano,
    "squishing water": squishing_water,
    "wind": wind,
    "fire crackling": fire_crackling,
    "raining": raining,
    "underwater bubbling": underwater_bubbling,
    "splashing water": splashing_water,
}

# Caption templates; "{v}" is the scene's variant word where one reads naturally.
CAPTIONS: dict[str, tuple[str, ...]] = {
    "thunderstorm": (
        "a thunderstorm with lightning over dark hills",
        "lightning flashes in a stormy {v} sky",
        "thunder rolls across dark storm clouds",
    ),
    "waterfall": (
        "a waterfall pouring between mossy cliffs",
        "white water falling into a foaming pool",
        "the roar of a waterfall on a {v} day",
    ),
    "volcano": (
        "an erupting volcano spewing glowing lava",
        "a volcano rumbling under a red {v} sky",
        "lava flows down the slopes of a volcano",
    ),
    "squishing water": (
        "squishing water in wet mud",
        "feet squelching through soggy {v}",
        "wet mud squishing and oozing water",
    ),
    "wind": (
        "wind blowing over a grassy field",
        "strong wind bending the grass under fast clouds",
        "a windy {v} sky over a meadow",
    ),
    "fire crackling": (
        "a crackling fire in the dark",
        "flames flickering over burning logs",
        "a {v} crackling and sparking",
    ),
    "raining": (
        "rain falling on a city street",
        "heavy rain pouring down on a grey {v}",
        "raindrops streaking past buildings",
    ),
    "underwater bubbling": (
        "bubbles rising underwater",
        "underwater bubbling in deep blue water",
        "air bubbles floating up in a {v} sea",
    ),
    "splashing water": (
        "water splashing on the surface of a lake",
        "a splash throwing droplets into the air",
        "splashing water under a {v} sky",
    ),
}


def caption_for(label: str, index: int, variant: str) -> str:
    """The ``index``-th caption template of ``label`` filled with ``variant``."""
    templates = CAPTIONS[label]
    return templates[index % len(templates)].format(v=variant)


def scene_info(result: SceneResult) -> dict[str, Any]:
    """JSON-friendly summary of a scene's random parameters."""
    return {"variant": result.variant, "events": [round(e, 4) for e in result.events], **result.extra}
