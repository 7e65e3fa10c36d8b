"""The real video loader on synthscapes: folder and CSV sources, shapes, A/V alignment, bad clips."""

from __future__ import annotations

import csv
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from model.bundle import LANDSCAPE_LABELS
from training.data.synthscapes import generate_clip, write_clip, write_synthscapes
from training.data.video_folder import (
    AudioDataset,
    ClipDecodeError,
    DatasetError,
    FrameDataset,
    SequenceDataset,
    VideoClipIndex,
    decode_clip,
    frame_at_end,
)
from vjapp.output.mp4 import Mp4Writer

SECONDS, SIZE, FPS, SR = 2.0, 48, 16, 22050


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("scapes")
    write_synthscapes(out, 18, SECONDS, SIZE, seed=1, fps=FPS, sample_rate=SR, progress=False)
    return out


@pytest.fixture(scope="module")
def broken(root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A copy of the dataset plus five unusable clips; returns the root and {file name: expected reason}."""
    out = tmp_path_factory.mktemp("broken") / "scapes"
    shutil.copytree(root, out)
    (out / "manifest.csv").unlink()
    good = (out / "wind" / "wind_00000.mp4").read_bytes()
    with Mp4Writer(out / "wind" / "silent_film.mp4", 32, 32, 8, audio_rate=None) as w:  # no audio track
        for i in range(16):
            w.write_video(np.full((32, 32, 3), 10 * i, np.uint8))
    (out / "waterfall" / "truncated.mp4").write_bytes(good[: len(good) // 2])
    (out / "volcano" / "noise.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (out / "raining" / "empty.mp4").write_bytes(b"")
    write_clip(out / "raining" / "short.mp4", generate_clip(6, 9, 0.5, 32, 16, SR))  # < one sequence
    reasons = {
        "silent_film.mp4": "no audio track",
        "truncated.mp4": "not a readable video",
        "noise.mp4": "not a readable video",
        "empty.mp4": "empty file",
        "short.mp4": "too short",
    }
    return out, reasons


def rms(x: torch.Tensor) -> float:
    return float(x.pow(2).mean().sqrt())


# ------------------------------------------------------------------------------- index
def test_folder_and_csv_list_the_same_clips(root: Path) -> None:
    by_folder = VideoClipIndex(root)
    by_csv = VideoClipIndex(root / "manifest.csv")
    assert by_folder.labels == by_csv.labels == list(LANDSCAPE_LABELS)  # order from manifest.json
    folder = {(Path(p).resolve(), k) for p, k, _ in by_folder.items}
    listed = {(Path(p).resolve(), k) for p, k, _ in by_csv.items}
    assert folder == listed and len(listed) == 18
    assert all(cap for _, _, cap in by_csv.items)
    # the folder rule reproduces synthscapes' split
    for split in ("train", "val"):
        a = {Path(i.path).resolve() for i in VideoClipIndex(root, split=split).items}
        b = {Path(i.path).resolve() for i in VideoClipIndex(root / "manifest.csv", split=split).items}
        assert a == b


@pytest.mark.parametrize("source", ["folder", "csv"])
def test_train_and_val_are_disjoint_and_cover_all(root: Path, source: str) -> None:
    src = root if source == "folder" else root / "manifest.csv"
    train = {i.path for i in VideoClipIndex(src, split="train").items}
    val = {i.path for i in VideoClipIndex(src, split="val").items}
    assert train and val and not train & val
    assert train | val == {i.path for i in VideoClipIndex(src).items}
    assert sorted(i.label_index for i in VideoClipIndex(src, split="val").items) == list(range(9))


def test_bad_sources_are_dataset_errors(root: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        VideoClipIndex(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="split"):
        VideoClipIndex(root, split="test")
    with pytest.raises(DatasetError, match="not in the labels"):
        VideoClipIndex(root, labels=["thunderstorm", "wind"])
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("file,class\na.mp4,wind\n")
    with pytest.raises(DatasetError, match="missing"):
        VideoClipIndex(bad_csv)
    (tmp_path / "empty_root").mkdir()
    with pytest.raises(DatasetError, match="no videos"):
        VideoClipIndex(tmp_path / "empty_root")


# ------------------------------------------------------------------------------- decoding
def test_decode_clip_resamples_picture_and_sound(root: Path) -> None:
    clip = decode_clip(root / "fire crackling" / "fire_crackling_00000.mp4", fps=8, size=32, sample_rate=16000)
    assert clip.frames.shape == (16, 32, 32, 3) and clip.frames.dtype == np.uint8
    assert clip.audio.shape == (32000,) and clip.audio.dtype == np.float32
    assert np.isfinite(clip.audio).all() and np.abs(clip.audio).max() <= 1.0
    assert clip.duration == pytest.approx(SECONDS)
    # At the source rate, the decoded picture is the generated one (lossy codec aside).
    rel = "thunderstorm/thunderstorm_00000.mp4"
    with open(root / "manifest.csv", newline="") as fh:
        seed = next(int(r["seed"]) for r in csv.DictReader(fh) if r["path"] == rel)
    src = generate_clip(0, seed, SECONDS, SIZE, FPS, SR)
    full = decode_clip(root / rel, fps=FPS, size=SIZE, sample_rate=SR)
    assert np.abs(full.frames.astype(np.int16) - src.frames).mean() < 4
    half = decode_clip(root / rel, fps=FPS / 2, size=SIZE, sample_rate=SR)  # frame at the end of each span
    assert np.abs(half.frames.astype(np.int16) - src.frames[1::2]).mean() < 4
    # sound in sync: no lag between the decoded and the generated audio
    n = full.audio.shape[0]
    lags = range(-200, 201, 5)
    best = max(lags, key=lambda L: float(np.dot(src.audio[max(0, L) : n + min(0, L)], full.audio[max(0, -L) : n - max(0, L)])))
    assert best == 0


def test_unusable_files_raise_clip_decode_error(broken: tuple[Path, dict[str, str]]) -> None:
    out, reasons = broken
    for path in out.rglob("*.mp4"):
        if path.name in reasons and path.name != "short.mp4":
            with pytest.raises(ClipDecodeError, match=reasons[path.name]):
                decode_clip(path, fps=8, size=32, sample_rate=16000)


# ------------------------------------------------------------------------------- datasets
@pytest.mark.parametrize("source", ["folder", "csv"])
def test_sequence_dataset_items(root: Path, source: str) -> None:
    src = root if source == "folder" else root / "manifest.csv"
    ds = SequenceDataset(src, split="all", fps=8, size=32, sample_rate=16000, segments=2, segment_seconds=0.5)
    assert ds.num_clips == 18 and ds.skipped == [] and ds.labels == list(LANDSCAPE_LABELS)
    assert len(ds) == 18 * 2  # two non-overlapping 1 s windows per 2 s clip
    item = ds[3]
    assert item["frames"].shape == (2, 3, 32, 32) and item["frames"].dtype == torch.float32
    assert -1.0 <= float(item["frames"].min()) and float(item["frames"].max()) <= 1.0
    assert item["audio"].shape == (2, 8000) and item["audio"].dtype == torch.float32
    assert item["label"].dtype == torch.int64 and isinstance(item["caption"], str)
    assert torch.isfinite(item["audio"]).all()
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["frames"].shape == (4, 2, 3, 32, 32) and batch["label"].shape == (4,)


def test_sequence_segments_pair_with_the_frame_at_their_end(root: Path) -> None:
    ds = SequenceDataset(root, split="all", fps=16, size=32, sample_rate=SR, segments=2, segment_seconds=0.25)
    # index arithmetic: window 3 of clip 0 is [1.5, 2.0) s; its segments end at 1.75 and 2.0 s
    i = ds.windows.index((0, 3))
    item, clip = ds[i], ds.clips[0]
    assert [frame_at_end(e, 16, 32) for e in (1.75, 2.0)] == [27, 31]
    expect = torch.from_numpy(clip.frames[[27, 31]]).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.equal(item["frames"], expect)
    start, length = round(1.75 * SR), round(0.25 * SR)
    assert torch.equal(item["audio"][1], torch.from_numpy(clip.audio[start : start + length]))
    # thunder: the frame at the end of a loud segment shows the flash
    loud, bright = [], []
    for k in range(len(ds)):
        it = ds[k]
        if ds.labels[int(it["label"])] != "thunderstorm":
            continue
        for t in range(2):
            loud.append(rms(it["audio"][t]))
            bright.append(float(it["frames"][t].mean()))
    assert len(loud) == 2 * 4 * 2
    assert np.corrcoef(loud, bright)[0, 1] > 0.6


def test_frame_dataset(root: Path) -> None:
    ds = FrameDataset(root / "manifest.csv", split="train", size=32, fps=8)
    assert ds.num_clips == 9 and len(ds) == 9 * 16
    item = ds[20]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert -1.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
    assert int(item["label"]) == ds.items[item["index"]].label_index


def test_audio_dataset(root: Path) -> None:
    ds = AudioDataset(root, split="val", sample_rate=16000, segment_seconds=0.5, hop_seconds=0.25, size=32, fps=8)
    assert ds.num_clips == 9 and len(ds) == 9 * 7  # starts 0, 0.25, ..., 1.5
    item = ds[6]
    assert item["audio"].shape == (8000,) and item["frame"].shape == (3, 32, 32)
    assert item["start"] == pytest.approx(1.5)
    clip = ds.clips[item["index"]]
    assert torch.equal(item["audio"], torch.from_numpy(clip.audio[24000:32000]))
    assert sorted({int(ds[k]["label"]) for k in range(len(ds))}) == list(range(9))


def test_bad_clips_are_skipped_and_reported(
    broken: tuple[Path, dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    out, reasons = broken
    with caplog.at_level(logging.WARNING, logger="training.data.video_folder"):
        ds = SequenceDataset(out, split="all", fps=8, size=32, sample_rate=16000, segments=2, segment_seconds=0.5)
    assert ds.num_clips == 18 and len(ds) == 36
    got = {Path(p).name: r for p, r in ds.skipped}
    assert set(got) == set(reasons)
    for name, reason in reasons.items():
        assert reason in got[name], (name, got[name])
    assert "skipped 5 of 23 clips" in caplog.text


def test_disk_cache_gives_the_same_items(root: Path, tmp_path: Path) -> None:
    kwargs = dict(split="val", fps=8, size=32, sample_rate=16000, segments=2, segment_seconds=0.5, cache_dir=tmp_path)
    first = SequenceDataset(root, **kwargs)
    assert len(list(tmp_path.glob("*.npz"))) == 9
    second = SequenceDataset(root, **kwargs)
    for k in (0, 5, 17):
        assert torch.equal(first[k]["frames"], second[k]["frames"]) and torch.equal(first[k]["audio"], second[k]["audio"])
