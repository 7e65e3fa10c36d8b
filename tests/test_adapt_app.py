"""The app starts ``vjapp-train adapt`` for the imported generator and plays the bundle it writes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from vjapp.ui.adapt_job import adapt_command, parse_progress

TINY = ["--steps", "2", "--batch-size", "2", "--segments", "2", "--render-size", "16", "--encoder-channels", "8", "8",
        "8", "8", "--head-hidden", "16", "--rnn-hidden", "16", "--video-channels", "8", "8", "--d-channel-max", "16",
        "--d-channel-base", "256", "--ckpt-every", "1", "--no-tensorboard"]


def test_adapt_command_line():
    cmd = adapt_command("g.pkl", "clips", "out", from_bundle="base", device="cuda", amp=True, max_minutes=30,
                        extra_args=["--steps", "5"], python="py")
    assert cmd == ["py", "-m", "training.cli", "adapt", "--generator", "g.pkl", "--data", "clips", "--out", "out",
                   "--device", "cuda", "--from", "base", "--amp", "--max-minutes", "30", "--steps", "5"]
    assert adapt_command("g", "d", "o")[:2] == [sys.executable, "-m"]
    assert "--from" not in adapt_command("g", "d", "o") and "--max-minutes" not in adapt_command("g", "d", "o")
    with pytest.raises(ValueError, match="device"):
        adapt_command("g", "d", "o", device="tpu")
    # what the child process parses: the options are adapt's own
    from training.cli import build_parser

    argv = adapt_command("g.pkl", "clips", "out", from_bundle="base", max_minutes=2.5)[3:]
    args = build_parser(argv).parse_args(argv)
    assert (args.generator, args.data, args.out, args.from_bundle) == (Path("g.pkl"), Path("clips"), Path("out"),
                                                                        Path("base"))
    assert args.max_minutes == 2.5 and args.device == "auto" and not args.amp


def test_parse_progress_reads_the_newest_tqdm_count():
    text = ("INFO x: staged\rsound2video:   0%|          | 0/50 [00:00<?, ?it/s]"
            "\rsound2video:  10%|█         | 5/50 [00:01<00:10,  4.35it/s, loss_audio=1.084]")
    assert parse_progress(text) == (5, 50)
    assert parse_progress("INFO training.stages.adapt: staged 3/4 of it") is None


def test_app_adapts_the_imported_generator_and_plays_the_result(make_app, qtbot, tmp_path, tiny_bundle_dir):
    from model.stylegan2 import Generator, StyleGAN2Config, save_generator
    from training.data.synthscapes import write_synthscapes

    data = tmp_path / "clips"
    write_synthscapes(data, 4, 2.0, 32, 0, fps=8.0, sample_rate=16000, progress=False)
    torch.manual_seed(3)
    other = Generator(StyleGAN2Config(z_dim=32, w_dim=32, mapping_layers=2, mapping_hidden_dim=32, resolution=64,
                                      channel_base=256, channel_max=16))
    stem = tmp_path / "data" / "converted" / "other"
    save_generator(stem, other)

    ctx = make_app()
    assert ctx.adapt_source() == str(tiny_bundle_dir)  # nothing imported: the playing bundle's generator
    ctx.adopt_generator(str(stem))  # W+ 10 x 32: the current audio models cannot drive it (refused)
    qtbot.waitUntil(lambda: not ctx.bundle_busy, timeout=10000)
    assert ctx.adapt_source() == str(stem)
    job = ctx.window.start_adapt(ctx.adapt_source(), str(data), from_bundle=str(tiny_bundle_dir), device="cpu",
                                 extra_args=TINY)
    out = tmp_path / "data" / "bundles" / "other-sound"
    assert job.command[3:10] == ["adapt", "--generator", str(stem), "--data", str(data), "--out", str(out)]
    assert not ctx.window.adapt_action.isEnabled()
    seen: list[tuple[int, int]] = []
    job.progress.connect(lambda d, t: seen.append((d, t)))
    qtbot.waitUntil(lambda: ctx.bundle_path == out, timeout=180000)
    assert ctx.window.adapt_action.isEnabled()
    assert (ctx.bundle.info.num_ws, ctx.bundle.info.w_dim) == (10, 32)
    assert ctx.bundle.info.trained["sound_inversion"] and ctx.bundle.info.trained["predictor"]
    assert seen and seen[-1][1] == 2 and ctx.window.adapt_progress.maximum() == 2
    start = ctx.output.frames_shown
    qtbot.waitUntil(lambda: ctx.output.frames_shown >= start + 3, timeout=30000)


def test_app_reports_a_failed_adapt(make_app, qtbot, tmp_path, tiny_bundle_dir):
    ctx = make_app()
    ctx.window.start_adapt(str(tiny_bundle_dir), str(tmp_path / "no-such-data"), str(tmp_path / "o"),
                           device="cpu", extra_args=TINY)
    qtbot.waitUntil(lambda: any("sound training failed" in t for _, t in ctx.window.messages), timeout=60000)
    text = [t for _, t in ctx.window.messages if "sound training failed" in t][-1]
    assert "no-such-data" in text and "no such file or folder" in text
    assert ctx.bundle_path == tiny_bundle_dir and ctx.window.adapt_action.isEnabled()
