"""The torch log-mel against librosa, and the cheap reactivity features."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from model.audio_features import (
    LogMel,
    MelConfig,
    band_energies,
    mel_filterbank,
    onset_strength,
    rms_loudness,
)

librosa = pytest.importorskip("librosa")


def _test_signal(n: int, sr: int, seed: int = 0) -> np.ndarray:
    """Noise + a chirp + a click, float32 in [-1, 1]: broadband, with structure in time."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    x = 0.05 * rng.standard_normal(n) + 0.5 * np.sin(2 * np.pi * (200 + 2000 * t) * t)
    x[n // 3 : n // 3 + 200] += 0.4
    return np.clip(x, -1, 1).astype(np.float32)


def _librosa_logmel(y: np.ndarray, c: MelConfig) -> np.ndarray:
    s = librosa.feature.melspectrogram(
        y=y, sr=c.sample_rate, n_fft=c.n_fft, hop_length=c.hop_length, n_mels=c.n_mels,
        fmin=c.f_min, fmax=c.f_max, htk=c.htk,
    )
    return librosa.power_to_db(s, ref=np.max, top_db=c.top_db) / c.norm_scale + 1.0


@pytest.mark.parametrize(
    "sr,n_fft,n_mels,fmin,fmax,htk",
    [(44100, 2048, 128, 0.0, None, False), (22050, 1024, 64, 30.0, 8000.0, False), (16000, 512, 40, 0.0, None, True)],
)
def test_filterbank_matches_librosa(sr, n_fft, n_mels, fmin, fmax, htk):
    ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax, htk)
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=htk)
    assert ours.shape == ref.shape == (n_mels, n_fft // 2 + 1)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-8)
    assert not ours.flags.writeable  # cached: callers must not be able to corrupt it


def test_logmel_matches_librosa_papers_defaults():
    c = MelConfig()
    assert (c.sample_rate, c.n_fft, c.hop_length, c.n_mels, c.top_db) == (44100, 2048, 512, 128, 80.0)
    batch = np.stack([_test_signal(22050, c.sample_rate, seed) for seed in range(2)])
    batch[1] *= 0.01  # a quiet item: ref=max makes it look the same as a loud one
    ours = LogMel(c)(torch.from_numpy(batch))
    assert ours.shape == (2, 128, c.num_frames(22050))
    for i in range(2):
        ref = _librosa_logmel(batch[i], c)
        assert np.abs(ours[i].numpy() - ref).max() < 1e-3
    assert float(ours.min()) >= 0.0 and float(ours.max()) <= 1.0 + 1e-6


@pytest.mark.filterwarnings("ignore:n_fft=.*too large:UserWarning")
@pytest.mark.parametrize("n", [1, 300, 4097])
def test_logmel_matches_librosa_other_settings_and_lengths(n):
    c = MelConfig(sample_rate=22050, n_fft=1024, hop_length=256, n_mels=64, f_min=20.0, f_max=10000.0)
    y = _test_signal(n, c.sample_rate)
    ours = LogMel(c)(torch.from_numpy(y))  # 1-D in -> [n_mels, frames] out
    ref = _librosa_logmel(y, c)
    assert ours.shape == ref.shape == (64, 1 + n // 256)
    assert np.abs(ours.numpy() - ref).max() < 1e-3


def test_silence_and_fixed_reference():
    c = MelConfig(sample_rate=16000, n_fft=512, hop_length=128, n_mels=32)
    silence = torch.zeros(1, 4000)
    # ref=max (the papers'): digital silence is a flat 1.0, as librosa gives.
    assert torch.all(LogMel(c)(silence) == 1.0)
    fixed = LogMel(c.replace(ref_power=1.0))
    assert torch.all(fixed(silence) == 0.0)  # fixed reference: silence is the floor
    t = torch.arange(4000) / 16000
    loud = torch.sin(2 * np.pi * 1000 * t)[None]
    quiet = 0.01 * loud
    # With a fixed reference loudness survives: the quiet tone reads 40 dB (0.5) lower at its peak.
    diff = fixed(loud).amax() - fixed(quiet).amax()
    assert abs(float(diff) - 40.0 / 80.0) < 1e-3
    # With ref=max it does not.
    assert torch.allclose(LogMel(c)(loud), LogMel(c)(quiet), atol=1e-4)


def test_logmel_rejects_bad_input():
    m = LogMel(MelConfig(sample_rate=16000, n_fft=256, hop_length=64, n_mels=16))
    with pytest.raises(ValueError, match="samples"):
        m(torch.zeros(1, 2, 100))
    with pytest.raises(ValueError, match="empty"):
        m(torch.zeros(1, 0))
    with pytest.raises(TypeError, match="floating"):
        m(torch.zeros(1, 100, dtype=torch.int16))
    with pytest.raises(ValueError, match="f_max"):
        MelConfig(sample_rate=16000, f_max=9000.0)
    with pytest.raises(ValueError, match="n_mels"):
        MelConfig(n_mels=0)


def test_model_package_does_not_import_librosa():
    code = (
        "import sys, model.audio_features, model.audio_encoder, model.sound_inversion, "
        "model.latent_rnn, model.clip, model.bundle; "
        "bad = [m for m in ('librosa', 'vjapp', 'training', 'open_clip') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_rms_loudness():
    sr = 8000
    t = np.arange(sr) / sr
    sine = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    db = rms_loudness(sine)
    assert isinstance(db, np.ndarray)  # numpy in, numpy out
    assert abs(float(db) - 20 * np.log10(1 / np.sqrt(2))) < 1e-3  # full-scale sine: -3.01 dBFS
    lin = rms_loudness(torch.from_numpy(np.stack([sine, 0.5 * sine])), db=False)
    assert isinstance(lin, torch.Tensor) and lin.shape == (2,)
    assert torch.allclose(lin, torch.tensor([1 / np.sqrt(2), 0.5 / np.sqrt(2)], dtype=torch.float32), atol=1e-4)
    assert float(rms_loudness(np.zeros(100, np.float32))) == pytest.approx(-200.0)


def test_band_energies_find_the_band():
    sr, n = 16000, 4096
    t = np.arange(n) / sr
    tones = np.stack([np.sin(2 * np.pi * f * t) for f in (100.0, 1000.0, 6000.0)]).astype(np.float32)
    e = band_energies(tones, sr)  # default low / mid / high
    assert isinstance(e, np.ndarray) and e.shape == (3, 3)
    assert list(np.argmax(e, axis=1)) == [0, 1, 2]
    custom = band_energies(torch.from_numpy(tones), sr, edges=(0, 500, None), db=False)
    assert custom.shape == (3, 2)
    with pytest.raises(ValueError, match="edges"):
        band_energies(tones, sr, edges=(1000, 500))


def test_onset_strength_peaks_at_onset():
    mel = torch.zeros(2, 8, 20)
    mel[:, :, 12:] = 1.0  # energy switches on at frame 12
    flux = onset_strength(mel)
    assert flux.shape == (2, 20)
    assert int(flux[0].argmax()) == 12 and float(flux[0, 12]) == 1.0
    assert float(flux[0].sum()) == 1.0  # nothing else rises
    assert isinstance(onset_strength(mel.numpy()), np.ndarray)


@pytest.mark.requires_cuda
def test_logmel_runs_on_the_inputs_device():
    c = MelConfig()
    y = torch.from_numpy(np.stack([_test_signal(22050, c.sample_rate, s) for s in range(2)]))
    m = LogMel(c)
    cpu = m(y)
    gpu = m(y.cuda())  # buffers follow the input
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, atol=1e-4)
