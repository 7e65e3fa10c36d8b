"""``vjapp-train adapt``: E_a + predictor learned for a generator of another W+ shape, in one command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from training.cli import main

# tiny everything: two steps of two sequences of two segments, 32 px losses
TINY = ["--steps", "2", "--batch-size", "2", "--segments", "2", "--render-size", "16", "--encoder-channels", "8", "8",
        "8", "8", "--head-hidden", "16", "--rnn-hidden", "16", "--video-channels", "8", "8", "--d-channel-max", "16",
        "--d-channel-base", "256", "--ckpt-every", "1", "--log-every", "1", "--no-tensorboard", "--device", "cpu"]


@pytest.fixture(scope="module")
def synthscapes_tiny(tmp_path_factory):
    from training.data.synthscapes import write_synthscapes

    root = tmp_path_factory.mktemp("synthscapes")
    write_synthscapes(root, 6, 2.0, 32, 0, fps=8.0, sample_rate=16000, progress=False)
    return root


def other_generator(seed: int = 1):
    """W+ 10 x 32 (64 px), unlike the tiny bundle's 8 x 64."""
    from model.stylegan2 import Generator, StyleGAN2Config

    torch.manual_seed(seed)
    return Generator(StyleGAN2Config(z_dim=32, w_dim=32, mapping_layers=2, mapping_hidden_dim=32, resolution=64,
                                     channel_base=256, channel_max=16)).eval()


@pytest.fixture(scope="module")
def generator_stem(tmp_path_factory):
    from model.stylegan2 import save_generator

    stem = tmp_path_factory.mktemp("gen") / "other"
    save_generator(stem, other_generator())
    return stem


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    """1.5 s: a quiet half second, then a loud noisy chord (16 kHz mono)."""
    sr = 16000
    t = np.arange(int(1.5 * sr)) / sr
    rng = np.random.default_rng(0)
    x = (0.4 * np.sin(2 * np.pi * 220 * t) + 0.2 * rng.standard_normal(t.size)) * (t > 0.5)
    path = tmp_path_factory.mktemp("audio") / "in.wav"
    sf.write(path, x.astype(np.float32), sr)
    return path


def adapt(*argv: str) -> int:
    return main(["adapt", *argv])


def test_adapt_end_to_end_writes_a_bundle_that_plays(tmp_path, generator_stem, synthscapes_tiny, tiny_bundle_dir,
                                                      wav, capsys):
    import av

    from model.bundle import load_bundle, read_bundle_info
    from vjapp.cli import main as vjapp_main

    out = tmp_path / "adapted"
    rc = adapt("--generator", str(generator_stem), "--data", str(synthscapes_tiny), "--out", str(out),
               "--from", str(tiny_bundle_dir), *TINY)
    assert rc == 0, capsys.readouterr().err
    b = load_bundle(out)
    src = read_bundle_info(tiny_bundle_dir)
    assert (b.info.num_ws, b.info.w_dim, b.info.resolution) == (10, 32, 64)
    assert b.info.layer_groups == ((0, 2), (2, 4), (4, 10))  # the paper's 0-2, 3-5, 6-15 of 16 scaled to 10
    assert b.sound_inversion.config.num_ws == 10 and b.predictor.config.w_dim == 32
    assert b.info.mel == src.mel and b.info.labels == src.labels
    assert (b.info.model_rate, b.info.segment_seconds) == (src.model_rate, src.segment_seconds)
    assert b.info.trained["sound_inversion"] and b.info.trained["predictor"]
    assert "adapted" in b.info.notes
    # F_a and CLIP are --from's, unchanged; the generator is the given one
    ref = load_bundle(tiny_bundle_dir, parts=["audio_encoder", "clip"])
    for name in ("audio_encoder", "clip"):
        for (k, v), w in zip(getattr(b, name).state_dict().items(), getattr(ref, name).state_dict().values()):
            assert torch.equal(v, w), f"{name}.{k} changed"
    for (k, v), w in zip(b.generator.state_dict().items(), other_generator().state_dict().values()):
        assert torch.equal(v, w), f"generator.{k} changed"
    # E_a learned: not the freshly initialised weights any more (two steps moved them)
    ckpts = sorted((out / "runs" / "adapt" / "checkpoints").glob("*.safetensors"))
    assert ckpts, "no checkpoint in the run folder"

    # ... and it plays: vjapp render writes an MP4 whose frames move with the sound
    mp4 = tmp_path / "adapted.mp4"
    assert vjapp_main(["render", str(wav), "-o", str(mp4), "--bundle", str(out), "--fps", "10", "--quiet",
                       "--dtype", "fp32", "--gain", "3"]) == 0
    with av.open(str(mp4)) as c:
        frames = [f.to_ndarray(format="rgb24").astype(np.float32) for f in c.decode(video=0)]
    assert len(frames) == 15 and frames[0].shape[:2] == (64, 64)
    diffs = [np.abs(b2 - a).mean() for a, b2 in zip(frames, frames[1:])]
    assert max(diffs) > 0.5, diffs


def test_adapt_converts_an_nvidia_pickle_and_resumes(tmp_path, synthscapes_tiny, tiny_bundle_dir):
    """A .pkl is converted into the run folder; a run stopped part way continues from its checkpoint."""
    import reference_nvidia as nv
    from nvidia_pickle import dump_nvidia_pickle, snapshot

    from model.bundle import load_bundle
    from training.bundle_io import read_training_json

    G = nv.randomize_(nv.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                                   mapping_kwargs=dict(num_layers=2),
                                   synthesis_kwargs=dict(channel_base=256, channel_max=16)), 2).eval()
    pkl = dump_nvidia_pickle(tmp_path / "network-snapshot.pkl", snapshot(G, D=None, G_ema=G))
    out = tmp_path / "adapted"
    common = ["--generator", str(pkl), "--data", str(synthscapes_tiny), "--out", str(out),
              "--from", str(tiny_bundle_dir), *TINY]
    assert adapt(*common) == 0  # 2 steps
    run_dir = out / "runs" / "adapt"
    assert (run_dir / "generator.safetensors").is_file()  # the conversion lives in the run folder
    first = load_bundle(out)
    assert (first.info.num_ws, first.info.w_dim) == (6, 16)
    assert read_training_json(out)["parts"]["sound_inversion"]["step"] == 2
    conversion_mtime = (run_dir / "generator.safetensors").stat().st_mtime_ns

    assert adapt(*common, "--steps", "3") == 0  # the same command asked for one more step: resumes at 3
    doc = read_training_json(out)
    assert doc["parts"]["sound_inversion"]["step"] == 3 and doc["eval"]["sound2video"]["completed"]
    assert (run_dir / "generator.safetensors").stat().st_mtime_ns == conversion_mtime  # not converted again
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["prefix"] == "train"] == [1, 2, 3]
    second = load_bundle(out)
    moved = any(not torch.equal(a, b) for a, b in zip(first.sound_inversion.state_dict().values(),
                                                      second.sound_inversion.state_dict().values()))
    assert moved


def test_max_minutes_stops_cleanly_with_a_usable_bundle(tmp_path, generator_stem, synthscapes_tiny, tiny_bundle_dir):
    from model.bundle import load_bundle

    out = tmp_path / "adapted"
    common = ["--generator", str(generator_stem), "--data", str(synthscapes_tiny), "--out", str(out),
              "--from", str(tiny_bundle_dir), *TINY]
    assert adapt(*common, "--steps", "50", "--max-minutes", "0.0001") == 0
    b = load_bundle(out)
    assert not b.info.trained["sound_inversion"] and "stopped early" in b.info.notes
    assert b.sound_inversion.config.num_ws == 10


def test_bad_inputs_are_one_clear_error(tmp_path, generator_stem, synthscapes_tiny, tiny_bundle_dir, capsys):
    from model.bundle import load_bundle, save_bundle
    from training.bundle_io import BUNDLE_FILE

    def error(*argv: str) -> str:
        rc = adapt(*argv, *TINY)
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vjapp-train adapt: error:")]
        assert rc != 0 and len(err) == 1, err
        return err[0]

    ok = dict(generator=str(generator_stem), data=str(synthscapes_tiny), out=str(tmp_path / "o"),
              **{"from": str(tiny_bundle_dir)})

    def args(**change: str) -> list[str]:
        return [a for k, v in {**ok, **change}.items() for a in (f"--{k}", v)]

    assert "no such file or folder" in error(*args(data=str(tmp_path / "nope")))
    corrupt = tmp_path / "broken.pkl"
    corrupt.write_bytes(b"\x80\x04" + b"\x00garbage" * 10)
    assert "broken.pkl" in error(*args(generator=str(corrupt)))
    (tmp_path / "empty.pt").write_bytes(b"")
    assert "empty" in error(*args(generator=str(tmp_path / "empty.pt")))
    assert "no such file" in error(*args(generator=str(tmp_path / "missing.pkl")))
    # a --from without F_a
    b = load_bundle(tiny_bundle_dir)
    no_fa = save_bundle(tmp_path / "no_fa", b)
    for p in no_fa.glob("audio_encoder.*"):
        p.unlink()
    assert "F_a" in error(*args(**{"from": str(no_fa)}))
    assert "no such bundle" in error(*args(**{"from": str(tmp_path / "nowhere")}))
    # --out holding some other bundle is not overwritten
    assert "not the output of an earlier" in error(*args(out=str(tiny_bundle_dir.parent)))
    assert (tiny_bundle_dir / BUNDLE_FILE).is_file()
    assert not (tmp_path / "o" / BUNDLE_FILE).exists()


def test_staged_bundle_loads_before_the_first_checkpoint(tmp_path, generator_stem, tiny_bundle_dir, capsys):
    """Staging writes untrained E_a + predictor, so --out loads even when training never gets going."""
    from model.bundle import load_bundle

    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "adapted"
    rc = adapt("--generator", str(generator_stem), "--data", str(empty), "--out", str(out),
               "--from", str(tiny_bundle_dir), *TINY)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("vjapp-train adapt: error:")]
    assert rc == 1 and len(err) == 1 and "empty" in err[0]
    b = load_bundle(out)
    assert (b.info.num_ws, b.info.w_dim) == (10, 32)
    assert not b.info.trained["sound_inversion"] and not b.info.trained["predictor"]
    assert b.sound_inversion.config.channels == (8, 8, 8, 8) and b.predictor.config.hidden_dim == 16


def test_default_from_is_the_embedded_default_with_clip_and_fa():
    from training.stages.adapt import check_from_bundle, default_from_bundle
    from vjapp.bundles import DEFAULT_BUNDLE_DIR

    assert default_from_bundle() == DEFAULT_BUNDLE_DIR
    info = check_from_bundle(DEFAULT_BUNDLE_DIR)
    assert info.labels and info.mel.n_mels > 0


def test_out_of_another_generator_is_refused_unless_started_over(tmp_path, generator_stem, synthscapes_tiny,
                                                                   tiny_bundle_dir, capsys):
    """A bundle directory works as --generator; an --out trained for another generator is not mixed up."""
    from model.bundle import load_bundle

    out = tmp_path / "adapted"
    base = ["--data", str(synthscapes_tiny), "--out", str(out), "--from", str(tiny_bundle_dir), *TINY]
    assert adapt("--generator", str(generator_stem), *base, "--steps", "3") == 0
    capsys.readouterr()
    assert adapt("--generator", str(tiny_bundle_dir), *base) == 1
    err = capsys.readouterr().err
    assert "holds an adapt run for another generator" in err and "--no-resume" in err
    assert load_bundle(out).info.num_ws == 10  # untouched
    assert adapt("--generator", str(tiny_bundle_dir), *base, "--no-resume") == 0
    b = load_bundle(out)
    assert (b.info.num_ws, b.info.w_dim) == (8, 64) and b.info.trained["predictor"]
    # the other generator's checkpoints are gone: a later resume cannot pick up its step 3
    ckpts = sorted(p.name for p in (out / "runs" / "adapt" / "checkpoints").glob("*.json"))
    assert ckpts == ["ckpt-00000001.json", "ckpt-00000002.json"]
