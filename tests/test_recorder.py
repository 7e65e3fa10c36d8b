"""Live recording: a real take read back, A/V start sync, never blocking the engine, crash
survival, disk full, thread failures, restarts, size changes, file names."""

from __future__ import annotations

import datetime as dt
import signal
import textwrap
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from disk_fixtures import FillingDisk, run_until_ready_then_kill

from vjapp.audio import RingBuffer, Segment, SyntheticSource
from vjapp.output import mp4 as mp4mod
from vjapp.output.mp4 import Mp4Writer, RecordingError, probe_mp4
from vjapp.output.recorder import Recorder, RecorderStatus, default_recording_path, fit_frame

FPS = 30
SR = 44100


def gray(i: int, size: int = 64) -> np.ndarray:
    """A flat frame whose brightness encodes its index."""
    return np.full((size, size, 3), 20 + 3 * i, np.uint8)  # [H, W, 3]


def decoded_frames(path: Path) -> list[tuple[float, np.ndarray]]:
    """(time s, RGB [H, W, 3]) of every decoded video frame."""
    with av.open(str(path)) as c:
        return [(float(f.time), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


def decoded_audio(path: Path) -> tuple[np.ndarray, int]:
    """Mono float audio [n] and its rate."""
    with av.open(str(path)) as c:
        rate = c.streams.audio[0].codec_context.sample_rate
        blocks = [f.to_ndarray().mean(axis=0) for f in c.decode(audio=0)]  # planar [C, n] -> [n]
    return np.concatenate(blocks).astype(np.float32), rate


def wait_for(cond, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_two_second_take_reads_back(tmp_path: Path) -> None:
    """60 frames at 30 fps from an engine thread in real time, a live 440 Hz source."""
    path = tmp_path / "take.mp4"
    states: list[RecorderStatus] = []
    errors: list[str] = []
    src = SyntheticSource(Segment("sine", 1.0, freq=440.0, level_db=-6.0), sample_rate=SR)
    src.start()
    rec = Recorder(on_error=errors.append, on_state=states.append)
    try:
        t0 = time.perf_counter()  # the engine clock at the press of Record, as the app passes it
        rec.start(path, 64, 64, FPS, src.ring, src.sample_rate, t0=t0)

        def engine() -> None:
            for i in range(60):
                deadline = t0 + i / FPS
                while time.perf_counter() < deadline:
                    time.sleep(0.002)
                rec.submit(gray(i), deadline)

        th = threading.Thread(target=engine)
        th.start()
        th.join()
        final = rec.stop()
    finally:
        src.stop()
    assert errors == []
    assert not final.recording and final.error is None and final.path == path
    assert final.frames_written + final.frames_dropped == 60 and final.frames_written >= 57
    assert final.bytes_written == path.stat().st_size > 0
    assert abs(final.audio_seconds - 2.0) < 1 / FPS
    assert states[0].recording and not states[-1].recording

    info = probe_mp4(path)
    assert info["error"] is None
    assert [s["codec"] for s in info["streams"]] == ["h264", "aac"]
    video, audio = info["video"], info["audio"]
    assert video["frames"] == final.frames_written and (video["width"], video["height"]) == (64, 64)
    assert abs(video["duration_s"] - 2.0) <= 1 / FPS + 1e-6
    assert abs(audio["decoded_duration_s"] - 2.0) <= 1 / FPS
    assert video["first_frame_s"] == 0.0 and audio["first_frame_s"] == 0.0

    # order kept and every frame in its own slot: brightness rises and matches the slot's index
    frames = decoded_frames(path)
    slots = [round(t * FPS) for t, _ in frames]
    means = [float(img.mean()) for _, img in frames]
    assert slots == sorted(set(slots)) and slots[0] == 0 and slots[-1] == 59
    assert all(b > a for a, b in zip(means, means[1:]))
    assert all(abs(m - (20 + 3 * s)) < 2.5 for s, m in zip(slots, means))

    samples, rate = decoded_audio(path)
    spectrum = np.abs(np.fft.rfft(samples[rate // 10 :] * np.hanning(len(samples) - rate // 10)))
    peak_hz = np.fft.rfftfreq(len(samples) - rate // 10, 1 / rate)[np.argmax(spectrum)]
    assert abs(peak_hz - 440.0) < 2.0


def test_audio_and_video_start_together(tmp_path: Path) -> None:
    """Audio from start_index and frames from t0 both land at t = 0: a click written with the
    frame that flashes at 1.0 s is heard when it is seen; audio before the start is not recorded."""
    path = tmp_path / "sync.mp4"
    ring = RingBuffer(SR * 4)
    ring.write(np.random.default_rng(0).uniform(-0.5, 0.5, SR // 2).astype(np.float32))  # before start
    rec = Recorder(queue_frames=64)
    t0 = 100.0  # engine clock of the recording's start
    rec.start(path, 64, 64, FPS, ring, SR, t0=t0, start_index=ring.write_index)
    per_frame = SR // FPS
    tone = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(per_frame * 6) / SR)).astype(np.float32)
    for i in range(60):
        block = tone[(i - 30) * per_frame : (i - 29) * per_frame] if 30 <= i < 36 else np.zeros(per_frame, np.float32)
        ring.write(block)
        rec.submit(np.full((64, 64, 3), 235 if i >= 30 else 16, np.uint8), t0 + i / FPS)
        time.sleep(0.002)
    final = rec.stop()
    assert final.error is None and final.frames_written == 60 and final.frames_dropped == 0

    flash = next(t for t, img in decoded_frames(path) if img.mean() > 128)
    samples, rate = decoded_audio(path)
    env = np.abs(samples)
    onset = np.argmax(env > 0.25) / rate
    assert abs(flash - 1.0) < 1e-6
    assert abs(onset - flash) < 0.002  # measured: within 5 samples
    assert np.sqrt(np.mean(samples[: int(0.9 * rate)] ** 2)) < 0.01  # pre-start noise left out


def test_submit_never_blocks_on_a_slow_writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = Mp4Writer.write_video

    def slow_write(self: Mp4Writer, frame: np.ndarray, t: float | None = None) -> bool:
        time.sleep(0.1)  # an encoder ten times too slow for 30 fps... and slower than the engine
        return original(self, frame, t)

    monkeypatch.setattr(Mp4Writer, "write_video", slow_write)
    rec = Recorder(queue_frames=8)
    rec.start(tmp_path / "slow.mp4", 64, 64, FPS)
    times = []
    results = []
    for i in range(50):
        image = gray(i)
        t_call = time.perf_counter()
        results.append(rec.submit(image, i / FPS))
        times.append(time.perf_counter() - t_call)
        time.sleep(0.001)
    live = rec.status()
    final = rec.stop()
    times_ms = np.array(times) * 1e3
    # < 1 ms each (a couple of OS preemptions allowed on a shared box); never a writer's 100 ms
    assert np.sum(times_ms >= 1.0) <= 2 and times_ms.max() < 50, times_ms
    assert live.recording and live.frames_dropped >= 30  # queue-full drops counted as they happen
    assert results.count(False) == final.frames_dropped >= 30
    assert final.frames_written == results.count(True) and final.frames_written + final.frames_dropped == 50
    assert probe_mp4(tmp_path / "slow.mp4")["video"]["frames"] == final.frames_written


CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from vjapp.audio import Segment, SyntheticSource
    from vjapp.output.recorder import Recorder

    src = SyntheticSource(Segment("sine", 1.0, freq=440.0), sample_rate=44100)
    src.start()
    rec = Recorder()
    rec.start(sys.argv[1], 64, 64, 30, src.ring, src.sample_rate)
    t_first = time.perf_counter()
    i = 0
    while time.perf_counter() - t_first < 2.5:
        deadline = t_first + i / 30
        while time.perf_counter() < deadline:
            time.sleep(0.002)
        rec.submit(np.full((64, 64, 3), (20 + 3 * i) % 256, np.uint8), deadline)
        i += 1
    print("READY", flush=True)
    time.sleep(60)  # killed here, never stopped
    """
)


def test_killed_process_leaves_a_playable_file(tmp_path: Path) -> None:
    path = tmp_path / "killed.mp4"
    assert run_until_ready_then_kill(CHILD, path) == -signal.SIGKILL
    info = probe_mp4(path)
    video, audio = info["video"], info["audio"]
    assert video is not None and video["codec"] == "h264" and video["first_frame_s"] == 0.0
    # 2.5 s were recorded; at most about a second (the open fragment) is lost
    assert video["frames"] >= 1.5 * FPS and video["duration_s"] >= 1.5
    assert audio is not None and audio["codec"] == "aac" and audio["decoded_duration_s"] >= 1.4


def test_disk_full_stops_the_recording_not_the_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "full.mp4"
    monkeypatch.setattr(mp4mod, "_open_output", lambda p: FillingDisk(p, 300_000))
    errors: list[str] = []
    rec = Recorder(on_error=errors.append)
    ring = RingBuffer(SR * 2)
    rec.start(path, 64, 64, FPS, ring, SR)
    rng = np.random.default_rng(1)
    per_frame = SR // FPS
    submitted_after_failure = 0
    for i in range(400):  # noise frames: ~10 kB each, the disk fills in the second fragment
        ring.write(np.zeros(per_frame, np.float32))
        ok = rec.submit(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), i / FPS)  # never raises
        if rec.status().error is not None:
            assert not ok or submitted_after_failure == 0  # at most the frame racing the failure
            submitted_after_failure += 1
            if submitted_after_failure > 5:
                break
        time.sleep(0.003)
    assert submitted_after_failure > 5, "the disk never filled"
    status = rec.status()
    assert not status.recording and "No space left on device" in (status.error or "")
    assert errors == [status.error]
    assert rec.submit(gray(0), 99.0) is False
    final = rec.stop()  # no exception; the error stays visible
    assert final.error == status.error and rec.stop() == final
    info = probe_mp4(path)
    assert info["video"]["frames"] >= FPS  # the first fragment reached the disk and plays
    assert final.frames_written >= info["video"]["frames"]


def test_any_recorder_thread_error_ends_only_the_recording(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = Mp4Writer.write_video
    calls = []

    def exploding(self: Mp4Writer, frame: np.ndarray, t: float | None = None) -> bool:
        calls.append(t)
        if len(calls) == 5:
            raise RuntimeError("encoder exploded")
        return original(self, frame, t)

    monkeypatch.setattr(Mp4Writer, "write_video", exploding)
    errors: list[str] = []
    rec = Recorder(on_error=errors.append)
    rec.start(tmp_path / "boom.mp4", 64, 64, FPS)
    for i in range(10):
        rec.submit(gray(i), i / FPS)
        time.sleep(0.01)
    assert wait_for(lambda: not rec.status().recording)
    assert len(errors) == 1 and "encoder exploded" in errors[0]
    assert "encoder exploded" in (rec.stop().error or "")
    monkeypatch.setattr(Mp4Writer, "write_video", original)
    rec.start(tmp_path / "after.mp4", 64, 64, FPS)  # the recorder is usable again
    for i in range(5):
        rec.submit(gray(i), i / FPS)
    again = rec.stop()
    assert again.error is None and again.frames_written == 5


def test_start_stop_start_into_another_file(tmp_path: Path) -> None:
    rec = Recorder(queue_frames=32)
    assert rec.stop() == RecorderStatus()  # stop before any start: nothing to do
    assert rec.submit(gray(0), 0.0) is False  # not recording: ignored
    first = tmp_path / "a.mp4"
    rec.start(first, 64, 64, FPS)
    for i in range(10):
        assert rec.submit(gray(i), 5.0 + i / FPS)
    a = rec.stop()
    assert rec.stop() == a  # idempotent
    ring = RingBuffer(SR, channels=2)
    second = tmp_path / "sub" / "b.mp4"  # folder created
    rec.start(second, 64, 64, FPS, ring, SR, audio_channels=1)  # stereo source mixed to mono
    with pytest.raises(RecordingError, match="already recording"):
        rec.start(tmp_path / "c.mp4", 64, 64, FPS)
    for i in range(15):
        ring.write(np.full((SR // FPS, 2), 0.1, np.float32))
        assert rec.submit(gray(i), 9.0 + i / FPS)
    b = rec.stop()
    assert (a.path, a.frames_written, a.error) == (first, 10, None)
    assert (b.path, b.frames_written, b.error) == (second, 15, None)
    assert probe_mp4(first)["video"]["frames"] == 10 and probe_mp4(first)["audio"] is None
    info = probe_mp4(second)
    assert info["video"]["frames"] == 15 and (info["audio"]["codec"], info["audio"]["channels"]) == ("aac", 1)
    assert abs(b.audio_seconds - 0.5) < 1e-6  # up to the end of the last frame
    assert not (tmp_path / "c.mp4").exists()


def test_bad_arguments_are_clear_errors(tmp_path: Path) -> None:
    rec = Recorder()
    with pytest.raises(ValueError, match="audio_rate"):
        rec.start(tmp_path / "x.mp4", 64, 64, FPS, RingBuffer(1024))
    with pytest.raises(ValueError, match="fps"):
        rec.start(tmp_path / "x.mp4", 64, 64, 0)
    (tmp_path / "file").touch()
    with pytest.raises(RecordingError, match="cannot create the recording folder"):
        rec.start(tmp_path / "file" / "y.mp4", 64, 64, FPS)  # its "folder" is a file
    assert rec.status().error is not None and not rec.status().recording
    rec.start(tmp_path / "ok.mp4", 64, 64, FPS)
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\]"):
        rec.submit(np.zeros((64, 64), np.uint8), 0.0)
    rec.stop()


def test_frames_of_another_size_are_letterboxed(tmp_path: Path) -> None:
    """The output size changed mid-take (and an odd size was asked for): one file, frames fitted."""
    path = tmp_path / "sizes.mp4"
    rec = Recorder(queue_frames=32)
    rec.start(path, 65, 48, FPS)  # recorded as 64x48
    for i in range(4):
        rec.submit(np.full((65, 48, 3), 200, np.uint8), i / FPS)  # the asked-for (odd) size
    for i in range(4, 8):
        rec.submit(np.full((32, 32, 3), 200, np.uint8), i / FPS)  # square: bars left and right
    for i in range(8, 12):
        rec.submit(np.full((48, 64, 3), 100, np.uint8), i / FPS)  # exact size: untouched
    final = rec.stop()
    assert final.frames_written == 12 and final.frames_resized == 8
    frames = decoded_frames(path)
    assert [img.shape for _, img in frames] == [(48, 64, 3)] * 12
    square = frames[5][1].astype(int)
    assert abs(square[24, 32].mean() - 200) < 6 and square[24, 2].mean() < 25 and square[24, 61].mean() < 25
    assert abs(frames[10][1].astype(int).mean() - 100) < 3


def test_fit_frame_keeps_aspect_and_picks_nearest_pixels() -> None:
    img = np.arange(4 * 2 * 3, dtype=np.uint8).reshape(4, 2, 3)  # tall
    out = fit_frame(img, 8, 8)
    assert out.shape == (8, 8, 3)
    assert (out[:, :2] == 0).all() and (out[:, 6:] == 0).all()  # bars
    assert (out[0:2, 2:4] == img[0, 0]).all() and (out[6:8, 4:6] == img[3, 1]).all()


def test_default_recording_path_never_overwrites(tmp_path: Path) -> None:
    now = dt.datetime(2026, 11, 22, 21, 5, 9)
    first = default_recording_path(tmp_path, now)
    assert first == tmp_path / "vjapp-20261122-210509.mp4"
    first.touch()
    second = default_recording_path(tmp_path, now)
    assert second == tmp_path / "vjapp-20261122-210509-2.mp4"
    second.touch()
    assert default_recording_path(tmp_path, now).name == "vjapp-20261122-210509-3.mp4"


def test_a_disk_full_from_the_start_leaves_no_empty_file_and_reports_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The disk is already full when Record is pressed: one report through on_error, no ERROR
    log line of its own (the handler reports it), and no 0-byte .mp4 left behind. A take stopped
    before any frame leaves no file either."""
    import logging

    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(mp4mod, "_open_output", lambda p: FillingDisk(p, 0))
    errors: list[str] = []
    rec = Recorder(on_error=errors.append)
    path = tmp_path / "full.mp4"
    rec.start(path, 64, 64, FPS)
    for i in range(5):
        rec.submit(gray(i), i / FPS)
    assert wait_for(lambda: rec.status().error is not None)
    final = rec.stop()
    assert not path.exists(), f"{path.stat().st_size}-byte file left behind"
    assert final.file_removed
    assert errors == [final.error] and "No space left on device" in final.error
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []

    monkeypatch.undo()
    rec.start(tmp_path / "nothing.mp4", 64, 64, FPS)
    stopped = rec.stop()  # no frame came
    assert stopped.error is None and stopped.file_removed and list(tmp_path.iterdir()) == []
