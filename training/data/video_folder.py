"""Video datasets from a folder tree (ROOT/CLASS/CLIP.mp4) or a CSV manifest, decoded with PyAV.

One decoding path (:func:`decode_clip`) serves three torch Datasets:

* :class:`SequenceDataset` — sequences of ``segments`` audio segments with the frame shown at the
  end of each (sound-to-video training: the model hears a segment, then shows a frame);
* :class:`FrameDataset` — every decoded frame (GAN and CLIP training);
* :class:`AudioDataset` — overlapping audio segments with the frame at each segment's end and the
  label (F_a contrastive training).

Time convention. Frame ``n`` of a video at ``fps`` is on screen during ``[n/fps, (n+1)/fps)``.
Decoding at a chosen ``fps`` picks, for output frame ``k``, the source frame on screen just before
``(k+1)/fps`` (the most recent picture at the end of the output frame's span). An audio segment
``[a, b)`` is paired with the output frame on screen just before ``b``: index ``ceil(b*fps) - 1``.

Datasets are small, so every clip is decoded once when a dataset is built and kept in memory (uint8
frames, float32 audio); ``cache_dir`` adds an on-disk ``.npz`` cache keyed by the file's path,
size, modification time and the decoding settings. Clips that cannot be used — no audio or video
track, unreadable, corrupt, truncated, empty, or shorter than one item — are skipped, listed in
``dataset.skipped`` as ``(path, reason)`` and summarised in the log; they are never fatal.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import av
import av.error
import numpy as np
import torch
from torch.utils.data import Dataset

from vjapp.audio import decode_audio, resample, to_mono
from vjapp.audio.decode import AudioDecodeError

__all__ = [
    "VIDEO_EXTENSIONS",
    "ClipDecodeError",
    "DatasetError",
    "ClipItem",
    "DecodedClip",
    "VideoClipIndex",
    "decode_clip",
    "load_clips",
    "frame_at_end",
    "SequenceDataset",
    "FrameDataset",
    "AudioDataset",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
SPLIT_EVERY = 5  # same rule as synthscapes: clip k of a class (sorted) is val when k % 5 == 1
CACHE_VERSION = 1
_EPS = 1e-6


class ClipDecodeError(ValueError):
    """A clip cannot be used; ``reason`` says why (no audio track, corrupt, empty, ...)."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class DatasetError(ValueError):
    """The dataset source itself is unusable (missing, malformed CSV, unknown labels, no clips)."""


class ClipItem(NamedTuple):
    path: str
    label_index: int
    caption: str


@dataclass
class DecodedClip:
    """A decoded clip: frames at ``fps`` and mono audio at ``sample_rate``, both starting at t = 0."""

    frames: np.ndarray  # [F, H, W, 3] uint8 RGB
    audio: np.ndarray  # [S] float32 in [-1, 1]
    fps: float
    sample_rate: int

    @property
    def duration(self) -> float:
        """Seconds covered by both picture and sound."""
        return min(self.frames.shape[0] / self.fps, self.audio.shape[0] / self.sample_rate)


def frame_at_end(end_s: float, fps: float, frames: int) -> int:
    """Index of the frame on screen just before time ``end_s`` (clamped to ``[0, frames-1]``)."""
    return int(min(max(math.ceil(end_s * fps - _EPS) - 1, 0), frames - 1))


# ------------------------------------------------------------------------------- index
def _check_split(split: str) -> str:
    if split not in ("train", "val", "all"):
        raise DatasetError(f"split must be 'train', 'val' or 'all', got {split!r}")
    return split


def _rule_split(k: int) -> str:
    return "val" if k % SPLIT_EVERY == 1 else "train"


class VideoClipIndex:
    """The clips of a dataset source and their labels, without decoding anything.

    ``source``: a folder ``ROOT/CLASS/CLIP.<video ext>`` (label = folder name) or a CSV with a
    header ``path,label,caption[,split]`` (paths relative to the CSV's folder), e.g. synthscapes'
    ``manifest.csv``. Without a split column, clip ``k`` of each class (in file order) is
    validation when ``k % 5 == 1``, the rule synthscapes writes.

    ``labels``: the class list and its order (e.g. ``model.bundle.LANDSCAPE_LABELS``); by default the
    ``labels`` of a ``manifest.json`` beside the source, else the sorted class names found. A clip
    whose class is not in ``labels`` is an error (a typo should not silently shrink the data).

    Attributes: ``items`` (list of :class:`ClipItem`), ``labels`` (list of str), ``splits``
    (the split of each item), ``source`` (Path).
    """

    def __init__(
        self, source: str | os.PathLike[str], split: str = "all", labels: Sequence[str] | None = None
    ) -> None:
        self.source = Path(source)
        split = _check_split(split)
        if not self.source.exists():
            raise DatasetError(f"dataset source {self.source} does not exist")
        if self.source.is_dir():
            rows, root = self._scan_folder(self.source), self.source
        else:
            rows, root = self._read_csv(self.source), self.source.parent
        if labels is None:
            labels = self._manifest_labels(root) or sorted({r[1] for r in rows})
        labels = [str(x) for x in labels]
        if len(set(labels)) != len(labels):
            raise DatasetError(f"labels contain duplicates: {labels}")
        unknown = sorted({r[1] for r in rows} - set(labels))
        if unknown:
            raise DatasetError(f"{self.source}: classes {unknown} are not in the labels {labels}")
        self.labels: list[str] = labels
        lookup = {name: i for i, name in enumerate(labels)}
        self.items: list[ClipItem] = []
        self.splits: list[str] = []
        for path, label, caption, row_split in rows:
            if split != "all" and row_split != split:
                continue
            self.items.append(ClipItem(path, lookup[label], caption or label))
            self.splits.append(row_split)

    def __len__(self) -> int:
        return len(self.items)

    @staticmethod
    def _manifest_labels(root: Path) -> list[str] | None:
        meta = root / "manifest.json"
        if not meta.is_file():
            return None
        try:
            labels = json.loads(meta.read_text(encoding="utf-8")).get("labels")
        except (OSError, ValueError, AttributeError) as exc:
            log.warning("ignoring unreadable %s: %s", meta, exc)
            return None
        return [str(x) for x in labels] if isinstance(labels, list) else None

    @staticmethod
    def _scan_folder(root: Path) -> list[tuple[str, str, str, str]]:
        rows = []
        for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted(
                p
                for p in class_dir.iterdir()
                if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in VIDEO_EXTENSIONS
            )
            for k, p in enumerate(files):
                rows.append((str(p), class_dir.name, class_dir.name, _rule_split(k)))
        if not rows:
            raise DatasetError(f"no videos found in {root} (expected ROOT/CLASS/CLIP.mp4)")
        return rows

    @staticmethod
    def _read_csv(path: Path) -> list[tuple[str, str, str, str]]:
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                fields = reader.fieldnames or []
                missing = [c for c in ("path", "label") if c not in fields]
                if missing:
                    raise DatasetError(f"{path}: CSV needs columns path,label[,caption,split]; missing {missing}")
                raw = list(reader)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DatasetError(f"cannot read the CSV {path}: {exc}") from exc
        rows = []
        per_class: dict[str, int] = {}
        for line, r in enumerate(raw, start=2):
            rel, label = (r.get("path") or "").strip(), (r.get("label") or "").strip()
            if not rel or not label:
                raise DatasetError(f"{path} line {line}: empty path or label")
            k = per_class.get(label, 0)
            per_class[label] = k + 1
            row_split = (r.get("split") or "").strip() or _rule_split(k)
            if row_split not in ("train", "val"):
                raise DatasetError(f"{path} line {line}: split must be train or val, got {row_split!r}")
            full = Path(rel) if Path(rel).is_absolute() else path.parent / rel
            rows.append((str(full), label, (r.get("caption") or "").strip(), row_split))
        if not rows:
            raise DatasetError(f"{path} lists no clips")
        return rows


# ------------------------------------------------------------------------------- decoding
def _square(frame: Any, size: int) -> np.ndarray:
    """An av.VideoFrame scaled so its short side is ``size`` and centre-cropped -> [size, size, 3] uint8."""
    w, h = frame.width, frame.height
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    rgb = frame.to_ndarray(format="rgb24", width=nw, height=nh, interpolation="AREA")  # [nh, nw, 3]
    y0, x0 = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(rgb[y0 : y0 + size, x0 : x0 + size])


def _decode_frames(container: Any, path: str, fps: float, size: int) -> np.ndarray:
    """Decode the first video stream, resampled to ``fps`` (see the module docstring) -> [F, size, size, 3]."""
    stream = container.streams.video[0]
    src_rate = float(stream.average_rate or stream.guessed_rate or 0) or None
    out: list[np.ndarray] = []
    prev: Any = None
    prev_rgb: np.ndarray | None = None
    t0: float | None = None
    last_t = 0.0
    n = 0
    try:
        for frame in container.decode(stream):
            t = frame.time if frame.time is not None else (n / src_rate if src_rate else float(n))
            t0 = t if t0 is None else t0
            t -= t0
            while prev is not None and t >= (len(out) + 1) / fps - _EPS:  # prev shows until t
                if prev_rgb is None:
                    prev_rgb = _square(prev, size)
                out.append(prev_rgb)
            if t < last_t - _EPS:
                raise ClipDecodeError(path, "video frame times go backwards")
            prev, prev_rgb, last_t = frame, None, t
            n += 1
    except av.error.FFmpegError as exc:
        raise ClipDecodeError(path, f"corrupt video stream ({exc})") from exc
    if prev is None:
        raise ClipDecodeError(path, "the video track has no frames")
    frame_len = 1.0 / src_rate if src_rate else (last_t / max(n - 1, 1))
    end = last_t + frame_len  # the last frame stays on screen until here
    while (len(out) + 1) / fps <= end + _EPS:
        if prev_rgb is None:
            prev_rgb = _square(prev, size)
        out.append(prev_rgb)
    if not out:
        raise ClipDecodeError(path, f"shorter than one frame at {fps} fps")
    return np.stack(out)  # [F, H, W, 3]


def decode_clip(path: str | os.PathLike[str], fps: float, size: int, sample_rate: int) -> DecodedClip:
    """Decode a video file's picture (at ``fps``, ``size`` x ``size``, resized then centre-cropped) and
    its first audio track (mono, resampled to ``sample_rate``; trimmed to the picture's length).

    Raises :class:`ClipDecodeError` with a reason for anything that makes the clip unusable.
    """
    p = str(path)
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps}")
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    if not isinstance(sample_rate, (int, np.integer)) or not 1000 <= sample_rate <= 384000:
        raise ValueError(f"sample_rate must be an int in 1000..384000 Hz, got {sample_rate!r}")
    if not os.path.isfile(p):
        raise ClipDecodeError(p, "file not found")
    if os.path.getsize(p) == 0:
        raise ClipDecodeError(p, "empty file (0 bytes)")
    try:
        container = av.open(p)
    except av.error.FFmpegError as exc:
        raise ClipDecodeError(p, f"not a readable video file ({exc.strerror or exc})") from exc
    with container:
        if not container.streams.video:
            raise ClipDecodeError(p, "no video track")
        if not container.streams.audio:
            raise ClipDecodeError(p, "no audio track")
        try:
            decoded = decode_audio(p)
        except AudioDecodeError as exc:
            raise ClipDecodeError(p, f"audio: {exc.problem}") from exc
        frames = _decode_frames(container, p, float(fps), int(size))
    audio = resample(to_mono(decoded.samples), decoded.sample_rate, int(sample_rate))  # [S]
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32)
    audio = audio[: int(round(frames.shape[0] / fps * sample_rate))]  # drop the codec's tail padding
    return DecodedClip(frames=frames, audio=np.ascontiguousarray(audio), fps=float(fps), sample_rate=int(sample_rate))


def _cache_path(cache_dir: Path, path: str, fps: float, size: int, sample_rate: int) -> Path:
    st = os.stat(path)
    key = f"{CACHE_VERSION}|{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}|{fps!r}|{size}|{sample_rate}"
    return cache_dir / f"{hashlib.sha1(key.encode()).hexdigest()}.npz"


def _decode_cached(path: str, fps: float, size: int, sample_rate: int, cache_dir: Path | None) -> DecodedClip:
    cache = None
    if cache_dir is not None and os.path.isfile(path):
        cache = _cache_path(cache_dir, path, fps, size, sample_rate)
        if cache.is_file():
            try:
                with np.load(cache, allow_pickle=False) as z:
                    return DecodedClip(z["frames"], z["audio"], float(fps), int(sample_rate))
            except (OSError, ValueError, KeyError) as exc:
                log.warning("ignoring unreadable cache %s: %s", cache, exc)
    clip = decode_clip(path, fps, size, sample_rate)
    if cache is not None:
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(cache.stem + f".{os.getpid()}.tmp.npz")
            np.savez(tmp, frames=clip.frames, audio=clip.audio)
            os.replace(tmp, cache)
        except OSError as exc:
            log.warning("cannot write the decode cache %s: %s", cache, exc)
    return clip


def load_clips(
    index: VideoClipIndex,
    *,
    fps: float,
    size: int,
    sample_rate: int,
    min_seconds: float = 0.0,
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[list[tuple[ClipItem, DecodedClip]], list[tuple[str, str]]]:
    """Decode every clip of ``index`` (the one decoding path of all datasets here).

    Returns ``(loaded, skipped)``: ``(item, clip)`` pairs for usable clips and ``(path, reason)`` for
    the others (including clips shorter than ``min_seconds``). Logs a summary of what was skipped.
    """
    cdir = Path(cache_dir) if cache_dir is not None else None
    loaded: list[tuple[ClipItem, DecodedClip]] = []
    skipped: list[tuple[str, str]] = []
    for item in index.items:
        try:
            clip = _decode_cached(item.path, fps, size, sample_rate, cdir)
        except ClipDecodeError as exc:
            skipped.append((item.path, exc.reason))
            continue
        if clip.duration + _EPS < min_seconds:
            skipped.append((item.path, f"too short: {clip.duration:.2f} s, one item needs {min_seconds:.2f} s"))
            continue
        loaded.append((item, clip))
    if skipped:
        shown = "; ".join(f"{Path(p).name}: {r}" for p, r in skipped[:10])
        more = f" (and {len(skipped) - 10} more)" if len(skipped) > 10 else ""
        log.warning("skipped %d of %d clips from %s: %s%s", len(skipped), len(index.items), index.source, shown, more)
    if not loaded:
        raise DatasetError(
            f"no usable clips in {index.source} ({len(index.items)} listed, {len(skipped)} skipped"
            + (f"; first: {skipped[0][1]}" if skipped else "")
            + ")"
        )
    return loaded, skipped


# ------------------------------------------------------------------------------- datasets
def _image_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float32 [..., 3, H, W] in [-1, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(frames)).movedim(-1, -3)
    return t.to(torch.float32) / 127.5 - 1.0


def _segment(audio: np.ndarray, start: int, length: int) -> np.ndarray:
    """audio[start:start+length], zero-padded at the end if the clip ends first -> [length]."""
    seg = audio[start : start + length]
    if seg.shape[0] < length:
        seg = np.pad(seg, (0, length - seg.shape[0]))
    return seg


class _ClipDataset(Dataset):
    """Shared construction: index, decode, keep clips in memory."""

    def __init__(
        self,
        source: str | os.PathLike[str],
        split: str,
        labels: Sequence[str] | None,
        fps: float,
        size: int,
        sample_rate: int,
        min_seconds: float,
        cache_dir: str | os.PathLike[str] | None,
    ) -> None:
        self.index = VideoClipIndex(source, split=split, labels=labels)
        if not self.index.items:
            raise DatasetError(f"{source} has no clips in the {split!r} split")
        self.labels: list[str] = self.index.labels
        self.split = split
        self.fps = float(fps)
        self.size = int(size)
        self.sample_rate = int(sample_rate)
        loaded, self.skipped = load_clips(
            self.index, fps=fps, size=size, sample_rate=sample_rate, min_seconds=min_seconds, cache_dir=cache_dir
        )
        self.items: list[ClipItem] = [item for item, _ in loaded]
        self.clips: list[DecodedClip] = [clip for _, clip in loaded]

    @property
    def num_clips(self) -> int:
        return len(self.clips)


class SequenceDataset(_ClipDataset):
    """Sequences of ``segments`` consecutive audio segments and the frame at the end of each.

    Item ``i`` is a (clip, window) pair; windows are the non-overlapping runs of
    ``segments * segment_seconds`` seconds from each clip's start, all of them, in order. Segment
    ``t`` of window ``w`` covers audio ``[(w*T + t) * seg, (w*T + t + 1) * seg)`` seconds and pairs
    with the frame on screen at its end.

    Returns dict(frames float32 [T, 3, H, W] in [-1, 1], audio float32 [T, samples_per_segment],
    label int64 tensor, caption str, index int (the clip's position in ``items``), window int).
    """

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        split: str = "train",
        fps: float = 8,
        size: int = 64,
        sample_rate: int = 22050,
        segments: int = 4,
        segment_seconds: float = 0.5,
        cache_dir: str | os.PathLike[str] | None = None,
        labels: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(segments, int) or segments < 1:
            raise ValueError(f"segments must be a positive int, got {segments!r}")
        if not (math.isfinite(segment_seconds) and segment_seconds > 0):
            raise ValueError(f"segment_seconds must be positive, got {segment_seconds}")
        self.segments = segments
        self.segment_seconds = float(segment_seconds)
        self.samples_per_segment = int(round(segment_seconds * sample_rate))
        window = segments * segment_seconds
        super().__init__(source, split, labels, fps, size, sample_rate, window, cache_dir)
        self.windows: list[tuple[int, int]] = [
            (c, w) for c, clip in enumerate(self.clips) for w in range(int(clip.duration / window + _EPS))
        ]

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        c, w = self.windows[i]
        clip, item = self.clips[c], self.items[c]
        seg, sr, T = self.segment_seconds, self.sample_rate, self.segments
        starts = [int(round((w * T + t) * seg * sr)) for t in range(T)]
        audio = np.stack([_segment(clip.audio, s, self.samples_per_segment) for s in starts])  # [T, S]
        idx = [frame_at_end((w * T + t + 1) * seg, clip.fps, clip.frames.shape[0]) for t in range(T)]
        return {
            "frames": _image_tensor(clip.frames[idx]),  # [T, 3, H, W]
            "audio": torch.from_numpy(audio),  # [T, samples_per_segment]
            "label": torch.tensor(item.label_index, dtype=torch.int64),
            "caption": item.caption,
            "index": c,
            "window": w,
        }


class FrameDataset(_ClipDataset):
    """Every decoded frame of every clip: dict(image float32 [3, H, W] in [-1, 1], label int64
    tensor, caption str, index int (clip), frame int)."""

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        split: str = "train",
        size: int = 64,
        fps: float = 8,
        labels: Sequence[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        sample_rate: int = 22050,
    ) -> None:
        super().__init__(source, split, labels, fps, size, sample_rate, 0.0, cache_dir)
        self.frames_index: list[tuple[int, int]] = [
            (c, f) for c, clip in enumerate(self.clips) for f in range(clip.frames.shape[0])
        ]

    def __len__(self) -> int:
        return len(self.frames_index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        c, f = self.frames_index[i]
        item = self.items[c]
        return {
            "image": _image_tensor(self.clips[c].frames[f]),  # [3, H, W]
            "label": torch.tensor(item.label_index, dtype=torch.int64),
            "caption": item.caption,
            "index": c,
            "frame": f,
        }


class AudioDataset(_ClipDataset):
    """Audio segments of ``segment_seconds`` every ``hop_seconds`` through each clip, with the frame
    on screen at the segment's end and the label: dict(audio float32 [S], label int64 tensor,
    caption str, frame float32 [3, H, W] in [-1, 1], index int (clip), start float (seconds))."""

    def __init__(
        self,
        source: str | os.PathLike[str],
        *,
        split: str = "train",
        sample_rate: int = 22050,
        segment_seconds: float = 0.5,
        hop_seconds: float = 0.25,
        size: int = 64,
        fps: float = 8,
        labels: Sequence[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        for name, v in (("segment_seconds", segment_seconds), ("hop_seconds", hop_seconds)):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be positive, got {v}")
        self.segment_seconds = float(segment_seconds)
        self.hop_seconds = float(hop_seconds)
        self.samples_per_segment = int(round(segment_seconds * sample_rate))
        super().__init__(source, split, labels, fps, size, sample_rate, segment_seconds, cache_dir)
        self.segments_index: list[tuple[int, float]] = []
        for c, clip in enumerate(self.clips):
            n = int((clip.duration - segment_seconds) / hop_seconds + _EPS) + 1
            self.segments_index.extend((c, j * hop_seconds) for j in range(n))

    def __len__(self) -> int:
        return len(self.segments_index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        c, start = self.segments_index[i]
        clip, item = self.clips[c], self.items[c]
        s0 = int(round(start * self.sample_rate))
        audio = _segment(clip.audio, s0, self.samples_per_segment)  # [S]
        f = frame_at_end(start + self.segment_seconds, clip.fps, clip.frames.shape[0])
        return {
            "audio": torch.from_numpy(np.ascontiguousarray(audio)),
            "label": torch.tensor(item.label_index, dtype=torch.int64),
            "caption": item.caption,
            "frame": _image_tensor(clip.frames[f]),  # [3, H, W]
            "index": c,
            "start": float(start),
        }
