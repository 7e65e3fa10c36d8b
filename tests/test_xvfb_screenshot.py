"""``vjapp gui`` as a real X11 program: start Xvfb, run the app for a few seconds with the xcb
platform, and check the screenshot of its output window shows a picture (not a blank window)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

pytestmark = pytest.mark.skipif(shutil.which("Xvfb") is None,
                                reason="Xvfb is not installed (apt-get install xvfb xauth; setup.sh does)")


@pytest.fixture
def xvfb_display():
    """A private Xvfb server on a display number it picks itself (-displayfd): no clashes."""
    read_fd, write_fd = os.pipe()
    proc = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1024x768x24", "-nolisten", "tcp", "-noreset"],
        pass_fds=(write_fd,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    os.close(write_fd)
    try:
        with os.fdopen(read_fd) as f:
            number = f.readline().strip()
        if not number.isdigit():
            err = proc.stderr.read().decode(errors="replace") if proc.poll() is not None else ""
            pytest.skip(f"Xvfb did not start: {err.strip()[:300]}")
        yield f":{number}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _gui_command() -> list[str]:
    """``python -m vjapp gui`` once the CLI has the subcommand; the gui module's own parser before."""
    from vjapp import cli

    if "gui" in getattr(cli, "SUBCOMMANDS", {}):
        return [sys.executable, "-m", "vjapp", "gui"]
    runner = ("import argparse, sys; from vjapp import gui; p = argparse.ArgumentParser(); gui.add_arguments(p); "
              "sys.exit(gui.run(p.parse_args(sys.argv[1:])))")
    return [sys.executable, "-c", runner]


def test_gui_under_xvfb_writes_a_screenshot_with_a_picture(xvfb_display, tiny_bundle_dir, tmp_path):
    sr = 16000
    t = np.arange(6 * sr) / sr
    sf.write(tmp_path / "tone.wav", (0.3 * np.sin(2 * np.pi * 330 * t) * np.sin(2 * np.pi * 0.7 * t)).astype(np.float32), sr)
    png = tmp_path / "output.png"
    env = dict(os.environ, QT_QPA_PLATFORM="xcb", DISPLAY=xvfb_display, XDG_RUNTIME_DIR=str(tmp_path),
               XDG_CONFIG_HOME=str(tmp_path / "config"), HOME=str(tmp_path))
    env.pop("WAYLAND_DISPLAY", None)
    cmd = _gui_command() + [
        "--windowed", "--quit-after", "4", "--screenshot", str(png), "--bundle", str(tiny_bundle_dir),
        "--audio", str(tmp_path / "tone.wav"), "--mute", "--osc-port", "0", "--threads", "1",
        "--settings", str(tmp_path / "settings.ini"), "--data-dir", str(tmp_path / "data"),
        "--record-dir", str(tmp_path / "rec"),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    assert png.is_file(), done.stderr[-3000:]

    from PyQt6.QtGui import QImage

    img = QImage(str(png)).convertToFormat(QImage.Format.Format_RGB888)
    assert img.width() >= 160 and img.height() >= 120
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    rows = np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine())
    pixels = rows[:, : img.width() * 3].reshape(img.height(), img.width(), 3)
    colours = np.unique(pixels.reshape(-1, 3)[::7], axis=0)
    assert pixels.std() > 10, f"blank screenshot (std {pixels.std():.1f})"
    assert len(colours) > 50, f"only {len(colours)} colours: not a generated picture"
    centre = pixels[pixels.shape[0] // 4: 3 * pixels.shape[0] // 4, pixels.shape[1] // 4: 3 * pixels.shape[1] // 4]
    assert centre.std() > 5  # the picture is in the middle (fit), not only at the edges
