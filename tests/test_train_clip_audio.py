"""The clip and audio stages on a tiny synthscapes set: they train, evaluate and write their parts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from model.audio_encoder import AudioEncoder
from model.bundle import load_bundle
from model.clip import ClipModel, build_clip
from model.stylegan2 import Generator, StyleGAN2Config
from test_train_infra import tiny_synthscapes
from training import bundle_io
from training.cli import main as train_main

AUDIO_FAST = ["--channels", "8", "16", "16", "16", "--n-mels", "32", "--n-fft", "512", "--sample-rate", "16000"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_synthscapes(tmp_path_factory)


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained_bundle(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bundle directory after a few steps of the clip stage and then the audio stage."""
    out = tmp_path_factory.mktemp("bundle") / "b"
    common = ["--data", str(data_dir), "--out", str(out), "--batch-size", "8", "--log-every", "1",
              "--ckpt-every", "2", "--no-tensorboard"]
    assert train_main(["clip", *common, "--steps", "3", "--fps", "2"]) == 0
    assert train_main(["audio", *common, "--steps", "3", *AUDIO_FAST]) == 0
    return out


def test_clip_stage_writes_a_trained_clip_and_its_eval(trained_bundle: Path) -> None:
    run_dir = trained_bundle / "runs" / "clip"
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["step"] == ev["steps"] == 3 and ev["completed"] is True
    assert 0.0 <= ev["zero_shot_top1"] <= 1.0 and ev["chance"] == pytest.approx(1 / 9) and ev["items"] > 0
    losses = [row["loss"] for row in _metrics(run_dir) if row["prefix"] == "train"]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    clip = bundle_io.read_part(trained_bundle, "clip")
    assert isinstance(clip, ClipModel) and clip.embed_dim == 128
    doc = bundle_io.read_training_json(trained_bundle)
    assert doc["parts"]["clip"]["trained"] is True and doc["eval"]["clip"]["step"] == 3
    assert len(bundle_io.read_labels(trained_bundle)) == 9
    config = json.loads((run_dir / "config.json").read_text())
    assert config["stage"] == "clip" and config["config"]["arch"] == "vjapp-tiny"


def test_audio_stage_writes_f_a_with_its_mel_settings(trained_bundle: Path) -> None:
    run_dir = trained_bundle / "runs" / "audio"
    ev = json.loads((run_dir / "eval.json").read_text())
    assert ev["step"] == 3 and 0.0 <= ev["audio_top1"] <= 1.0
    rows = [row for row in _metrics(run_dir) if row["prefix"] == "train"]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        assert all(math.isfinite(r[k]) for k in ("loss", "audio_image", "audio_text", "audio_aug"))
    encoder = bundle_io.read_part(trained_bundle, "audio_encoder")
    assert isinstance(encoder, AudioEncoder) and encoder.config.n_mels == 32 and encoder.embed_dim == 128
    mel = bundle_io.read_mel(trained_bundle)
    assert mel is not None and (mel.sample_rate, mel.n_fft, mel.hop_length, mel.n_mels) == (16000, 512, 256, 32)
    # Checkpoints: the last one is step 3; one from step 2 as well (--ckpt-every 2).
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.json")) == ["ckpt-00000002.json",
                                                                                 "ckpt-00000003.json"]


def test_clip_and_audio_parts_load_as_a_bundle_once_a_generator_exists(trained_bundle: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "b"
    shutil.copytree(trained_bundle, out)
    g = Generator(StyleGAN2Config(z_dim=32, w_dim=32, mapping_layers=2, mapping_hidden_dim=32, resolution=16,
                                  channel_base=256, channel_max=16))
    bundle_io.write_part(out, "generator", g, trained=False)
    bundle = load_bundle(out, parts=["generator", "clip", "audio_encoder"])
    assert bundle.info.mel.n_mels == 32 and bundle.info.trained["audio_encoder"] and bundle.info.trained["clip"]
    assert len(bundle.info.labels) == 9
    # F_a lands in CLIP's space: its output compares with CLIP text embeddings directly.
    mel = torch.rand(2, 32, 20)
    emb = bundle.audio_encoder(mel)
    text = bundle.clip.encode_text(["a photo of a volcano"])
    assert (emb @ text.t()).shape == (2, 1)


def test_dry_run_writes_nothing(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "never"
    rc = train_main(["clip", "--data", str(data_dir), "--out", str(out), "--batch-size", "4", "--steps", "50",
                     "--dry-run"])
    assert rc == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["stage"] == "clip" and resolved["steps"] == 1 and resolved["config"]["arch"] == "vjapp-tiny"
    assert not out.exists()


def test_audio_stage_needs_the_clip_part(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = train_main(["audio", "--data", str(data_dir), "--out", str(tmp_path / "empty"), "--steps", "2",
                     "--batch-size", "4", *AUDIO_FAST])
    assert rc == 1
    assert "needs the bundle's CLIP" in capsys.readouterr().err


def test_clip_stage_records_an_external_openclip_checkpoint(data_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    weights = tmp_path / "tiny-openclip.safetensors"
    reference = build_clip("vjapp-tiny")
    save_file({k: v.contiguous() for k, v in reference.model.state_dict().items()}, str(weights))
    out = tmp_path / "b"
    rc = train_main(["clip", "--data", str(data_dir), "--out", str(out), "--arch", "vjapp-tiny",
                     "--weights", str(weights), "--batch-size", "16", "--no-tensorboard"])
    assert rc == 0
    assert not (out / "clip.safetensors").exists(), "an external CLIP is recorded by reference, not copied"
    info = bundle_io.read_training_json(out)["info"]
    assert info["clip_source"] == {"kind": "openclip", "arch": "vjapp-tiny", "weights": str(weights.resolve())}
    clip = bundle_io.read_part(out, "clip")
    torch.testing.assert_close(clip.encode_text(["wind"]), reference.eval().encode_text(["wind"]))
    assert "zero_shot_top1" in json.loads((out / "runs" / "clip" / "eval.json").read_text())


def test_label_captions_put_the_zero_shot_prompts_into_training() -> None:
    from training.stages.clip import _captions

    labels = ("raining", "wind")
    templates = ("a photo of {}", "the sound of {}")
    batch = {"caption": ["drops on a window", "", "leaves blown across a field", "rain on a roof"]}
    ids = torch.tensor([0, 1, 1, 0])
    kept = _captions(batch, ids, labels, templates, 0.0, torch.Generator().manual_seed(0))
    # share 0: captions kept; the item without one gets a label prompt
    assert kept[0] == "drops on a window" and kept[2] == "leaves blown across a field"
    assert kept[1] in {"a photo of wind", "the sound of wind"}
    swapped = _captions(batch, ids, labels, templates, 1.0, torch.Generator().manual_seed(0))
    assert all(c.endswith(labels[i]) and c.split(" of ")[0] in {"a photo", "the sound"}
               for c, i in zip(swapped, ids.tolist()))
    many = _captions({"caption": ["x"] * 2000}, torch.zeros(2000, dtype=torch.long), labels, templates, 0.5,
                     torch.Generator().manual_seed(1))
    share = sum(c != "x" for c in many) / len(many)
    assert 0.45 < share < 0.55


def test_clip_stage_rejects_a_bad_label_caption_share(data_dir: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    rc = train_main(["clip", "--data", str(data_dir), "--out", str(tmp_path / "b"), "--steps", "1",
                     "--label-captions", "1.5", "--no-tensorboard"])
    assert rc != 0
    assert "--label-captions" in capsys.readouterr().err


def test_clip_stage_trains_with_caption_positives(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "b"
    assert train_main(["clip", "--data", str(data_dir), "--out", str(out), "--steps", "2", "--batch-size", "8",
                       "--positives", "caption", "--label-captions", "0", "--no-tensorboard", "--fps", "2"]) == 0
    cfg = json.loads((out / "training.json").read_text())
    assert cfg["parts"]["clip"]["trained"] is True
