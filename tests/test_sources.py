"""Sources without a sound card: the synthetic source, the file player on its wall clock (pace,
content, pause, seek, loop, end), the player's callback path, and the live input's fallback."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from audio_fixtures import peak_frequency, ramp, tone
from vjapp.audio import (
    DecodedAudio,
    FilePlayer,
    LiveInput,
    RingBuffer,
    Segment,
    SourceStatus,
    SyntheticSource,
    list_input_devices,
    list_output_devices,
    render_segments,
)

SR = 16_000
BS = 256


def _wait_until(pred, timeout: float = 3.0) -> bool:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def _player(seconds: float, **kw) -> tuple[FilePlayer, np.ndarray]:
    data = ramp(int(seconds * SR))[:, 0]  # frame i holds 0.9 * i / frames: positions are visible
    audio = DecodedAudio(samples=data[:, None], sample_rate=SR, path=None)
    kw.setdefault("play_audio", False)
    return FilePlayer(audio, blocksize=BS, **kw), data


# ------------------------------------------------------------------------------ synthetic
def test_synthetic_render_into_writes_the_program():
    prog = [Segment("sine", 0.1, freq=1000, level_db=-6), Segment("silence", 0.05), Segment("bursts", 0.1, freq=20)]
    src = SyntheticSource(prog, sample_rate=SR, blocksize=BS, loop=True)
    expected = render_segments(prog, SR)
    n = src.render_into(0.6)
    assert n == int(0.6 * SR) == src.ring.write_index
    got = src.ring.read_since(0).data
    np.testing.assert_array_equal(got, np.tile(expected, 3)[:n])
    sine = expected[: int(0.1 * SR)]
    assert float(np.abs(sine).max()) == pytest.approx(10 ** (-6 / 20), rel=1e-3)
    assert peak_frequency(sine, SR) == pytest.approx(1000, abs=10)


def test_synthetic_realtime_thread_paces_the_ring():
    src = SyntheticSource(Segment("sine", 1.0, freq=440), sample_rate=SR, blocksize=BS)
    t0 = time.monotonic()
    with src:
        time.sleep(0.4)
        written = src.ring.write_index
        elapsed = time.monotonic() - t0
        st = src.status
    assert isinstance(st, SourceStatus) and st.running and st.kind == "synthetic"
    assert written / SR == pytest.approx(elapsed, abs=0.12)
    x, _ = src.ring.latest_copy(int(0.25 * SR))
    assert peak_frequency(x, SR) == pytest.approx(440, abs=5)
    assert not src.status.running


def test_synthetic_accepts_an_array_and_refuses_bad_ones():
    x = tone(SR, 0.05, 300, channels=2)
    src = SyntheticSource(x, sample_rate=SR, loop=False)
    assert src.channels == 2 and src.ring.channels == 2
    src.render_into(0.1)
    got = src.ring.read_since(0).data
    np.testing.assert_array_equal(got[: len(x)], x)
    assert np.all(got[len(x) :] == 0) and src.status.finished
    with pytest.raises(ValueError, match="NaN"):
        SyntheticSource(np.array([0.0, np.nan], np.float32), sample_rate=SR)
    with pytest.raises(ValueError):
        SyntheticSource(Segment("sine", 0.1, level_db=6.0), sample_rate=SR)


def test_synthetic_render_into_refuses_a_second_producer():
    src = SyntheticSource(sample_rate=SR)
    with src:
        with pytest.raises(RuntimeError, match="two producers"):
            src.render_into(0.1)
    with pytest.raises(ValueError, match="channels"):
        src.render_into(0.1, ring=RingBuffer(1024, 2))


# ------------------------------------------------------------------------------ file player
def test_file_player_without_device_runs_on_the_wall_clock():
    player, data = _player(2.0)
    t0 = time.monotonic()
    player.start()
    try:
        time.sleep(0.5)
        written = player.ring.write_index
        elapsed = time.monotonic() - t0
        st = player.status
    finally:
        player.stop()
    assert st.fallback and st.device is None and "play_audio=False" in (st.fallback_reason or "")
    assert written / SR == pytest.approx(elapsed, abs=0.12)
    got = player.ring.read_since(0).data
    np.testing.assert_array_equal(got, data[: len(got)])  # the ring holds the file, in order
    assert st.position == pytest.approx(written / SR, abs=0.1)
    assert st.duration == pytest.approx(2.0)


@pytest.mark.skipif(bool(list_output_devices()), reason="this machine has an output device")
def test_file_player_falls_back_when_there_is_no_output_device():
    player, _ = _player(0.5, play_audio=True)
    with player:
        assert _wait_until(lambda: player.ring.write_index > 0)
        st = player.status
    assert st.fallback and "no output audio devices" in (st.fallback_reason or "")


def test_file_player_pause_stops_the_position_but_not_the_ring():
    player, data = _player(2.0)
    with player:
        time.sleep(0.2)
        player.pause()
        w_pause = player.ring.write_index
        pos = player.position
        time.sleep(0.3)
        assert player.position == pos and player.paused
        assert player.ring.write_index - w_pause > 0.2 * SR  # silence keeps the engine's clock
        silent = player.ring.read_since(w_pause + BS).data
        assert silent.size > 0 and np.all(silent == 0)
        player.play()
        time.sleep(0.1)
    assert player.position > pos
    got = player.ring.read_since(0).data
    content = got[got != 0]
    # Everything that was not silence is the file, continuing where it paused.
    np.testing.assert_array_equal(content, data[1 : 1 + len(content)])


def test_file_player_seek_jumps_to_the_requested_frame():
    player, data = _player(2.0)
    with player:
        time.sleep(0.15)
        player.seek(1.25)
        assert player.position == pytest.approx(1.25)
        w = player.ring.write_index
        time.sleep(0.15)
    after = player.ring.read_since(w).data
    target = int(1.25 * SR)
    hit = np.flatnonzero(after == data[target])
    assert hit.size == 1 and hit[0] <= BS  # at most one block in flight before the jump
    tail = after[hit[0] :]
    np.testing.assert_array_equal(tail, data[target : target + len(tail)])


def test_file_player_loop_wraps():
    player, data = _player(0.1, loop=True)
    with player:
        time.sleep(0.4)
    got = player.ring.read_since(0).data
    assert len(got) > 3 * len(data)
    np.testing.assert_array_equal(got, np.tile(data, len(got) // len(data) + 1)[: len(got)])
    assert player.cursor.loops >= 3 and not player.finished


def test_file_player_end_without_loop_gives_silence_and_finished():
    player, data = _player(0.1)
    with player:
        assert _wait_until(lambda: player.finished, 2.0)
        time.sleep(0.1)
        st = player.status
        assert st.finished
        got = player.ring.read_since(0).data
        np.testing.assert_array_equal(got[: len(data)], data)
        assert len(got) > len(data) and np.all(got[len(data) :] == 0)
        player.play()  # restarts from the beginning
        assert _wait_until(lambda: not player.finished and player.position > 0.02)


def test_file_player_callback_feeds_ring_with_exactly_what_it_plays():
    """The PortAudio callback path, driven as PortAudio would: the output buffer and the ring
    receive the same frames."""
    x = tone(SR, 0.5, 440, channels=2)
    player = FilePlayer(DecodedAudio(x, SR), play_audio=False, blocksize=BS)
    played = []
    for _ in range(10):
        out = np.full((BS, 2), 7.0, np.float32)  # garbage the callback must overwrite
        player._callback(out, BS, None, 0)
        played.append(out.copy())
    heard = np.concatenate(played)
    np.testing.assert_array_equal(heard, x[: 10 * BS])
    np.testing.assert_array_equal(player.ring.read_since(0).data, heard)
    assert player.status.xruns == 0
    player._callback(np.zeros((BS, 2), np.float32), BS, None, 1)  # a truthy PortAudio flag
    assert player.status.xruns == 1


def test_exceptions_in_a_source_thread_are_reported_and_survived():
    errors: list[BaseException] = []
    got_error = threading.Event()

    def on_error(exc: BaseException) -> None:
        errors.append(exc)
        got_error.set()

    player, _ = _player(2.0, on_error=on_error)

    class Exploding:
        """A cursor whose first render fails (a bug in a producer)."""

        def __init__(self, inner):
            self.inner, self.failed = inner, False

        def render(self, out):
            if not self.failed:
                self.failed = True
                raise RuntimeError("boom in render")
            return self.inner.render(out)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    player.cursor = Exploding(player.cursor)
    with player:
        assert got_error.wait(2.0)
        w = player.ring.write_index
        assert _wait_until(lambda: player.ring.write_index > w + SR // 10)  # still running
        st = player.status
    assert isinstance(errors[0], RuntimeError)
    assert st.errors == 1 and "boom in render" in (st.last_error or "")


def test_callback_exceptions_never_reach_portaudio():
    x = tone(SR, 0.1, 440)
    player = FilePlayer(DecodedAudio(x, SR), play_audio=False, blocksize=BS)
    out = np.ones((BS, 1), np.float32)
    player.cursor.render = lambda block: 1 / 0  # any bug inside the callback
    player._callback(out, BS, None, 0)  # must not raise
    assert np.all(out == 0)  # silence instead of garbage
    assert player.status.errors == 1
    assert isinstance(player._cb_exc, ZeroDivisionError)  # parked for the monitor to report


# ------------------------------------------------------------------------------ live input
@pytest.mark.skipif(bool(list_input_devices()), reason="this machine has an input device")
def test_live_input_without_device_feeds_silence_and_says_so():
    live = LiveInput(samplerate=16_000, retry_interval=0.2)
    with pytest.raises(RuntimeError, match="after start"):
        _ = live.sample_rate
    t0 = time.monotonic()
    with live:
        time.sleep(0.5)
        st = live.status
        written = live.ring.write_index
        elapsed = time.monotonic() - t0
    assert st.fallback and st.device is None and "no input audio devices" in (st.fallback_reason or "")
    assert st.sample_rate == 16_000 and live.ring.channels == 1
    assert written / 16_000 == pytest.approx(elapsed, abs=0.12)
    assert np.all(live.ring.latest(8000)[0] == 0)


def test_live_input_callback_copies_and_counts_flags():
    live = LiveInput(samplerate=16_000, channels=2)
    live._ensure_ring()  # the ring a device-less start would make; no producer thread
    block = tone(16_000, BS / 16_000, 440, channels=2)
    live._callback(block, BS, None, 0)
    live._callback(block, BS, None, 1)
    np.testing.assert_array_equal(live.ring.read_since(0).data, np.concatenate([block, block]))
    assert live.status.xruns == 1
    live._callback(np.zeros((BS, 3), np.float32), BS, None, 0)  # wrong shape: dropped, no raise
    assert live.status.dropped_blocks == 1


def test_list_devices_never_raises():
    for devices in (list_input_devices(), list_output_devices()):
        assert isinstance(devices, list)
        for d in devices:
            assert d.name and d.default_samplerate > 0


# ------------------------------------------------------------------------------ streamed from a file
def _streamed_player(tmp_path, seconds: float, **kw) -> tuple[FilePlayer, np.ndarray]:
    """A FilePlayer reading a float WAV of the ramp in blocks (what the app does with a path)."""
    import soundfile as sf

    data = ramp(int(seconds * SR))[:, 0]
    path = tmp_path / "ramp.wav"
    sf.write(path, data, SR, subtype="FLOAT")
    kw.setdefault("play_audio", False)
    return FilePlayer(path, blocksize=BS, **kw), data


def test_streamed_file_player_loops_pauses_and_ends_like_the_in_memory_one(tmp_path):
    player, data = _streamed_player(tmp_path, 0.1, loop=True)
    with player:
        time.sleep(0.4)
    got = player.ring.read_since(0).data
    assert len(got) > 3 * len(data)
    content = got[np.flatnonzero(got)[0]:]  # from the ramp's first non-zero sample, data[1]
    n = len(content) // len(data) * len(data)
    looped = np.tile(data, n // len(data) + 1)[1:n + 1]
    np.testing.assert_array_equal(content[:n], looped)  # wraps sample-exact, no gap
    assert player.cursor.loops >= 3 and not player.finished

    player, data = _streamed_player(tmp_path, 2.0)
    with player:
        time.sleep(0.2)
        player.pause()
        pos = player.position
        time.sleep(0.3)
        assert player.position == pos and player.paused
        player.play()
        time.sleep(0.1)
        assert player.position > pos

    player, data = _streamed_player(tmp_path, 0.1)
    with player:
        assert _wait_until(lambda: player.finished, 2.0)
        got = player.ring.read_since(0).data
        content = got[np.flatnonzero(got)[0]:]
        np.testing.assert_array_equal(content[: len(data) - 1], data[1:])  # ramp's first sample is 0
        player.play()  # restarts from the beginning
        assert _wait_until(lambda: not player.finished and player.position > 0.02)
