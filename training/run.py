"""What every training stage shares: its common options and the :class:`Run` it trains inside.

A stage module (``training/stages/NAME.py``) looks like this::

    def add_arguments(parser):
        add_common_arguments(parser, steps=2000, batch_size=32, lr=3e-4)
        parser.add_argument("--my-option", ...)

    def run(args) -> int:
        config = MyStageConfig(...from args...)            # a dataclass: saved with every checkpoint
        with Run(args, "mystage", config) as run:          # seeds, device, DDP, run folder, logs
            model = MyNet(...).to(run.device)
            opt = torch.optim.AdamW(model.parameters(), lr=run.lr)
            start = run.load_checkpoint({"net": model}, {"opt": opt}) or 0   # resume (if asked/possible)
            ddp_model = wrap(model)
            batches = loop_batches(make_loader(ds, run.batch_size, seed=run.seed))
            for step in run.steps_from(start):             # start+1 .. run.steps; stops early on --max-minutes
                run.set_lr(opt, step)                     # optional schedule (--lr-schedule/--warmup-steps)
                with run.autocast():
                    loss = ...
                run.optimizer_step(loss, opt)              # zero_grad, backward, (clip), step; AMP-aware
                if run.should(step, run.args.log_every):
                    run.log_scalars(step, {"loss": loss})   # TensorBoard + metrics.jsonl (rank 0)
                if run.checkpoint_due(step):               # --ckpt-every, the last step, time up, SIGTERM
                    run.save_checkpoint(step, {"net": model}, {"opt": opt})
                    run.write_part("audio_encoder", model, trained=False)   # bundle part as it stands
            run.write_part("audio_encoder", model, trained=run.completed)
            run.write_json("eval.json", {...})

Everything that writes (run folder, checkpoints, bundle parts, logs, TensorBoard) happens on
rank 0 only and never under ``--dry-run``, which builds everything, runs one step, prints the
resolved configuration and writes nothing at all. ``step`` always counts *completed* optimizer
steps (1-based in the loop), so the checkpoint of step N resumes at N + 1.

Collective calls (every rank must make them at the same point): ``checkpoint_due``,
``time_up``, ``steps_from``'s iteration, ``load_checkpoint``, ``barrier``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import random
import signal
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from model.formats import CheckpointError, config_to_dict
from training import bundle_io
from training.checkpoint import atomic_write_json, latest_checkpoint, load_checkpoint, save_checkpoint
from training.distributed import (
    DEVICE_CHOICES,
    DistInfo,
    all_reduce_max,
    barrier,
    cleanup,
    init_distributed,
)

log = logging.getLogger(__name__)

LR_SCHEDULES = ("constant", "cosine")


class TrainingError(RuntimeError):
    """Training cannot go on: a non-finite loss, unusable data, a bad option combination."""


# --- options ------------------------------------------------------------------------------------

def add_common_arguments(
    parser: argparse.ArgumentParser,
    *,
    steps: int = 1000,
    batch_size: int = 32,
    lr: float = 1e-3,
    ckpt_every: int = 500,
    log_every: int = 10,
    sample_every: int = 0,
    eval_every: int = 0,
    data_required: bool = True,
    out_required: bool = True,
) -> None:
    """The options every stage takes; stage-specific defaults come in as keywords."""
    g = parser.add_argument_group("common training options")
    g.add_argument("--data", type=Path, required=data_required, default=None,
                   help="training data: a folder of clips or a manifest CSV (e.g. from `vjapp-train synthscapes`)")
    g.add_argument("--out", type=Path, required=out_required, default=None,
                   help="the bundle directory this stage writes its part into (created if needed)")
    g.add_argument("--run-dir", type=Path, default=None,
                   help="checkpoints, logs and TensorBoard events (default: OUT/runs/STAGE)")
    g.add_argument("--steps", type=int, default=steps, help="total optimizer steps (a resumed run continues to this)")
    g.add_argument("--batch-size", type=int, default=batch_size, help="batch size per process (global = this x processes)")
    g.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant", help="learning-rate schedule after warm-up")
    g.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up steps")
    g.add_argument("--seed", type=int, default=0, help="random seed (each process adds its rank)")
    g.add_argument("--device", choices=DEVICE_CHOICES, default="auto", help="where to train")
    g.add_argument("--amp", action="store_true", help="mixed precision (CUDA only: bf16, or fp16 with loss scaling)")
    g.add_argument("--num-workers", type=int, default=0, help="data loader worker processes per training process")
    g.add_argument("--ckpt-every", type=int, default=ckpt_every, help="checkpoint every N steps (0: only at the end)")
    g.add_argument("--keep-ckpts", type=int, default=3, help="keep the newest N checkpoints (0: all)")
    g.add_argument("--log-every", type=int, default=log_every, help="log scalars every N steps")
    g.add_argument("--sample-every", type=int, default=sample_every, help="log sample images every N steps (0: never)")
    g.add_argument("--eval-every", type=int, default=eval_every, help="evaluate every N steps (0: only at the end)")
    g.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="continue from the newest checkpoint in the run folder if there is one")
    g.add_argument("--max-minutes", type=float, default=0.0,
                   help="stop cleanly with a checkpoint after this many minutes (0: no limit); rerun to resume")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=True,
                   help="write TensorBoard events into the run folder")
    g.add_argument("--dry-run", action="store_true",
                   help="build everything, run one step, print the resolved config; write nothing")


def check_common_arguments(args: argparse.Namespace) -> None:
    """One clear error for a bad common option (argparse checks types, this checks ranges)."""
    def positive(name: str) -> None:
        v = getattr(args, name)
        if v is None or v < 1:
            raise TrainingError(f"--{name.replace('_', '-')} must be at least 1, got {v}")

    def non_negative(name: str) -> None:
        v = getattr(args, name)
        if v is None or v < 0:
            raise TrainingError(f"--{name.replace('_', '-')} must be >= 0, got {v}")

    positive("steps")
    positive("batch_size")
    for name in ("ckpt_every", "log_every", "sample_every", "eval_every", "num_workers", "warmup_steps",
                 "keep_ckpts"):
        non_negative(name)
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise TrainingError(f"--lr must be a positive number, got {args.lr}")
    if not (math.isfinite(args.max_minutes) and args.max_minutes >= 0):
        raise TrainingError(f"--max-minutes must be >= 0, got {args.max_minutes}")
    if args.data is not None and not Path(args.data).exists():
        raise TrainingError(f"--data {args.data}: no such file or folder")
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise TrainingError(f"--out {args.out}: exists and is not a directory")


def args_to_json(args: argparse.Namespace) -> dict[str, Any]:
    """The parsed options as JSON data (paths as strings, private entries dropped)."""
    out: dict[str, Any] = {}
    for key, value in sorted(vars(args).items()):
        if key.startswith("_") or callable(value):
            continue
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, (list, tuple)):
            value = [str(v) if isinstance(v, Path) else v for v in value]
        try:
            json.dumps(value)
        except TypeError:
            value = repr(value)
        out[key] = value
    return out


# --- images -------------------------------------------------------------------------------------

def image_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2) -> torch.Tensor:
    """``[N, 3, H, W]`` in [-1, 1] → one ``[3, H', W']`` grid in [0, 1] (rows of ``nrow``)."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] not in (1, 3) or images.shape[0] < 1:
        raise ValueError(f"log_images expects images [N, 3, H, W], got {tuple(getattr(images, 'shape', ()))}")
    x = ((images.detach().float().cpu() + 1.0) * 0.5).clamp(0.0, 1.0)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    n, _, h, w = x.shape
    cols = max(1, min(nrow, n))
    rows = (n + cols - 1) // cols
    grid = torch.ones(3, rows * (h + padding) + padding, cols * (w + padding) + padding)
    for i in range(n):
        r, c = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[:, top:top + h, left:left + w] = x[i]
    return grid


def encode_png(image: torch.Tensor) -> bytes:
    """``[3, H, W]`` in [0, 1] → PNG bytes (8-bit RGB; our own tiny encoder, no PIL needed)."""
    rgb = (image.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()  # [H, W, 3]
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))  # filter type 0 per row

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


# --- the run ------------------------------------------------------------------------------------

def _scalar(value: Any) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().mean().item())
    return float(value)


class Run:
    """One stage's training run: device, seeds, DDP, run folder, logs, checkpoints, bundle writes.

    Attributes stages use: ``args``, ``stage``, ``config``, ``info`` (:class:`DistInfo`),
    ``device``, ``rank``, ``world``, ``is_main``, ``dry_run``, ``writes`` (rank 0 and not a dry
    run), ``steps`` (1 under ``--dry-run``), ``batch_size``, ``lr``, ``seed``, ``out_dir``,
    ``run_dir``, ``ckpt_dir``, ``amp_dtype``, ``scaler``, ``extra`` (the ``extra`` dict of the
    checkpoint resumed from), ``completed`` (True once ``steps_from`` ran to ``steps``),
    ``stopped_early`` (time up or SIGTERM).
    """

    def __init__(self, args: argparse.Namespace, stage: str, config: Any = None) -> None:
        check_common_arguments(args)
        self.args = args
        self.stage = stage
        self.config = config
        self.dry_run: bool = bool(getattr(args, "dry_run", False))
        self.steps: int = 1 if self.dry_run else int(args.steps)
        self.batch_size: int = int(args.batch_size)
        self.lr: float = float(args.lr)
        self.seed: int = int(args.seed)
        self.out_dir: Path | None = Path(args.out) if args.out is not None else None
        run_dir = args.run_dir if args.run_dir is not None else (
            self.out_dir / "runs" / stage if self.out_dir is not None else None)
        if run_dir is None:
            raise TrainingError("either --out or --run-dir is needed")
        self.run_dir: Path = Path(run_dir)
        self.ckpt_dir: Path = self.run_dir / "checkpoints"
        self.info: DistInfo | None = None
        self.extra: dict[str, Any] = {}
        self.completed = False
        self.stopped_early = False
        self.amp_dtype: torch.dtype | None = None
        self.scaler: torch.amp.GradScaler | None = None
        self._t0 = time.monotonic()
        self._stop_decided = False
        self._sigterm = False
        self._old_sigterm: Any = None
        self._writer: Any = None
        self._pbar: Any = None
        self._metrics_file: Any = None
        self._last_step_seen = 0

    # -- properties ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        assert self.info is not None, "use Run as a context manager"
        return self.info.device

    @property
    def rank(self) -> int:
        return self.info.rank if self.info else 0

    @property
    def world(self) -> int:
        return self.info.world if self.info else 1

    @property
    def is_main(self) -> bool:
        return self.info.is_main if self.info else True

    @property
    def last_step(self) -> int:
        """The newest step reached: the resumed step before the loop, then each step as it starts."""
        return self._last_step_seen

    @property
    def writes(self) -> bool:
        """True where this process may write files: rank 0, not a dry run."""
        return self.is_main and not self.dry_run

    # -- context ------------------------------------------------------------------------------
    def __enter__(self) -> "Run":
        self.info = init_distributed(self.args.device)
        if not self.is_main:
            logging.getLogger().setLevel(logging.WARNING)
        self.seed_everything(self.seed + self.rank)
        if self.args.amp:
            if self.device.type != "cuda":
                log.warning("--amp is for CUDA only; training in float32 on %s", self.device)
            elif torch.cuda.is_bf16_supported():
                self.amp_dtype = torch.bfloat16
            else:
                self.amp_dtype = torch.float16
                self.scaler = torch.amp.GradScaler("cuda")
        resolved = self.resolved_config()
        if self.dry_run:
            if self.is_main:
                sys.stdout.write(json.dumps(resolved, indent=2, sort_keys=True) + "\n")
                sys.stdout.flush()
        elif self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.out_dir is not None:
                self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.run_dir / "config.json", resolved)
            self._metrics_file = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")
            if self.args.tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._writer = SummaryWriter(log_dir=str(self.run_dir / "tb"))
                except ImportError as exc:  # tensorboard is a training extra
                    log.warning("TensorBoard is not installed (%s); logging to metrics.jsonl only", exc)
        if self.is_main:
            from tqdm import tqdm

            self._pbar = tqdm(total=self.steps, desc=self.stage, dynamic_ncols=True, mininterval=1.0,
                              file=sys.stderr, leave=False)
        try:
            self._old_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)
        except ValueError:  # not the main thread (tests calling main() from a thread)
            self._old_sigterm = None
        log.info("%s: %d step(s) on %s, world %d%s", self.stage, self.steps, self.device, self.world,
                 " (dry run: nothing is written)" if self.dry_run else "")
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
        if self._pbar is not None:
            self._pbar.close()
        if self._writer is not None:
            self._writer.close()
        if self._metrics_file is not None:
            self._metrics_file.close()
        if exc_type is None:
            barrier()
        cleanup()

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        log.warning("SIGTERM: stopping at the next checkpoint opportunity")
        self._sigterm = True

    def resolved_config(self) -> dict[str, Any]:
        """What the run is: stage, config dataclass, options, world, device (the dry run prints this)."""
        if self.config is None:
            config_doc: Any = None
        elif dataclasses.is_dataclass(self.config):
            config_doc = config_to_dict(self.config)
        else:
            config_doc = json.loads(json.dumps(self.config, default=str))
        return {
            "stage": self.stage,
            "config": config_doc,
            "args": args_to_json(self.args),
            "world": self.world,
            "device": str(self.device) if self.info else None,
            "amp": str(self.amp_dtype).replace("torch.", "") if self.amp_dtype else None,
            "steps": self.steps,
            "run_dir": str(self.run_dir),
            "torch": torch.__version__,
        }

    # -- randomness ---------------------------------------------------------------------------
    @staticmethod
    def seed_everything(seed: int) -> None:
        """Seed Python, NumPy and torch (all devices)."""
        random.seed(seed)
        np.random.seed(seed % (2**32))
        torch.manual_seed(seed)

    # -- the loop -----------------------------------------------------------------------------
    def should(self, step: int, every: int) -> bool:
        """True every ``every`` steps (never for ``every`` <= 0)."""
        return every > 0 and step % every == 0

    def time_up(self) -> bool:
        """Past ``--max-minutes`` or SIGTERM seen, agreed by all ranks (collective)."""
        if self._stop_decided:
            return True
        limit = float(self.args.max_minutes) * 60.0
        local = self._sigterm or (limit > 0 and time.monotonic() - self._t0 >= limit)
        if self.world > 1:
            local = all_reduce_max(1.0 if local else 0.0) > 0
        if local:
            self._stop_decided = True
        return bool(local)

    def checkpoint_due(self, step: int) -> bool:
        """Save now? Every ``--ckpt-every`` steps, at the last step, and when time is up (collective)."""
        if self.dry_run:
            return step >= self.steps
        up = self.time_up()  # always asked (collective), also on steps that checkpoint anyway
        return step >= self.steps or self.should(step, self.args.ckpt_every) or up

    def steps_from(self, start: int) -> Iterator[int]:
        """Yield ``start + 1 .. steps``; stops early after a step whose :meth:`checkpoint_due` found
        the time up (so that step was checkpointed). Call ``checkpoint_due(step)`` every step.

        Sets ``completed`` when the last step was reached and ``stopped_early`` otherwise.
        """
        self._last_step_seen = start
        if self._pbar is not None:
            self._pbar.reset(total=self.steps)
            self._pbar.update(min(start, self.steps))
        step = start
        while step < self.steps:
            step += 1
            self._last_step_seen = step
            yield step
            if self._pbar is not None:
                self._pbar.update(1)
            # Stop only when this step's checkpoint_due() saw the time run out: it saved a checkpoint.
            if step < self.steps and self._stop_decided:
                self.stopped_early = True
                log.warning("%s: stopping at step %d of %d (time limit or SIGTERM); rerun to resume",
                            self.stage, step, self.steps)
                return
        self.completed = True

    def set_lr(self, optimizer: torch.optim.Optimizer, step: int, base_lr: float | None = None) -> float:
        """Set every param group's lr for ``step`` (warm-up, then constant or cosine); returns it."""
        lr = self.lr_at(step, base_lr)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def lr_at(self, step: int, base_lr: float | None = None) -> float:
        base = self.lr if base_lr is None else base_lr
        warm = int(self.args.warmup_steps)
        if warm > 0 and step <= warm:
            return base * step / warm
        if self.args.lr_schedule == "cosine":
            span = max(1, self.steps - warm)
            t = min(1.0, max(0.0, (step - warm) / span))
            return base * 0.5 * (1.0 + math.cos(math.pi * t))
        return base

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Mixed precision around the forward pass when ``--amp`` is on (CUDA), else nothing."""
        if self.amp_dtype is None:
            yield
        else:
            with torch.autocast(device_type="cuda", dtype=self.amp_dtype):
                yield

    def optimizer_step(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        *,
        max_grad_norm: float | None = None,
        zero_grad: bool = True,
    ) -> float | None:
        """zero_grad → backward (scaled under fp16 AMP) → optional clipping → step. Returns the grad norm if clipped."""
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        norm = None
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if max_grad_norm:
                self.scaler.unscale_(optimizer)
            params = [p for g in optimizer.param_groups for p in g["params"]]
            if max_grad_norm:
                norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if max_grad_norm:
                params = [p for g in optimizer.param_groups for p in g["params"]]
                norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
            optimizer.step()
        return norm

    def check_finite(self, step: int, **values: Any) -> None:
        """Raise :class:`TrainingError` if any value (loss) is NaN or infinite."""
        bad = {k: _scalar(v) for k, v in values.items() if not math.isfinite(_scalar(v))}
        if bad:
            raise TrainingError(f"{self.stage}: step {step}: non-finite {bad}; lower --lr or check the data")

    # -- logging ------------------------------------------------------------------------------
    def log_scalars(self, step: int, scalars: Mapping[str, Any], prefix: str = "train") -> None:
        """Log numbers (floats or tensors) at ``step``: TensorBoard ``prefix/name`` + metrics.jsonl (rank 0)."""
        if not self.is_main:
            return
        values = {k: _scalar(v) for k, v in scalars.items()}
        if self._pbar is not None and prefix == "train":
            self._pbar.set_postfix({k: f"{v:.4g}" for k, v in list(values.items())[:4]}, refresh=False)
        if not self.writes:
            return
        if self._writer is not None:
            for k, v in values.items():
                self._writer.add_scalar(f"{prefix}/{k}", v, step)
        if self._metrics_file is not None:
            row = {"step": step, "prefix": prefix, "time": round(time.time(), 3)}
            row.update({k: (v if math.isfinite(v) else str(v)) for k, v in values.items()})
            self._metrics_file.write(json.dumps(row) + "\n")
            self._metrics_file.flush()

    def log_images(self, step: int, tag: str, images: torch.Tensor, nrow: int = 8) -> Path | None:
        """Log ``[N, 3, H, W]`` images in [-1, 1] as one grid: TensorBoard + ``samples/TAG-STEP.png`` (rank 0)."""
        if not self.writes:
            return None
        grid = image_grid(images, nrow=nrow)
        png = encode_png(grid)
        safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in tag)
        path = self.run_dir / "samples" / f"{safe}-{step:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        if self._writer is not None:
            from tensorboard.compat.proto.summary_pb2 import Summary

            image = Summary.Image(height=grid.shape[1], width=grid.shape[2], colorspace=3, encoded_image_string=png)
            self._writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
        return path

    def write_json(self, name: str, doc: Any) -> Path | None:
        """Write ``doc`` to ``RUN_DIR/name`` atomically (rank 0, not a dry run); returns the path."""
        if not self.writes:
            return None
        return atomic_write_json(self.run_dir / name, doc)

    # -- checkpoints --------------------------------------------------------------------------
    def save_checkpoint(
        self,
        step: int,
        models: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Path | None:
        """Rank 0 writes the checkpoint of ``step`` (models may be DDP-wrapped); others wait."""
        path = None
        if self.writes:
            extra = dict(extra or {})
            if self.scaler is not None:
                extra["_grad_scaler"] = {k: v for k, v in self.scaler.state_dict().items()}
            path = save_checkpoint(self.ckpt_dir, step, models, optimizers, extra, config=self.config,
                                   stage=self.stage, keep=int(self.args.keep_ckpts))
        barrier()
        return path

    def load_checkpoint(
        self,
        models: Mapping[str, nn.Module],
        optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    ) -> int | None:
        """Resume from the newest checkpoint in the run folder; returns its step or None (fresh start).

        Honours ``--no-resume`` and ``--dry-run`` (both start fresh). Every rank reads the same
        file; ranks other than 0 then reseed their RNGs from (seed, rank, step). The stage's
        ``extra`` dict is in ``self.extra`` afterwards.
        """
        if not self.args.resume or self.dry_run:
            return None
        path = latest_checkpoint(self.ckpt_dir)
        if path is None:
            return None
        try:
            loaded = load_checkpoint(path, models, optimizers)
        except CheckpointError as exc:
            raise TrainingError(f"cannot resume from {path}: {exc} (use --no-resume to start over)") from exc
        if loaded.stage and loaded.stage != self.stage:
            raise TrainingError(f"{path} is a {loaded.stage!r} checkpoint, not {self.stage!r}")
        self.extra = dict(loaded.extra)
        scaler_state = self.extra.pop("_grad_scaler", None)
        if self.scaler is not None and scaler_state:
            self.scaler.load_state_dict(scaler_state)
        if self.rank > 0:
            self.seed_everything(self.seed + 1000003 * self.rank + loaded.step)
        log.info("%s: resumed from %s (step %d)", self.stage, path, loaded.step)
        return loaded.step

    # -- bundle -------------------------------------------------------------------------------
    def write_part(self, part: str, module: nn.Module, trained: bool = True,
                   metadata: Mapping[str, Any] | None = None, **info: Any) -> Path | None:
        """:func:`training.bundle_io.write_part` into ``--out`` (rank 0, not a dry run).

        The part's metadata gets ``stage``, ``step`` and ``steps``; ``info`` goes to
        :func:`training.bundle_io.update_bundle_json` with it (mel, labels, ...).
        """
        if not self.writes:
            return None
        if self.out_dir is None:
            raise TrainingError(f"{self.stage}: --out is needed to write the {part} part")
        meta = {"stage": self.stage, "step": self._last_step_seen, "steps": self.steps}
        meta.update(metadata or {})
        return bundle_io.write_part(self.out_dir, part, module, trained=trained, metadata=meta, **info)

    def update_bundle(self, **info: Any) -> Any:
        """:func:`training.bundle_io.update_bundle_json` on ``--out`` (rank 0, not a dry run)."""
        if not self.writes or self.out_dir is None:
            return None
        return bundle_io.update_bundle_json(self.out_dir, **info)

