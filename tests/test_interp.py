"""The two clocks: latent keyframe interpolation, frame pacing, wall and offline clocks."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest
import torch

from vjapp.engine.interp import FramePacer, LatentTimeline, OfflineClock, TimelineError, WallClock

L, C = 4, 8  # num_ws, w_dim


def kf(value: float) -> torch.Tensor:
    return torch.full((L, C), float(value))  # [num_ws, w_dim]


# ---------------------------------------------------------------------------------- timeline


def test_linear_is_exact_between_and_at_keyframes() -> None:
    tl = LatentTimeline(L, C, capacity=4)
    tl.push(0.0, kf(0))
    tl.push(1.0, kf(2))
    tl.push(1.5, kf(-1))
    assert torch.equal(tl.sample(0.25), kf(0.5))
    assert torch.equal(tl.sample(1.0), kf(2))
    assert torch.allclose(tl.sample(1.25), kf(0.5))  # second segment, non-uniform spacing
    for t, v in zip(tl.times(), (0, 2, -1)):
        assert torch.equal(tl.sample(t), kf(v))


def test_holds_newest_and_oldest_never_overshoots_in_time() -> None:
    for mode in ("linear", "cubic"):
        tl = LatentTimeline(L, C, mode=mode)
        tl.push(0.0, kf(0))
        assert torch.equal(tl.sample(5.0), kf(0))  # a single keyframe is held
        tl.push(0.1, kf(1))
        for t in (0.1, 0.1001, 0.2, 100.0):
            assert torch.equal(tl.sample(t), kf(1)), (mode, t)
        assert torch.equal(tl.sample(-3.0), kf(0))


def test_extrapolation_is_bounded_and_off_by_default() -> None:
    tl = LatentTimeline(L, C, max_extrapolation_s=0.1)
    tl.push(0.0, kf(0))
    tl.push(1.0, kf(1))
    assert torch.allclose(tl.sample(1.05), kf(1.05))
    assert torch.allclose(tl.sample(50.0), kf(1.1))  # continues at most 0.1 s, then holds


def test_cubic_passes_keyframes_reproduces_lines_and_has_no_velocity_kink() -> None:
    times = [0.0, 0.1, 0.25, 0.3, 0.45]  # non-uniform, as a real model clock jitters
    direction = torch.randn(L, C, generator=torch.Generator().manual_seed(0))
    cubic = LatentTimeline(L, C, mode="cubic", dtype=torch.float64)
    for t in times:
        cubic.push(t, direction.double() * t)
    for t in times:
        assert torch.allclose(cubic.sample(t), direction.double() * t)
    for t in np.linspace(0, 0.45, 37):  # motion along a line stays exactly on it
        assert torch.allclose(cubic.sample(float(t)), direction.double() * t, atol=1e-12)

    # a zig-zag: linear changes velocity abruptly at each keyframe, cubic does not
    zig = [0.0, 1.0, 0.0, 1.0, 0.0]
    lin = LatentTimeline(L, C, dtype=torch.float64)
    cub = LatentTimeline(L, C, mode="cubic", dtype=torch.float64)
    for i, v in enumerate(zig):
        lin.push(i * 0.1, kf(v).double())
        cub.push(i * 0.1, kf(v).double())

    def kink(tl: LatentTimeline, t: float, h: float = 1e-5) -> float:
        left = (tl.sample(t) - tl.sample(t - h)) / h
        right = (tl.sample(t + h) - tl.sample(t)) / h
        return float((right - left).abs().max())

    assert kink(lin, 0.2) > 19  # velocity jumps from -10 to +10
    assert kink(cub, 0.2) < 1e-2


def test_fixed_memory_over_many_keyframes() -> None:
    tl = LatentTimeline(L, C, capacity=6)
    ptr = tl._buf.data_ptr()
    out = torch.empty(L, C)
    ws = np.zeros((L, C), np.float32)

    def run(n: int, start: int) -> None:
        for i in range(start, start + n):
            ws[:] = i
            tl.push(i * 0.1, ws)  # numpy in, copied
            tl.sample(i * 0.1 - 0.05, out=out)

    tracemalloc.start()
    run(500, 0)
    before = tracemalloc.get_traced_memory()[0]
    run(5000, 500)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 20_000  # no growth with the number of keyframes
    assert tl._buf.data_ptr() == ptr and len(tl) == 6
    assert tl.times()[-1] == pytest.approx(549.9)
    assert torch.allclose(out, torch.full((L, C), 5498.5))


def test_bad_keyframes_and_samples_raise_timeline_error() -> None:
    tl = LatentTimeline(L, C)
    with pytest.raises(TimelineError, match="before the first keyframe"):
        tl.sample(0.0)
    with pytest.raises(TimelineError, match=r"shape \[num_ws=4, w_dim=8\]"):
        tl.push(0.0, torch.zeros(L, C + 1))
    with pytest.raises(TimelineError, match="finite"):
        tl.push(float("nan"), kf(0))
    tl.push(1.0, kf(0))
    with pytest.raises(TimelineError, match="not after"):
        tl.push(1.0, kf(1))
    with pytest.raises(TimelineError, match="finite"):
        tl.sample(float("inf"))
    with pytest.raises(TimelineError, match="out must be"):
        tl.sample(1.0, out=torch.empty(L, C, dtype=torch.float64))
    with pytest.raises(TimelineError, match="mode"):
        LatentTimeline(L, C, mode="spline")  # type: ignore[arg-type]
    tl.clear()
    assert len(tl) == 0 and tl.newest_time is None


@pytest.mark.requires_cuda
def test_timeline_on_cuda() -> None:
    tl = LatentTimeline(L, C, device="cuda", mode="cubic")
    for i in range(5):
        tl.push(i * 0.1, kf(i))  # CPU tensors are copied to the device
    out = tl.sample(0.25)
    assert out.device.type == "cuda"
    assert torch.allclose(out.cpu(), kf(2.5))


# ---------------------------------------------------------------------------------- pacing


class SteppedClock:
    """A clock whose time moves by sleeping or by simulated work."""

    def __init__(self) -> None:
        self.t = 100.0

    def now(self) -> float:
        return self.t

    def sleep_until(self, t: float) -> None:
        self.t = max(self.t, t)


def test_pacer_is_drift_free_under_jittery_work() -> None:
    clock = SteppedClock()
    pacer = FramePacer(60.0, clock)
    rng = np.random.default_rng(0)
    pacer.start()
    ticks = []
    for _ in range(20000):
        ticks.append(pacer.wait())
        clock.t += rng.uniform(0.0, 0.9) / 60.0  # work shorter than a frame
    assert [t.index for t in ticks] == list(range(20000))
    assert ticks[-1].deadline == pytest.approx(100.0 + 19999 / 60.0, abs=1e-9)
    assert pacer.late_frames == 0 and pacer.skipped_frames == 0


def test_pacer_skips_whole_missed_slots_and_stays_on_grid() -> None:
    clock = SteppedClock()
    pacer = FramePacer(10.0, clock)
    pacer.start(t0=0.0)
    clock.t = 0.0
    assert pacer.wait().index == 0
    clock.t = 0.35  # a 350 ms stall: slots 1, 2, 3 have passed
    tick = pacer.wait()
    assert (tick.index, tick.skipped) == (3, 2) and tick.deadline == pytest.approx(0.3)
    assert tick.late_s == pytest.approx(0.05)
    assert pacer.skipped_frames == 2 and pacer.late_frames == 1
    nxt = pacer.wait()  # back on the grid at once, no burst
    assert (nxt.index, nxt.late_s) == (4, 0.0) and clock.t == pytest.approx(0.4)


def test_set_fps_reanchors_at_the_next_deadline() -> None:
    clock = SteppedClock()
    pacer = FramePacer(10.0, clock)
    pacer.start(t0=0.0)
    clock.t = 0.0
    pacer.wait()
    pacer.set_fps(20.0)
    assert pacer.wait().deadline == pytest.approx(0.1)
    assert pacer.wait().deadline == pytest.approx(0.15)
    with pytest.raises(ValueError, match="fps"):
        pacer.set_fps(0)


def test_offline_clock_is_deterministic_and_never_waits() -> None:
    def render() -> list[tuple[int, int]]:
        clock = OfflineClock(44100)
        pacer = FramePacer(30.0, clock)
        pacer.start()
        out = []
        for _ in range(9000):  # 5 minutes of video
            tick = pacer.wait()
            out.append((tick.index, clock.samples))
        return out

    t0 = time.perf_counter()
    a = render()
    assert time.perf_counter() - t0 < 2.0  # no sleeping
    assert a == render()
    assert a[1] == (1, 1470) and a[-1] == (8999, 8999 * 1470)  # exact sample positions
    clock = OfflineClock(48000)
    clock.advance_samples(480)
    assert clock.now() == 0.01
    with pytest.raises(ValueError, match="backwards"):
        clock.advance_samples(-1)


def test_wall_clock_pacing_roughly_real_time() -> None:
    pacer = FramePacer(100.0, WallClock())
    t0 = time.perf_counter()
    pacer.start(t0)
    ticks = [pacer.wait() for _ in range(20)]
    elapsed = time.perf_counter() - t0
    for tick in ticks:  # on the absolute grid, whatever the sleeps did
        assert tick.deadline == pytest.approx(t0 + tick.index * 0.01, abs=1e-9)
        assert tick.late_s >= 0
    assert ticks[-1].index >= 19
    assert elapsed >= ticks[-1].deadline - t0 - 1e-3  # never returns before the deadline
    assert elapsed < 1.5  # generous: the machine is shared


def test_wall_clock_interrupt_wakes_sleeper() -> None:
    clock = WallClock()
    clock.interrupt()
    t0 = time.perf_counter()
    clock.sleep_until(t0 + 5.0)
    assert time.perf_counter() - t0 < 1.0
