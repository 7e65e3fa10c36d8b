"""``vjapp-train audio``: F_a, the audio encoder into CLIP space (CVPR 2022).

F_a (:class:`model.audio_encoder.AudioEncoder`) reads the log-mel of an audio segment
(:class:`model.audio_features.LogMel`, the bundle's mel settings) and is trained so that
its embedding lands near the frozen CLIP's image embedding of the segment's video frame and
the CLIP text embedding of its label, with three symmetric InfoNCE terms:

* audio ↔ image (the frame at the segment's centre),
* audio ↔ text (the label's prompt embedding; items of the same label are all positives),
* audio ↔ augmented audio (a second view: other gain and time shift, plus SpecAugment masks).

The CLIP comes from the bundle (run the ``clip`` stage first). Evaluation: audio → label
top-1 on the held-out split, by the nearest CLIP text embedding of the labels. F_a is written
into the bundle as ``audio_encoder``, and the mel settings and segment length it was trained
with go into the bundle's info.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from model.audio_encoder import AudioEncoder, AudioEncoderConfig, spec_augment
from model.audio_features import LogMel, MelConfig
from model.bundle import DEFAULT_SEGMENT_SECONDS
from model.clip import ClipModel
from model.formats import CheckpointError, config_to_dict
from training import bundle_io
from training.distributed import loop_batches, make_loader, wrap
from training.losses import info_nce, top1_accuracy
from training.run import Run, TrainingError, add_common_arguments
from training.stages import DEFAULT_TEMPLATES, class_text_embeddings
from training.stages.clip import _label_ids

log = logging.getLogger(__name__)

STAGE = "audio"
DEFAULT_CHANNELS = (32, 64, 128, 256)


@dataclass
class AudioStageConfig:
    """What the audio stage trains (saved with every checkpoint)."""

    mel: MelConfig = field(default_factory=lambda: bundle_io.DEFAULT_MEL)  # F_a's frontend.
    segment_seconds: float = DEFAULT_SEGMENT_SECONDS  # Audio per training item (= per live model step).
    hop_seconds: float = 0.25  # Hop between items cut from a clip.
    channels: tuple[int, ...] = DEFAULT_CHANNELS  # F_a's ResNet stage widths.
    blocks_per_stage: int = 2  # Basic blocks per stage.
    norm: str = "batch"  # "batch" or "group".
    w_image: float = 1.0  # Weight of audio ↔ image InfoNCE.
    w_text: float = 1.0  # Weight of audio ↔ text InfoNCE.
    w_aug: float = 0.5  # Weight of audio ↔ augmented audio InfoNCE.
    gain_db: float = 6.0  # Random gain in ±gain_db (both views).
    max_shift: float = 0.1  # Random circular time shift, fraction of the segment.
    time_masks: int = 2  # SpecAugment time masks (augmented view).
    time_width: int = 8  # Max width of a time mask (frames).
    freq_masks: int = 2  # SpecAugment frequency masks.
    freq_width: int = 8  # Max width of a frequency mask (mel bins).
    weight_decay: float = 1e-4  # AdamW weight decay.
    templates: tuple[str, ...] = DEFAULT_TEMPLATES  # Prompt templates for the label texts.
    eval_batches: int = 0  # Cap on val batches per evaluation (0: all).
    cache_dir: str | None = None  # Decoded-audio cache (passed to the dataset).
    labels: tuple[str, ...] = ()  # Filled in from the dataset.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser, steps=4000, batch_size=64, lr=1e-3, ckpt_every=500, log_every=20, eval_every=500)
    d = bundle_io.DEFAULT_MEL
    g = parser.add_argument_group("audio stage")
    g.add_argument("--sample-rate", type=int, default=d.sample_rate, help="model audio rate (Hz)")
    g.add_argument("--n-fft", type=int, default=d.n_fft, help="FFT size of the log-mel")
    g.add_argument("--hop-length", type=int, default=d.hop_length, help="hop of the log-mel (samples)")
    g.add_argument("--n-mels", type=int, default=d.n_mels, help="mel bins")
    g.add_argument("--segment-seconds", type=float, default=DEFAULT_SEGMENT_SECONDS, help="audio per item (s)")
    g.add_argument("--hop-seconds", type=float, default=0.25, help="hop between items of a clip (s)")
    g.add_argument("--channels", type=int, nargs="+", default=list(DEFAULT_CHANNELS), help="F_a stage widths")
    g.add_argument("--blocks-per-stage", type=int, default=2, help="F_a basic blocks per stage")
    g.add_argument("--norm", choices=("batch", "group"), default="batch", help="F_a normalisation")
    g.add_argument("--w-image", type=float, default=1.0, help="weight of audio-image InfoNCE")
    g.add_argument("--w-text", type=float, default=1.0, help="weight of audio-text InfoNCE")
    g.add_argument("--w-aug", type=float, default=0.5, help="weight of audio-augmented audio InfoNCE")
    g.add_argument("--gain-db", type=float, default=6.0, help="random gain range (±dB)")
    g.add_argument("--max-shift", type=float, default=0.1, help="random time shift (fraction of the segment)")
    g.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    g.add_argument("--eval-batches", type=int, default=0, help="cap on validation batches per evaluation (0: all)")
    g.add_argument("--cache-dir", default=None, help="cache of decoded audio")


def _config_from_args(args: argparse.Namespace) -> AudioStageConfig:
    try:
        mel = bundle_io.DEFAULT_MEL.replace(sample_rate=args.sample_rate, n_fft=args.n_fft,
                                            hop_length=args.hop_length, n_mels=args.n_mels)
        config = AudioStageConfig(
            mel=mel, segment_seconds=float(args.segment_seconds), hop_seconds=float(args.hop_seconds),
            channels=tuple(args.channels), blocks_per_stage=int(args.blocks_per_stage), norm=args.norm,
            w_image=float(args.w_image), w_text=float(args.w_text), w_aug=float(args.w_aug),
            gain_db=float(args.gain_db), max_shift=float(args.max_shift), weight_decay=float(args.weight_decay),
            eval_batches=int(args.eval_batches), cache_dir=args.cache_dir,
        )
        AudioEncoderConfig(n_mels=mel.n_mels, embed_dim=1, channels=config.channels,
                           blocks_per_stage=config.blocks_per_stage, norm=config.norm)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc
    if not (config.segment_seconds > 0 and config.hop_seconds > 0):
        raise TrainingError("--segment-seconds and --hop-seconds must be positive")
    if mel.samples_for_seconds(config.segment_seconds) < mel.n_fft // 2:
        raise TrainingError(f"--segment-seconds {config.segment_seconds} is shorter than half an FFT window ({mel.n_fft})")
    if min(config.w_image, config.w_text, config.w_aug) < 0 or config.w_image + config.w_text + config.w_aug <= 0:
        raise TrainingError("loss weights must be >= 0 and not all 0")
    if not 0 <= config.max_shift < 1 or config.gain_db < 0:
        raise TrainingError("--max-shift must be in [0, 1) and --gain-db >= 0")
    return config


def _audio_dataset(args: argparse.Namespace, split: str, config: AudioStageConfig, size: int,
                   labels: Any = None) -> Any:
    try:
        from training.data.video_folder import AudioDataset
    except ImportError as exc:
        raise TrainingError(f"the video data loader (training.data.video_folder) is not available: {exc}") from exc
    try:
        return AudioDataset(args.data, split=split, sample_rate=config.mel.sample_rate,
                            segment_seconds=config.segment_seconds, hop_seconds=config.hop_seconds, size=size,
                            labels=labels, cache_dir=config.cache_dir)
    except ValueError as exc:  # DatasetError and bad settings
        raise TrainingError(f"{args.data} ({split}): {exc}") from exc


def augment_waveform(audio: torch.Tensor, gain_db: float, max_shift: float) -> torch.Tensor:
    """Random gain (±``gain_db``) and circular time shift (±``max_shift`` of the length), per item.

    ``[B, S] → [B, S]``, clipped to [-1, 1] like a real signal. Uses the global torch RNG.
    """
    b, s = audio.shape
    out = audio
    if max_shift > 0:
        limit = int(max_shift * s)
        if limit > 0:
            shift = torch.randint(-limit, limit + 1, (b, 1), device=audio.device)
            idx = (torch.arange(s, device=audio.device)[None, :] - shift) % s  # [B, S]
            out = torch.gather(out, 1, idx)
    if gain_db > 0:
        db = (torch.rand(b, 1, device=audio.device) * 2 - 1) * gain_db
        out = out * torch.pow(10.0, db / 20.0)
    return out.clamp(-1.0, 1.0)


class AudioTrainer(nn.Module):
    """F_a plus its learnable InfoNCE temperature, in one ``forward`` for DDP."""

    def __init__(self, encoder: AudioEncoder, init_temperature: float = 0.07) -> None:
        super().__init__()
        self.encoder = encoder
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(mel), self.logit_scale  # [B, D] unit, scalar


@torch.no_grad()
def evaluate(encoder: AudioEncoder, logmel: LogMel, dataset: Any, class_emb: torch.Tensor, labels: tuple[str, ...],
             device: torch.device, batch_size: int, max_batches: int = 0) -> dict[str, Any]:
    """Audio → label top-1 by the nearest label text embedding, over ``dataset``."""
    was_training = encoder.training
    encoder.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    embs, ids = [], []
    for i, batch in enumerate(loader):
        if max_batches and i >= max_batches:
            break
        embs.append(encoder(logmel(batch["audio"].to(device).float())).cpu())
        ids.append(_label_ids(batch["label"], labels))
    encoder.train(was_training)
    if not embs:
        raise TrainingError("the validation split is empty: nothing to evaluate")
    emb, y = torch.cat(embs), torch.cat(ids)
    pred = (emb @ class_emb.cpu().t()).argmax(-1)
    per_class = {name: float((pred[y == c] == c).float().mean()) for c, name in enumerate(labels) if (y == c).any()}
    return {"audio_top1": top1_accuracy(emb, class_emb.cpu(), y), "chance": 1.0 / len(labels),
            "items": int(y.numel()), "per_class": per_class}


def _load_clip(out_dir: Any, device: torch.device) -> ClipModel:
    try:
        clip = bundle_io.read_part(out_dir, "clip", device)
    except CheckpointError as exc:
        raise TrainingError(f"the audio stage needs the bundle's CLIP: {exc}") from exc
    assert isinstance(clip, ClipModel)
    clip.eval().requires_grad_(False)
    return clip


def run(args: argparse.Namespace) -> int:
    config = _config_from_args(args)
    with Run(args, STAGE, config) as r:
        clip = _load_clip(r.out_dir, r.device)
        train_set = _audio_dataset(args, "train", config, clip.image_size)
        labels = tuple(train_set.labels)
        if not labels:
            raise TrainingError(f"{args.data}: the dataset has no labels")
        config.labels = labels
        val_set = _audio_dataset(args, "val", config, clip.image_size, labels=list(labels))
        class_emb = class_text_embeddings(clip, labels, config.templates).to(r.device)  # [C, D]
        logmel = LogMel(config.mel).to(r.device)
        encoder = AudioEncoder(AudioEncoderConfig(
            n_mels=config.mel.n_mels, embed_dim=clip.embed_dim, channels=config.channels,
            blocks_per_stage=config.blocks_per_stage, norm=config.norm,
        )).to(r.device).train()
        trainer = AudioTrainer(encoder).to(r.device)
        opt = torch.optim.AdamW(trainer.parameters(), lr=r.lr, weight_decay=config.weight_decay)
        start = r.load_checkpoint({"audio_trainer": trainer}, {"opt": opt}) or 0
        model = wrap(trainer)
        loader = make_loader(train_set, r.batch_size, shuffle=True, seed=r.seed, drop_last=True,
                             num_workers=args.num_workers)
        batches = loop_batches(loader, start_epoch=start // max(1, len(loader)))
        t0, n0 = time.monotonic(), start
        for step in r.steps_from(start):
            r.set_lr(opt, step)
            batch = next(batches)
            audio = batch["audio"].to(r.device, non_blocking=True).float()  # [B, S]
            frames = batch["frame"].to(r.device, non_blocking=True)  # [B, 3, H, W] in [-1, 1]
            ids = _label_ids(batch["label"], labels).to(r.device)
            with torch.no_grad():
                image_emb = clip.encode_image(frames)  # [B, D]
                text_emb = class_emb[ids]  # [B, D]
                view1 = logmel(augment_waveform(audio, config.gain_db, config.max_shift))  # [B, M, T]
                view2 = logmel(augment_waveform(audio, config.gain_db, config.max_shift))
                view2 = spec_augment(view2, config.time_masks, config.time_width, config.freq_masks, config.freq_width)
            with r.autocast():
                emb, scale = model(torch.cat([view1, view2]))  # one pass: BatchNorm sees both views
                a1, a2 = emb.chunk(2)
                l_img = info_nce(a1, image_emb, scale)
                l_txt = info_nce(a1, text_emb, scale, labels=ids)
                l_aug = info_nce(a1, a2, scale)
                loss = config.w_image * l_img + config.w_text * l_txt + config.w_aug * l_aug
            r.check_finite(step, loss=loss)
            r.optimizer_step(loss, opt)
            with torch.no_grad():
                trainer.logit_scale.clamp_(0, 4.6052)
            if r.should(step, args.log_every) or step == r.steps:
                rate = (step - n0) / max(1e-9, time.monotonic() - t0)
                r.log_scalars(step, {"loss": loss, "audio_image": l_img, "audio_text": l_txt, "audio_aug": l_aug,
                                     "logit_scale": trainer.logit_scale.exp(), "lr": opt.param_groups[0]["lr"],
                                     "steps_per_s": rate})
            if r.should(step, args.eval_every) and step < r.steps and r.writes:
                ev = evaluate(encoder, logmel, val_set, class_emb, labels, r.device, r.batch_size, config.eval_batches)
                r.log_scalars(step, {"audio_top1": ev["audio_top1"]}, prefix="eval")
            if r.checkpoint_due(step):
                r.save_checkpoint(step, {"audio_trainer": trainer}, {"opt": opt})
                if step < r.steps:
                    r.write_part("audio_encoder", encoder, trained=False, mel=config.mel,
                                 segment_seconds=config.segment_seconds, labels=list(labels))
        if r.writes:
            ev = evaluate(encoder, logmel, val_set, class_emb, labels, r.device, r.batch_size, config.eval_batches)
            r.log_scalars(r.last_step, {"audio_top1": ev["audio_top1"]}, prefix="eval")
            result = dict(ev, step=r.last_step, steps=r.steps, completed=r.completed)
            r.write_json("eval.json", result)
            # The frontend goes in with the part, so bundle.json (once it can be written) agrees with it.
            r.write_part("audio_encoder", encoder, trained=r.completed,
                         metadata={"mel": config_to_dict(config.mel), "eval": {"audio_top1": ev["audio_top1"]}},
                         mel=config.mel, segment_seconds=config.segment_seconds, labels=list(labels))
            bundle_io.record_eval(r.out_dir, STAGE, result)
            log.info("audio: step %d/%d, audio->label top-1 %.3f (chance %.3f)", r.last_step, r.steps,
                     ev["audio_top1"], ev["chance"])
    return 0
