"""RingBuffer: newest-N views equal the stream's tail, no copies, overflow/drop accounting,
read_since for every-sample consumers, and a real writer thread racing readers."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vjapp.audio import ReadResult, RingBuffer


def _tail(stream: np.ndarray, n: int) -> np.ndarray:
    """Last n frames of ``stream``, zero-padded in front (the ring's 'silence before 0')."""
    if n == 0:
        return stream[:0]
    if len(stream) >= n:
        return stream[len(stream) - n :]
    pad = np.zeros((n - len(stream),) + stream.shape[1:], np.float32)
    return np.concatenate([pad, stream])


block_sizes = st.lists(st.integers(min_value=0, max_value=300), min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.sampled_from([1, 8, 64, 100, 256]),
    channels=st.sampled_from([1, 2, 3]),
    sizes=block_sizes,
    n_frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_latest_is_the_tail_of_the_stream(capacity, channels, sizes, n_frac, seed):
    rng = np.random.default_rng(seed)
    ring = RingBuffer(capacity, channels)
    cap = ring.capacity
    chunks = []
    last = 0
    for size in sizes:
        shape = (size,) if channels == 1 else (size, channels)
        block = rng.standard_normal(shape).astype(np.float32)
        assert ring.write(block) is True
        chunks.append(block)
        assert ring.write_index >= last  # monotonic
        last = ring.write_index
        stream = np.concatenate(chunks)
        assert ring.write_index == len(stream)
        n = int(round(n_frac * cap))
        view, end = ring.latest(n)
        assert end == len(stream)
        np.testing.assert_array_equal(view, _tail(stream, n))
        expected_overflows = sum(1 for c in chunks if len(c) > cap)
        assert ring.overflows == expected_overflows
    assert ring.dropped_blocks == 0


@settings(max_examples=40, deadline=None)
@given(sizes=block_sizes, reads=st.lists(st.integers(1, 200), min_size=1, max_size=40))
def test_read_since_returns_every_sample_when_keeping_up(sizes, reads):
    ring = RingBuffer(512, 2)
    rng = np.random.default_rng(1)
    chunks, got = [], []
    index = 0
    for i, size in enumerate(sizes):
        block = rng.standard_normal((size, 2)).astype(np.float32)
        ring.write(block)
        chunks.append(block)
        # Drain in chunks of varying size after every write (the consumer keeps up).
        k = i
        while index < ring.write_index:
            res = ring.read_since(index, reads[k % len(reads)])
            k += 1
            assert isinstance(res, ReadResult)
            assert res.lost == 0 and res.start == index
            got.append(res.data)
            index = res.end
    np.testing.assert_array_equal(
        np.concatenate(got) if got else np.zeros((0, 2), np.float32), np.concatenate(chunks)
    )
    assert ring.reader_overruns == 0


def test_read_since_reports_lost_frames_when_the_reader_lags():
    ring = RingBuffer(64)
    stream = np.arange(300, dtype=np.float32)
    for i in range(0, 300, 10):
        ring.write(stream[i : i + 10])
    res = ring.read_since(0)
    # The oldest intact frame is write_index - capacity.
    assert res.start == 300 - 64
    assert res.lost == res.start
    assert ring.reader_overruns == 1
    np.testing.assert_array_equal(res.data, stream[res.start : 300])
    assert res.end == 300
    # Reading past the end returns nothing and does not count as lost.
    nothing = ring.read_since(400)
    assert nothing.data.shape == (0,) and nothing.lost == 0 and nothing.end == 400


def test_views_are_contiguous_and_share_the_ring_storage():
    ring = RingBuffer(1000, 2)
    assert ring.capacity == 1024
    rng = np.random.default_rng(0)
    for size in (700, 600, 333, 1024, 5):  # wraps several times
        ring.write(rng.standard_normal((size, 2)).astype(np.float32))
        for n in (1, 100, 1024):
            view, _ = ring.latest(n)
            assert view.flags.c_contiguous
            assert np.shares_memory(view, ring._buf)
            assert not view.flags.writeable
    copy, end = ring.latest_copy(100)
    assert not np.shares_memory(copy, ring._buf)
    np.testing.assert_array_equal(copy, ring.latest(100)[0])
    assert end == ring.write_index


def test_mono_ring_accepts_sounddevice_shaped_blocks():
    ring = RingBuffer(16, 1)
    block = np.arange(6, dtype=np.float32).reshape(6, 1)  # what an InputStream callback gets
    assert ring.write(block)
    view, _ = ring.latest(6)
    assert view.shape == (6,)
    np.testing.assert_array_equal(view, block[:, 0])


def test_block_larger_than_capacity_keeps_its_newest_frames_and_counts_overflow():
    ring = RingBuffer(32)
    ring.write(np.ones(5, np.float32))
    big = np.arange(100, dtype=np.float32)
    assert ring.write(big)
    assert ring.overflows == 1
    assert ring.write_index == 105  # the timeline advances by the whole block
    view, end = ring.latest(32)
    np.testing.assert_array_equal(view, big[-32:])
    assert end == 105


@pytest.mark.parametrize(
    "bad, reason",
    [
        (np.zeros(8, np.float64), "dtype"),
        (np.zeros(8, np.int16), "dtype"),
        (np.zeros((8, 3), np.float32), "channels"),
        (np.zeros((2, 4, 2), np.float32), "dimensions"),
        ([0.0, 1.0], "not a numpy array"),
        (None, "not a numpy array"),
    ],
)
def test_bad_blocks_are_dropped_and_counted_without_raising(bad, reason):
    ring = RingBuffer(16, 2)
    ring.write(np.ones((4, 2), np.float32))
    assert ring.write(bad) is False
    assert ring.dropped_blocks == 1
    assert reason in (ring.last_drop_reason or "")
    assert ring.write_index == 4
    np.testing.assert_array_equal(ring.latest(4)[0], np.ones((4, 2), np.float32))


def test_mono_block_for_stereo_ring_is_dropped():
    ring = RingBuffer(16, 2)
    assert ring.write(np.zeros(4, np.float32)) is False
    assert ring.dropped_blocks == 1


@pytest.mark.parametrize("capacity, channels", [(0, 1), (-4, 1), (16, 0), (16, 65), (2.5, 1)])
def test_bad_construction_is_a_value_error(capacity, channels):
    with pytest.raises(ValueError):
        RingBuffer(capacity, channels)


def test_reading_more_than_capacity_is_a_value_error():
    ring = RingBuffer(16)
    with pytest.raises(ValueError, match="0..16"):
        ring.latest(17)


def test_is_intact_turns_false_once_the_writer_laps_the_view():
    ring = RingBuffer(64)
    ring.write(np.ones(16, np.float32))
    _, end = ring.latest(32)
    assert ring.is_intact(end, 32)
    ring.write(np.ones(32, np.float32))  # reach 48: the view [-16, 16) is still intact
    assert ring.is_intact(end, 32)
    ring.write(np.ones(1, np.float32))  # reach 49 overwrites frame -15's slot
    assert not ring.is_intact(end, 32)


def test_concurrent_writer_and_readers_never_see_torn_data():
    """A writer thread streams a ramp (each frame = its index); readers must always get
    consecutive ramps from latest_copy and read_since. The window (3500 of 4096 frames) is wide
    enough that one 1000-frame write during a copy tears it: verification must catch that."""
    ring = RingBuffer(4096)
    total = 600_000  # exact in float32 (< 2**24)
    stop = threading.Event()
    errors: list[str] = []

    def writer():
        ramp = np.arange(total, dtype=np.float32)
        i = 0
        sizes = [64, 256, 1000, 17, 512]
        k = 0
        while i < total:
            n = min(sizes[k % len(sizes)], total - i)
            ring.write(ramp[i : i + n])
            i += n
            k += 1
        stop.set()

    def latest_reader():
        while not stop.is_set():
            try:
                data, end = ring.latest_copy(3500, retries=10)
            except RuntimeError:
                continue
            if end >= 3500:
                want = np.arange(end - 3500, end, dtype=np.float32)
                if not np.array_equal(data, want):
                    errors.append(f"latest_copy torn at end={end}")
                    return

    def every_sample_reader():
        index = 0
        while not (stop.is_set() and index >= total):
            res = ring.read_since(index, 700)
            if res.data.size:
                want = np.arange(res.start, res.end, dtype=np.float32)
                if not np.array_equal(res.data, want):
                    errors.append(f"read_since torn at {res.start}")
                    return
            index = res.end

    threads = [threading.Thread(target=f) for f in (latest_reader, every_sample_reader, writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert ring.write_index == total
