"""Rhythm benchmarks: does the picture hit the beat, and how late is it?

* :func:`beat_bench` renders synthetic loops (kick only; hat only; kick + hat + bass, 120 BPM)
  through the show on the sample clock (as ``vjapp render`` does) and measures the mean frame
  change in the 100 ms after each kick against the mean elsewhere, the motion of the fine layers
  against the coarse ones, and the loudness ratio: motion with the same loop at 0.1 of the
  amplitude against full scale.
* :func:`latency_bench` drives the real live :class:`~vjapp.engine.engine.Engine` (its thread, its
  pacer, its wall clock) with a source that writes 256-sample blocks into the ring from its own
  thread in real time; after steady quiet sound it injects loud bursts at known instants and
  measures, from the burst's first sample entering the ring, (a) the first published frame that
  changed beyond the pre-burst frame-to-frame noise and (b) the frame that reaches half of the
  eventual change.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from vjapp.audio.loops import make_loop

log = logging.getLogger(__name__)

__all__ = ["beat_bench", "latency_bench", "format_beat", "format_latency", "frame_change"]


def frame_change(frames: list[np.ndarray]) -> np.ndarray:
    """Mean absolute change (0..255) between consecutive frames; ``[len(frames) - 1]``."""
    f = np.stack([x.astype(np.float32) for x in frames])
    return np.abs(np.diff(f, axis=0)).mean(axis=(1, 2, 3))


def _make_show(bundle_path: str | None, device: str, dtype: str) -> Any:
    from vjapp.bundles import open_bundle
    from vjapp.engine.frames import resolve_device, resolve_dtype
    from vjapp.engine.pipeline import PipelineConfig
    from vjapp.engine.show import Show, ShowConfig

    dev = resolve_device(device)
    bundle, where = open_bundle(bundle_path, dev, lazy_clip=True)  # no text prompt: CLIP only if a cache is missing
    show = Show(bundle, dev, resolve_dtype(dtype, dev),
                ShowConfig(pipeline=PipelineConfig(window_seconds=bundle.info.segment_seconds)))
    return show, where


def _render_loop(show: Any, samples: np.ndarray, sr: int, fps: float, controls: Any) -> tuple[list, torch.Tensor]:
    """Frames and shown W+ of a mono loop, from a fresh start, on the sample clock."""
    from vjapp.audio import resample
    from vjapp.engine.frames import to_uint8
    from vjapp.engine.offline import OfflineShow

    show.reset()
    show.apply(controls, 0.0, immediate=True)
    mono_model = torch.from_numpy(resample(samples, sr, show.sound.sample_rate))
    drive = OfflineShow(show, mono_model, samples, sr, controls.model_rate)
    n = int(samples.size / sr * fps)
    frames: list[np.ndarray] = []
    ws: list[torch.Tensor] = []
    for first in range(0, n, 4):
        times = [i / fps for i in range(first, min(first + 4, n))]
        w = drive.ws_at(times)
        ws.append(w.cpu())
        imgs = show.renderer.images(w, controls.noise_mode)
        frames.extend(to_uint8(img) for img in imgs)
    return frames, torch.cat(ws)


@dataclass
class LoopFigures:
    name: str
    after_kick: float
    between: float
    fine_motion: float
    coarse_motion: float

    @property
    def ratio(self) -> float:
        return self.after_kick / max(self.between, 1e-9)


def _after_kick_ratio(change: np.ndarray, fps: float, kicks: list[float], skip_s: float) -> tuple[float, float]:
    t = (np.arange(change.size) + 1) / fps  # change i is between frame i and i+1 (shown at t)
    after = np.zeros(change.size, dtype=bool)
    for k in kicks:
        after |= (t >= k) & (t < k + 0.1)
    keep = t >= skip_s
    return float(change[after & keep].mean()), float(change[~after & keep].mean())


def beat_bench(bundle_path: str | None = None, device: str = "auto", dtype: str = "auto", seconds: float = 12.0,
               fps: float = 30.0, bpm: float = 120.0, seed: int = 0) -> dict[str, Any]:
    from vjapp.engine.controls import Controls

    show, where = _make_show(bundle_path, device, dtype)
    controls = Controls().replace(fps=fps, model_rate=show.bundle.info.model_rate, seed=seed)
    sr = 44_100
    groups = show.sound.groups
    loops = {
        "kick": make_loop(bpm, seconds, sr, kicks=True, seed=seed + 1),
        "hat": make_loop(bpm, seconds, sr, kicks=False, hats=True, seed=seed + 2),
        "kick+hat+bass": make_loop(bpm, seconds, sr, hats=True, bass=True, seed=seed + 3),
    }
    out: dict[str, Any] = {"bundle": where, "fps": fps, "bpm": bpm, "seconds": seconds, "loops": {}}
    motion_full = None
    for name, loop in loops.items():
        frames, ws = _render_loop(show, loop.samples, sr, fps, controls)
        change = frame_change(frames)
        beats = loop.kicks if loop.kicks else loop.hats[::2]
        after, between = _after_kick_ratio(change, fps, beats, skip_s=2.0)
        dws = (ws[1:] - ws[:-1]).norm(dim=-1)  # [T, L]
        (c0, c1), _, (f0, f1) = groups
        fig = LoopFigures(name, after, between, float(dws[:, f0:f1].mean()), float(dws[:, c0:c1].mean()))
        out["loops"][name] = {"after_kick": fig.after_kick, "between": fig.between, "ratio": fig.ratio,
                              "fine_motion": fig.fine_motion, "coarse_motion": fig.coarse_motion}
        if name == "kick+hat+bass":
            skip = int(2 * fps)
            motion_full = float(change[skip:].mean())
            quiet, ws_quiet = _render_loop(show, loop.samples * 0.1, sr, fps, controls)
            motion_quiet = float(frame_change(quiet)[skip:].mean())
            # the same in W+ (mean per-layer change per frame): pixels also depend on what the picture
            # is (a dark scene shows a latent change less than a bright half-way picture)
            w_full, w_quiet = (float((w[skip + 1:] - w[skip:-1]).norm(dim=-1).mean()) for w in (ws, ws_quiet))
            out["loudness"] = {"full": motion_full, "tenth": motion_quiet, "ratio": motion_quiet / max(motion_full, 1e-9),
                               "latent_full": w_full, "latent_tenth": w_quiet,
                               "latent_ratio": w_quiet / max(w_full, 1e-9)}
    return out


def format_beat(r: dict[str, Any]) -> str:
    lines = [f"vjapp bench --beat — {r['bundle']}, {r['bpm']:g} BPM loops of {r['seconds']:g} s at {r['fps']:g} fps",
             "", f"{'loop':<16}{'after beat':>11}{'between':>9}{'ratio':>7}{'fine':>8}{'coarse':>8}"]
    for name, v in r["loops"].items():
        lines.append(f"{name:<16}{v['after_kick']:>11.2f}{v['between']:>9.2f}{v['ratio']:>7.2f}"
                     f"{v['fine_motion']:>8.3f}{v['coarse_motion']:>8.3f}")
    lo = r.get("loudness")
    if lo:
        lines += ["", f"loudness: mean frame change at 0.1 amplitude {lo['tenth']:.2f} vs full {lo['full']:.2f}: "
                      f"ratio {lo['ratio']:.2f}; in W+ {lo['latent_tenth']:.3f} vs {lo['latent_full']:.3f}: "
                      f"ratio {lo['latent_ratio']:.2f}"]
    lines += ["", "frame change = mean |Δpixel| (0..255) between consecutive frames; 'after beat' = within 100 ms "
                  "after each kick (hat loop: each beat); fine/coarse = mean W+ change per frame of those layers"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------
# Live latency
# ------------------------------------------------------------------------------------------


class _BurstFeeder:
    """Writes real-time blocks of quiet noise into a ring from its own thread, with loud bursts."""

    kind = "bench"

    def __init__(self, clock: Any, sample_rate: int = 48_000, block: int = 256, seed: int = 0) -> None:
        from vjapp.audio.ring import RingBuffer, next_pow2

        self.sample_rate = sample_rate
        self.block = block
        self.ring = RingBuffer(next_pow2(sample_rate * 8), 1)
        self.clock = clock
        self.rng = np.random.default_rng(seed)
        self.burst_times: list[float] = []  # engine-clock time each burst's first sample entered the ring
        self._burst_request = threading.Event()
        self._burst_left = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-feeder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def burst(self) -> None:
        self._burst_request.set()

    def _run(self) -> None:
        period = self.block / self.sample_rate
        t0 = self.clock.now()
        k = 0
        burst_len = int(0.25 * self.sample_rate)
        while not self._stop.is_set():
            k += 1
            wait = t0 + k * period - self.clock.now()
            if wait > 0:
                time.sleep(wait)
            x = (self.rng.standard_normal(self.block) * 10 ** (-50 / 20)).astype(np.float32)
            first = False
            if self._burst_request.is_set() and self._burst_left == 0:
                self._burst_request.clear()
                self._burst_left = burst_len
                first = True
            if self._burst_left > 0:
                n = burst_len - self._burst_left
                t = (np.arange(self.block) + n) / self.sample_rate
                x += (0.5 * np.sin(2 * np.pi * 60 * t) * np.exp(-t / 0.08)
                      + 0.3 * self.rng.standard_normal(self.block) * np.exp(-t / 0.05)).astype(np.float32)
                self._burst_left = max(0, self._burst_left - self.block)
            self.ring.write(np.clip(x, -1, 1))
            if first:
                self.burst_times.append(self.clock.now())


@dataclass
class _Recorded:
    times: list[float] = field(default_factory=list)
    small: list[np.ndarray] = field(default_factory=list)


def latency_bench(bundle_path: str | None = None, device: str = "auto", dtype: str = "auto", fps: float = 30.0,
                  bursts: int = 20, threads: int = 1, seed: int = 0) -> dict[str, Any]:
    """Sound in -> frame out on the live engine (see the module docstring); times in ms."""
    from vjapp.bundles import open_bundle
    from vjapp.engine.controls import Controls
    from vjapp.engine.engine import Engine, EngineConfig
    from vjapp.engine.interp import WallClock
    from vjapp.engine.mailbox import Mailbox

    bundle, where = open_bundle(bundle_path, "cpu", lazy_clip=True)
    clock = WallClock()
    feeder = _BurstFeeder(clock, seed=seed)
    rec = _Recorded()
    lock = threading.Lock()

    def on_frame(frame: Any) -> None:
        t = clock.now()
        img = frame.image[::4, ::4].astype(np.float32).mean(axis=2)  # small grey copy: cheap to keep
        with lock:
            rec.times.append(t)
            rec.small.append(img)

    controls = Mailbox(Controls().replace(fps=fps, model_rate=bundle.info.model_rate, seed=seed))
    engine = Engine(bundle, controls, [feeder], EngineConfig(device=device, dtype=dtype, threads=threads),  # type: ignore[list-item]
                    on_frame=on_frame, clock=clock)
    feeder.start()
    engine.start()
    engine.ready.wait(120)
    rng = np.random.default_rng(seed)
    try:
        time.sleep(3.0)  # settle: quiet sound, tempo tracker and envelopes at rest
        for _ in range(bursts):
            feeder.burst()
            # steady quiet sound before each burst (the previous one has died away), and a spacing
            # not locked to the frame clock
            time.sleep(2.0 + rng.uniform(0.0, 0.6))
        time.sleep(0.5)
    finally:
        engine.stop()
        feeder.stop()
    stat = engine.stats.snapshot()
    with lock:
        times = np.array(rec.times)
        small = np.stack(rec.small)
    first, half = [], []
    for tb in feeder.burst_times:
        pre = np.where((times >= tb - 0.5) & (times < tb))[0]
        post = np.where((times >= tb) & (times < tb + 0.8))[0]
        if pre.size < 3 or post.size < 3:
            continue
        noise = np.abs(np.diff(small[pre], axis=0)).mean(axis=(1, 2))
        threshold = float(noise.max()) * 1.5 + 0.2
        prev = pre[-1]
        ref = small[prev]
        steps = np.abs(small[post] - np.concatenate([small[prev:prev + 1], small[post[:-1]]])).mean(axis=(1, 2))
        hit = np.where(steps > threshold)[0]
        if hit.size:
            first.append((times[post[hit[0]]] - tb) * 1e3)
        dist = np.abs(small[post] - ref).mean(axis=(1, 2))
        peak = float(dist.max())
        if peak > threshold:
            reach = np.where(dist >= 0.5 * peak)[0]
            half.append((times[post[reach[0]]] - tb) * 1e3)

    def summary(x: list[float]) -> dict[str, float | int | None]:
        if not x:
            return {"median": None, "p95": None, "n": 0}
        return {"median": float(np.median(x)), "p95": float(np.percentile(x, 95)), "n": len(x)}

    return {"bundle": where, "fps": fps, "bursts": len(feeder.burst_times), "first_change_ms": summary(first),
            "half_change_ms": summary(half), "engine_latency_ms": stat.get("latency_ms"),
            "frames": int(times.size), "missed": len(feeder.burst_times) - len(first)}


def format_latency(r: dict[str, Any]) -> str:
    a, b = r["first_change_ms"], r["half_change_ms"]

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.0f}"

    return (f"latency at {r['fps']:g} fps ({r['bursts']} bursts, {r['frames']} frames, {r['bundle']}): "
            f"first change median {f(a['median'])} ms p95 {f(a['p95'])} ms (n={a['n']}); "
            f"half change median {f(b['median'])} ms p95 {f(b['p95'])} ms (n={b['n']})")
