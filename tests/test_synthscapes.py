"""synthscapes: deterministic, balanced, valid MP4s, and a sound that drives its picture."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from model.bundle import LANDSCAPE_LABELS
from training.data.synthscapes import (
    LABELS,
    add_arguments,
    generate_clip,
    plan_clips,
    run,
)
from vjapp.output.mp4 import probe_mp4

SECONDS, SIZE, FPS, SR = 2.0, 48, 16, 22050
CLIPS = 18  # two per class


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vjapp-train synthscapes")
    add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthscapes")
    args = parse(
        ["--out", str(out), "--clips", str(CLIPS), "--seconds", str(SECONDS), "--size", str(SIZE),
         "--seed", "3", "--fps", str(FPS), "--sample-rate", str(SR), "--no-progress"]
    )
    assert run(args) == 0
    return out


def manifest_rows(root: Path) -> list[dict[str, str]]:
    with open(root / "manifest.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def frame_rms(audio: np.ndarray, frames: int) -> np.ndarray:
    """RMS of the audio heard during each video frame -> [T]."""
    per = audio.shape[0] // frames
    return np.sqrt((audio[: per * frames].reshape(frames, per) ** 2).mean(1))


def brightness(frames: np.ndarray) -> np.ndarray:
    return frames.astype(np.float32).mean(axis=(1, 2, 3))  # [T]


# ------------------------------------------------------------------------------- generation
def test_labels_are_the_landscape_classes() -> None:
    assert list(LABELS) == list(LANDSCAPE_LABELS) and len(LABELS) == 9


@pytest.mark.parametrize("label_index", range(9))
def test_same_seed_same_clip_other_seed_differs(label_index: int) -> None:
    a = generate_clip(label_index, 11, 1.0, 32, 16, 16000)
    b = generate_clip(label_index, 11, 1.0, 32, 16, 16000)
    c = generate_clip(label_index, 12, 1.0, 32, 16, 16000)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio) and a.caption == b.caption
    assert not np.array_equal(a.frames, c.frames) and not np.array_equal(a.audio, c.audio)
    # shapes, dtypes and the sound's range
    assert a.frames.shape == (16, 32, 32, 3) and a.frames.dtype == np.uint8
    assert a.audio.shape == (16000,) and a.audio.dtype == np.float32
    assert np.isfinite(a.audio).all()
    assert 0.5 < np.abs(a.audio).max() <= 0.9 + 1e-6
    assert a.label == LABELS[label_index] and a.params.label_index == label_index
    assert a.caption and a.frames.std() > 3  # a picture, not a flat colour


def test_bad_arguments_are_value_errors() -> None:
    with pytest.raises(ValueError, match="label_index"):
        generate_clip(9, 0)
    with pytest.raises(ValueError, match="seed"):
        generate_clip(0, -1)
    with pytest.raises(ValueError, match="size"):
        generate_clip(0, 0, size=33)
    with pytest.raises(ValueError, match="seconds"):
        generate_clip(0, 0, seconds=0.0)


def test_cli_reports_bad_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parse(["--out", str(tmp_path / "x"), "--clips", "2", "--size", "31", "--no-progress"])) == 2
    assert "size" in capsys.readouterr().err


# ------------------------------------------------------------------------------- the written dataset
def test_manifest_is_balanced_and_split(dataset: Path) -> None:
    rows = manifest_rows(dataset)
    assert len(rows) == CLIPS
    for label in LABELS:
        mine = [r for r in rows if r["label"] == label]
        assert len(mine) == CLIPS // 9
        assert sorted(r["split"] for r in mine) == ["train", "val"]  # clip 0 train, clip 1 val
    for r in rows:
        assert (dataset / r["path"]).is_file() and r["path"].startswith(r["label"] + "/")
        assert r["caption"]
    settings = json.loads((dataset / "manifest.json").read_text())
    assert settings["labels"] == list(LABELS)
    assert (settings["clips"], settings["size"], settings["fps"], settings["sample_rate"]) == (CLIPS, SIZE, FPS, SR)
    assert [s.seed for s in plan_clips(CLIPS, 3)] == [int(r["seed"]) for r in rows]  # same seed, same plan


def test_mp4s_have_h264_and_aac_of_the_right_size(dataset: Path) -> None:
    for r in manifest_rows(dataset)[:9]:
        info = probe_mp4(dataset / r["path"])
        assert info["error"] is None
        kinds = sorted((s["type"], s["codec"]) for s in info["streams"])
        assert kinds == [("audio", "aac"), ("video", "h264")]
        v, a = info["video"], info["audio"]
        assert (v["width"], v["height"], v["frames"]) == (SIZE, SIZE, int(SECONDS * FPS))
        assert v["duration_s"] == pytest.approx(SECONDS, abs=1e-6)
        assert a["sample_rate"] == SR and a["channels"] == 1
        assert a["decoded_duration_s"] == pytest.approx(SECONDS, abs=0.1)


def test_manifest_seed_reproduces_the_encoded_clip(dataset: Path) -> None:
    import av

    r = manifest_rows(dataset)[5]
    clip = generate_clip(LABELS.index(r["label"]), int(r["seed"]), SECONDS, SIZE, FPS, SR)
    assert clip.caption == r["caption"]
    with av.open(str(dataset / r["path"])) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert decoded.shape == clip.frames.shape
    assert np.abs(decoded.astype(np.int16) - clip.frames).mean() < 4.0  # H.264 at crf 18


# ------------------------------------------------------------------------------- sound drives picture
def test_thunder_loudness_drives_the_flash() -> None:
    for seed in range(4):
        clip = generate_clip(LABELS.index("thunderstorm"), seed, SECONDS, 32, FPS, SR)
        corr = np.corrcoef(brightness(clip.frames), frame_rms(clip.audio, clip.frames.shape[0]))[0, 1]
        assert corr > 0.5, (seed, corr)


def test_crackle_density_drives_the_flicker() -> None:
    for seed in range(4):
        clip = generate_clip(LABELS.index("fire crackling"), seed, SECONDS, 32, FPS, SR)
        crackles = np.diff(clip.audio, n=2, prepend=[0.0, 0.0])  # the clicks, without the low roar
        corr = np.corrcoef(brightness(clip.frames), frame_rms(crackles, clip.frames.shape[0]))[0, 1]
        assert corr > 0.5, (seed, corr)


def test_rain_density_drives_the_streaks() -> None:
    for seed in range(3):
        clip = generate_clip(LABELS.index("raining"), seed, SECONDS, 32, FPS, SR)
        corr = np.corrcoef(brightness(clip.frames), frame_rms(clip.audio, clip.frames.shape[0]))[0, 1]
        assert corr > 0.5, (seed, corr)


def test_bubble_blips_drive_the_bubbles() -> None:
    """Each blip releases a bubble near the bottom: the bottom strip is as busy as the recent blips."""
    for seed in range(3):
        clip = generate_clip(LABELS.index("underwater bubbling"), seed, SECONDS, 48, FPS, SR)
        ends = (np.arange(clip.frames.shape[0]) + 1) / FPS  # [T] end of each frame's span
        blips = np.asarray(clip.params.events)
        recent = ((blips[None, :] < ends[:, None]) & (blips[None, :] >= ends[:, None] - 0.4)).sum(1)
        bottom = brightness(clip.frames[:, int(0.75 * 48) :])
        assert np.corrcoef(bottom, recent)[0, 1] > 0.5, seed


def test_classes_are_distinguishable_by_colour_and_sound() -> None:
    """Nearest class mean on mean frame colour + audio spectral centroid + loudness variability."""

    def features(label_index: int, seed: int) -> np.ndarray:
        clip = generate_clip(label_index, seed, 1.5, 32, FPS, 16000)
        spec = np.abs(np.fft.rfft(clip.audio))
        freqs = np.fft.rfftfreq(clip.audio.shape[0], 1 / 16000)
        centroid = (spec * freqs).sum() / spec.sum()
        rms = frame_rms(clip.audio, clip.frames.shape[0])
        colour = clip.frames.reshape(-1, 3).mean(0) / 255
        return np.concatenate([colour, [np.log(centroid) / 3, rms.std() / rms.mean() / 2]])

    train = np.array([[features(k, s) for s in range(3)] for k in range(9)])  # [9, 3, F]
    means = train.mean(1)  # [9, F]
    right = total = 0
    for k in range(9):
        for s in (100, 101):
            f = features(k, s)
            right += int(np.argmin(((means - f) ** 2).sum(1)) == k)
            total += 1
    assert right / total >= 0.8, right / total
