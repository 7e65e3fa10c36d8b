"""The rhythm layer's analysis: band onsets, loudness, tempo and beat phase, tap tempo, clocks."""

from __future__ import annotations

import numpy as np
import pytest

from vjapp.audio.loops import make_loop
from vjapp.audio.rhythm import (
    BeatClock,
    BeatState,
    OnsetAnalyzer,
    RhythmAnalyzer,
    TapTempo,
    analysis_sizes,
)


def _feed(analyzer: RhythmAnalyzer, samples: np.ndarray, until_s: float | None = None, block: int = 256) -> None:
    end = samples.size if until_s is None else int(until_s * analyzer.sample_rate)
    for i in range(0, end, block):
        analyzer.feed(samples[i:min(i + block, end)])


@pytest.mark.parametrize("rate", [22_050, 44_100, 48_000, 96_000])
def test_analysis_windows_are_short_and_causal(rate):
    frame, hop = analysis_sizes(rate)
    assert frame <= 1024 and hop <= 256 and hop * 4 == frame
    assert 0.01 <= frame / rate <= 0.03


def test_onsets_land_in_their_bands():
    sr = 44_100
    kicks = make_loop(120, 6, sr, kicks=True, seed=1)
    hats = make_loop(120, 6, sr, kicks=False, hats=True, seed=2)
    a, b = OnsetAnalyzer(sr), OnsetAnalyzer(sr)
    a.process(kicks.samples)
    b.process(hats.samples)
    low, mid, high = a.onsets
    assert abs(low - len(kicks.kicks)) <= 1, a.onsets  # one low onset per kick
    assert b.onsets[2] >= len(hats.hats) - 2, b.onsets  # every hat in the high band
    assert b.onsets[0] <= 2  # hats are not kicks


def test_onset_times_are_causal_and_close_to_the_hits():
    sr = 48_000
    loop = make_loop(100, 5, sr, kicks=True, seed=3, start=0.2)
    a = OnsetAnalyzer(sr)
    times = [h.t for block in np.array_split(loop.samples, 300) for h in a.process(block) if h.onset[0]]
    assert len(times) == len(loop.kicks)
    err = np.array(times) - np.array(loop.kicks)
    assert np.abs(err).max() < 0.015, err


def test_loudness_envelopes_follow_level():
    sr = 44_100
    loud = make_loop(120, 3, sr, hats=True, bass=True, level=0.9)
    a, b = OnsetAnalyzer(sr), OnsetAnalyzer(sr)
    a.process(loud.samples)
    b.process(loud.samples * 0.1)
    assert a.loudness("slow") > b.loudness("slow") + 0.3
    assert a.loudness_db("slow") - b.loudness_db("slow") == pytest.approx(20.0, abs=1.5)
    c = OnsetAnalyzer(sr)
    c.process(np.zeros(sr, np.float32))
    assert c.loudness("fast") == 0.0 and not c.strength.any()


@pytest.mark.parametrize("sr", [44_100, 48_000])
@pytest.mark.parametrize("bpm", [90, 120, 128, 174])
@pytest.mark.parametrize("hats", [False, True])
def test_tempo_and_beat_predictions_on_steady_loops(bpm, sr, hats):
    loop = make_loop(bpm, 10, sr, hats=hats, seed=bpm + sr, start=0.13)
    a = RhythmAnalyzer(sr)
    _feed(a, loop.samples, until_s=6.0)
    assert a.tempo.bpm == pytest.approx(bpm, abs=1.0)
    # the beats it predicts from what it heard up to 6 s land on the kicks that follow
    assert np.abs(_prediction_errors(a, loop.kicks, 6.0, 9.5)).max() <= 0.030


@pytest.mark.parametrize("bpm", [120, 128, 174])
def test_busy_loop_tempo_and_phase(bpm):
    """Kick, hats on the eighths and a bass on every off-beat. (At 90 BPM such a loop reads as
    180: the off-beats are as strong as the beats, a known octave ambiguity; kick and kick + hat
    loops at 90 are read right.)"""
    loop = make_loop(bpm, 10, 44_100, hats=True, bass=True, seed=5)
    a = RhythmAnalyzer(44_100)
    _feed(a, loop.samples, until_s=6.0)
    assert a.tempo.bpm == pytest.approx(bpm, abs=1.0)
    assert np.abs(_prediction_errors(a, loop.kicks, 6.0, 9.0)).max() <= 0.030


def test_tempo_follows_a_change():
    sr = 44_100
    loop = make_loop([(0.0, 120.0), (8.0, 128.0)], 18, sr, hats=True, seed=9)
    a = RhythmAnalyzer(sr)
    _feed(a, loop.samples, until_s=7.9)
    assert a.tempo.bpm == pytest.approx(120, abs=1.0)
    _feed_from(a, loop.samples, 7.9, 16.0)
    assert a.tempo.bpm == pytest.approx(128, abs=1.0)
    assert np.abs(_prediction_errors(a, loop.kicks, 16.0, 17.5)).max() <= 0.030


def _prediction_errors(a: RhythmAnalyzer, kicks: list[float], t0: float, t1: float) -> np.ndarray:
    """For each kick in [t0 + 0.1, t1 - 0.1]: the distance to the nearest beat predicted at t0."""
    predicted = np.array(a.tempo.predicted_beats(t0, t1))
    assert predicted.size >= 2
    inside = [k for k in kicks if t0 + 0.1 <= k <= t1 - 0.1]
    assert inside
    return np.array([np.abs(predicted - k).min() for k in inside])


def _feed_from(a: RhythmAnalyzer, samples: np.ndarray, start_s: float, end_s: float) -> None:
    lo, hi = int(start_s * a.sample_rate), int(end_s * a.sample_rate)
    for i in range(lo, hi, 256):
        a.feed(samples[i:min(i + 256, hi)])


def test_no_tempo_in_silence_or_noise():
    a = RhythmAnalyzer(44_100)
    _feed(a, np.zeros(44_100 * 4, np.float32))
    assert a.tempo.bpm is None and a.beat_at(4.0) is None
    rng = np.random.default_rng(0)
    b = RhythmAnalyzer(44_100)
    _feed(b, (0.1 * rng.standard_normal(44_100 * 6)).astype(np.float32))
    assert b.tempo.bpm is None or b.tempo.confidence < 0.5


def test_tap_tempo_sets_tempo_and_phase():
    tap = TapTempo()
    assert tap.beat_at(0.0) is None
    for t in (10.0, 10.5, 11.0, 11.5):
        tap.tap(t)
    state = tap.beat_at(11.5)
    assert state is not None and state.bpm == pytest.approx(120.0)
    assert state.phase == pytest.approx(0.0)
    assert tap.beat_at(11.75).phase == pytest.approx(0.5)
    assert tap.beat_at(11.6).time_of_next(11.6) == pytest.approx(12.0)
    tap.tap(20.0)  # a long pause starts a new count
    assert tap.bpm is None


def test_beat_clock_prefers_the_chosen_source_and_falls_back():
    class Fixed:
        name = "external"

        def beat_at(self, t: float) -> BeatState:
            return BeatState(174.0, t * 174.0 / 60.0, 1.0, "external")

    audio = RhythmAnalyzer(44_100)
    clock = BeatClock(audio)
    assert clock.beat_at(1.0) is None
    clock.choice = "external"
    assert clock.beat_at(1.0) is None  # none attached: falls back to the (silent) audio tracker
    clock.set_external(Fixed())
    assert clock.beat_at(1.0).bpm == 174.0
    clock.choice = "tap"
    clock.tap.tap(0.0)
    clock.tap.tap(0.6)
    assert clock.beat_at(1.0).bpm == pytest.approx(100.0)


def test_bar_and_beat_times():
    s = BeatState(120.0, 5.25, 1.0, "audio")
    assert s.time_of_next(10.0, "beat") == pytest.approx(10.375)
    assert s.time_of_next(10.0, "bar") == pytest.approx(10.0 + 2.75 * 0.5)
    assert s.bar_phase == pytest.approx(1.25 / 4)
