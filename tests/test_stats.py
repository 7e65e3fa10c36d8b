"""EngineStats: rates, stage timings, percentiles, counters, fixed memory."""

from __future__ import annotations

import json
import time
import tracemalloc

import numpy as np
import pytest

from vjapp.engine.stats import EngineStats


class FakeNs:
    def __init__(self) -> None:
        self.t = 0

    def __call__(self) -> int:
        return self.t


def test_percentiles_and_ema_over_a_fixed_window() -> None:
    stats = EngineStats(window=50, ema_alpha=0.5)
    for v in range(1, 101):
        stats.record_stage("synthesis", float(v))
    s = stats.snapshot()["stages"]["synthesis"]
    kept = np.arange(51, 101, dtype=float)  # only the newest 50 samples count
    assert s["p50"] == pytest.approx(np.percentile(kept, 50))
    assert s["p90"] == pytest.approx(np.percentile(kept, 90))
    assert (s["last"], s["max"], s["count"]) == (100.0, 100.0, 100)
    stats2 = EngineStats(ema_alpha=0.5)
    stats2.record_stage("mel", 0.0)
    stats2.record_stage("mel", 10.0)
    assert stats2.snapshot()["stages"]["mel"]["ema"] == 5.0


def test_stage_timer_measures_the_block() -> None:
    stats = EngineStats()
    for _ in range(3):
        with stats.stage("encoders"):
            time.sleep(0.02)
    s = stats.snapshot()["stages"]["encoders"]
    assert s["count"] == 3 and 19.0 <= s["p50"] < 500.0
    assert stats.stage("encoders") is stats.stage("encoders")  # one timer per name, reused


def test_stage_timer_records_even_when_the_block_raises() -> None:
    stats = EngineStats()
    with pytest.raises(RuntimeError):
        with stats.stage("to_uint8"):
            raise RuntimeError("boom")
    assert stats.snapshot()["stages"]["to_uint8"]["count"] == 1


def test_rates_over_a_sliding_window() -> None:
    clock = FakeNs()
    stats = EngineStats(rate_window_s=1.0, clock_ns=clock)
    for i in range(600):  # 10 s of display at 60 fps, model at 12 Hz
        clock.t = int(i * 1e9 / 60)
        stats.tick_display()
        if i % 5 == 0:
            stats.tick_model()
    snap = stats.snapshot()
    assert snap["display_fps"] == pytest.approx(60.0, rel=1e-6)
    assert snap["model_fps"] == pytest.approx(12.0, rel=1e-6)
    assert snap["frames"] == {"display": 600, "model": 120}
    for i in range(60):  # display slows to 30 fps: the window follows within a second
        clock.t += int(1e9 / 30)
        stats.tick_display()
    assert stats.snapshot()["display_fps"] == pytest.approx(30.0, rel=1e-6)
    clock.t += int(3e9)  # stalled: rates fall to zero instead of freezing
    assert stats.snapshot()["display_fps"] == 0.0


def test_counters_latency_gauges_and_snapshot_is_a_detached_json_dict() -> None:
    stats = EngineStats()
    snap0 = stats.snapshot()
    assert snap0["counters"]["skipped_frames"] == 0
    assert snap0["latency_ms"]["p50"] is None
    stats.count("skipped_frames", 3)
    stats.count("osc_bad_packets")
    stats.gauge("recorder_queue", 2)
    for ms in (40.0, 50.0, 60.0):
        stats.record_latency(ms)
    snap = stats.snapshot()
    json.dumps(snap)  # JSON-friendly throughout
    assert snap["counters"]["skipped_frames"] == 3 and snap["counters"]["osc_bad_packets"] == 1
    assert snap["gauges"] == {"recorder_queue": 2.0}
    assert snap["latency_ms"]["p50"] == 50.0
    snap["counters"]["skipped_frames"] = 999  # a caller's copy cannot touch the live stats
    stats.count("skipped_frames")
    assert stats.snapshot()["counters"]["skipped_frames"] == 4
    assert snap0["counters"]["skipped_frames"] == 0  # an old snapshot does not change
    stats.reset()
    assert stats.snapshot()["counters"]["skipped_frames"] == 0


def test_name_cap_and_fixed_memory() -> None:
    stats = EngineStats(window=64, max_names=4)
    for name in ("a", "b", "c", "d"):
        stats.record_stage(name, 1.0)
    with pytest.raises(ValueError, match="too many stat names"):
        stats.record_stage("e", 1.0)

    def run(n: int) -> None:
        for i in range(n):
            with stats.stage("b"):
                pass
            stats.record_latency(float(i))
            stats.tick_display()
            stats.tick_model()

    tracemalloc.start()  # before the warm-up, so replaced ring entries count as freed
    run(2000)  # fill every ring once
    before = tracemalloc.get_traced_memory()[0]
    run(50_000)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 20_000


def test_stage_timer_overhead_is_small() -> None:
    stats = EngineStats()
    timer = stats.stage("x")
    n = 20_000
    t0 = time.perf_counter()
    for _ in range(n):
        with timer:
            pass
    per_call_us = (time.perf_counter() - t0) / n * 1e6
    assert per_call_us < 20.0  # ~1 us measured; bound generous for a shared CI machine


def test_a_slow_engine_reads_its_real_rate_not_zero() -> None:
    """Frames slower than one per rate window (a big bundle warming up on a CPU) still read as
    their rate while they keep coming; only a real stall reads 0."""
    clock = FakeNs()
    stats = EngineStats(rate_window_s=2.0, clock_ns=clock)
    for i in range(5):  # one frame every 2.5 s
        clock.t = int(i * 2.5e9)
        stats.tick_display()
        clock.t += int(1e9)  # read a second after the frame
        assert stats.snapshot()["display_fps"] == (0.0 if i == 0 else pytest.approx(0.4))
    clock.t = int(4 * 2.5e9 + 4e9)  # the next frame is late: the rate falls with the wait
    assert stats.snapshot()["display_fps"] == pytest.approx(0.25)
    clock.t = int(4 * 2.5e9 + 8e9)  # three intervals and a window without a frame: stalled
    assert stats.snapshot()["display_fps"] == 0.0


def test_recent_counts_give_the_growth_over_the_last_seconds_and_restart_on_a_reset() -> None:
    from vjapp.engine.stats import RecentCounts

    recent = RecentCounts(window_s=10.0)
    assert recent.share("skipped", "slots") is None
    for t in range(0, 31):  # 30 s: 2 skipped of 60 slots a second for 20 s, then none
        skipped = 2 * min(t, 20)
        recent.add(float(t), {"skipped": skipped, "slots": 60 * t})
    assert recent.span_s() == 10.0 and recent.increase("skipped") == 0 and recent.share("skipped", "slots") == 0.0
    recent.add(31.0, {"skipped": 50, "slots": 1900})
    assert recent.increase("skipped") == 10
    recent.add(32.0, {"skipped": 1, "slots": 60})  # a new engine: its totals start again
    assert recent.increase("skipped") == 0 and recent.span_s() == 0.0
    recent.add(33.0, {"skipped": 4, "slots": 120})
    assert recent.share("skipped", "slots") == pytest.approx(3 / 60)
