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
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from model.audio_features import LogMel
from model.bundle import Bundle, load_bundle
from training.baselines import (
    AtlasModels,
    LiveDynamics,
    atlas_latents,
    scene_and_sound_latents,
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

if TYPE_CHECKING:
    from model.atlas import LatentAtlas
    from training.judge_report import Judges

log = logging.getLogger(__name__)

STAGE = "eval"
METHOD_TITLES = {
    "ours": "ours (as live: F_a → atlas scene)",
    "offsets": "E_a + predictor offsets (meaning 'offsets'; the previous default)",
    "both": "scene + E_a offsets (meaning 'both')",
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
    parser.add_argument("--base-seeds", type=int, default=3,
                        help="base latents per clip (seeds SEED + i + 1000 k): every figure is over all of them")
    parser.add_argument("--judge-dir", type=Path, default=None,
                        help="where the independent judges are kept (default: DATA/judges); trained there from the "
                             "data's real train-split frames when missing or stale")
    parser.add_argument("--judge-data", type=Path, default=None,
                        help="data whose real train-split frames train the judges (default: --data); the judges are "
                             "checked on its val split and on the evaluated clips' real frames")
    parser.add_argument("--judge-steps", type=int, default=600, help="training steps of each judge")
    parser.add_argument("--no-judge", action="store_true", help="skip the independent judge (CLIP metrics only)")
    parser.add_argument("--switch-pairs", type=int, default=36, help="class-switch pairs for the reaction time (0: skip)")
    parser.add_argument("--atlas-samples", type=int, default=4096, help="latent atlas size (0: no atlas method)")
    parser.add_argument("--semantic-reach", type=float, default=None,
                        help="the semantic_reach control for E_a's offset (default: the live default)")
    parser.add_argument("--scene-glide", type=float, default=None,
                        help="the scene's glide per model step (default: the live default)")


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


SoundMethod = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _atlas_entry_classes(atlas: "LatentAtlas | None", labels: list[str],
                         bundle_root: Path) -> tuple[torch.Tensor | None, str]:
    """The atlas entries' stored classes (as the show uses them) and what named them; refuses
    classes named by the eval's own judge (its seeds), which would grade its own answers."""
    if atlas is None:
        return None, "none (no atlas)"
    from model.atlas_classes import read_atlas_classes
    from training.judge_report import JUDGE_SEEDS

    stored = read_atlas_classes(atlas, labels, bundle_root)
    if stored is None:
        return None, "the class prompts' CLIP embeddings"
    if set(stored.seeds) & set(JUDGE_SEEDS):
        raise EvalError(f"eval: the atlas entries' classes of {bundle_root} were named by classifiers with the "
                        f"eval judge's seeds {JUDGE_SEEDS}: the judge would grade its own labels")
    return stored.probs, stored.source


def sound_methods(bundle: Bundle, substeps: int, atlas: "LatentAtlas | None", batch: int = 8,
                  semantic_reach: float | None = None, glide: float | None = None,
                  entry_classes: torch.Tensor | None = None) -> dict[str, SoundMethod]:
    """The methods that hear the sound: name -> ``f(audio [B, T, S], base [B, L, C])`` returning the
    latents after every live step ``[B, N, L, C]`` and at the segment ends ``[B, T, L, C]``.
    ``entry_classes``: the atlas entries' stored classes, as the show reads them (:mod:`model.atlas_classes`)."""
    device = next(bundle.generator.parameters()).device  # type: ignore[union-attr]
    logmel = LogMel(bundle.info.mel).to(device)
    from vjapp.engine.controls import Controls
    from vjapp.engine.scene import SceneDynamics

    controls = Controls() if semantic_reach is None else Controls().replace(semantic_reach=semantic_reach)
    dyn = LiveDynamics.live(controls=controls)
    scene = SceneDynamics() if glide is None else SceneDynamics(glide=glide)
    out: dict[str, SoundMethod] = {}

    def batched(fn: SoundMethod) -> SoundMethod:
        def run(audio: torch.Tensor, base: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            parts = [fn(audio[i:i + batch].to(device), base[i:i + batch]) for i in range(0, audio.shape[0], batch)]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        return run

    models = amodels = None
    if bundle.sound_inversion is not None and bundle.predictor is not None:
        models = SoundModels(logmel, bundle.sound_inversion.eval(), bundle.predictor.eval(), substeps, dyn)
    if atlas is not None and bundle.audio_encoder is not None:
        from model.atlas import AtlasSteering

        from model.clip import class_text_embeddings

        anchors = class_text_embeddings(bundle.clip, bundle.info.labels) if bundle.clip is not None else None
        steering = AtlasSteering(atlas, anchors=anchors, entry_classes=entry_classes).to(device)
        amodels = AtlasModels(logmel, bundle.audio_encoder.eval(), steering, substeps, dyn, scene)
    # "ours" is what the show plays with default controls (meaning "scene" when there is an atlas)
    if amodels is not None:
        out["ours"] = batched(lambda a, b: atlas_latents(amodels, a, b))
        if models is not None:
            out["offsets"] = batched(lambda a, b: ours_latents(models, a, b))
            out["both"] = batched(lambda a, b: scene_and_sound_latents(models, amodels, a, b))
    elif models is not None:
        out["ours"] = batched(lambda a, b: ours_latents(models, a, b))
    return out


@torch.no_grad()
def method_latents(bundle: Bundle, clips: EvalClips, base: torch.Tensor, methods: dict[str, SoundMethod],
                   seed: int) -> tuple[dict[str, torch.Tensor], float]:
    """W+ sequences ``[N, T, L, C]`` of every method for the same audio and bases; and the walk step."""
    assert bundle.generator is not None
    device = base.device
    audio = clips.audio.to(device)
    out = {name: fn(audio, base)[1] for name, fn in methods.items()}  # [N, T, L, C]
    t = audio.shape[1]
    motion = mean_step_motion(next(iter(out.values()))) if out else 0.0
    step = motion if motion > 0 else 1e-3
    loud = loudness_units(audio)  # [N, T]
    mean_loud = float(loud[:, 1:].mean()) if t > 1 else 0.0
    gen = torch.Generator().manual_seed(seed + 7919)
    G = bundle.generator
    targets = random_bases(G.mapping, [seed + 100_000 + i for i in range(base.shape[0])], G.z_dim, device)
    out.update({
        "random_walk": random_walk(base, t, step, gen),
        "linear_interpolation": linear_interpolation(base, targets, t),
        "loudness_walk": loudness_walk(base, loud, step / max(mean_loud, 1e-3), gen),
    })
    return out, step


@torch.no_grad()
def reaction_times(bundle: Bundle, clips: EvalClips, base: torch.Tensor, methods: dict[str, SoundMethod],
                   judges: "Judges", pairs: int, substeps: int, psi: float, batch: int) -> dict[str, Any]:
    """Per sound method: the time after a switch from clip A's sound to clip B's until the full judge
    names B's class and keeps naming it (:func:`training.judge_report.reaction_time`)."""
    from training.judge_report import reaction_time, summarize_reactions, switch_pairs

    assert bundle.generator is not None
    G = bundle.generator
    chosen = switch_pairs(clips.labels, pairs)
    if not chosen:
        return {}
    t = clips.audio.shape[1]
    audio = torch.stack([torch.cat([clips.audio[i], clips.audio[j]]) for i, j in chosen]).to(base.device)
    bases = torch.stack([base[i] for i, _ in chosen])
    step_s = bundle.info.segment_seconds / substeps
    switch_step = t * substeps  # live step whose window is the first segment of B ends at t*substeps + substeps
    out: dict[str, Any] = {}
    for name, fn in methods.items():
        all_steps, _ = fn(audio, bases)  # [P, N, L, C]
        # steps after the switch: window j (j >= 1) ends j/substeps segments after B's start
        after = all_steps[:, switch_step - substeps + 1: switch_step - substeps + 1 + t * substeps]
        frames = render_sequences(G.synthesis, after, G.mapping.w_avg, psi, batch=batch).cpu()
        pred = judges.full.classify(frames.flatten(0, 1)).view(frames.shape[0], frames.shape[1])
        times = [reaction_time(pred[k].tolist(), int(clips.labels[j]), step_s) for k, (_, j) in enumerate(chosen)]
        out[name] = summarize_reactions(times)
        out[name]["times_s"] = times
    return out


@torch.no_grad()
def loudness_ratios(clips: EvalClips, base: torch.Tensor, methods: dict[str, SoundMethod],
                    quiet: float = 0.1) -> dict[str, float | None]:
    """Per sound method: mean latent motion per live step with the audio at ``quiet`` of its amplitude
    over the motion at full scale (Sound2Scene: louder sound, bigger change; target <= 0.5)."""
    audio = clips.audio.to(base.device)
    out: dict[str, float | None] = {}
    for name, fn in methods.items():
        loud = mean_step_motion(fn(audio, base)[0])
        soft = mean_step_motion(fn(audio * quiet, base)[0])
        out[name] = soft / loud if loud > 0 else None
    return out


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


def _pct(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{100 * v:.0f}%"


def judge_markdown(report: dict[str, Any]) -> list[str]:
    """The independent judge's tables: named right per class and method (full / structure only),
    the generator's ceiling, reaction time and loudness ratio."""
    judge = report.get("judge")
    methods = report["methods"]
    lines: list[str] = []
    if judge:
        held = judge["held_out_real"]
        lines += ["", "## Independent judge (classifiers trained on real frames only)", "",
                  "Two small CNNs trained on the data's real train-split frames, never on generated frames and "
                  "not through the bundle's CLIP: **full** sees the frame, **structure** sees it without its "
                  "colour layout (grey, the mean of each cell of an 8 x 8 grid removed). Frames after the first "
                  f"second of each clip, {report.get('base_seeds', 1)} base seeds. Real frames the judges never saw: "
                  f"their data's val split, full {_pct(held['full']['mean'])} / structure "
                  f"{_pct(held['structure']['mean'])}; the evaluated clips, full "
                  f"{_pct(judge['evaluated_clips_real']['full']['mean'])} / structure "
                  f"{_pct(judge['evaluated_clips_real']['structure']['mean'])}.", "",
                  "| method | full: mean | full: worst class | structure: mean | structure: worst class |",
                  "|---|---|---|---|---|"]
        for name, mm in methods.items():
            j = mm.get("judge")
            if j:
                lines.append(f"| {METHOD_TITLES.get(name, name)} | {_pct(j['full']['mean'])} | {_pct(j['full']['min'])} "
                             f"| {_pct(j['structure']['mean'])} | {_pct(j['structure']['min'])} |")
        ceiling = judge["generator_ceiling"]
        lines += ["", "### Named right per class (full / structure only)", "",
                  "| class | " + " | ".join(METHOD_TITLES.get(n, n) for n in methods)
                  + " | generator samples: share named so (full) | ... structure agrees |",
                  "|---|" + "---|" * (len(methods) + 2)]
        for label in report["labels"]:
            cells = []
            for mm in methods.values():
                j = mm.get("judge") or {}
                f = (j.get("full") or {}).get("per_class", {}).get(label)
                st = (j.get("structure") or {}).get("per_class", {}).get(label)
                cells.append(f"{_pct(f)} / {_pct(st)}")
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {_pct(ceiling['full_share'].get(label))} | "
                         f"{_pct(ceiling['structure_agrees'].get(label))} |")
        lines += ["", f"Generator's own samples ({ceiling['samples']} at psi {ceiling['truncation_psi']}): the structure "
                  f"judge agrees with the full judge on {_pct(ceiling['structure_agrees_overall'])} of them."]
        reaction = judge.get("reaction") or {}
        if reaction:
            lines += ["", "### Reaction time after a class switch (full judge names the new class for 3 steps)", "",
                      "| method | pairs | reached | median | worst |", "|---|---|---|---|---|"]
            for name, r in reaction.items():
                med = r.get("median_s")
                worst = r.get("worst_s")
                lines.append(f"| {METHOD_TITLES.get(name, name)} | {r['pairs']} | {r['reached']} | "
                             f"{'never' if med is None else f'{med:.2f} s'} | "
                             f"{'never' if worst is None else f'{worst:.2f} s'} |")
    ratios = report.get("loudness_ratio") or {}
    if ratios:
        lines += ["", "### Loudness: motion at 0.1 amplitude / motion at full scale (target <= 0.5)", ""]
        lines += [f"- {METHOD_TITLES.get(n, n)}: {_fmt(v)}" for n, v in ratios.items()]
    return lines


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
    lines += judge_markdown(report)
    a = report["audio_label_top1"]
    lines += ["", f"## F_a audio → label top-1: {_fmt(a['mean'])} (mean over classes)", ""]
    lines += [f"- {k}: {_fmt(v)}" for k, v in a["per_class"].items()]
    cov = report.get("generator_class_coverage")
    if cov:
        lines += ["", "## Generator class coverage (random samples by nearest label prompt)", ""]
        lines += [f"- {k}: {_fmt(v)}" for k, v in cov.items()]
    if report.get("videos"):
        cols = report.get("video_columns") or ["real", *methods]
        lines += ["", "## Videos", "", "Columns: " + " | ".join(METHOD_TITLES.get(c, c) for c in cols), ""]
        lines += [f"- [{v}]({v})" for v in report["videos"]]
    if report.get("contact_sheets"):
        lines += ["", f"## Contact sheets ({METHOD_TITLES.get(report.get('contact_sheet_method', 'ours'), 'ours')})", "",
                  "Each row is one held-out clip: first a real frame of the clip (its middle segment), then "
                  "ours' frame of each segment as the sound goes on.", ""]
        lines += [f"- {k}: ![{k}]({v})" for k, v in report["contact_sheets"].items()]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
# The stage


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Compute the report (and write every output); returns the report dict."""
    from training.distributed import resolve_device

    for name in ("clips", "segments", "batch_size", "base_seeds"):
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
    one = load_clips(Path(args.data), bundle, args.split, args.clips, args.segments, args.cache_dir)
    k = args.base_seeds
    clips = EvalClips(audio=one.audio.repeat(k, 1, 1), frames=one.frames.repeat(k, 1, 1, 1, 1),
                      labels=one.labels.repeat(k), captions=one.captions * k, indices=one.indices * k)
    n, t = clips.audio.shape[:2]
    m = len(one.indices)
    seeds = [args.seed + (i % m) + 1000 * (i // m) for i in range(n)]
    rate = args.model_rate or info.model_rate
    substeps = substeps_per_segment(info.segment_seconds, rate)
    base = random_bases(G.mapping, seeds, G.z_dim, device)  # [N, L, C]
    atlas = None
    if args.atlas_samples > 0 and bundle.audio_encoder is not None:
        from model.atlas import AtlasSettings, atlas_for

        atlas = atlas_for(G, clip, Path(args.bundle), AtlasSettings(samples=args.atlas_samples,
                                                                     truncation_psi=args.truncation_psi))
    entry_classes, classes_source = _atlas_entry_classes(atlas, list(info.labels), Path(args.bundle))
    methods = sound_methods(bundle, substeps, atlas, args.batch_size, args.semantic_reach, args.scene_glide,
                            entry_classes)
    latents, step = method_latents(bundle, clips, base, methods, args.seed)

    judges = None
    if not args.no_judge:
        from training.judge_report import ensure_judges

        judge_data = Path(args.judge_data or args.data)
        judge_dir = args.judge_dir or (judge_data if judge_data.is_dir() else judge_data.parent) / "judges"
        def judge_progress(form: str, step: int, total: int, loss: float) -> None:
            if step == total or step % 250 == 1:
                log.info("%s judge: step %d/%d, loss %.3f", form, step, total, loss)

        judges = ensure_judges(judge_data, info.labels, judge_dir, steps=args.judge_steps, cache_dir=args.cache_dir,
                               progress=judge_progress)

    with torch.no_grad():
        class_emb = class_text_embeddings(clip, info.labels).float()  # [K, D]: mean over prompt templates
        audio_emb = audio_embeddings(bundle, clips.audio.to(device), args.batch_size)  # [N, T, D]
        real_emb = embed_images(clip, one.frames.to(device), args.batch_size)  # [M, T, D]
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames: dict[str, torch.Tensor] = {}
    results: dict[str, MethodMetrics] = {}
    for name in latents:
        with torch.no_grad():
            imgs = render_sequences(G.synthesis, latents[name], G.mapping.w_avg, args.truncation_psi,
                                    batch=args.batch_size).cpu()  # [N, T, 3, H, W]
            emb = embed_images(clip, imgs.to(device), args.batch_size)
        frames[name] = imgs
        mm = method_metrics(emb, audio_emb, class_emb, clips.labels, info.labels, mean_step_motion(latents[name]))
        mm.extra.update(_kid(real_emb.flatten(0, 1), emb.flatten(0, 1), args.kid_subsets))
        mm.extra["palette_distance"] = palette_per_class(imgs, clips.frames, clips.labels, info.labels)
        mm.extra["brightness"] = brightness_per_class(imgs, clips.labels, info.labels)
        if judges is not None:
            from training.judge_report import method_scores

            mm.extra["judge"] = method_scores(judges, imgs, clips.labels, info.labels, info.segment_seconds)
        results[name] = mm
        log.info("%s: audio-video %.4f, text-video %.4f, semantic %.4f%s", name, mm.audio_video, mm.text_video,
                 mm.semantic.mean, "" if judges is None else
                 f", judge full {mm.extra['judge']['full']['mean']:.3f} structure "
                 f"{mm.extra['judge']['structure']['mean']:.3f}")
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
    judge_part: dict[str, Any] | None = None
    if judges is not None:
        from training.judge_report import generator_ceiling

        from training.judge import accuracy_per_class, mean_or_nan

        last = one.frames[:, -1]  # the real frame at each evaluated clip's last segment
        judge_part = {
            "data": str(judge_data),
            "held_out_real": {f: {"mean": mean_or_nan(v), "per_class": v} for f, v in judges.held_out.items()},
            "evaluated_clips_real": {f: {"mean": mean_or_nan(v), "per_class": v} for f, v in (
                (form, accuracy_per_class(j.classify(last), one.labels, info.labels))
                for form, j in judges.forms().items())},
            "generator_ceiling": generator_ceiling(G, judges, info.labels, max(args.coverage_samples, 64),
                                                   args.truncation_psi, args.seed, args.batch_size),
            "reaction": reaction_times(bundle, clips, base, methods, judges, args.switch_pairs, substeps,
                                       args.truncation_psi, args.batch_size) if args.switch_pairs > 0 else {},
        }
    loud_ratio = loudness_ratios(clips, base, methods)

    videos = []
    for i in range(min(args.mp4_clips, n)):
        cols = [clips.frames[i]] + [frames[name][i] for name in frames]
        path = write_mp4_grid(out_dir / f"grid_{i:02d}.mp4", cols, clips.audio[i], info.mel.sample_rate,
                              info.segment_seconds, args.mp4_size)
        videos.append(path.name)
    shown = "ours" if "ours" in frames else next(iter(frames))
    first = slice(0, m)  # the first base seed's rows: one row per held-out clip
    sheets = write_contact_sheets(out_dir, frames[shown][first], clips.labels[first], info.labels,
                                  real=clips.frames[first])

    report = {
        "bundle": str(args.bundle),
        "data": str(args.data),
        "split": args.split,
        "clips": m,
        "base_seeds": k,
        "segments": t,
        "segment_seconds": info.segment_seconds,
        "model_rate": rate,
        "substeps": substeps,
        "truncation_psi": args.truncation_psi,
        "seed": args.seed,
        "walk_step": step,
        "labels": list(info.labels),
        "trained_parts": dict(info.trained),
        "atlas_samples": len(atlas) if atlas is not None else 0,
        "atlas_entry_classes": classes_source,
        "clip_indices": one.indices,
        "clip_labels": [info.labels[int(c)] if int(c) < len(info.labels) else str(int(c)) for c in one.labels],
        "methods": {name: mm.to_json() for name, mm in results.items()},
        "audio_label_top1": a_top1.to_json(),
        "real_brightness": brightness_per_class(one.frames, one.labels, info.labels),
        "generator_class_coverage": coverage,
        "judge": judge_part,
        "loudness_ratio": loud_ratio,
        "videos": videos,
        "video_columns": ["real", *frames],
        "contact_sheets": sheets,
        "contact_sheet_method": shown,
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
