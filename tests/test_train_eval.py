"""Baselines, the Table 3a metrics, and ``vjapp-train eval``."""

from __future__ import annotations

import json
import math

import pytest
import torch

from training.baselines import (
    SequenceShapeError,
    linear_interpolation,
    loudness_units,
    loudness_walk,
    mean_step_motion,
    random_walk,
)
from training.metrics import (
    MetricInputError,
    audio_label_top1,
    audio_video_similarity,
    method_metrics,
    semantic_consistency,
    text_video_similarity,
)

LABELS = ("thunderstorm", "wind", "fire crackling")


# ---------------------------------------------------------------------------------------- baselines


def test_walks_have_the_right_shape_and_start_at_the_base():
    base = torch.randn(3, 6, 16)
    gen = torch.Generator().manual_seed(0)
    rw = random_walk(base, 5, 0.5, gen)
    lin = linear_interpolation(base, torch.randn(3, 6, 16), 5)
    lw = loudness_walk(base, torch.rand(3, 5), 0.5, gen)
    for ws in (rw, lin, lw):
        assert ws.shape == (3, 5, 6, 16)
        torch.testing.assert_close(ws[:, 0], base)
    steps = (rw[:, 1:] - rw[:, :-1]).norm(dim=-1)  # every w moves by the step size
    torch.testing.assert_close(steps, torch.full_like(steps, 0.5))
    assert mean_step_motion(rw) == pytest.approx(0.5, rel=1e-5)
    with pytest.raises(SequenceShapeError):
        random_walk(torch.randn(3, 16), 5, 0.5)
    with pytest.raises(SequenceShapeError):
        loudness_walk(base, torch.rand(2, 5), 0.5)


def test_loudness_walk_moves_more_on_loud_audio():
    gen = torch.Generator().manual_seed(1)
    t, s = 6, 4000
    quiet = torch.randn(1, t, s, generator=gen) * 0.003  # about -50 dBFS
    loud = torch.randn(1, t, s, generator=gen) * 0.2  # about -14 dBFS
    audio = torch.cat([quiet, loud])
    loudness = loudness_units(audio)  # [2, T] in [0, 1]
    assert bool((loudness[1] > loudness[0] + 0.5).all())
    base = torch.randn(1, 4, 8).repeat(2, 1, 1)
    ws = loudness_walk(base, loudness, 1.0, torch.Generator().manual_seed(2))
    assert mean_step_motion(ws[1:]) > 5 * mean_step_motion(ws[:1])
    silent = loudness_walk(base, torch.zeros(2, t), 1.0)
    assert mean_step_motion(silent) == 0.0


# ---------------------------------------------------------------------------------------- metrics


def test_identical_embeddings_give_similarity_one_and_opposite_minus_one():
    emb = torch.nn.functional.normalize(torch.randn(4, 5, 8), dim=-1)
    assert audio_video_similarity(emb, emb) == pytest.approx(1.0, abs=1e-6)
    assert audio_video_similarity(emb, -emb) == pytest.approx(-1.0, abs=1e-6)
    same_text = emb[:, :1].expand(4, 5, 8)
    assert text_video_similarity(same_text, emb[:, 0] * 3.0) == pytest.approx(1.0, abs=1e-6)  # norms do not matter
    with pytest.raises(MetricInputError):
        audio_video_similarity(emb, emb[:, :4])


def test_semantic_consistency_counts_per_class():
    classes = torch.eye(3, 8)  # three orthogonal class prompts
    labels = torch.tensor([0, 1, 2, 2])
    frames = torch.stack([
        classes[0].expand(4, 8),  # clip of class 0: all frames look like class 0
        torch.stack([classes[1], classes[1], classes[0], classes[0]]),  # class 1: half right
        classes[2].expand(4, 8),
        classes[1].expand(4, 8),  # the second class-2 clip is all wrong
    ])
    acc = semantic_consistency(frames, classes, labels, LABELS)
    assert acc.per_class == pytest.approx({"thunderstorm": 1.0, "wind": 0.5, "fire crackling": 0.5})
    assert acc.mean == pytest.approx(2.0 / 3.0)
    a = audio_label_top1(classes[[0, 1, 2, 0]], classes, labels, LABELS)
    assert a.per_class == pytest.approx({"thunderstorm": 1.0, "wind": 1.0, "fire crackling": 0.5})
    m = method_metrics(frames, frames, classes, labels, LABELS)
    assert m.audio_video == pytest.approx(1.0, abs=1e-6)
    doc = m.to_json()
    assert doc["semantic_consistency"]["per_class"]["wind"] == 0.5
    with pytest.raises(MetricInputError, match="labels"):
        semantic_consistency(frames, classes, torch.tensor([0, 1, 5, 2]), LABELS)


def test_palette_and_brightness_per_class_tell_a_black_frame_from_the_real_scene():
    from training.metrics import brightness_per_class, palette_per_class

    real = torch.full((4, 2, 3, 16, 16), -0.1)  # grey daylight streets, luma 0.45
    fake = real.clone()
    fake[3] = -1.0  # the last clip (class 2) is drawn black
    labels = torch.tensor([0, 1, 2, 2])
    pal = palette_per_class(fake, real, labels, LABELS)
    assert pal["per_class"] == pytest.approx({"thunderstorm": 0.0, "wind": 0.0, "fire crackling": 0.45})
    assert pal["mean"] == pytest.approx(0.15)
    bright = brightness_per_class(fake, labels, LABELS)
    assert bright["per_class"]["thunderstorm"] == pytest.approx(0.45)
    assert bright["per_class"]["fire crackling"] == pytest.approx(0.225)
    with pytest.raises(MetricInputError):
        palette_per_class(fake[:, :1], real, labels, LABELS)


# ---------------------------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def synthscapes_tiny(tmp_path_factory):
    from training.data.synthscapes import write_synthscapes

    root = tmp_path_factory.mktemp("synthscapes")
    write_synthscapes(root, 18, 2.0, 32, 0, fps=8.0, sample_rate=16000, progress=False)
    return root


def test_eval_writes_report_table_sheets_and_mp4_with_audio(tmp_path, tiny_bundle_dir, synthscapes_tiny):
    from training.cli import main
    from vjapp.output.mp4 import probe_mp4

    out = tmp_path / "report"
    rc = main(["eval", "--data", str(synthscapes_tiny), "--bundle", str(tiny_bundle_dir), "--out", str(out),
               "--clips", "6", "--segments", "3", "--mp4-clips", "1", "--mp4-size", "32",
               "--coverage-samples", "8", "--kid-subsets", "2", "--device", "cpu", "--base-seeds", "2",
               "--atlas-samples", "24", "--judge-steps", "30", "--switch-pairs", "2",
               "--judge-dir", str(tmp_path / "judges")])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["methods"]) == {"ours", "offsets", "both", "random_walk", "linear_interpolation",
                                      "loudness_walk"}
    assert report["clips"] == 6 and report["segments"] == 3 and report["base_seeds"] == 2
    assert report["atlas_samples"] == 24
    # the independent judge: two forms, trained on real frames and saved; every method scored by both
    assert sorted(p.name for p in (tmp_path / "judges").glob("judge-*.json")) == ["judge-full.json",
                                                                                   "judge-structure.json"]
    judge = report["judge"]
    assert set(judge["held_out_real"]) == {"full", "structure"}
    for name, m in report["methods"].items():
        for form in ("full", "structure"):
            assert 0.0 <= m["judge"][form]["mean"] <= 1.0, (name, form)
            assert set(m["judge"][form]["per_class"]) <= set(report["labels"])
    ceiling = judge["generator_ceiling"]
    assert sum(ceiling["full_share"].values()) == pytest.approx(1.0)
    assert set(judge["reaction"]) == {"ours", "offsets", "both"}
    assert all(r["pairs"] == 2 for r in judge["reaction"].values())
    assert set(report["loudness_ratio"]) == {"ours", "offsets", "both"}
    for name, m in report["methods"].items():
        assert -1.0 <= m["audio_video_similarity"] <= 1.0, name
        assert -1.0 <= m["text_video_similarity"] <= 1.0, name
        assert 0.0 <= m["semantic_consistency"]["mean"] <= 1.0, name
        assert m["kid"] is None or math.isfinite(m["kid"])
    # the random walk is calibrated to ours' motion
    assert report["methods"]["random_walk"]["latent_motion"] == pytest.approx(report["walk_step"], rel=1e-4)
    assert sum(report["generator_class_coverage"].values()) == pytest.approx(1.0)
    present = set(report["clip_labels"])
    for name, m in report["methods"].items():
        assert set(m["palette_distance"]["per_class"]) == present, name
        assert all(0.0 <= v <= 2.0 for v in m["palette_distance"]["per_class"].values()), name
        assert all(0.0 <= v <= 1.0 for v in m["brightness"]["per_class"].values()), name
    assert set(report["real_brightness"]["per_class"]) == present
    md = (out / "report.md").read_text()
    assert "| ours (as live: F_a → atlas scene) |" in md and "| random walk |" in md and "loudness walk" in md
    assert "Independent judge" in md and "Reaction time" in md and "structure agrees" in md
    assert "palette L1" in md and "brightness: real" in md
    sheets = sorted((out / "contact_sheets").glob("*.png"))
    assert sheets and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in sheets)
    assert len(sheets) == len(set(report["clip_labels"]))
    # each row: the real frame of the clip, then one frame per segment (grid cells of the frame size + 2 px)
    import struct

    from model.bundle import read_bundle_info

    size = read_bundle_info(tiny_bundle_dir).resolution
    width, _ = struct.unpack(">II", sheets[0].read_bytes()[16:24])  # the PNG's IHDR
    assert width == 2 + (1 + 3) * (size + 2)
    info = probe_mp4(out / "grid_00.mp4")
    assert info["video"]["frames"] == 3
    assert info["video"]["width"] == 7 * 32 and info["video"]["height"] == 32  # real | 6 methods
    assert info["audio"] is not None and info["audio"]["decoded_duration_s"] > 1.0


def test_eval_refuses_a_missing_data_folder(tmp_path, tiny_bundle_dir):
    from training.cli import main

    assert main(["eval", "--data", str(tmp_path / "none"), "--bundle", str(tiny_bundle_dir),
                 "--out", str(tmp_path / "r")]) == 1
