"""``vjapp render`` stopped by a signal, as a user stops it: a real child process gets SIGINT
(Ctrl-C) or SIGTERM (a service manager, ``kill``) mid-render. It must leave a playable MP4 of what
was rendered (or no file), say so in one line without a traceback, and exit 128 + the signal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory) -> Path:
    """20 s of pulsing noise and a tone at 22.05 kHz stereo."""
    sr = 22050
    t = np.arange(20 * sr) / sr
    rng = np.random.default_rng(0)
    x = 0.3 * np.sin(2 * np.pi * 330 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0) + 0.05 * rng.standard_normal(t.size)
    path = tmp_path_factory.mktemp("audio") / "twenty.wav"
    sf.write(path, np.stack([x, x], axis=1).astype(np.float32), sr)
    return path


def _start_render(wav: Path, out: Path, bundle: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "vjapp", "render", str(wav), "-o", str(out), "--bundle", str(bundle),
         "--fps", "30", "--size", "64", "--dtype", "fp32", "--device", "cpu", "--quiet"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_rendering(proc: subprocess.Popen, out: Path, timeout: float = 120.0) -> None:
    """Until the file being written (``OUT.partial``, or OUT itself) holds encoded frames."""
    partial = out.with_name(out.name + ".partial")
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"render ended before the signal (rc {proc.returncode}): {err[-2000:]}")
        if any(p.exists() and p.stat().st_size > 20_000 for p in (partial, out)):
            time.sleep(0.3)
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the render never started writing")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_mid_render_leaves_a_playable_file_and_one_line(long_wav, tiny_bundle_dir, tmp_path, sig):
    import av

    out = tmp_path / "show.mp4"
    proc = _start_render(long_wav, out, tiny_bundle_dir)
    _wait_rendering(proc, out)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the render did not stop within 60 s of the signal")
    assert proc.returncode == 128 + sig, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("vjapp render: interrupted at ") and str(out) in lines[0], lines[0]
    assert not out.with_name(out.name + ".partial").exists()
    # The file holds what was rendered: video frames and the audio under them, and it plays.
    with av.open(str(out)) as c:
        assert c.streams.video and c.streams.audio
        frames = sum(1 for _ in c.decode(video=0))
    with av.open(str(out)) as c:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    assert 0 < frames < 20 * 30
    assert np.abs(audio).max() > 0.05
    said = float(lines[0].split("(playable, ")[1].split(" s)")[0])
    assert said == pytest.approx(frames / 30, abs=0.05)
