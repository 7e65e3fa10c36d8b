"""What ``vjapp render`` puts in the soundtrack and says in its help."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from vjapp.cli import main


def test_six_channels_all_reach_the_soundtrack(tiny_bundle_dir, tmp_path):
    """A 5.1 file whose sound is only in channels 3-6 (centre, LFE, surrounds): the MP4's stereo
    soundtrack carries it (it was channels 1-2 only: silence)."""
    import av

    sr = 48000
    t = np.arange(int(1.5 * sr)) / sr
    x = np.zeros((t.size, 6), np.float32)
    for c, f in zip(range(2, 6), (300, 60, 500, 700)):
        x[:, c] = 0.5 * np.sin(2 * np.pi * f * t)
    wav = tmp_path / "surround.wav"
    sf.write(wav, x, sr)
    out = tmp_path / "out.mp4"
    assert main(["render", str(wav), "-o", str(out), "--bundle", str(tiny_bundle_dir), "--fps", "10",
                 "--size", "32", "--quiet", "--dtype", "fp32"]) == 0
    with av.open(str(out)) as c:
        assert c.streams.audio[0].channels == 2
        audio = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)  # [2, n]
    rms = np.sqrt((audio[:, sr // 4: -sr // 4] ** 2).mean(axis=1))
    assert (rms > 0.05).all(), rms  # both sides sound


def test_render_help_has_no_none_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["render", "--help"])
    text = capsys.readouterr().out
    assert "(default: None)" not in text
    assert "the embedded default" in text and "(default: 30.0)" in text
