"""The rhythm layer in the show: directions, pulses per layer group, loudness, quantised changes,
the rhythm of a rendered MP4 and of the live engine."""

from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile as sf
import torch

from model.bundle import load_bundle
from vjapp.audio.loops import make_loop
from vjapp.audio.rhythm import BeatState, TapTempo
from vjapp.engine.controls import Controls, set_path
from vjapp.engine.offline import OfflineShow
from vjapp.engine.pulses import directions_for, mapping_hash
from vjapp.engine.quantize import ChangeQuantizer
from vjapp.engine.show import Show

# `show`: a Show on the tiny bundle (conftest.py)


def test_directions_are_deterministic_cached_and_follow_the_generator(tiny_bundle_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    bundle = load_bundle(tiny_bundle_dir)
    G = bundle.generator
    first = directions_for(G, bundle.root)
    cached = list((bundle.root / "cache").glob("directions-*.safetensors"))
    assert [p.name for p in cached] == [f"directions-{first.key}.safetensors"]
    again = directions_for(G, bundle.root)
    assert torch.equal(first.directions, again.directions)
    # unit, orthogonal, sorted by spread
    gram = first.directions @ first.directions.T
    assert torch.allclose(gram, torch.eye(gram.shape[0]), atol=1e-4)
    assert bool((first.std[:-1] >= first.std[1:]).all())
    # another generator (changed weights): another key, recomputed, not the stale cache
    with torch.no_grad():
        next(G.mapping.parameters()).add_(0.5)
    assert mapping_hash(G.mapping) != first.key
    changed = directions_for(G, bundle.root)
    assert changed.key != first.key and not torch.allclose(changed.directions, first.directions)
    assert len(list((bundle.root / "cache").glob("directions-*"))) == 2


def test_pulses_move_only_their_layer_group_and_can_be_remapped(show):
    (c0, c1), (m0, m1), (f0, f1) = show.sound.groups
    show.listen([(1.0, 0.0, 0.0)] * 4, 0.005, 1.0)  # a kick: the low band only
    rows = show.pulse().norm(dim=-1)
    assert rows[c0:c1].min() > 0 and rows[c1:].abs().max() == 0
    show.pulses.reset()
    show.listen([(0.0, 0.0, 1.0)] * 4, 0.005, 1.0)  # a hat: the high band only
    rows = show.pulse().norm(dim=-1)
    assert rows[f0:f1].min() > 0 and rows[:f0].abs().max() == 0
    show.apply(set_path(show.controls, "rhythm.high.group", "coarse"), 0.0)
    rows = show.pulse().norm(dim=-1)
    assert rows[c0:c1].min() > 0 and rows[c1:].abs().max() == 0
    show.apply(set_path(show.controls, "rhythm.amount", 0.0), 0.0)
    assert show.pulse() is None


def test_pulses_attack_and_release(show):
    show.apply(set_path(show.controls, "rhythm.release", 0.1), 0.0)
    show.listen([(1.0, 0.0, 0.0)] * 6, 0.005, 1.0)
    peak = float(show.pulses.value[0])
    assert peak > 0.9
    show.listen([(0.0, 0.0, 0.0)] * 20, 0.005, 1.0)  # 100 ms of nothing: one release time
    assert float(show.pulses.value[0]) == pytest.approx(peak * np.exp(-1.0), rel=0.05)


def test_off_beat_onsets_pulse_less(show):
    on = BeatState(120.0, 8.0, 1.0, "tap")  # exactly on a beat
    off = BeatState(120.0, 8.5, 1.0, "tap")  # half way between
    show.listen([(1.0, 0.0, 0.0)] * 6, 0.005, 1.0, [on] * 6)
    on_value = float(show.pulses.value[0])
    show.pulses.reset()
    show.listen([(1.0, 0.0, 0.0)] * 6, 0.005, 1.0, [off] * 6)
    assert float(show.pulses.value[0]) == pytest.approx(on_value * show.controls.rhythm.offbeat, rel=0.05)


def _latent_motion(show: Show, samples: np.ndarray, sr: int, seconds: float) -> float:
    from vjapp.audio import resample

    show.reset()
    show.apply(show.controls, 0.0, immediate=True)
    drive = OfflineShow(show, torch.from_numpy(resample(samples, sr, show.sound.sample_rate)), samples, sr,
                        show.controls.model_rate)
    times = [i / 30 for i in range(int(seconds * 30))]
    ws = torch.cat([drive.ws_at(times[i:i + 4]) for i in range(0, len(times), 4)])
    return float((ws[1:] - ws[:-1]).norm(dim=-1).mean())


def test_quiet_sound_moves_the_picture_clearly_less(show):
    loop = make_loop(120, 6, 44_100, hats=True, bass=True, seed=11)
    full = _latent_motion(show, loop.samples, 44_100, 6)
    tenth = _latent_motion(show, loop.samples * 0.1, 44_100, 6)
    print(f"latent motion at 0.1 amplitude / full scale: {tenth / full:.2f}")
    assert full > 0 and tenth < 0.5 * full


def test_quantised_change_waits_for_the_beat():
    q = ChangeQuantizer()
    tap = TapTempo()
    for t in (0.0, 0.5, 1.0):
        tap.tap(t)
    shown = set_path(Controls(), "rhythm.quantize", "beat")
    new = shown.replace(seed=42, gain=2.0)
    now = 1.1
    applied = q.submit(shown, new, now, tap.beat_at(now))
    assert applied.seed == 0 and applied.gain == 2.0  # the gain at once, the seed on the beat
    assert q.due(1.3) is None
    assert q.due(1.499) is None
    landed = q.due(1.5)
    assert landed is not None and landed.seed == 42
    # by the bar: the next downbeat (beats counted from the first tap)
    q2 = ChangeQuantizer()
    bar = set_path(Controls(), "rhythm.quantize", "bar")
    q2.submit(bar, bar.replace(prompt="fire"), 1.1, tap.beat_at(1.1))
    assert q2.pending is not None and q2.pending.due == pytest.approx(2.0)
    # off, or no tempo: at once
    assert ChangeQuantizer().submit(Controls(), Controls().replace(seed=5), 1.1, tap.beat_at(1.1)).seed == 5
    assert ChangeQuantizer().submit(shown, new, 1.1, None).seed == 42


def test_rendered_mp4_pulses_with_the_kicks(tiny_bundle_dir, tmp_path):
    import av

    from vjapp.render import render_file

    loop = make_loop(120, 8, 44_100, kicks=True, seed=4)
    wav = tmp_path / "kick.wav"
    sf.write(wav, loop.samples, 44_100)
    out = tmp_path / "kick.mp4"
    render_file(wav, out, Controls().replace(fps=30.0, gain=0.0), tiny_bundle_dir, "cpu", "fp32", progress=False)
    with av.open(str(out)) as c:
        frames = np.stack([f.to_ndarray(format="rgb24").astype(np.float32) for f in c.decode(video=0)])
    change = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    t = (np.arange(change.size) + 1) / 30.0
    after = np.zeros(change.size, bool)
    for k in loop.kicks:
        after |= (t >= k) & (t < k + 0.1)
    keep = t > 2.0
    ratio = change[after & keep].mean() / change[~after & keep].mean()
    assert ratio > 3.0, ratio


def test_live_engine_finds_the_tempo_and_takes_taps(tiny_bundle_dir):
    from vjapp.audio import SyntheticSource
    from vjapp.engine.engine import Engine, EngineConfig
    from vjapp.engine.mailbox import Mailbox

    loop = make_loop(120, 4, 44_100, hats=True, seed=6)
    source = SyntheticSource(loop.samples, sample_rate=44_100, blocksize=256)
    engine = Engine(load_bundle(tiny_bundle_dir), Mailbox(Controls().replace(fps=30.0)), [source],
                    EngineConfig(device="cpu", dtype="fp32", threads=1))
    source.start()
    engine.start()
    try:
        assert engine.ready.wait(60)
        deadline = time.monotonic() + 20
        snap = None
        while time.monotonic() < deadline:
            got = engine.rhythm.take_newer(0)
            snap = got[1] if got is not None else None
            if snap is not None and snap.bpm is not None and abs(snap.bpm - 120) < 1.0:
                break
            time.sleep(0.2)
        assert snap is not None and snap.bpm == pytest.approx(120, abs=1.0)
        assert sum(snap.onsets) > 0
        assert engine.last_error is None
        engine.tap_tempo()  # a tap reaches the engine's tap tempo (any thread)
        assert len(engine.tap._taps) == 1
    finally:
        engine.stop()
        source.stop()


def test_meaning_reach_bounds_how_far_the_sound_pulls(show):
    loud = make_loop(120, 3, 44_100, hats=True, bass=True, seed=12)
    from vjapp.audio import resample

    x = torch.from_numpy(resample(loud.samples, 44_100, show.sound.sample_rate))
    n = show.sound.window_samples
    for reach in (1.0, 0.25):
        show.reset()
        controls = Controls().replace(semantic_reach=reach, gain=4.0, smoothing=0.0)
        show.apply(controls, 0.0, immediate=True)
        for k in range(20):
            show.model_step(k * 0.1, [x[k * n // 8: k * n // 8 + n]])
        rows = show.sound.offset[0].norm(dim=-1)
        assert float(rows.max()) <= show.sound.config.max_offset * reach + 1e-4
    assert float(rows.max()) > 0.0


def test_live_engine_lands_a_quantised_seed_change_on_the_tapped_beat(tiny_bundle_dir):
    from vjapp.audio import SyntheticSource
    from vjapp.engine.engine import Engine, EngineConfig
    from vjapp.engine.mailbox import Mailbox

    controls = Mailbox(set_path(set_path(Controls().replace(fps=30.0, model_rate=10.0), "rhythm.quantize", "beat"),
                                "rhythm.tempo_source", "tap"))
    source = SyntheticSource(np.zeros(44_100, np.float32), sample_rate=44_100, blocksize=256)
    engine = Engine(load_bundle(tiny_bundle_dir), controls, [source], EngineConfig(device="cpu", dtype="fp32", threads=1))
    source.start()
    engine.start()
    try:
        assert engine.ready.wait(60)
        time.sleep(0.3)
        now = engine.clock.now()
        for k in range(4):  # taps at 100 BPM (0.6 s), the last one now: beats at now + 0.6 k
            engine.tap.tap(now - 0.6 * (3 - k))
        time.sleep(0.15)  # between beats
        asked = engine.clock.now()
        controls.update(lambda c: c.replace(seed=77))
        time.sleep(1.0)
        show = engine.show
        assert show.controls.seed == 77  # it landed
        beat = now + 0.6 * np.ceil((asked - now) / 0.6)  # the first beat after the request
        # the crossfade starts one model period early, so the picture, shown that much behind,
        # changes on the beat (within a frame of the engine's loop)
        start = show.base._t0
        assert start > asked + 0.05, (start, asked)
        assert abs((start + 0.1) - beat) < 1 / 30 + 0.02, (start + 0.1, beat)
        assert engine.last_error is None
    finally:
        engine.stop()
        source.stop()


def test_pulses_wait_for_what_the_room_hears(tiny_bundle_dir):
    """A file played to speakers is heard its output latency after it enters the ring: the pulse
    comes that much later, in sync with the room, not ahead of it."""
    from vjapp.audio import SyntheticSource
    from vjapp.engine.engine import Engine, EngineConfig
    from vjapp.engine.mailbox import Mailbox

    class HeardLater(SyntheticSource):
        heard_latency = 0.3

    def first_pulse_delay(cls: type) -> float:
        sr = 44_100
        signal = np.zeros(sr * 3, np.float32)
        hit = make_loop(60, 1.0, sr, kicks=True).samples
        signal[sr:sr + hit.size] = hit  # one kick, 1 s in
        source = cls(signal, sample_rate=sr, blocksize=256, loop=False)
        engine = Engine(load_bundle(tiny_bundle_dir), Mailbox(Controls().replace(fps=60.0)), [source],
                        EngineConfig(device="cpu", dtype="fp32", threads=1))
        engine.start()
        assert engine.ready.wait(60)
        source.start()
        entered = None
        try:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                if entered is None and source.ring.write_index >= sr:
                    entered = time.monotonic()
                if engine.show is not None and engine.show.pulses.value[0] > 0.05:  # silence before: 0
                    return time.monotonic() - entered
                time.sleep(0.002)
        finally:
            engine.stop()
            source.stop()
        raise AssertionError("no pulse")

    direct = first_pulse_delay(SyntheticSource)
    later = first_pulse_delay(HeardLater)
    assert direct < 0.15, direct
    assert 0.25 < later - direct < 0.4, (direct, later)


def test_the_tempo_source_chosen_before_the_engine_runs_is_taken(tiny_bundle_dir):
    from vjapp.engine.engine import Engine, EngineConfig
    from vjapp.engine.mailbox import Mailbox

    controls = Mailbox(set_path(Controls(), "rhythm.tempo_source", "tap"))
    engine = Engine(load_bundle(tiny_bundle_dir), controls, [], EngineConfig(device="cpu", dtype="fp32", threads=1))
    engine.start()
    try:
        assert engine.ready.wait(60)
        deadline = time.monotonic() + 5
        while engine.beat_clock.choice != "tap" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.beat_clock.choice == "tap"
    finally:
        engine.stop()
