"""The sound -> latent -> frame show: reactivity, prompts, style mixing, the live engine thread."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from model.bundle import load_bundle
from vjapp.engine.controls import Controls, set_path
from vjapp.engine.engine import Engine, EngineConfig
from vjapp.engine.mailbox import Mailbox
from vjapp.engine.show import Show

CPU = torch.device("cpu")




def _tone(seconds: float, sr: int, db: float, seed: int = 0) -> torch.Tensor:
    """A noisy chord at roughly ``db`` dBFS RMS."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = np.sin(2 * np.pi * 220 * t) + 0.5 * np.sin(2 * np.pi * 660 * t) + 0.5 * rng.standard_normal(t.size)
    x *= 10 ** (db / 20) / np.sqrt(np.mean(x**2))
    return torch.from_numpy(x.astype(np.float32))


def _motion(show: Show, audio: torch.Tensor, steps: int = 8, **controls) -> float:
    """Total latent motion over ``steps`` model steps fed with windows of ``audio``."""
    show.reset()
    show.apply(Controls().replace(**controls), 0.0, immediate=True)
    n = show.sound.window_samples
    total = 0.0
    for k in range(steps):
        window = audio[k * n // 4: k * n // 4 + n]
        total += show.model_step(k * 0.1, [window]).motion
    return total


def test_silence_holds_still_and_loud_sound_moves(show):
    sr = show.sound.sample_rate
    silent = _motion(show, torch.zeros(sr * 2))
    loud = _motion(show, _tone(2.0, sr, -12))
    assert silent == 0.0
    assert loud > 1e-3


def test_motion_grows_with_loudness_and_gain(show):
    sr = show.sound.sample_rate
    quiet = _motion(show, _tone(2.0, sr, -40))
    loud = _motion(show, _tone(2.0, sr, -12))
    assert loud > 1.5 * quiet > 0
    g1 = _motion(show, _tone(2.0, sr, -12), gain=1.0)
    g2 = _motion(show, _tone(2.0, sr, -12), gain=2.0)
    assert g2 > 1.5 * g1
    # with loudness reactivity off, a quiet and a loud sound move the picture by similar amounts
    q0 = _motion(show, _tone(2.0, sr, -40), loudness_reactivity=0.0)
    l0 = _motion(show, _tone(2.0, sr, -12), loudness_reactivity=0.0)
    assert 0.2 < q0 / l0 < 5


def test_group_gains_confine_motion_to_their_layers(show):
    sr = show.sound.sample_rate
    show.reset()
    controls = Controls().replace(smoothing=0.0)
    controls = set_path(set_path(controls, "group_gains.mid", 0.0), "group_gains.fine", 0.0)
    show.apply(controls, 0.0, immediate=True)
    show.model_step(0.0, [_tone(0.5, sr, -12)])
    per_layer = show.sound.offset[0].norm(dim=-1)  # [num_ws]
    (c0, c1), (m0, m1), (f0, f1) = show.sound.groups
    assert per_layer[c0:c1].min() > 0
    assert torch.all(per_layer[m0:f1] == 0)


def test_frames_are_uint8_rgb_and_follow_the_seed(show):
    show.model_step(0.0, [])
    a = show.frame_at(0.0)
    assert a.dtype == np.uint8 and a.shape == (32, 32, 3) and a.flags.c_contiguous
    show.apply(Controls().replace(seed=7), 0.0, immediate=True)
    show.model_step(0.1, [])
    b = show.frame_at(0.1)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 1.0


def test_prompt_changes_the_picture(show):
    show.model_step(0.0, [])
    before = show.frame_at(0.0)
    controls = Controls().replace(prompt="a volcano at night")
    show.resolve_prompts(controls)
    show.apply(controls, 0.0, immediate=True)
    assert show.search is not None and show.search.cached("a volcano at night") is not None
    show.model_step(0.1, [])
    after = show.frame_at(0.1)
    assert np.abs(before.astype(int) - after.astype(int)).mean() > 1.0


def test_prompt_search_runs_in_small_steps_and_crossfades(show):
    show.model_step(0.0, [])
    controls = Controls().replace(prompt="waterfall")
    show.apply(controls, 0.0)
    assert show.search.pending == "waterfall"  # not resolved in one go
    arrived = False
    for _ in range(100):
        arrived = show.background_work(1.0)
        if arrived:
            break
    assert arrived
    hit = show.search.cached("waterfall").latent
    # mid-crossfade the base is between the old and the new latent; after it, on the new one
    mid = show.base.value(1.0 + show.config.crossfade_seconds / 2).clone()
    end = show.base.value(1.0 + show.config.crossfade_seconds + 0.01)
    assert torch.allclose(end, hit)
    assert not torch.allclose(mid, hit)


def test_style_mix_takes_groups_from_another_seed(show):
    base = Controls().replace(smoothing=0.0)
    show.apply(base, 0.0, immediate=True)
    plain = show.sound.compose(show.base.value(0.0), base, show._mix)
    mixed_controls = set_path(set_path(base, "mix.coarse.source_kind", "seed"), "mix.coarse.seed", 123)
    show.apply(mixed_controls, 0.0, immediate=True)
    mixed = show.sound.compose(show.base.value(0.0), mixed_controls, show._mix)
    (c0, c1), (m0, _), _ = show.sound.groups
    assert not torch.allclose(mixed[c0:c1], plain[c0:c1])
    assert torch.equal(mixed[m0:], plain[m0:])  # the other groups are untouched
    half = set_path(mixed_controls, "mix.coarse.strength", 0.5)
    show.apply(half, 0.0, immediate=True)
    halfway = show.sound.compose(show.base.value(0.0), half, show._mix)
    assert torch.allclose(halfway[c0:c1], (plain[c0:c1] + mixed[c0:c1]) / 2, atol=1e-5)


def test_group_smoothing_slows_only_its_group(show):
    sr = show.sound.sample_rate
    audio = _tone(0.5, sr, -12)
    show.reset()
    controls = set_path(Controls().replace(smoothing=0.0), "group_smoothing.fine", 0.9)
    show.apply(controls, 0.0, immediate=True)
    show.model_step(0.0, [audio])
    smoothed = show.sound.offset[0].norm(dim=-1)
    show.reset()
    show.apply(Controls().replace(smoothing=0.0), 0.0, immediate=True)
    show.model_step(0.0, [audio])
    free = show.sound.offset[0].norm(dim=-1)
    (c0, c1), _, (f0, f1) = show.sound.groups
    assert torch.allclose(smoothed[c0:c1], free[c0:c1])
    assert torch.allclose(smoothed[f0:f1], 0.1 * free[f0:f1], rtol=1e-4)


def test_two_sources_mix_by_weight(show):
    sr = show.sound.sample_rate
    loud, silent = _tone(0.5, sr, -12), torch.zeros(sr // 2)
    for weights, moves in (((1.0, 0.0), True), ((0.0, 1.0), False)):
        show.reset()
        show.apply(Controls().replace(source_weights=weights), 0.0, immediate=True)
        motion = show.model_step(0.0, [loud, silent]).motion
        assert (motion > 0) == moves


class _RingSource:
    """A minimal source: a ring the test fills, at a fixed rate."""

    def __init__(self, sr: int) -> None:
        from vjapp.audio import RingBuffer

        self.ring = RingBuffer(1 << 16)
        self.sample_rate = sr


def test_engine_thread_publishes_frames_and_survives_errors(tiny_bundle_dir):
    src = _RingSource(22050)
    src.ring.write(_tone(1.0, 22050, -12).numpy())
    controls = Mailbox(Controls().replace(fps=30.0, model_rate=10.0))
    errors: list[str] = []
    got = threading.Event()
    engine = Engine(load_bundle(tiny_bundle_dir), controls, [src], EngineConfig(device="cpu", dtype="fp32"),
                    on_frame=lambda f: got.set(), on_error=errors.append)
    engine.start()
    try:
        assert got.wait(30), f"no frame; errors: {errors}"
        first = engine.frames.take_newer(0)
        assert first is not None and first[1].image.shape == (32, 32, 3)
        heard = engine.analysis.wait_newer(0, timeout=10)
        assert heard is not None and heard[1].mel is not None and heard[1].mel.shape[0] == 32
        assert heard[1].loudness > 0.5  # the ring holds a loud chord

        class Broken:
            sample_rate = 22050

            @property
            def ring(self):
                raise OSError("device unplugged")

        engine.set_sources([Broken()])
        deadline = time.monotonic() + 10
        while not errors and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any("device unplugged" in e for e in errors)
        engine.set_sources([src])
        stamp = engine.frames.stamp
        assert engine.frames.wait_newer(stamp, timeout=10) is not None  # still rendering
        assert engine.running
        controls.update(lambda c: c.replace(seed=42))
        time.sleep(0.3)
        snap = engine.stats.snapshot()
        assert snap["frames"]["display"] > 0 and snap["stages"]["synthesis"]["count"] > 0
    finally:
        engine.stop()
    assert not engine.running


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without CUDA")
def test_engine_asked_for_cuda_without_one_plays_on_the_cpu(tiny_bundle_dir):
    errors: list[str] = []
    engine = Engine(load_bundle(tiny_bundle_dir), Mailbox(Controls()), [], EngineConfig(device="cuda", dtype="fp32"),
                    on_error=errors.append)
    engine.start()
    try:
        assert engine.frames.wait_newer(0, timeout=30) is not None
        assert any("CPU instead" in e for e in errors)
        assert engine.show is not None and engine.show.device.type == "cpu"
    finally:
        engine.stop()
