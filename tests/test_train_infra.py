"""Training infrastructure: checkpoints as data, resume state, bundle parts, InfoNCE, the CLI table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from model.audio_encoder import AudioEncoder, AudioEncoderConfig
from model.audio_features import MelConfig
from model.bundle import load_bundle, read_bundle_info
from model.clip import build_clip
from model.formats import CheckpointError
from model.latent_rnn import LatentRNN, LatentRNNConfig
from model.sound_inversion import SoundInversionConfig, SoundInversionEncoder
from model.stylegan2 import Generator, StyleGAN2Config
from training import bundle_io
from training.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from training.cli import STAGES, main as train_main
from training.losses import cosine_distance, info_nce, top1_accuracy
from training.run import encode_png, image_grid

TINY_CLIPS, TINY_SECONDS, TINY_SIZE = 18, 1.5, 32


def tiny_synthscapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """18 synthscapes clips x 1.5 s at 32 px, written once per pytest session (shared by the train tests)."""
    root = tmp_path_factory.getbasetemp() / "train_synthscapes_tiny"
    manifest = root / "manifest.csv"
    if not manifest.is_file():
        from training.data.synthscapes import write_synthscapes

        manifest = write_synthscapes(root, TINY_CLIPS, TINY_SECONDS, TINY_SIZE, seed=0, progress=False)
    return root


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))


def _train(net: nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(6, 4, generator=g)
        loss = net(x).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_checkpoint_round_trip_restores_weights_optimizer_and_rng(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = _net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, betas=(0.8, 0.9))
    _train(net, opt, 3)
    path = save_checkpoint(tmp_path, 3, {"net": net}, {"opt": opt}, {"note": "hi", "table": torch.arange(4)},
                           config={"width": 8}, stage="unit")
    expected_rand = torch.rand(5)  # the RNG draw right after saving

    net2 = _net()
    opt2 = torch.optim.AdamW(net2.parameters(), lr=0.5)
    loaded = load_checkpoint(path, {"net": net2}, {"opt": opt2})
    assert loaded.step == 3 and loaded.stage == "unit" and loaded.config == {"width": 8}
    assert loaded.extra["note"] == "hi" and torch.equal(loaded.extra["table"], torch.arange(4))
    assert torch.equal(torch.rand(5), expected_rand)
    assert opt2.param_groups[0]["betas"] == (0.8, 0.9) and opt2.param_groups[0]["lr"] == pytest.approx(1e-2)
    # Training on from the restored state is the same as never having stopped.
    _train(net, opt, 2, seed=1)
    _train(net2, opt2, 2, seed=1)
    for a, b in zip(net.state_dict().values(), net2.state_dict().values()):
        torch.testing.assert_close(a, b)
    # The JSON half is plain data, the tensor half is safetensors: nothing to unpickle.
    doc = json.loads(path.read_text())
    assert doc["format"] == "vjapp.train_checkpoint" and doc["tensors_file"].endswith(".safetensors")


def test_checkpoints_keep_last_k_and_skip_incomplete(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    _train(net, opt, 1)
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, {"net": net}, {"opt": opt}, keep=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [30, 40]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-00000030.json", "ckpt-00000030.safetensors", "ckpt-00000040.json", "ckpt-00000040.safetensors"]
    # A torn write of the newest tensors file: resume falls back to the previous checkpoint.
    newest = tmp_path / "ckpt-00000040.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])
    assert latest_checkpoint(tmp_path) == tmp_path / "ckpt-00000030.json"
    assert "incomplete" in caplog.text


def test_checkpoint_for_another_model_is_a_clear_error(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path, 1, {"net": _net()})
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(path, {"net": nn.Linear(3, 3)})
    with pytest.raises(CheckpointError, match="no weights for model 'other'"):
        load_checkpoint(path, {"other": nn.Linear(3, 3)})
    with pytest.raises(CheckpointError, match="optimizer 'opt'"):
        net = _net()
        load_checkpoint(path, {"net": net}, {"opt": torch.optim.SGD(net.parameters(), lr=0.1)})


# --- bundle parts -----------------------------------------------------------------------------------

MEL = MelConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=32)


def _generator() -> Generator:
    return Generator(StyleGAN2Config(z_dim=32, w_dim=32, mapping_layers=2, mapping_hidden_dim=32, resolution=16,
                                     channel_base=256, channel_max=16))


def test_bundle_grows_part_by_part(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    clip = build_clip("vjapp-tiny")
    bundle_io.write_part(out, "clip", clip, trained=True)
    encoder = AudioEncoder(AudioEncoderConfig(n_mels=MEL.n_mels, embed_dim=clip.embed_dim, channels=(8, 16)))
    bundle_io.write_part(out, "audio_encoder", encoder, trained=False, mel=MEL, labels=["a", "b"])
    # No generator yet: no bundle.json, but each part reads back on its own.
    assert not (out / "bundle.json").exists()
    assert isinstance(bundle_io.read_part(out, "audio_encoder"), AudioEncoder)
    assert bundle_io.read_mel(out) == MEL and bundle_io.read_labels(out) == ("a", "b")
    with pytest.raises(CheckpointError, match="no 'generator' part"):
        bundle_io.read_part(out, "generator")

    g = _generator()
    bundle_io.write_part(out, "generator", g, trained=True)
    info = read_bundle_info(out)
    assert (info.num_ws, info.w_dim, info.resolution, info.embed_dim) == (g.num_ws, 32, 16, clip.embed_dim)
    assert info.mel == MEL and info.labels == ("a", "b")
    assert info.trained == {"generator": True, "clip": True, "audio_encoder": False,
                            "sound_inversion": False, "predictor": False}
    partial = load_bundle(out, parts=["generator", "clip", "audio_encoder"])
    assert partial.audio_encoder is not None and partial.sound_inversion is None
    with pytest.raises(CheckpointError, match="missing part 'sound_inversion'"):
        load_bundle(out)

    groups = ((0, 2), (2, 4), (4, g.num_ws))
    bundle_io.write_part(out, "sound_inversion", SoundInversionEncoder(SoundInversionConfig(
        n_mels=MEL.n_mels, num_ws=g.num_ws, w_dim=32, channels=(8, 16), head_hidden=16, groups=groups)))
    bundle_io.write_part(out, "predictor", LatentRNN(LatentRNNConfig(num_ws=g.num_ws, w_dim=32, hidden_dim=16,
                                                                     groups=groups)))
    bundle_io.write_part(out, "audio_encoder", encoder, trained=True)
    full = load_bundle(out)
    assert full.info.is_trained and full.info.layer_groups == groups
    assert not list(out.glob(".*.tmp*")), "temporary part files left behind"


def test_parts_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    clip = build_clip("vjapp-tiny")
    bundle_io.write_part(out, "clip", clip)
    bundle_io.write_part(out, "generator", _generator())
    assert (out / "bundle.json").is_file()
    wrong = AudioEncoder(AudioEncoderConfig(n_mels=MEL.n_mels, embed_dim=clip.embed_dim + 1, channels=(8,)))
    with pytest.raises(bundle_io.BundleError, match="embed_dim"):
        bundle_io.write_part(out, "audio_encoder", wrong, mel=MEL)
    assert not (out / "bundle.json").exists(), "an inconsistent bundle must not stay loadable"
    with pytest.raises(bundle_io.BundleError, match="must be a AudioEncoder"):
        bundle_io.write_part(out, "audio_encoder", clip)
    with pytest.raises(bundle_io.BundleError, match="unknown fields"):
        bundle_io.update_bundle_json(out, colour="red")


# --- losses ---------------------------------------------------------------------------------------------

def test_info_nce_prefers_matched_pairs_and_handles_repeated_labels() -> None:
    torch.manual_seed(0)
    a = torch.randn(8, 16)
    matched = info_nce(a, a + 0.01 * torch.randn(8, 16), math.log(20.0))
    shuffled = info_nce(a, a[torch.randperm(8)], math.log(20.0))
    assert matched < 0.1 < shuffled
    # Two items per class sharing one text embedding: plain InfoNCE rewards pulling them apart,
    # with labels they are positives of each other and pulling them apart costs.
    together = nn.functional.normalize(torch.randn(2, 16), dim=-1).repeat_interleave(2, dim=0)  # classes 0,0,1,1
    apart = together + 0.05 * torch.randn(4, 16)
    labels = torch.tensor([0, 0, 1, 1])
    s = math.log(100.0)
    assert info_nce(apart, apart, s) < info_nce(together, together, s)
    assert info_nce(apart, apart, s, labels=labels) > info_nce(together, together, s, labels=labels)
    scale = torch.tensor(math.log(10.0), requires_grad=True)
    x = torch.randn(4, 8, requires_grad=True)
    info_nce(x, torch.randn(4, 8), scale).backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(scale.grad)
    with pytest.raises(ValueError, match="same shape"):
        info_nce(torch.randn(4, 8), torch.randn(3, 8), 1.0)


def test_cosine_distance_and_top1() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert torch.allclose(cosine_distance(a, a), torch.zeros(2), atol=1e-6)
    assert torch.allclose(cosine_distance(a, -a), torch.full((2,), 2.0))
    classes = torch.eye(2)
    assert top1_accuracy(a, classes, torch.tensor([0, 1])) == 1.0
    assert top1_accuracy(a, classes, torch.tensor([1, 1])) == 0.5


# --- images and CLI -----------------------------------------------------------------------------------

def test_image_grid_and_png() -> None:
    images = torch.linspace(-1, 1, 5 * 3 * 4 * 6).view(5, 3, 4, 6)
    grid = image_grid(images, nrow=3, padding=1)
    assert grid.shape == (3, 2 * 5 + 1, 3 * 7 + 1) and grid.min() >= 0 and grid.max() <= 1
    png = encode_png(grid)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") == grid.shape[2]
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        image_grid(torch.zeros(3, 4, 4))


def test_cli_lists_every_stage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        train_main(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for name in ("synthscapes", "clip", "audio", "generator", "sound2video", "eval", "recipe"):
        assert name in STAGES and name in text
    assert train_main([]) == 2


def test_cli_rejects_bad_common_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = train_main(["clip", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b"), "--steps", "2"])
    assert rc == 1 and "no such file or folder" in capsys.readouterr().err
    rc = train_main(["clip", "--data", str(tmp_path), "--out", str(tmp_path / "b"), "--steps", "0"])
    assert rc == 1 and "--steps must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def _run_args(tmp_path: Path, *extra: str):
    import argparse

    from training.run import add_common_arguments

    parser = argparse.ArgumentParser()
    add_common_arguments(parser, steps=4, batch_size=2, lr=1e-3, data_required=False)
    return parser.parse_args(["--out", str(tmp_path / "out"), "--no-tensorboard", *extra])


def test_run_logs_checkpoints_and_resumes(tmp_path: Path) -> None:
    from dataclasses import dataclass

    from training.run import Run

    @dataclass
    class UnitConfig:
        width: int = 8

    net = _net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    with Run(_run_args(tmp_path, "--ckpt-every", "2"), "unit", UnitConfig()) as run:
        assert run.load_checkpoint({"net": net}, {"opt": opt}) is None
        for step in run.steps_from(0):
            loss = net(torch.randn(4, 4)).square().mean()
            run.optimizer_step(loss, opt)
            run.log_scalars(step, {"loss": loss})
            if run.checkpoint_due(step):
                run.save_checkpoint(step, {"net": net}, {"opt": opt}, {"seen": step})
        png = run.log_images(4, "samples/grid", torch.rand(3, 3, 8, 8) * 2 - 1)
        assert run.completed and not run.stopped_early
    run_dir = tmp_path / "out" / "runs" / "unit"
    assert png is not None and png.read_bytes()[:4] == b"\x89PNG"
    assert json.loads((run_dir / "config.json").read_text())["config"] == {"width": 8}
    assert [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    with Run(_run_args(tmp_path, "--steps", "6"), "unit", UnitConfig()) as run:
        assert run.load_checkpoint({"net": net}, {"opt": opt}) == 4 and run.extra == {"seen": 4}
        assert list(run.steps_from(4)) == [5, 6]
    with pytest.raises(Exception, match="not 'other'"):
        with Run(_run_args(tmp_path, "--run-dir", str(run_dir)), "other") as run:
            run.load_checkpoint({"net": net}, {"opt": opt})


def test_run_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.run import Run

    net = _net()
    with Run(_run_args(tmp_path, "--dry-run"), "unit") as run:
        assert run.steps == 1 and not run.writes
        for step in run.steps_from(0):
            run.log_scalars(step, {"loss": 1.0})
            if run.checkpoint_due(step):
                assert run.save_checkpoint(step, {"net": net}) is None
        assert run.log_images(1, "x", torch.zeros(1, 3, 4, 4)) is None and run.write_json("e.json", {}) is None
    assert json.loads(capsys.readouterr().out)["stage"] == "unit"
    assert not (tmp_path / "out").exists()
