"""decode_audio: good files in every format decode to the right shape, rate and values; the
bad-audio matrix is rejected with one AudioDecodeError naming the file and the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audio_fixtures import pcm16, peak_frequency, ramp, tone, write_m4a, write_sf, write_wav_raw
from vjapp.audio import AudioDecodeError, DecodedAudio, decode_audio, resample, to_mono, validate_samples

SR = 44_100


# ------------------------------------------------------------------------------ good files
def test_wav_pcm16_stereo_roundtrip(tmp_path: Path):
    x = tone(SR, 0.25, 440, channels=2)
    path = write_sf(tmp_path / "a.wav", x, SR, "WAV", "PCM_16")
    out = decode_audio(path)
    assert isinstance(out, DecodedAudio)
    assert out.samples.dtype == np.float32 and out.samples.shape == x.shape
    assert out.sample_rate == SR and out.path == str(path)
    np.testing.assert_allclose(out.samples, x, atol=1.0 / 32767 + 1e-6)
    assert out.duration == pytest.approx(0.25)


def test_float_wav_is_bit_exact(tmp_path: Path):
    x = ramp(1000, channels=3)
    path = write_sf(tmp_path / "f.wav", x, 48_000, "WAV", "FLOAT")
    out = decode_audio(path)
    np.testing.assert_array_equal(out.samples, x)
    assert (out.sample_rate, out.channels, out.frames) == (48_000, 3, 1000)


def test_flac_is_lossless(tmp_path: Path):
    x = tone(22_050, 0.2, 1000, channels=1)
    path = write_sf(tmp_path / "a.flac", x, 22_050, "FLAC", "PCM_24")
    out = decode_audio(path)
    assert out.samples.shape == (x.shape[0], 1) and out.sample_rate == 22_050
    np.testing.assert_allclose(out.samples, x, atol=2.0 / 2**23)


@pytest.mark.parametrize(
    "fmt, subtype, ext",
    [("OGG", "VORBIS", "ogg"), ("MP3", "MPEG_LAYER_III", "mp3")],
)
def test_lossy_formats_keep_pitch_and_level(tmp_path: Path, fmt, subtype, ext):
    if subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"this libsndfile cannot write {fmt}/{subtype}")
    x = tone(SR, 1.0, 440, channels=2)
    path = write_sf(tmp_path / f"a.{ext}", x, SR, fmt, subtype)
    out = decode_audio(path)
    assert out.sample_rate == SR and out.channels == 2
    assert abs(out.frames - x.shape[0]) < 0.05 * SR  # codec padding only
    mid = out.samples[SR // 4 : 3 * SR // 4]
    assert peak_frequency(mid[:, 0], SR) == pytest.approx(440, abs=3)
    rms = float(np.sqrt(np.mean(mid**2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.05)
    assert np.corrcoef(mid[:, 0], mid[:, 1])[0, 1] < -0.99  # channels kept apart (and in order)
    assert np.all(np.abs(out.samples) <= 1.0)


def test_m4a_goes_through_pyav(tmp_path: Path):
    x = tone(SR, 1.0, 440, channels=2)
    path = write_m4a(tmp_path / "a.m4a", x, SR)
    with pytest.raises(sf.LibsndfileError):
        sf.info(str(path))  # precondition: soundfile cannot read it
    out = decode_audio(path)
    assert out.sample_rate == SR and out.channels == 2
    assert abs(out.frames - SR) < 3 * 1024  # AAC priming/padding
    mid = out.samples[SR // 4 : 3 * SR // 4]
    assert peak_frequency(mid[:, 1], SR) == pytest.approx(440, abs=3)
    assert float(np.sqrt(np.mean(mid**2))) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


def test_small_overshoot_is_clipped(tmp_path: Path):
    x = tone(SR, 0.1, 440, amp=1.2)
    out = decode_audio(write_sf(tmp_path / "hot.wav", x, SR, "WAV", "FLOAT"))
    assert float(out.samples.max()) == 1.0 and float(out.samples.min()) == -1.0


def test_edge_rates_and_channels_are_accepted(tmp_path: Path):
    for rate, ch in [(8_000, 1), (384_000, 1), (SR, 32)]:
        x = np.zeros((64, ch), np.float32)
        path = write_wav_raw(tmp_path / f"ok_{rate}_{ch}.wav", rate, ch, pcm16(x))
        out = decode_audio(path)
        assert (out.sample_rate, out.channels, out.frames) == (rate, ch, 64)


# ------------------------------------------------------------------------------ bad files
def _float_wav(tmp_path: Path, name: str, values: list[float]) -> Path:
    data = np.array(values, np.float32).tobytes()
    return write_wav_raw(tmp_path / name, SR, 1, data, bits=32, float_format=True)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_CASES = {
    "nan": (lambda d: _float_wav(d, "nan.wav", [0.0, float("nan"), 0.5]), "NaN"),
    "inf": (lambda d: _float_wav(d, "inf.wav", [0.0, float("inf"), -0.5]), "infinite"),
    "big": (lambda d: _float_wav(d, "big.wav", [0.0, 3.0]), "outside [-1, 1]"),
    "zero_rate": (lambda d: write_wav_raw(d / "zr.wav", 0, 1, b"\0" * 200), "sample rate 0"),
    "zero_channels": (lambda d: write_wav_raw(d / "zc.wav", SR, 0, b"\0" * 200), "0 channels"),
    "empty_file": (lambda d: _write(d / "empty.wav", b""), "empty"),
    "no_frames": (lambda d: write_wav_raw(d / "noframes.wav", SR, 1, b""), "empty"),
    "truncated_wav": (
        lambda d: write_wav_raw(d / "trunc.wav", SR, 2, b"\0" * 4000, declared_data_bytes=88200),
        "truncated",
    ),
    "random_bytes_wav": (
        lambda d: _write(d / "rand.wav", np.random.default_rng(0).bytes(4096)),
        "not a readable audio file",
    ),
    "random_bytes_bin": (
        lambda d: _write(d / "rand.bin", np.random.default_rng(1).bytes(4096)),
        "not a readable audio file",
    ),
    "text_as_mp3": (
        lambda d: _write(d / "notes.mp3", b"this is not audio\n" * 50),
        "not a readable audio file",
    ),
    "33_channels": (lambda d: write_wav_raw(d / "c33.wav", SR, 33, b"\0" * 33 * 2 * 10), "33 channels"),
    "4_khz": (lambda d: write_wav_raw(d / "r4k.wav", 4_000, 1, b"\0" * 200), "4000 Hz"),
    "400_khz": (lambda d: write_wav_raw(d / "r400k.wav", 400_000, 1, b"\0" * 200), "400000 Hz"),
    "missing": (lambda d: d / "nope.wav", "not found"),
    "directory": (lambda d: d, "not a regular file"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_audio_is_rejected_with_a_clear_error(tmp_path: Path, case: str):
    make, problem = BAD_CASES[case]
    path = make(tmp_path)
    with pytest.raises(AudioDecodeError) as info:
        decode_audio(path)
    msg = str(info.value)
    assert isinstance(path, Path)
    assert str(path) in msg, msg
    assert problem in msg, msg
    assert isinstance(info.value, ValueError)


def test_truncated_flac_is_rejected(tmp_path: Path):
    path = write_sf(tmp_path / "a.flac", tone(SR, 1.0, 440), SR, "FLAC")
    data = path.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioDecodeError, match="cut.flac"):
        decode_audio(cut)


def test_truncated_mp3_is_rejected(tmp_path: Path):
    if "MPEG_LAYER_III" not in sf.available_subtypes("MP3"):
        pytest.skip("this libsndfile cannot write MP3")
    path = write_sf(tmp_path / "a.mp3", tone(SR, 2.0, 440), SR, "MP3", "MPEG_LAYER_III")
    data = path.read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioDecodeError, match="truncated"):
        decode_audio(cut)


def test_truncated_m4a_is_rejected(tmp_path: Path):
    path = write_m4a(tmp_path / "a.m4a", tone(SR, 1.0, 440, channels=2), SR)
    data = path.read_bytes()
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(AudioDecodeError, match="cut.m4a"):
        decode_audio(cut)


def test_validate_samples_checks_arrays_too():
    with pytest.raises(AudioDecodeError, match="NaN"):
        validate_samples(np.array([0.0, np.nan]), SR)
    with pytest.raises(AudioDecodeError, match="empty"):
        validate_samples(np.zeros((0, 2)), SR)
    out = validate_samples(np.array([0.25, -0.5], np.float64), 16_000)
    assert out.samples.dtype == np.float32 and out.samples.shape == (2, 1)


# ------------------------------------------------------------------------------ transforms
def test_to_mono_averages_channels():
    x = np.array([[1.0, 0.0], [0.5, -0.5]], np.float32)
    np.testing.assert_array_equal(to_mono(x), np.array([0.5, 0.0], np.float32))
    m = np.arange(4, dtype=np.float32)
    assert to_mono(m) is m
    np.testing.assert_array_equal(to_mono(m[:, None]), m)
    with pytest.raises(ValueError):
        to_mono(np.zeros((2, 2, 2)))


@pytest.mark.parametrize("src, dst", [(48_000, 16_000), (44_100, 22_050), (22_050, 44_100), (44_100, 48_000)])
def test_resample_keeps_pitch_and_length(src, dst):
    x = tone(src, 1.0, 1000, channels=2)
    y = resample(x, src, dst)
    assert y.dtype == np.float32 and y.shape[1] == 2
    assert y.shape[0] == pytest.approx(round(x.shape[0] * dst / src), abs=1)
    assert peak_frequency(y[:, 0], dst) == pytest.approx(1000, abs=2)
    mid = y[dst // 10 : -dst // 10]
    assert float(np.abs(mid).max()) == pytest.approx(0.5, abs=0.01)
    mono = resample(x[:, 0], src, dst)
    assert mono.ndim == 1 and mono.shape[0] == y.shape[0]


def test_resample_removes_content_above_the_new_nyquist():
    x = tone(48_000, 1.0, 12_000)[:, 0]  # above 8 kHz: must vanish at 16 kHz, not alias to 4 kHz
    y = resample(x, 48_000, 16_000)
    assert float(np.abs(y[1600:-1600]).max()) < 0.01


def test_resample_same_rate_and_bad_rates():
    x = np.ones(10, np.float32)
    assert resample(x, SR, SR) is x
    for bad in (0, -1, float("nan")):
        with pytest.raises(ValueError, match="positive rate"):
            resample(x, bad, SR)
