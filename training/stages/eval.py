"""``vjapp-train eval``: the paper's sound-to-video metrics, ours against latent-walk baselines.

On ``--clips`` held-out sequences (``--split val``) of ``--segments`` segments each, every method
(:mod:`training.baselines`: ours = E_a + predictor as live, random walk, linear interpolation,
loudness walk) gets the same audio and the same base latents (seeds ``--seed`` + clip index), is
rendered by the same code with the live truncation, and is scored by :mod:`training.metrics`
(ECCV 2022 Table 3a): CLIP audio-video and text-video similarity, per-class semantic consistency;
plus KID of its frames against the real frames and the F_a audio-to-label top-1 (the same for every
method), and the generator's class coverage (:mod:`training.kid`).

The walks' step size is set to ours' mean latent motion, so the walks move as much as ours on
average and the metrics compare *how* they move (the report states the step); linear
interpolation, as in the paper's comparison, crosses from the base to another random latent.

Writes into ``--out``: ``report.json``, ``report.md`` (the table), ``grid_NN.mp4`` for the first
``--mp4-clips`` clips (real | ours | random walk | linear interpolation | loudness walk, one frame
per segment, with the clip's audio) and ``contact_sheets/<label>.png`` (ours' frames from that
class's sounds, one row per clip).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from model.audio_features import LogMel
from model.bundle import Bundle, load_bundle
from training.baselines import (
    METHODS,
    LiveDynamics,
    SoundModels,
    linear_interpolation,
    loudness_units,
    loudness_walk,
    mean_step_motion,
    ours_latents,
    random_bases,
    random_walk,
    render_sequences,
    substeps_per_segment,
)
from training.metrics import (
    MethodMetrics,
    audio_label_top1,
    brightness_per_class,
    method_metrics,
    palette_per_class,
)
from training.run import TrainingError
from training.stages import class_text_embeddings

log = logging.getLogger(__name__)

STAGE = "eval"
METHOD_TITLES = {
    "ours": "ours (E_a + predictor)",
    "random_walk": "random walk",
    "linear_interpolation": "linear interpolation",
    "loudness_walk": "loudness walk",
}


class EvalError(TrainingError, ValueError):
    """The evaluation cannot run with these inputs (a TrainingError: the CLI prints it)."""


@dataclass
class EvalClips:
    """The evaluation set: ``N`` sequences of ``T`` segments."""

    audio: torch.Tensor  # [N, T, S] float32
    frames: torch.Tensor  # [N, T, 3, H, W] in [-1, 1]
    labels: torch.Tensor  # [N] int64
    captions: list[str]
    indices: list[int]  # dataset indices


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``vjapp-train eval``."""
    parser.add_argument("--data", type=Path, required=True, help="data folder or manifest (held-out split used)")
    parser.add_argument("--bundle", type=Path, required=True, help="the bundle to evaluate")
    parser.add_argument("--out", type=Path, required=True, help="report directory (created)")
    parser.add_argument("--split", default="val", help="data split to evaluate on")
    parser.add_argument("--clips", type=int, default=32, help="number of held-out sequences")
    parser.add_argument("--segments", type=int, default=8, help="segments (frames) per sequence")
    parser.add_argument("--seed", type=int, default=0, help="first base-latent seed (clip i uses seed + i)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where to run")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per synthesis / CLIP batch")
    parser.add_argument("--truncation-psi", type=float, default=0.7, help="truncation when rendering (as live)")
    parser.add_argument("--model-rate", type=float, default=0.0, help="live model steps per second (0: the bundle's)")
    parser.add_argument("--mp4-clips", type=int, default=2, help="clips written as side-by-side MP4 grids")
    parser.add_argument("--mp4-size", type=int, default=128, help="height of each tile in the MP4 grids (px)")
    parser.add_argument("--coverage-samples", type=int, default=256,
                        help="random generator samples for class coverage (0: skip)")
    parser.add_argument("--kid-subsets", type=int, default=50, help="KID subsets")
    parser.add_argument("--cache-dir", type=Path, default=None, help="decoded-clip cache of the dataset")


# ------------------------------------------------------------------------------------------------
# Data


def load_clips(data: Path, bundle: Bundle, split: str, clips: int, segments: int,
               cache_dir: Path | None = None) -> EvalClips:
    """``clips`` sequences spread evenly over the split (the same ones on every run)."""
    from training.data.video_folder import SequenceDataset

    info = bundle.info
    ds = SequenceDataset(
        data, split=split, fps=1.0 / info.segment_seconds, size=info.resolution,
        sample_rate=info.mel.sample_rate, segments=segments, segment_seconds=info.segment_seconds,
        cache_dir=cache_dir, labels=list(info.labels) or None,
    )
    n = len(ds)
    if n < 1:
        raise EvalError(f"{data}: split {split!r} has no sequences of {segments} segments")
    count = min(clips, n)
    indices = sorted({int(i) for i in np.linspace(0, n - 1, count).round()})
    items = [ds[i] for i in indices]
    return EvalClips(
        audio=torch.stack([torch.as_tensor(it["audio"]) for it in items]).float(),
        frames=torch.stack([torch.as_tensor(it["frames"]) for it in items]).float(),
        labels=torch.tensor([int(it["label"]) for it in items], dtype=torch.long),
        captions=[str(it["caption"]) for it in items],
        indices=indices,
    )


# ------------------------------------------------------------------------------------------------
# Methods and scoring


@torch.no_grad()
def method_latents(bundle: Bundle, clips: EvalClips, base: torch.Tensor, substeps: int, seed: int,
                   batch: int = 8) -> tuple[dict[str, torch.Tensor], float]:
    """W+ sequences ``[N, T, L, C]`` of every method for the same audio and bases; and the walk step."""
    assert bundle.generator is not None and bundle.sound_inversion is not None and bundle.predictor is not None
    device = base.device
    models = SoundModels(LogMel(bundle.info.mel).to(device), bundle.sound_inversion.eval(),
                         bundle.predictor.eval(), substeps, LiveDynamics.live())
    audio = clips.audio.to(device)
    ours = torch.cat([ours_latents(models, audio[i:i + batch], base[i:i + batch])[1]
                      for i in range(0, audio.shape[0], batch)])  # [N, T, L, C]
    t = audio.shape[1]
    motion = mean_step_motion(ours)
    step = motion if motion > 0 else 1e-3
    loud = loudness_units(audio)  # [N, T]
    mean_loud = float(loud[:, 1:].mean()) if t > 1 else 0.0
    gen = torch.Generator().manual_seed(seed + 7919)
    G = bundle.generator
    targets = random_bases(G.mapping, [seed + 100_000 + i for i in range(base.shape[0])], G.z_dim, device)
    out = {
        "ours": ours,
        "random_walk": random_walk(base, t, step, gen),
        "linear_interpolation": linear_interpolation(base, targets, t),
        "loudness_walk": loudness_walk(base, loud, step / max(mean_loud, 1e-3), gen),
    }
    return out, step


@torch.no_grad()
def embed_images(clip: torch.nn.Module, images: torch.Tensor, batch: int) -> torch.Tensor:
    """CLIP image embeddings of ``[N, T, 3, H, W]`` → ``[N, T, D]``."""
    flat = images.flatten(0, 1)
    out = torch.cat([clip.encode_image(flat[i:i + batch]).float() for i in range(0, flat.shape[0], batch)])
    return out.view(images.shape[0], images.shape[1], -1)


@torch.no_grad()
def audio_embeddings(bundle: Bundle, audio: torch.Tensor, batch: int) -> torch.Tensor:
    """F_a of every segment: ``[N, T, S]`` → ``[N, T, D]``."""
    assert bundle.audio_encoder is not None
    logmel = LogMel(bundle.info.mel).to(audio.device)
    flat = audio.flatten(0, 1)
    out = torch.cat([bundle.audio_encoder(logmel(flat[i:i + batch])).float() for i in range(0, flat.shape[0], batch)])
    return out.view(audio.shape[0], audio.shape[1], -1)


def _kid(real: torch.Tensor, fake: torch.Tensor, subsets: int) -> dict[str, Any]:
    try:
        from training.kid import KIDError, kid
    except ImportError:  # pragma: no cover
        return {}
    try:
        mean, std = kid(real, fake, subsets=subsets, subset_size=1000)
    except KIDError as exc:
        log.warning("KID not computed: %s", exc)
        return {}
    return {"kid": mean, "kid_std": std}


# ------------------------------------------------------------------------------------------------
# Outputs


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    """``[N, 3, H, W]`` in [-1, 1] → ``[N, H, W, 3]`` uint8."""
    x = ((images.float().clamp(-1, 1) + 1.0) * 127.5 + 0.5).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def write_mp4_grid(path: Path, columns: Sequence[torch.Tensor], audio: torch.Tensor, sample_rate: int,
                   segment_seconds: float, tile: int) -> Path:
    """Frames side by side (each column ``[T, 3, H, W]``), one per segment, with the clip's audio ``[T, S]``."""
    from vjapp.output.mp4 import Mp4Writer

    tile = max(2, int(tile) // 2 * 2)
    tiles = [F.interpolate(c.float(), size=(tile, tile), mode="nearest" if c.shape[-1] < tile else "area")
             for c in columns]
    grid = _to_uint8(torch.cat(tiles, dim=-1))  # [T, tile, tile * K, 3]
    t, h, w, _ = grid.shape
    samples = audio.reshape(-1).float().clamp(-1, 1).cpu().numpy()
    with Mp4Writer(path, w, h, fps=1.0 / segment_seconds, audio_rate=int(sample_rate), audio_channels=1,
                   preset="veryfast", threads=1) as writer:
        writer.write_audio(samples[:, None])
        for i in range(t):
            writer.write_video(grid[i])
    return path


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", label).strip("_") or "label"


def write_contact_sheets(out_dir: Path, frames: torch.Tensor, labels: torch.Tensor,
                         class_names: Sequence[str], real: torch.Tensor | None = None) -> dict[str, str]:
    """One PNG per class present: ours' frames ``[N, T, 3, H, W]`` of that class, one row per clip.

    With ``real`` (the clips' real frames ``[N, T, 3, H', W']``) each row starts with the real frame
    of the clip's middle segment, so a person sees the scene beside what the sound drew.
    """
    from training.run import encode_png, image_grid

    sheet_dir = out_dir / "contact_sheets"
    sheet_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    if real is not None:
        middle = real[:, real.shape[1] // 2].float()  # [N, 3, H', W']
        if middle.shape[-2:] != frames.shape[-2:]:
            middle = F.interpolate(middle, size=tuple(frames.shape[-2:]), mode="bilinear", align_corners=False,
                                   antialias=middle.shape[-1] > frames.shape[-1])
        frames = torch.cat([middle[:, None].to(frames.dtype), frames], dim=1)
    for c, name in enumerate(class_names):
        rows = frames[labels == c]
        if rows.shape[0] == 0:
            continue
        grid = image_grid(rows.flatten(0, 1), nrow=rows.shape[1])
        path = sheet_dir / f"{c:02d}_{_slug(name)}.png"
        path.write_bytes(encode_png(grid))
        written[name] = str(path.relative_to(out_dir))
    return written


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: the Table 3a comparison, per-class consistency, F_a's top-1."""
    methods = report["methods"]
    lines = [
        f"# Sound-to-video evaluation: `{report['bundle']}`",
        "",
        f"{report['clips']} held-out clips (split `{report['split']}`) of {report['segments']} segments of "
        f"{report['segment_seconds']} s; the same audio and base latents for every method; walks step "
        f"{report['walk_step']:.4g} per segment (ours' mean latent motion; the loudness walk that much on "
        f"average); linear interpolation goes from the base to another random latent over the clip.",
        "",
        "| method | audio-video sim ↑ | text-video sim ↑ | semantic top-1 ↑ | KID ↓ | palette L1 ↓ | latent motion |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in methods.items():
        lines.append(
            f"| {METHOD_TITLES.get(name, name)} | {_fmt(m['audio_video_similarity'])} | "
            f"{_fmt(m['text_video_similarity'])} | {_fmt(m['semantic_consistency']['mean'])} | "
            f"{_fmt(m.get('kid'))} | {_fmt((m.get('palette_distance') or {}).get('mean'))} | "
            f"{_fmt(m['latent_motion'])} |"
        )
    labels = report["labels"]
    lines += ["", "## Semantic consistency per class (top-1 of CLIP on generated frames)", "",
              "| class | " + " | ".join(METHOD_TITLES.get(n, n) for n in methods) + " |",
              "|---|" + "---|" * len(methods)]
    for label in labels:
        cells = [_fmt(m["semantic_consistency"]["per_class"].get(label)) for m in methods.values()]
        if any(c != "n/a" for c in cells):
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    real_b = report.get("real_brightness")
    if real_b and all(m.get("palette_distance") and m.get("brightness") for m in methods.values()):
        lines += ["", "## Does it look like the real clips? (per class)", "",
                  "Palette L1: the colour layout (4 x 4 mean colours) of each frame against the real frame of "
                  "the same clip and segment, in [-1, 1] units (0 = same; a black frame against a grey "
                  "daylight street is about 0.9). Brightness: mean luma, 0 black .. 1 white.", "",
                  "| class | " + " | ".join(f"palette L1: {METHOD_TITLES.get(n, n)}" for n in methods)
                  + " | brightness: real | brightness: ours |",
                  "|---|" + "---|" * (len(methods) + 2)]
        ours = methods.get("ours", next(iter(methods.values())))
        for label in labels:
            if label not in real_b["per_class"]:
                continue
            cells = [_fmt(m["palette_distance"]["per_class"].get(label)) for m in methods.values()]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {_fmt(real_b['per_class'][label])} | "
                         f"{_fmt(ours['brightness']['per_class'].get(label))} |")
    a = report["audio_label_top1"]
    lines += ["", f"## F_a audio → label top-1: {_fmt(a['mean'])} (mean over classes)", ""]
    lines += [f"- {k}: {_fmt(v)}" for k, v in a["per_class"].items()]
    cov = report.get("generator_class_coverage")
    if cov:
        lines += ["", "## Generator class coverage (random samples by nearest label prompt)", ""]
        lines += [f"- {k}: {_fmt(v)}" for k, v in cov.items()]
    if report.get("videos"):
        lines += ["", "## Videos", "", "Columns: real | " + " | ".join(METHOD_TITLES[m] for m in METHODS), ""]
        lines += [f"- [{v}]({v})" for v in report["videos"]]
    if report.get("contact_sheets"):
        lines += ["", "## Contact sheets (ours)", "",
                  "Each row is one held-out clip: first a real frame of the clip (its middle segment), then "
                  "ours' frame of each segment as the sound goes on.", ""]
        lines += [f"- {k}: ![{k}]({v})" for k, v in report["contact_sheets"].items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# The stage


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Compute the report (and write every output); returns the report dict."""
    from training.distributed import resolve_device

    for name in ("clips", "segments", "batch_size"):
        if getattr(args, name) < 1:
            raise EvalError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if not Path(args.data).exists():
        raise EvalError(f"--data {args.data}: no such file or folder")
    device = resolve_device(args.device)
    bundle = load_bundle(args.bundle, device).eval()
    info = bundle.info
    if not info.labels:
        raise EvalError(f"{args.bundle}: the bundle records no class labels; semantic metrics need them")
    G, clip = bundle.generator, bundle.clip
    assert G is not None and clip is not None
    clips = load_clips(Path(args.data), bundle, args.split, args.clips, args.segments, args.cache_dir)
    n, t = clips.audio.shape[:2]
    rate = args.model_rate or info.model_rate
    substeps = substeps_per_segment(info.segment_seconds, rate)
    base = random_bases(G.mapping, [args.seed + i for i in range(n)], G.z_dim, device)  # [N, L, C]
    latents, step = method_latents(bundle, clips, base, substeps, args.seed, args.batch_size)

    with torch.no_grad():
        class_emb = class_text_embeddings(clip, info.labels).float()  # [K, D]: mean over prompt templates
        audio_emb = audio_embeddings(bundle, clips.audio.to(device), args.batch_size)  # [N, T, D]
        real_emb = embed_images(clip, clips.frames.to(device), args.batch_size)  # [N, T, D]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames: dict[str, torch.Tensor] = {}
    results: dict[str, MethodMetrics] = {}
    for name in METHODS:
        with torch.no_grad():
            imgs = render_sequences(G.synthesis, latents[name], G.mapping.w_avg, args.truncation_psi,
                                    batch=args.batch_size).cpu()  # [N, T, 3, H, W]
            emb = embed_images(clip, imgs.to(device), args.batch_size)
        frames[name] = imgs
        m = method_metrics(emb, audio_emb, class_emb, clips.labels, info.labels, mean_step_motion(latents[name]))
        m.extra.update(_kid(real_emb.flatten(0, 1), emb.flatten(0, 1), args.kid_subsets))
        m.extra["palette_distance"] = palette_per_class(imgs, clips.frames, clips.labels, info.labels)
        m.extra["brightness"] = brightness_per_class(imgs, clips.labels, info.labels)
        results[name] = m
        log.info("%s: audio-video %.4f, text-video %.4f, semantic %.4f", name, m.audio_video, m.text_video,
                 m.semantic.mean)
    a_top1 = audio_label_top1(audio_emb, class_emb, clips.labels, info.labels)

    coverage = None
    if args.coverage_samples > 0:
        try:
            from training.kid import class_coverage

            coverage = class_coverage(G, clip, list(info.labels), args.coverage_samples,
                                      batch_size=args.batch_size,
                                      seed=args.seed, truncation_psi=args.truncation_psi)
        except ImportError:  # pragma: no cover
            coverage = None

    videos = []
    for i in range(min(args.mp4_clips, n)):
        cols = [clips.frames[i]] + [frames[m][i] for m in METHODS]
        path = write_mp4_grid(out_dir / f"grid_{i:02d}.mp4", cols, clips.audio[i], info.mel.sample_rate,
                              info.segment_seconds, args.mp4_size)
        videos.append(path.name)
    sheets = write_contact_sheets(out_dir, frames["ours"], clips.labels, info.labels, real=clips.frames)

    report = {
        "bundle": str(args.bundle),
        "data": str(args.data),
        "split": args.split,
        "clips": n,
        "segments": t,
        "segment_seconds": info.segment_seconds,
        "model_rate": rate,
        "substeps": substeps,
        "truncation_psi": args.truncation_psi,
        "seed": args.seed,
        "walk_step": step,
        "labels": list(info.labels),
        "trained_parts": dict(info.trained),
        "clip_indices": clips.indices,
        "clip_labels": [info.labels[int(c)] if int(c) < len(info.labels) else str(int(c)) for c in clips.labels],
        "methods": {name: m.to_json() for name, m in results.items()},
        "audio_label_top1": a_top1.to_json(),
        "real_brightness": brightness_per_class(clips.frames, clips.labels, info.labels),
        "generator_class_coverage": coverage,
        "videos": videos,
        "contact_sheets": sheets,
    }
    report = _finite_or_none(report)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (out_dir / "report.md").write_text(render_markdown(report), encoding="utf-8")
    log.info("wrote %s", out_dir / "report.md")
    return report


def _finite_or_none(v: Any) -> Any:
    """JSON-ready copy: NaN/Inf become null (strict JSON), tuples lists, other objects strings."""
    if isinstance(v, dict):
        return {str(k): _finite_or_none(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite_or_none(x) for x in v]
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if v is None or isinstance(v, (bool, int, str)):
        return v
    return str(v)


def run(args: argparse.Namespace) -> int:
    """``vjapp-train eval``: write the report; 0 on success."""
    evaluate(args)
    return 0
