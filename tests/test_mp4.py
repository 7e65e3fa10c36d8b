"""MP4 recording: streams, timing, A/V sync, crash survival, disk full."""

from __future__ import annotations

import os
import signal
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest

from disk_fixtures import FillingDisk, run_until_ready_then_kill

from vjapp.output import mp4 as mp4mod
from vjapp.output.mp4 import Mp4Writer, RecordingError, probe_mp4

FPS = 30
SR = 44100


def tone(seconds: float, rate: int = SR, channels: int = 2, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    mono = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(mono[:, None], channels, axis=1)  # [frames, channels]


def moving_frame(i: int, size: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    img = np.stack([(x + 3 * i) % 256, (y + 2 * i) % 256, np.full_like(x, (5 * i) % 256)], -1)
    return img.astype(np.uint8)  # [H, W, 3]


def write_clip(path: Path, fragmented: bool, rate: int = SR, seconds: float = 2.0) -> None:
    """``seconds`` of 64x64 frames at 30 fps with a 440 Hz tone, audio in odd block sizes."""
    audio = tone(seconds, rate)
    blocks = [333, 1024, 4096, 17, 700]
    n_frames = int(seconds * FPS)
    with Mp4Writer(path, 64, 64, FPS, audio_rate=rate, audio_channels=2, fragmented=fragmented) as w:
        pos = 0
        for i in range(n_frames):
            assert w.write_video(moving_frame(i))
            end = (i + 1) * len(audio) // n_frames
            while pos < end:  # feed this frame's audio in irregular blocks
                step = min(blocks[pos % len(blocks)], end - pos)
                w.write_audio(audio[pos : pos + step])
                pos += step
        assert w.video_frames == n_frames and w.audio_samples == len(audio)


@pytest.mark.parametrize("fragmented", [False, True])
def test_two_seconds_read_back(tmp_path: Path, fragmented: bool) -> None:
    path = tmp_path / "clip.mp4"
    write_clip(path, fragmented)
    info = probe_mp4(path)
    assert info["error"] is None
    assert [s["codec"] for s in info["streams"]] == ["h264", "aac"]
    video, audio = info["video"], info["audio"]
    assert video["frames"] == 60 and (video["width"], video["height"]) == (64, 64)
    assert video["first_pts_s"] == 0.0 and video["first_frame_s"] == 0.0
    frame = 1 / FPS
    assert abs(video["duration_s"] - 2.0) < frame
    assert audio["sample_rate"] == SR and audio["channels"] == 2
    assert abs(audio["decoded_duration_s"] - 2.0) < frame
    assert abs(audio["duration_s"] - 2.0) < frame
    # the tone survived: dominant frequency of the decoded audio is 440 Hz
    with av.open(str(path)) as c:
        pcm = np.concatenate([f.to_ndarray()[0] for f in c.decode(audio=0)])
    spectrum = np.abs(np.fft.rfft(pcm[SR // 2 : SR // 2 + SR]))
    assert abs(np.argmax(spectrum) - 440) <= 2  # 1 Hz bins


@pytest.mark.parametrize("fragmented", [False, True])
def test_flash_and_click_stay_in_sync(tmp_path: Path, fragmented: bool) -> None:
    """A white frame and a click both at 0.5 s decode at the same time (within a frame)."""
    path = tmp_path / "sync.mp4"
    audio = np.zeros((SR, 1), np.float32)
    audio[SR // 2 : SR // 2 + 200] = 0.8
    with Mp4Writer(path, 64, 64, FPS, audio_rate=SR, audio_channels=1, fragmented=fragmented) as w:
        for i in range(FPS):
            w.write_video(np.full((64, 64, 3), 255 if i == FPS // 2 else 0, np.uint8))
        w.write_audio(audio[:, 0])  # mono accepts [frames] too
    with av.open(str(path)) as c:
        flashes = [float(f.time) for f in c.decode(video=0) if f.to_ndarray(format="gray").mean() > 128]
    with av.open(str(path)) as c:
        frames = list(c.decode(audio=0))
        t0 = float(frames[0].time)
        pcm = np.concatenate([f.to_ndarray()[0] for f in frames])
    click = t0 + int(np.argmax(np.abs(pcm) > 0.4)) / SR
    assert flashes == [pytest.approx(0.5, abs=1e-6)]
    assert abs(click - 0.5) < 0.25 / FPS


def test_unsupported_rate_is_resampled(tmp_path: Path) -> None:
    path = tmp_path / "r.mp4"
    write_clip(path, fragmented=False, rate=37000, seconds=1.0)
    info = probe_mp4(path)
    assert info["audio"]["sample_rate"] == 44100  # next rate AAC supports
    assert abs(info["audio"]["decoded_duration_s"] - 1.0) < 1 / FPS


def test_frame_times_drop_duplicates_and_leave_gaps(tmp_path: Path) -> None:
    path = tmp_path / "t.mp4"
    with Mp4Writer(path, 64, 64, FPS) as w:
        assert w.write_video(moving_frame(0), t=0.0)
        assert not w.write_video(moving_frame(1), t=0.01)  # same slot as frame 0: dropped
        assert w.write_video(moving_frame(2), t=0.5)  # a gap: the player holds frame 0
        assert w.dropped_video_frames == 1 and w.video_frames == 2
        assert w.duration_s == pytest.approx(0.5 + 1 / FPS)
    info = probe_mp4(path)
    assert info["audio"] is None and info["video"]["frames"] == 2


def test_bad_input_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="even"):
        Mp4Writer(tmp_path / "odd.mp4", 65, 64, FPS)
    with pytest.raises(ValueError, match="fps"):
        Mp4Writer(tmp_path / "f.mp4", 64, 64, float("nan"))
    with pytest.raises(ValueError, match="audio_rate"):
        Mp4Writer(tmp_path / "a.mp4", 64, 64, FPS, audio_rate=100)
    with Mp4Writer(tmp_path / "ok.mp4", 64, 64, FPS, audio_rate=SR, audio_channels=2) as w:
        with pytest.raises(ValueError, match="uint8"):
            w.write_video(np.zeros((64, 64, 3), np.float32))
        with pytest.raises(ValueError, match=r"\[64, 64, 3\]"):
            w.write_video(np.zeros((32, 64, 3), np.uint8))
        with pytest.raises(ValueError, match="float"):
            w.write_audio(np.zeros((100, 1), np.float32))  # one channel, writer has two
        w.write_audio(np.full((100, 2), np.nan, np.float32))  # sanitised, not a crash


def test_cannot_open_output_is_recording_error(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="cannot start"):
        Mp4Writer(tmp_path / "missing-dir" / "x.mp4", 64, 64, FPS)


CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from vjapp.output.mp4 import Mp4Writer
    w = Mp4Writer(sys.argv[1], 64, 64, 30, audio_rate=44100, audio_channels=1, fragmented=True)
    y, x = np.mgrid[0:64, 0:64]
    for i in range(45):  # 1.5 s of media
        w.write_video(np.stack([(x + 3 * i) % 256, (y + 2 * i) % 256, x * 0 + 128], -1).astype(np.uint8))
        if i < 15:  # then the audio source stalls: video must not wait for it
            w.write_audio(np.zeros(1470, np.float32))
    print("READY", flush=True)
    time.sleep(60)  # killed here, before close()
    """
)


def test_fragmented_file_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "killed.mp4"
    assert run_until_ready_then_kill(CHILD, path) == -signal.SIGKILL
    info = probe_mp4(path)
    video = info["video"]
    assert video is not None and video["codec"] == "h264"
    # the first 1 s fragment is complete on disk: at most ~0.5 s of the 1.5 s written is lost
    assert video["frames"] >= FPS
    assert video["first_frame_s"] == 0.0
    assert info["audio"] is not None and info["audio"]["samples"] > 0


def test_disk_full_mid_recording_raises_and_keeps_what_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "full.mp4"
    monkeypatch.setattr(mp4mod, "_open_output", lambda p: FillingDisk(p, 400_000))
    rng = np.random.default_rng(1)
    w = Mp4Writer(path, 64, 64, FPS, audio_rate=SR, audio_channels=1, fragmented=True)
    with pytest.raises(RecordingError, match="No space left on device"):
        for i in range(600):
            w.write_video(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
            w.write_audio(np.zeros(1470, np.float32))
    assert w.failed and i > FPS  # the first fragment got out before the disk filled
    with pytest.raises(RecordingError, match="already failed"):
        w.write_video(moving_frame(0))
    w.close()  # no second error: the caller just stops recording
    w.close()
    info = probe_mp4(path)
    assert info["video"]["frames"] >= FPS  # what reached the disk still plays


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_dev_full_raises_recording_error() -> None:
    rng = np.random.default_rng(2)
    with pytest.raises(RecordingError, match="No space left on device"):
        with Mp4Writer("/dev/full", 64, 64, FPS) as w:
            for _ in range(300):
                w.write_video(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
