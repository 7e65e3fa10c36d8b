"""``vjapp-train clip``: the bundle's CLIP (F_v images, F_t text).

Default: train a small CLIP (an OpenCLIP config from ``resources/clip_configs``, ``vjapp-tiny``)
from scratch on (video frame, caption) pairs with CLIP's symmetric InfoNCE. Pairs of the same
class count as positives of each other (``--positives caption``: only pairs sharing a caption),
and half the captions (``--label-captions``) are replaced by a prompt template naming the label,
so the label prompts that evaluation and the app's text prompts use are what the text tower was
trained on (without them a class whose captions never say its label can score 0). Evaluation: zero-shot image → label top-1 on the
``val`` split, each label's text embedding being the mean over prompt templates ("a photo of
a {}", ...). The CLIP is written natively into the bundle (``clip.safetensors + .json``).

``--init PATH`` fine-tunes from an existing CLIP instead (a native vjapp CLIP ``.json``, or an
OpenCLIP weights file of ``--arch``). ``--weights PATH`` (with ``--arch NAME``) takes a real
OpenCLIP checkpoint from a local file as it is: the stage only evaluates it and records it in
the bundle by reference (architecture + path), nothing is trained or copied.
"""

from __future__ import annotations

import argparse
import logging
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.clip import DEFAULT_CLIP_ARCH, ClipModel, build_clip, load_clip
from model.formats import CheckpointError
from training import bundle_io
from training.distributed import loop_batches, make_loader, unwrap, wrap
from training.losses import info_nce, top1_accuracy
from training.run import Run, TrainingError, add_common_arguments
from training.stages import DEFAULT_TEMPLATES, class_text_embeddings

log = logging.getLogger(__name__)

STAGE = "clip"


@dataclass
class ClipStageConfig:
    """What the clip stage trains (saved with every checkpoint)."""

    arch: str = DEFAULT_CLIP_ARCH  # OpenCLIP architecture (ours, a built-in, or a config JSON path).
    init: str | None = None  # Start from this CLIP (native .json or OpenCLIP weights) instead of random.
    weights: str | None = None  # Evaluate and record this OpenCLIP checkpoint; no training.
    fps: float = 2.0  # Frames sampled per second of video.
    weight_decay: float = 0.1  # AdamW decay on matrices (not on gains, biases, embeddings, temperature).
    hflip: bool = True  # Random horizontal flips of the frames.
    templates: tuple[str, ...] = DEFAULT_TEMPLATES  # Zero-shot prompt templates.
    eval_batches: int = 0  # Cap on val batches per evaluation (0: all).
    cache_dir: str | None = None  # Decoded-frame cache (passed to the dataset).
    positives: str = "label"  # Which pairs count as positives: "label" (same class) or "caption" (same text).
    label_captions: float = 0.5  # Share of captions replaced by a template naming the label.
    labels: tuple[str, ...] = field(default_factory=tuple)  # Filled in from the dataset.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, steps=3000, batch_size=64, lr=5e-4, ckpt_every=500, log_every=20, eval_every=500)
    g = parser.add_argument_group("clip stage")
    g.add_argument("--arch", default=DEFAULT_CLIP_ARCH, help="OpenCLIP architecture: vjapp-tiny, a built-in name, or a config JSON")
    g.add_argument("--init", type=Path, default=None,
                   help="fine-tune from this CLIP: a native vjapp clip .json, or OpenCLIP weights of --arch")
    g.add_argument("--weights", type=Path, default=None,
                   help="use this local OpenCLIP checkpoint of --arch as it is: evaluate and record it, train nothing")
    g.add_argument("--fps", type=float, default=2.0, help="frames sampled per second of video")
    g.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay")
    g.add_argument("--no-hflip", dest="hflip", action="store_false", help="no random horizontal flips")
    g.add_argument("--template", dest="templates", action="append", default=None,
                   help=f"zero-shot prompt template with {{}} for the label (repeatable; default {list(DEFAULT_TEMPLATES)})")
    g.add_argument("--eval-batches", type=int, default=0, help="cap on validation batches per evaluation (0: all)")
    g.add_argument("--cache-dir", type=Path, default=None, help="cache of decoded frames (speeds up repeated runs)")
    g.add_argument("--positives", choices=("label", "caption"), default="label",
                   help="pairs that count as positives of each other: same class label (default) or same caption")
    g.add_argument("--label-captions", type=float, default=0.5,
                   help="share of training captions replaced by a prompt template naming the label (0..1), so the "
                        "label prompts that zero-shot evaluation and the app use are in the text tower's training data")


def _config_from_args(args: argparse.Namespace) -> ClipStageConfig:
    if args.init is not None and args.weights is not None:
        raise TrainingError("--init (fine-tune) and --weights (evaluate as is) exclude each other")
    for name in ("init", "weights"):
        p = getattr(args, name)
        if p is not None and not Path(p).is_file():
            raise TrainingError(f"--{name} {p}: no such file")
    if not args.fps > 0:
        raise TrainingError(f"--fps must be positive, got {args.fps}")
    templates = tuple(args.templates) if args.templates else DEFAULT_TEMPLATES
    if not all("{}" in t for t in templates):
        raise TrainingError(f"every --template needs a '{{}}' placeholder for the label, got {list(templates)}")
    if not 0.0 <= args.label_captions <= 1.0:
        raise TrainingError(f"--label-captions must be between 0 and 1, got {args.label_captions}")
    return ClipStageConfig(
        positives=str(args.positives), label_captions=float(args.label_captions),
        arch=args.arch, init=str(args.init) if args.init else None, weights=str(args.weights) if args.weights else None,
        fps=float(args.fps), weight_decay=float(args.weight_decay), hflip=bool(args.hflip), templates=templates,
        eval_batches=int(args.eval_batches), cache_dir=str(args.cache_dir) if args.cache_dir else None,
    )


def _frame_dataset(source: Path, split: str, size: int, config: ClipStageConfig, labels: Any = None) -> Any:
    try:
        from training.data.video_folder import FrameDataset
    except ImportError as exc:
        raise TrainingError(f"the video data loader (training.data.video_folder) is not available: {exc}") from exc
    try:
        return FrameDataset(source, split=split, size=size, fps=config.fps, labels=labels, cache_dir=config.cache_dir)
    except ValueError as exc:  # DatasetError and bad settings
        raise TrainingError(f"{source} ({split}): {exc}") from exc


def _label_ids(batch_labels: Any, labels: tuple[str, ...]) -> torch.Tensor:
    """Dataset labels (ints, or label strings) → LongTensor of class indices."""
    if isinstance(batch_labels, torch.Tensor):
        return batch_labels.long()
    index = {name: i for i, name in enumerate(labels)}
    try:
        return torch.tensor([index[x] if isinstance(x, str) else int(x) for x in batch_labels], dtype=torch.long)
    except KeyError as exc:
        raise TrainingError(f"item label {exc} is not among the dataset labels {list(labels)}") from exc


def _captions(batch: dict[str, Any], ids: torch.Tensor, labels: tuple[str, ...], templates: tuple[str, ...],
              label_share: float, gen: torch.Generator) -> list[str]:
    """The batch's captions; items without one, and a ``label_share`` of the rest, get a label
    prompt from ``templates`` (drawn with ``gen``)."""
    caps = batch.get("caption")
    n = int(ids.numel())
    swap = (torch.rand(n, generator=gen) < label_share).tolist()
    pick = torch.randint(len(templates), (n,), generator=gen).tolist()
    out = []
    for i, label_id in enumerate(ids.tolist()):
        c = caps[i] if caps is not None else ""
        if swap[i] or not (isinstance(c, str) and c.strip()):
            c = templates[pick[i]].format(labels[label_id])
        out.append(c)
    return out


class ClipTrainer(nn.Module):
    """Both CLIP towers in one ``forward`` (what DDP needs to sync their gradients)."""

    def __init__(self, clip: ClipModel) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        image_emb = self.clip.encode_image(images)  # [B, D], unit
        text_emb = nn.functional.normalize(self.clip.model.encode_text(tokens).float(), dim=-1)  # [B, D]
        return image_emb, text_emb, self.clip.logit_scale


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay matrices only (OpenCLIP's rule: no decay on gains, biases, embeddings, scale)."""
    decay, no_decay = [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "bias" in name or "ln" in name or "norm" in name or "logit_scale" in name \
                or "embedding" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def evaluate(clip: ClipModel, dataset: Any, labels: tuple[str, ...], templates: tuple[str, ...], device: torch.device,
             batch_size: int, max_batches: int = 0) -> dict[str, Any]:
    """Zero-shot image → label top-1 over ``dataset`` (rank-local; call on rank 0)."""
    was_training = clip.training
    clip.eval()
    class_emb = class_text_embeddings(clip, labels, templates)  # [C, D]
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    embs, ids = [], []
    for i, batch in enumerate(loader):
        if max_batches and i >= max_batches:
            break
        embs.append(clip.encode_image(batch["image"].to(device)).cpu())
        ids.append(_label_ids(batch["label"], labels))
    clip.train(was_training)
    if not embs:
        raise TrainingError("the validation split is empty: nothing to evaluate")
    emb, y = torch.cat(embs), torch.cat(ids)
    acc = top1_accuracy(emb, class_emb.cpu(), y)
    per_class = {}
    pred = (emb @ class_emb.cpu().t()).argmax(-1)
    for c, name in enumerate(labels):
        sel = y == c
        if sel.any():
            per_class[name] = float((pred[sel] == c).float().mean())
    return {"zero_shot_top1": acc, "chance": 1.0 / len(labels), "items": int(y.numel()), "per_class": per_class,
            "templates": list(templates)}


def run(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    if config.weights is not None:
        return _record_external(args, config)
    with Run(args, STAGE, config) as r:
        if config.init is not None:
            clip = _load_init(config, r.device)
        else:
            clip = build_clip(config.arch)
        clip = clip.to(r.device).train()
        size = clip.image_size
        train_set = _frame_dataset(args.data, "train", size, config)
        labels = tuple(train_set.labels)
        if not labels:
            raise TrainingError(f"{args.data}: the dataset has no labels")
        config.labels = labels
        val_set = _frame_dataset(args.data, "val", size, config, labels=list(labels))
        trainer = ClipTrainer(clip)
        opt = torch.optim.AdamW(param_groups(trainer, config.weight_decay), lr=r.lr, betas=(0.9, 0.98), eps=1e-6)
        start = r.load_checkpoint({"clip": clip}, {"opt": opt}) or 0
        model = wrap(trainer)
        loader = make_loader(train_set, r.batch_size, shuffle=True, seed=r.seed, drop_last=True,
                             num_workers=args.num_workers)
        batches = loop_batches(loader, start_epoch=start // max(1, len(loader)))
        caption_gen = torch.Generator().manual_seed(r.seed * 1000003 + start)
        last_eval: dict[str, Any] | None = None
        t0, n0 = time.monotonic(), start
        for step in r.steps_from(start):
            r.set_lr(opt, step)
            batch = next(batches)
            images = batch["image"].to(r.device, non_blocking=True)  # [B, 3, H, W] in [-1, 1]
            if config.hflip:
                flip = torch.rand(images.shape[0], device=images.device) < 0.5
                images = torch.where(flip[:, None, None, None], images.flip(-1), images)
            ids = _label_ids(batch["label"], labels)
            captions = _captions(batch, ids, labels, config.templates, config.label_captions, caption_gen)
            tokens = clip.tokenize(captions).to(r.device)
            if config.positives == "label":  # every frame and caption of a class are positives of each other
                positive_ids = ids
            else:  # same caption = same positive (synthscapes repeats captions within a class)
                positive_ids = torch.tensor([zlib.crc32(c.encode("utf-8")) for c in captions], dtype=torch.long)
            with r.autocast():
                img_emb, txt_emb, scale = model(images, tokens)
                loss = info_nce(img_emb, txt_emb, scale, labels=positive_ids)
            r.check_finite(step, loss=loss)
            r.optimizer_step(loss, opt)
            with torch.no_grad():
                clip.logit_scale.clamp_(0, 4.6052)  # CLIP's cap: temperature >= 1/100
            if r.should(step, args.log_every) or step == r.steps:
                rate = (step - n0) / max(1e-9, time.monotonic() - t0)
                r.log_scalars(step, {"loss": loss, "logit_scale": clip.logit_scale.exp(), "lr": opt.param_groups[0]["lr"],
                                     "steps_per_s": rate})
            if r.should(step, args.eval_every) and step < r.steps and r.is_main and not r.dry_run:
                last_eval = evaluate(clip, val_set, labels, config.templates, r.device, r.batch_size, config.eval_batches)
                r.log_scalars(step, {"zero_shot_top1": last_eval["zero_shot_top1"]}, prefix="eval")
            if r.checkpoint_due(step):
                r.save_checkpoint(step, {"clip": clip}, {"opt": opt})
                if not r.dry_run and step < r.steps:
                    r.write_part("clip", clip, trained=False)
        final_step = r.last_step
        clip = unwrap(clip)
        if r.writes:
            last_eval = evaluate(clip, val_set, labels, config.templates, r.device, r.batch_size, config.eval_batches)
            r.log_scalars(final_step, {"zero_shot_top1": last_eval["zero_shot_top1"]}, prefix="eval")
            result = dict(last_eval, step=final_step, steps=r.steps, completed=r.completed, arch=config.arch)
            r.write_json("eval.json", result)
            r.write_part("clip", clip, trained=r.completed, metadata={"eval": {"zero_shot_top1": last_eval["zero_shot_top1"]}})
            r.update_bundle(labels=list(labels))
            bundle_io.record_eval(r.out_dir, STAGE, result)
            log.info("clip: step %d/%d, zero-shot top-1 %.3f (chance %.3f)", final_step, r.steps,
                     last_eval["zero_shot_top1"], last_eval["chance"])
    return 0


def _load_init(config: ClipStageConfig, device: torch.device) -> ClipModel:
    path = Path(config.init or "")
    try:
        if path.suffix == ".json" or (path.suffix == ".safetensors" and path.with_suffix(".json").is_file()):
            return load_clip(path, device=device)
        return load_clip(config.arch, path, device)
    except CheckpointError as exc:
        raise TrainingError(f"--init {path}: {exc}") from exc


def _record_external(args: argparse.Namespace, config: ClipStageConfig) -> int:
    """``--weights``: evaluate a real OpenCLIP checkpoint and record it in the bundle by reference."""
    with Run(args, STAGE, config) as r:
        try:
            clip = load_clip(config.arch, config.weights, r.device)
        except CheckpointError as exc:
            raise TrainingError(f"--weights {config.weights}: {exc}") from exc
        val_set = _frame_dataset(args.data, "val", clip.image_size, config)
        labels = tuple(val_set.labels)
        config.labels = labels
        result = evaluate(clip, val_set, labels, config.templates, r.device, r.batch_size,
                          1 if r.dry_run else config.eval_batches)
        if r.writes:
            result = dict(result, arch=config.arch, weights=str(Path(config.weights or "").resolve()), trained=False)
            r.write_json("eval.json", result)
            bundle_io.write_clip_reference(r.out_dir, config.arch, config.weights or "", trained=True,
                                           metadata={"stage": STAGE, "eval": {"zero_shot_top1": result["zero_shot_top1"]}})
            r.update_bundle(labels=list(labels))
            bundle_io.record_eval(r.out_dir, STAGE, result)
        log.info("clip: %s (%s) zero-shot top-1 %.3f", config.arch, config.weights, result["zero_shot_top1"])
    return 0
