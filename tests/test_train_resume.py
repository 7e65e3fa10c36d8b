"""Resuming: a run killed (SIGKILL) after a checkpoint, or stopped by --max-minutes, finishes on rerun
with the same total number of steps as an uninterrupted run."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_train_infra import tiny_synthscapes
from training import bundle_io
from training.cli import main as train_main

REPO = Path(__file__).resolve().parent.parent
FAST = ["--channels", "8", "8", "8", "--n-mels", "16", "--n-fft", "256", "--sample-rate", "8000",
        "--batch-size", "4", "--log-every", "1", "--no-tensorboard", "--keep-ckpts", "0"]


@pytest.fixture()
def bundle_with_clip(tmp_path: Path) -> Path:
    from model.clip import build_clip

    out = tmp_path / "bundle"
    bundle_io.write_part(out, "clip", build_clip("vjapp-tiny"))
    return out


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_after_sigkill(tmp_path_factory: pytest.TempPathFactory, bundle_with_clip: Path) -> None:
    data = tiny_synthscapes(tmp_path_factory)
    out = bundle_with_clip
    steps = 60
    args = ["audio", "--data", str(data), "--out", str(out), "--steps", str(steps), "--ckpt-every", "5", *FAST]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    ckpt_dir = out / "runs" / "audio" / "checkpoints"
    proc = subprocess.Popen([sys.executable, "-m", "training.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not list(ckpt_dir.glob("ckpt-*.json")):
            assert proc.poll() is None, f"run ended before its first checkpoint: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stderr.close()
    run_dir = out / "runs" / "audio"
    killed_at = max(int(p.stem.split("-")[1]) for p in ckpt_dir.glob("ckpt-*.json"))
    assert killed_at < steps and not (run_dir / "eval.json").exists(), "the run finished before it was killed"

    assert train_main(args) == 0  # resumes from the newest checkpoint
    final = json.loads((ckpt_dir / f"ckpt-{steps:08d}.json").read_text())
    assert final["step"] == steps
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["step"] == steps and ev["completed"] is True
    train = [r for r in _rows(run_dir) if r["prefix"] == "train"]
    resumed = [r["step"] for r in train if r["step"] > killed_at]
    # The second run started right after the newest checkpoint and ran to the end, once per step.
    assert resumed[-(steps - killed_at):] == list(range(killed_at + 1, steps + 1))
    assert all(math.isfinite(r["loss"]) for r in train)
    assert bundle_io.read_training_json(out)["parts"]["audio_encoder"]["trained"] is True


def test_time_limit_stops_with_a_checkpoint_then_resumes(tmp_path_factory: pytest.TempPathFactory,
                                                         bundle_with_clip: Path) -> None:
    data = tiny_synthscapes(tmp_path_factory)
    out = bundle_with_clip
    args = ["audio", "--data", str(data), "--out", str(out), "--steps", "6", "--ckpt-every", "0", *FAST]
    # A limit already reached: the run stops after its first step, checkpointing it.
    assert train_main([*args, "--max-minutes", "1e-9"]) == 0
    run_dir = out / "runs" / "audio"
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("*.json"))
    assert ckpts == ["ckpt-00000001.json"]
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["step"] == 1 and ev["completed"] is False
    assert bundle_io.read_training_json(out)["parts"]["audio_encoder"]["trained"] is False

    assert train_main(args) == 0
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["step"] == 6 and ev["completed"] is True
    assert [r["step"] for r in _rows(run_dir) if r["prefix"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert bundle_io.read_training_json(out)["parts"]["audio_encoder"]["trained"] is True


def test_no_resume_starts_over(tmp_path_factory: pytest.TempPathFactory, bundle_with_clip: Path) -> None:
    data = tiny_synthscapes(tmp_path_factory)
    out = bundle_with_clip
    args = ["audio", "--data", str(data), "--out", str(out), "--steps", "2", "--ckpt-every", "0", *FAST]
    assert train_main(args) == 0
    assert train_main([*args, "--no-resume"]) == 0
    steps = [r["step"] for r in _rows(out / "runs" / "audio") if r["prefix"] == "train"]
    assert steps == [1, 2, 1, 2]
