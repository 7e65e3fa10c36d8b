"""Ableton Link: two real Link peers in this process find each other; a tempo set on one reaches
the other, both agree on beat and bar phase at the same engine-clock instant; the show's BeatClock
follows Link when the external source is chosen."""

from __future__ import annotations

import sys
import time
from typing import Callable

import pytest

from vjapp.audio.link_clock import LinkClock, LinkError
from vjapp.audio.rhythm import BeatClock, TapTempo


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


@pytest.fixture
def peers():
    pytest.importorskip("aalink", reason='Link tests need `pip install "vjapp[link]"` (aalink)')
    clocks = [LinkClock(bpm=100.0), LinkClock(bpm=90.0)]
    for c in clocks:
        c.start()
    yield clocks
    for c in clocks:
        c.stop()


@pytest.fixture
def alone():
    """One peer (another peer joining would bring its own tempo into the session)."""
    pytest.importorskip("aalink", reason='Link tests need `pip install "vjapp[link]"` (aalink)')
    clock = LinkClock(bpm=120.0)
    clock.start()
    yield clock
    clock.stop()


def _phase_gap(a: float, b: float, period: float) -> float:
    d = (a - b) % period
    return min(d, period - d)


def test_two_link_peers_share_tempo_and_phase(peers) -> None:
    leader, follower = peers
    assert wait_until(lambda: leader.peers >= 1 and follower.peers >= 1, 10), \
        "the two Link peers did not find each other (multicast on this host?)"
    leader.set_tempo(128.0)
    assert wait_until(lambda: abs(follower.tempo - 128.0) <= 1.0, 5), f"follower at {follower.tempo} BPM"
    time.sleep(0.3)  # let the session settle its timeline after the tempo change
    t = time.perf_counter() + 0.05  # an instant on the engine's clock, asked of both peers
    a, b = leader.beat_at(t), follower.beat_at(t)
    assert a is not None and b is not None
    assert a.bpm == pytest.approx(128.0, abs=1.0) and b.bpm == pytest.approx(128.0, abs=1.0)
    assert a.source == b.source == "link"
    assert _phase_gap(a.phase, b.phase, 1.0) < 0.02  # beat phase: within 2 % of a beat (~10 ms)
    assert _phase_gap(a.bar_phase, b.bar_phase, 1.0) < 0.005  # and on the same beat of the bar

    follower.set_tempo(140.0)  # any peer may lead
    assert wait_until(lambda: abs(leader.tempo - 140.0) <= 1.0, 5)


def test_link_beat_advances_at_the_session_tempo_on_the_engine_clock(alone) -> None:
    clock = alone
    assert clock.tempo == 120.0
    t0 = time.perf_counter()
    s0 = clock.beat_at(t0)
    time.sleep(0.25)
    s1 = clock.beat_at(t0 + 0.5)  # asked later about an instant 0.5 s after t0: one beat at 120 BPM
    assert s1.beat - s0.beat == pytest.approx(1.0, abs=0.01)
    clock.set_tempo(150.0)
    assert clock.tempo == 150.0 and clock.beat_at(t0).bpm == 150.0
    assert s1.period == pytest.approx(0.5)
    assert s1.beats_per_bar == 4


def test_beat_clock_follows_link_when_external_is_chosen(alone) -> None:
    clock = BeatClock(audio=TapTempo())  # stands in for the audio tracker: knows no tempo
    clock.set_external(alone)
    now = time.perf_counter()
    assert clock.beat_at(now) is None  # the audio tracker is in charge and knows nothing yet
    clock.choice = "external"
    state = clock.beat_at(now)
    assert state is not None and state.source == "link"
    alone.stop()
    assert clock.beat_at(now) is None  # Link gone: back to the (silent) audio tracker


def test_link_without_aalink_says_how_to_get_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "aalink", None)
    clock = LinkClock()
    with pytest.raises(LinkError, match=r'`pip install "vjapp\[link\]"` \(aalink, GPL-3.0-or-later\)'):
        clock.start()
    assert clock.beat_at(time.perf_counter()) is None
    with pytest.raises(ValueError, match="20..999"):
        LinkClock(bpm=5)


def test_the_app_follows_a_link_session_with_link(qtbot, tmp_path, tiny_bundle_dir) -> None:
    """`vjapp --link`: the app joins the session, a DJ's peer sets 132 BPM, and with the tempo
    source 'external' the show's beat clock runs at it (also after a new engine)."""
    pytest.importorskip("aalink", reason='Link tests need `pip install "vjapp[link]"` (aalink)')
    from vjapp.app import build_app
    from vjapp.engine.controls import set_path
    from vjapp.gui import default_args

    dj = LinkClock(bpm=132.0)
    dj.start()
    ctx = build_app(default_args(bundle=str(tiny_bundle_dir), windowed=True, no_osc=True, mute=True, threads=1,
                                 link=True, settings=str(tmp_path / "s.ini"), data_dir=str(tmp_path / "data")))
    try:
        assert ctx.link is not None and ctx.engine.beat_clock.external is ctx.link
        assert wait_until(lambda: ctx.link.peers >= 1, 20), "the app's Link peer did not find the DJ's"
        dj.set_tempo(132.0)
        assert wait_until(lambda: abs((ctx.link.tempo or 0) - 132.0) <= 1.0, 10), \
            f"app at {ctx.link.tempo} BPM, DJ at {dj.tempo}, peers {ctx.link.peers}/{dj.peers}"
        ctx.controls.update(lambda c: set_path(c, "rhythm.tempo_source", "external"))
        assert wait_until(lambda: ctx.engine.beat_clock.choice == "external", 10), "the engine did not take the choice"
        state = ctx.engine.beat_clock.beat_at(time.perf_counter())
        assert state is not None and state.source == "link" and state.bpm == pytest.approx(132.0, abs=1.0)
    finally:
        ctx.shutdown()
        dj.stop()
    assert not ctx.link.running
