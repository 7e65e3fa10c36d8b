"""Two-process data-parallel training on the CPU (torchrun, gloo): it finishes and rank 0 alone writes."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch.distributed as dist

from test_train_infra import tiny_synthscapes
from training import bundle_io

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed with gloo")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_audio_training(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    data = tiny_synthscapes(tmp_path_factory)
    out = tmp_path / "bundle"
    from model.clip import build_clip

    bundle_io.write_part(out, "clip", build_clip("vjapp-tiny"))  # the audio stage's frozen CLIP
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
           "--master-port", str(_free_port()), "-m", "training.cli", "audio", "--data", str(data), "--out", str(out),
           "--steps", "4", "--batch-size", "4", "--ckpt-every", "2", "--log-every", "1", "--device", "cpu",
           "--channels", "8", "16", "16", "16", "--n-mels", "32", "--n-fft", "512", "--sample-rate", "16000"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 1/2" in proc.stderr and "(gloo)" in proc.stderr

    run_dir = out / "runs" / "audio"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["world"] == 2
    # Rank 0 alone logs: each step once, not once per process; one TensorBoard event file.
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["prefix"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4] and all(math.isfinite(r["loss"]) for r in train)
    assert len(list((run_dir / "tb").iterdir())) == 1
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["ckpt-00000002.json", "ckpt-00000002.safetensors", "ckpt-00000004.json", "ckpt-00000004.safetensors"]
    assert json.loads((run_dir / "checkpoints" / "ckpt-00000004.json").read_text())["step"] == 4
    assert bundle_io.read_training_json(out)["parts"]["audio_encoder"]["trained"] is True
    assert bundle_io.read_part(out, "audio_encoder").config.n_mels == 32
