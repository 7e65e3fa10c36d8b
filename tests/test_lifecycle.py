"""How the app starts and ends, as a user meets it: bad options stop it at once with one line,
no display renders to a file named after the audio without overwriting, Ctrl+C and SIGTERM stop
a real running app cleanly (recording finished, window state saved), and the output window
opens beside the control window, or on the second screen."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PyQt6.QtCore import QRect, QSize

from vjapp import cli, gui
from vjapp.gui import default_args
from vjapp.output.mp4 import probe_mp4
from vjapp.ui.output_window import place_beside

ROOT = Path(__file__).parents[1]


def _tone(path: Path, seconds: float = 3.0, sr: int = 16000) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 2 * t)) / 2).astype(np.float32), sr)
    return path


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def _vjapp(*argv: str, cwd: Path = ROOT, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vjapp", *argv], cwd=cwd, env=_child_env(**env),
                          capture_output=True, text=True, timeout=timeout)


# ====================================================================== options (item 5)
@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "a-file").write_text("not a folder")
    return tmp_path


BAD_OPTIONS = [
    (["--osc-port", "99999"], "--osc-port"),
    (["--osc-port", "-1"], "--osc-port"),
    (["--osc-port", "nine"], "--osc-port"),
    (["--osc-host", "not a host!"], "--osc-host"),
    (["--osc-feedback", "127.0.0.1"], "--osc-feedback"),
    (["--screen", "-1"], "--screen"),
    (["--threads", "-2"], "--threads"),
    (["--size", "100"], "--size"),
    (["--device", "gpu"], "--device"),
    (["--bundle", "{home}/no-such-bundle"], "--bundle"),
    (["--bundle", "{home}"], "--bundle"),  # a folder, but no bundle.json
    (["--audio", "{home}/missing.wav"], "--audio"),
    (["--audio", "{home}"], "--audio"),
    (["--settings", "{home}/a-file/s.ini"], "--settings"),
    (["--settings", "{home}"], "--settings"),
    (["--record-dir", "{home}/a-file/rec"], "--record-dir"),
    (["--data-dir", "{home}/a-file"], "--data-dir"),
    (["--screenshot", "{home}/a-file/shot.png"], "--screenshot"),
    (["-o", "{home}/a-file/x.mp4"], "-o/--output"),
]


@pytest.mark.parametrize(("argv", "flag"), BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_each_bad_option_is_refused_before_anything_starts(argv, flag, home, capsys):
    argv = [a.format(home=home) for a in argv]
    safe = ["--quit-after", "0", "--mute", "--no-osc", "--settings", str(home / "s.ini"),
            "--data-dir", str(home / "data"), "--record-dir", str(home / "rec")]
    with pytest.raises(SystemExit) as exit_:
        cli.main(["gui", *safe, *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"vjapp gui: error: argument {flag}: "), err
    assert not (home / "rec").exists() and not (home / "data").exists()


def test_options_set_in_code_are_checked_too(tmp_path, capsys):
    safe = dict(quit_after=0, mute=True, settings=str(tmp_path / "s.ini"), data_dir=str(tmp_path / "data"))
    assert gui.run(default_args(osc_port=99999, **safe)) == 2
    assert gui.run(default_args(audio=str(tmp_path / "missing.wav"), **safe)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "vjapp gui: error: argument --osc-port: a UDP port is 0..65535 (0: any free port), got 99999",
        f"vjapp gui: error: argument --audio: no such audio file: {tmp_path / 'missing.wav'}",
    ]
    good = default_args(osc_port="9001", screen="1", threads="2")
    gui.validate(good)
    assert (good.osc_port, good.screen, good.threads) == (9001, 1, 2)


def test_bad_port_or_missing_audio_end_at_once_with_and_without_a_display(tmp_path):
    """The issue's cases, as a user runs them: no traceback after seconds of loading, no demo
    render started instead, nothing written."""
    for env in ({"QT_QPA_PLATFORM": "offscreen"}, {}):
        for argv in (["--osc-port", "99999"], ["--audio", "missing.wav"]):
            t0 = time.monotonic()
            done = _vjapp(*argv, "--settings", str(tmp_path / "s.ini"), cwd=tmp_path, timeout=30, **env)
            took = time.monotonic() - t0
            assert done.returncode == 2, (argv, env, done.stderr[-2000:])
            assert "Traceback" not in done.stderr and "rendering" not in done.stderr
            assert done.stderr.strip().splitlines()[-1].startswith("vjapp gui: error: argument "), done.stderr
            assert took < 15, f"{argv} took {took:.1f} s to be refused"
    assert not (tmp_path / "out").exists() and not (tmp_path / "s.ini").exists()


# ====================================================================== no display (item 6)
@pytest.fixture
def no_display(monkeypatch, tmp_path):
    monkeypatch.setattr(gui, "has_display", lambda: False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _render_argv(tiny_bundle_dir: Path, *extra: str) -> list[str]:
    return ["gui", "--bundle", str(tiny_bundle_dir), "--device", "cpu", "--fps", "10", *extra]


def test_no_display_renders_to_a_file_named_after_the_audio_and_never_overwrites(no_display, tiny_bundle_dir,
                                                                                capsys):
    tone = _tone(no_display / "tone.wav", seconds=1.0)
    assert cli.main(_render_argv(tiny_bundle_dir, "--audio", str(tone))) == 0
    first = no_display / "out" / "tone.mp4"
    assert probe_mp4(first)["error"] is None
    assert not (no_display / "out" / "vjapp-demo.mp4").exists()
    before = first.read_bytes()
    capsys.readouterr()

    assert cli.main(_render_argv(tiny_bundle_dir, "--audio", str(tone))) == 0
    err = capsys.readouterr().err
    second = no_display / "out" / "tone-1.mp4"
    assert f"rendering {tone} to {Path('out') / 'tone-1.mp4'} ({Path('out') / 'tone.mp4'} exists and is kept)" in err
    assert first.read_bytes() == before and probe_mp4(second)["video"]["frames"] == 10

    chosen = no_display / "mine" / "clip.mp4"
    assert cli.main(_render_argv(tiny_bundle_dir, "--audio", str(tone), "-o", str(chosen))) == 0
    assert cli.main(_render_argv(tiny_bundle_dir, "--audio", str(tone), "-o", str(chosen))) == 0
    assert chosen.is_file() and (chosen.parent / "clip-1.mp4").is_file()
    assert cli.main(_render_argv(tiny_bundle_dir, "--audio", str(tone), "-o", str(chosen.parent))) == 0
    assert (chosen.parent / "tone.mp4").is_file()  # -o FOLDER: named after the audio, in it


def test_no_display_checks_the_audio_before_saying_it_renders(no_display, capsys):
    assert gui.run(default_args(audio=str(no_display / "missing.wav"))) == 2
    err = capsys.readouterr().err
    assert "rendering" not in err and "missing.wav" in err
    assert not (no_display / "out").exists()


# ====================================================================== signals (item 1)
def _wait_for_growing_file(folder: Path, proc: subprocess.Popen[str], timeout: float = 45) -> Path:
    """The recording in ``folder`` once it exists and has grown twice (frames are being written)."""
    deadline = time.monotonic() + timeout
    sizes: list[int] = []
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the app ended early ({proc.returncode}): {proc.communicate()[1][-3000:]}"
        found = sorted(folder.glob("*.mp4")) if folder.is_dir() else []
        if found:
            size = found[0].stat().st_size
            if not sizes or size > sizes[-1]:
                sizes.append(size)
            if len(sizes) >= 3:
                return found[0]
        time.sleep(0.25)
    proc.kill()
    raise AssertionError(f"no growing recording in {folder} after {timeout} s: {proc.communicate()[1][-3000:]}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_show_cleanly_and_finishes_the_recording(signum, tmp_path, tiny_bundle_dir):
    tone = _tone(tmp_path / "tone.wav", seconds=20.0)
    settings = tmp_path / "s.ini"
    argv = ["gui", "--windowed", "--audio", str(tone), "--record", "--record-dir", str(tmp_path / "rec"),
            "--settings", str(settings), "--data-dir", str(tmp_path / "data"), "--no-osc", "--mute",
            "--bundle", str(tiny_bundle_dir), "--threads", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "vjapp", *argv], cwd=ROOT,
                            env=_child_env(QT_QPA_PLATFORM="offscreen"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        recording = _wait_for_growing_file(tmp_path / "rec", proc)
        time.sleep(1.0)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signum, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert f"{signum.name}: stopping the show" in err
    info = probe_mp4(recording)
    assert info["error"] is None, info
    assert info["video"]["frames"] >= 10 and info["audio"] is not None
    assert settings.read_text().count("geometry") >= 2  # window state saved


@pytest.mark.parametrize("delay", [1.0, 3.0], ids=["importing", "loading"])
def test_ctrl_c_while_the_app_loads_ends_it_without_a_traceback(delay, tmp_path, tiny_bundle_dir):
    proc = subprocess.Popen([sys.executable, "-m", "vjapp", "gui", "--windowed", "--no-osc", "--mute",
                             "--bundle", str(tiny_bundle_dir), "--settings", str(tmp_path / "s.ini"),
                             "--data-dir", str(tmp_path / "data")],
                            cwd=ROOT, env=_child_env(QT_QPA_PLATFORM="offscreen"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "vjapp: interrupted" in err or "SIGINT: stopping the show" in err, err[-3000:]


# ====================================================================== placement (item 11)
def test_place_beside_keeps_the_output_off_the_control_window():
    screen = QRect(0, 0, 1920, 1080)
    size, least = QSize(644, 644), QSize(164, 124)
    # room on the right: beside it, level with its top
    assert place_beside(screen, QRect(0, 0, 1000, 800), size, least) == QRect(1008, 0, 644, 644)
    # control window on the right half: to its left
    assert place_beside(screen, QRect(1200, 100, 700, 800), size, least) == QRect(548, 100, 644, 644)
    # too little room for the whole window: narrowed (aspect kept) to the free side
    assert place_beside(screen, QRect(0, 0, 1500, 800), size, least) == QRect(1508, 0, 412, 412)
    # a second screen's area to the right of the first
    assert place_beside(QRect(1920, 0, 1280, 720), QRect(1920, 0, 800, 700), size, least) == QRect(2728, 0, 472, 472)
    # no room at all: inside the screen, overlapping as little as its size allows
    assert screen.contains(place_beside(screen, QRect(0, 0, 1900, 1000), size, least))


def test_the_output_window_opens_beside_the_control_window(qtbot, tmp_path, tiny_bundle_dir):
    from PyQt6.QtGui import QGuiApplication

    from vjapp.app import build_app

    ctx = build_app(default_args(bundle=str(tiny_bundle_dir), windowed=True, no_osc=True, mute=True, threads=1,
                                 settings=str(tmp_path / "s.ini"), data_dir=str(tmp_path / "data")))
    try:
        ctx.show()
        control, output = ctx.window.frameGeometry(), ctx.output.frameGeometry()
        area = QGuiApplication.primaryScreen().availableGeometry()
        assert not control.intersects(output), (control, output)
        assert area.contains(control) and area.contains(output), (area, control, output)
        assert output.width() >= 160
    finally:
        ctx.shutdown()


def test_the_output_window_opens_on_the_second_screen_when_there_is_one(tmp_path, tiny_bundle_dir):
    screens = tmp_path / "screens.json"
    screens.write_text(json.dumps({"screens": [
        {"name": "laptop", "x": 0, "y": 0, "width": 1920, "height": 1080},
        {"name": "projector", "x": 1920, "y": 0, "width": 1280, "height": 720}]}))
    script = f"""
import json
from vjapp.app import build_app
from vjapp.gui import default_args
ctx = build_app(default_args(bundle={str(tiny_bundle_dir)!r}, windowed=True, no_osc=True, mute=True, threads=1,
                             settings={str(tmp_path / 's.ini')!r}, data_dir={str(tmp_path / 'data')!r}))
ctx.show()
print(json.dumps([ctx.window.frameGeometry().getRect(), ctx.output.frameGeometry().getRect()]))
ctx.shutdown()
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=_child_env(QT_QPA_PLATFORM=f"offscreen:configfile={screens}"))
    assert done.returncode == 0, done.stderr[-3000:]
    control, output = (QRect(*r) for r in json.loads(done.stdout.strip().splitlines()[-1]))
    assert QRect(0, 0, 1920, 1080).contains(control)
    assert QRect(1920, 0, 1280, 720).contains(output), output
