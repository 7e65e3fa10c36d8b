"""Long files play from disk, not from memory: a 32-minute FLAC opened by the file player in a
child process (its own peak RSS) raises the peak by a few MB, not by the file's decoded size,
and a seek to 25:00 puts that audio in the ring at once. Blocks read through the stream equal
the whole-file decode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vjapp.audio import AudioDecodeError, decode_audio
from vjapp.audio.stream import BadBlockError, open_audio

ROOT = Path(__file__).parents[1]
LONG_SR = 16_000
LONG_MINUTES = 32


def write_long_flac(path: Path, minutes: float, sr: int) -> Path:
    """Noise and a tone whose pitch follows the time (so a position can be recognised), written
    in one-minute blocks: the test never holds the file in memory either."""
    rng = np.random.default_rng(1)
    with sf.SoundFile(path, "w", sr, 1, format="FLAC", subtype="PCM_16") as f:
        for m in range(int(minutes)):
            t = np.arange(60 * sr) / sr
            x = 0.4 * np.sin(2 * np.pi * (200 + 20 * m) * t) + 0.02 * rng.standard_normal(t.size)
            f.write(x.astype(np.float32))
    return path


@pytest.fixture(scope="module")
def long_flac(tmp_path_factory) -> Path:
    return write_long_flac(tmp_path_factory.mktemp("long") / "set.flac", LONG_MINUTES, LONG_SR)


CHILD = r"""
import json, sys, time
import numpy as np, soundfile as sf
from vjapp.audio import FilePlayer

def hwm_mb():  # peak resident set size (as ru_maxrss), resettable
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024

path = sys.argv[1]
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # start the peak here: the imports (torch) peaked higher than a decode would
base = hwm_mb()
t0 = time.perf_counter()
player = FilePlayer(path, play_audio=False, blocksize=512)
player.start()
while player.ring.write_index == 0:
    time.sleep(0.001)
first_audio = time.perf_counter() - t0
time.sleep(0.5)
t1 = time.perf_counter()
player.seek(25 * 60)
w = player.ring.write_index
target = 25 * 60 * player.sample_rate
deadline = t1 + 2.0
got = np.zeros(0, np.float32)
while time.perf_counter() < deadline:
    got = player.ring.read_since(w).data
    nz = np.flatnonzero(got)
    if nz.size and got.size - nz[0] >= 1024:
        break
    time.sleep(0.002)
seek_s = time.perf_counter() - t1
player.stop()
ref = sf.read(path, start=target, frames=4096, dtype="float32")[0]
start = int(np.flatnonzero(got)[0]) if np.flatnonzero(got).size else -1
match = bool(start >= 0 and np.array_equal(got[start:start + 1024], ref[:1024]))
peak = hwm_mb()
print(json.dumps(dict(base_mb=base, peak_mb=peak, first_audio_s=first_audio,
                      seek_s=seek_s, match=match, position=player.position)))
"""


def test_long_file_plays_with_bounded_memory_and_seeks_at_once(long_flac):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-c", CHILD, str(long_flac)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(res.stdout.strip().splitlines()[-1])
    print("measured:", r)
    decoded_mb = LONG_MINUTES * 60 * LONG_SR * 4 / 2**20  # the whole file as float32: 117 MB
    assert r["peak_mb"] - r["base_mb"] < 30, r  # a whole-file decode adds > decoded_mb
    assert decoded_mb > 100
    assert r["first_audio_s"] < 0.5, r
    assert r["seek_s"] < 0.2, r
    assert r["match"], r  # the ring holds the file's audio at 25:00, sample for sample
    assert r["position"] >= 25 * 60


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
def test_blocks_equal_the_whole_decode(tmp_path, fmt):
    sr = 22050
    rng = np.random.default_rng(2)
    x = (0.1 * rng.standard_normal((3 * sr, 2))).clip(-1, 1).astype(np.float32)
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, x, sr, format=fmt)
    whole = decode_audio(path).samples
    with open_audio(path) as s:
        assert (s.sample_rate, s.channels, s.frames) == (sr, 2, whole.shape[0])
        blocks = [s.read(5000) for _ in range(whole.shape[0] // 5000 + 2)]
        np.testing.assert_array_equal(np.concatenate(blocks), whole)
        s.seek(40_000)
        np.testing.assert_array_equal(s.read(3000), whole[40_000:43_000])


def test_bad_blocks_and_truncation_name_the_file(tmp_path):
    sr = 8000
    x = np.zeros((4 * sr, 1), np.float32)
    x[3 * sr + 5] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(path, x, sr, subtype="FLOAT")
    with open_audio(path) as s:  # the first second is fine: it opens
        s.read(3 * sr)
        with pytest.raises(BadBlockError, match=r"nan\.wav: 1 NaN .* at 0:03\.000") as e:
            s.read(sr)
        assert e.value.frames == sr and s.position == 4 * sr
    full = tmp_path / "full.flac"
    sf.write(full, np.full((20 * sr, 1), 0.1, np.float32), sr, format="FLAC")
    cut = tmp_path / "cut.flac"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(AudioDecodeError, match=r"cut\.flac: (truncated|corrupt)"):
        with open_audio(cut) as s:
            while s.read(sr).shape[0] == sr:
                pass
    with pytest.raises(AudioDecodeError, match="nope.wav: file not found"):
        open_audio(tmp_path / "nope.wav")
