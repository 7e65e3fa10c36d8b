"""``vjapp render`` and ``vjapp bench`` as a user runs them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from vjapp.cli import main
from vjapp.output.mp4 import probe_mp4


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    """2.1 s: silence, then a loud chord, at 44.1 kHz stereo."""
    sr = 44100
    t = np.arange(int(2.1 * sr)) / sr
    x = 0.5 * np.sin(2 * np.pi * 220 * t) * (t > 1.0)
    path = tmp_path_factory.mktemp("audio") / "in.wav"
    sf.write(path, np.stack([x, x * 0.5], axis=1).astype(np.float32), sr)
    return path


def test_render_writes_mp4_with_muxed_audio(wav, tiny_bundle_dir, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    rc = main(["render", str(wav), "-o", str(out), "--bundle", str(tiny_bundle_dir), "--fps", "20",
               "--size", "64", "--quiet", "--dtype", "fp32"])
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    info = probe_mp4(out)
    assert info["error"] is None
    video, audio = info["video"], info["audio"]
    assert video["codec"] == "h264" and audio["codec"] == "aac"
    assert (video["width"], video["height"]) == (64, 64)
    assert video["frames"] == 42  # round(2.1 s * 20 fps)
    assert video["first_frame_s"] == pytest.approx(0.0, abs=1e-6)
    assert abs(video["duration_s"] - 2.1) <= 1 / 20
    assert audio["sample_rate"] == 44100 and audio["channels"] == 2
    assert abs(audio["decoded_duration_s"] - 2.1) < 0.05


def test_render_motion_follows_the_sound(wav, tiny_bundle_dir, tmp_path):
    """Frames barely change during the silent first second and change when the chord starts."""
    import av

    out = tmp_path / "out.mp4"
    assert main(["render", str(wav), "-o", str(out), "--bundle", str(tiny_bundle_dir), "--fps", "20",
                 "--quiet", "--dtype", "fp32", "--gain", "3"]) == 0
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24").astype(np.float32) for f in c.decode(video=0)]
    diffs = [np.abs(b - a).mean() for a, b in zip(frames, frames[1:])]
    silent, loud = np.mean(diffs[2:18]), np.mean(diffs[24:40])
    assert loud > 2 * silent + 0.1


def _frames(path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24").astype(np.int16) for f in c.decode(video=0)]


def test_render_is_the_same_whatever_its_batch(wav, tiny_bundle_dir, tmp_path, monkeypatch):
    """A frame shows what live would at its time: the model is stepped one period past each frame,
    not past the end of the frame's synthesis batch (the interpolation would see keyframes live
    has not made yet), so one frame per call and the render's batches give the same video."""
    import vjapp.render as render

    assert render.frame_batch(32) == render.FRAME_BATCH > 1  # the tiny bundle renders in batches
    assert render.frame_batch(128) == 16 and render.frame_batch(512) == 1  # fewer for larger generators
    args = ["--bundle", str(tiny_bundle_dir), "--fps", "20", "--quiet", "--dtype", "fp32", "--gain", "3"]
    assert main(["render", str(wav), "-o", str(tmp_path / "batched.mp4"), *args]) == 0
    monkeypatch.setattr(render, "FRAME_BATCH_PIXELS", 1)  # one frame per synthesis call
    assert render.frame_batch(32) == 1
    assert main(["render", str(wav), "-o", str(tmp_path / "single.mp4"), *args]) == 0
    batched, single = _frames(tmp_path / "batched.mp4"), _frames(tmp_path / "single.mp4")
    assert len(batched) == len(single) == 42
    moving = max(np.abs(b - a).mean() for a, b in zip(single, single[1:]))
    assert moving > 2.0  # the chord moves the picture: the comparison below can see a difference
    worst = max(np.abs(a - b).mean() for a, b in zip(batched, single))
    # (stepping past the batch instead differed by 0.54 levels on a frame against 17.8 of motion)
    assert worst < 0.01 * moving, worst


def test_render_bad_input_is_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    rc = main(["render", str(bad), "-o", str(tmp_path / "o.mp4")])
    assert rc == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vjapp render: error:") and "bad.wav" in err[0]


def test_render_missing_bundle(wav, tmp_path, capsys):
    rc = main(["render", str(wav), "-o", str(tmp_path / "o.mp4"), "--bundle", str(tmp_path / "nope")])
    assert rc == 1
    assert "vjapp render: error:" in capsys.readouterr().err


def test_bench_prints_stage_figures(tiny_bundle_dir, capsys):
    rc = main(["bench", "--bundle", str(tiny_bundle_dir), "--frames", "10", "--warmup", "2", "--json",
               "--dtype", "fp32", "--latency-bursts", "3"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["fps"] > 0 and r["peak_rss_mb"] > 0
    for stage in ("mel", "encoder", "recurrent", "synthesis", "to_uint8"):
        assert r["stages_ms"][stage]["p50"] > 0
    # the reference and the fast synthesis, timed side by side in the same run
    syn = r["synthesis_ms_per_frame"]
    assert set(syn) == {"reference", "fast"} and all(set(syn[k]) == {"1", "4"} for k in syn)
    assert all(v > 0 for k in syn for v in syn[k].values())
    # the latency is measured on the live engine: bursts in, changed frames out
    (lat,) = r["latency"]
    assert lat["bursts"] == 3 and lat["first_change_ms"]["n"] >= 2
    assert 0 < lat["first_change_ms"]["median"] < 500
    rc = main(["bench", "--bundle", str(tiny_bundle_dir), "--frames", "5", "--warmup", "1", "--dtype", "fp32",
               "--latency-bursts", "0"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "frames per second" in text and "synthesis" in text
    assert "reference (plain fp32)" in text and "fast (float32)" in text


def test_bench_beat_prints_on_beat_figures(tiny_bundle_dir, capsys):
    rc = main(["bench", "--beat", "--bundle", str(tiny_bundle_dir), "--dtype", "fp32", "--json"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r["loops"]) == {"kick", "hat", "kick+hat+bass"}
    assert r["loops"]["kick"]["ratio"] > 2.0
    assert r["loops"]["hat"]["fine_motion"] > r["loops"]["hat"]["coarse_motion"]
    assert r["loudness"]["ratio"] < 1.0


def test_devices_lists_or_says_none(capsys):
    assert main(["devices", "--outputs"]) == 0
    out = capsys.readouterr().out
    assert "inputs" in out or "no audio input devices" in out


def test_render_threads_must_be_a_whole_number(wav, tmp_path, capsys):
    for bad in ("-1", "two"):
        with pytest.raises(SystemExit) as exc:
            main(["render", str(wav), "-o", str(tmp_path / "o.mp4"), "--threads", bad])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "--threads: must be a whole number >= 0" in err
    assert not (tmp_path / "o.mp4").exists()


def test_bench_random_generator_takes_a_channel_base(tmp_path, monkeypatch):
    """``--bundle random:RES:CHANNEL_BASE`` times a random generator of those widths (the issue's
    512 px, channel_base 16384 case); a malformed spec is one clear error."""
    from model.bundle import load_bundle
    from vjapp.bench import prepare_bundle

    monkeypatch.setenv("VJAPP_IMPORT_DIR", str(tmp_path))
    for bad in ("random:16:abc", "random:16:1024:2", "random:17"):
        with pytest.raises(ValueError, match="random:RES"):
            prepare_bundle(bad, atlas_samples=4)
    path = prepare_bundle("random:16:512", atlas_samples=4)
    G = load_bundle(path, parts=("generator",)).generator
    assert G.img_resolution == 16 and G.config.channel_base == 512
    assert G.synthesis.b16.conv1.out_channels == 32  # 512 / 16: the given base, not config-f's 512 cap
