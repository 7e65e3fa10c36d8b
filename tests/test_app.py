"""The whole desktop app, offscreen, with the real engine on the tiny bundle: frames reach the
output window, prompts and presets change them, the record button writes an MP4 with sound, OSC
over loopback moves the controls and the widgets, and bad inputs keep the show going."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PyQt6.QtCore import Qt

from vjapp.app import AppContext, demo_audio_path
from vjapp.gui import default_args
from vjapp.output.mp4 import probe_mp4


def _tone_file(path: Path, seconds: float = 6.0, sr: int = 16000) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(0)
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 1.5 * t)) / 2 + 0.05 * rng.standard_normal(t.size)
    sf.write(path, x.astype(np.float32), sr)
    return path


def _silent_file(path: Path, seconds: float = 6.0, sr: int = 16000) -> Path:
    sf.write(path, np.zeros(int(seconds * sr), np.float32), sr)
    return path


def _frame(ctx: AppContext) -> np.ndarray | None:
    img = ctx.output.newest_image()
    return None if img is None else img.copy()


def _wait_frames(qtbot, ctx: AppContext, n: int = 3, timeout: int = 30000) -> None:
    start = ctx.output.frames_shown
    qtbot.waitUntil(lambda: ctx.output.frames_shown >= start + n, timeout=timeout)


def _wait_change(qtbot, ctx: AppContext, reference: np.ndarray, timeout: int = 20000, min_diff: float = 2.0) -> np.ndarray:
    """Wait until the output shows a frame that differs from ``reference`` by ``min_diff`` on average."""
    def differs() -> bool:
        img = ctx.output.newest_image()
        return img is not None and float(np.abs(img.astype(int) - reference.astype(int)).mean()) > min_diff

    qtbot.waitUntil(differs, timeout=timeout)
    return _frame(ctx)


def _wait_still(qtbot, ctx: AppContext, timeout: int = 20000) -> np.ndarray:
    """Wait until two frames 0.3 s apart are the same (a crossfade has ended, silence holds still)."""
    deadline = time.monotonic() + timeout / 1000
    prev = _frame(ctx)
    while time.monotonic() < deadline:
        qtbot.wait(300)
        cur = _frame(ctx)
        if prev is not None and cur is not None and np.abs(cur.astype(int) - prev.astype(int)).max() <= 1:
            return cur
        prev = cur
    raise AssertionError("the picture never settled")


def test_default_app_plays_the_demo_audio_and_frames_reach_the_output(make_app, qtbot):
    assert demo_audio_path() is not None, "resources/demo must ship a demo audio file"
    ctx = make_app()
    assert ctx.source_key == "demo" and "demo audio" in ctx.source_view().description
    _wait_frames(qtbot, ctx, 5)
    first = _frame(ctx)
    assert first.shape == (32, 32, 3)
    _wait_change(qtbot, ctx, first, min_diff=0.5)  # the demo's sound moves the picture
    assert ctx.bridge.frames_taken >= 5
    # the window says honestly what it plays, and the scope sees the sound
    assert ctx.window.banner.isVisible() and "not fully trained" in ctx.window.banner.text()
    qtbot.waitUntil(lambda: ctx.window.scope.blocks_seen > 5 and ctx.window.scope.mel_view.image.image is not None,
                    timeout=10000)
    qtbot.waitUntil(lambda: "fps" in ctx.window.stats_label.text(), timeout=5000)
    assert "listening on 127.0.0.1:" in ctx.window.osc_label.text()


def test_prompt_and_preset_change_the_frames(make_app, qtbot, tmp_path):
    ctx = make_app(audio=str(_silent_file(tmp_path / "silence.wav")))
    _wait_frames(qtbot, ctx, 3)
    still = _wait_still(qtbot, ctx)  # silence: the picture holds still
    ctx.window.prompt_edit.setText("a volcano at night")
    qtbot.keyClick(ctx.window.prompt_edit, Qt.Key.Key_Return)
    assert ctx.controls.get()[1].prompt == "a volcano at night"
    _wait_change(qtbot, ctx, still)  # the prompt search finishes and crossfades to its latent
    prompted = _wait_still(qtbot, ctx)
    ctx.window.load_preset("neutral")  # prompt "" and the default look: back towards the seed
    assert ctx.current_preset == "neutral"
    _wait_change(qtbot, ctx, prompted)
    qtbot.waitUntil(lambda: ctx.window.prompt_edit.text() == "", timeout=3000)  # the widget follows


def test_record_button_writes_two_seconds_of_mp4_with_audio(make_app, qtbot, tmp_path):
    ctx = make_app(audio=str(_tone_file(tmp_path / "tone.wav")))
    _wait_frames(qtbot, ctx, 3)
    qtbot.mouseClick(ctx.window.record_button, Qt.MouseButton.LeftButton)
    assert ctx.recorder_status().recording
    qtbot.wait(2000)
    ctx.window.refresh_status()
    assert "REC" in ctx.window.record_label.text()
    qtbot.mouseClick(ctx.window.record_button, Qt.MouseButton.LeftButton)
    status = ctx.recorder_status()
    assert not status.recording and status.error is None
    info = probe_mp4(status.path)
    assert info["error"] is None
    assert info["video"]["codec"] == "h264" and (info["video"]["width"], info["video"]["height"]) == (32, 32)
    assert info["audio"] is not None and info["audio"]["sample_rate"] == 16000
    assert 1.5 <= info["video"]["duration_s"] <= 3.0
    assert 1.5 <= info["audio"]["decoded_duration_s"] <= 3.5
    assert info["video"]["frames"] >= 20
    assert Path(status.path).parent == tmp_path / "rec"


def test_osc_over_loopback_moves_the_controls_and_the_widgets(make_app, qtbot, tmp_path):
    from pythonosc.udp_client import SimpleUDPClient

    ctx = make_app(audio=str(_silent_file(tmp_path / "silence.wav")))
    client = SimpleUDPClient("127.0.0.1", ctx.osc.port)
    client.send_message("/vjapp/gain", 2.5)
    client.send_message("/vjapp/mix/coarse/strength", 0.25)
    client.send_message("/vjapp/seed", 4242)
    qtbot.waitUntil(lambda: ctx.controls.get()[1].seed == 4242, timeout=5000)
    c = ctx.controls.get()[1]
    assert c.gain == 2.5 and c.mix.coarse.strength == 0.25
    win = ctx.window
    qtbot.waitUntil(lambda: win._sliders["gain"].value_label.text() == "2.50", timeout=3000)
    assert win._sliders["mix.coarse.strength"].value() == pytest.approx(0.25)
    assert win.seed_spin.value() == 4242
    client.send_message("/vjapp/preset", "storm")  # an action: posted to the GUI thread
    qtbot.waitUntil(lambda: ctx.current_preset == "storm", timeout=5000)
    qtbot.waitUntil(lambda: win.prompt_edit.text() == "thunderstorm", timeout=3000)
    client.send_message("/vjapp/source/pause", 1)
    qtbot.waitUntil(lambda: ctx.source.paused, timeout=3000)
    win.refresh_status()
    assert "received" in win.osc_label.text() and ctx.osc.stats()["actions"] >= 2


def test_bad_inputs_keep_the_show_going(make_app, qtbot, tmp_path):
    busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    busy.bind(("127.0.0.1", 0))
    try:
        broken = tmp_path / "broken.wav"
        broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
        ctx = make_app(bundle=str(tmp_path / "no-such-bundle"), audio=str(broken), osc_port=busy.getsockname()[1])
        _wait_frames(qtbot, ctx, 3)  # still playing: the default bundle on the demo audio
        qtbot.waitUntil(lambda: len(ctx.window.messages) >= 3, timeout=5000)
        text = "\n".join(t for _, t in ctx.window.messages)
        assert "could not load bundle" in text and "no-such-bundle" in text
        assert "cannot play" in text and "broken.wav" in text
        assert "OSC is off" in text and ctx.osc is None
        assert ctx.source_key == "demo"
        # at run time: a bad bundle and a bad file leave the current ones playing
        ctx.open_bundle(str(tmp_path))
        qtbot.waitUntil(lambda: any("keeping the current one" in t for _, t in ctx.window.messages), timeout=10000)
        ctx.open_audio(str(broken))
        assert ctx.source_key == "demo"
        ctx.use_input("no such microphone")
        assert ctx.source_key == "demo"
        _wait_frames(qtbot, ctx, 3)
    finally:
        busy.close()


def test_imported_generator_plays_with_this_bundles_audio_models(make_app, qtbot, tmp_path, tiny_bundle_dir):
    import reference_nvidia as nv
    from model.stylegan2 import Generator, StyleGAN2Config, save_generator
    from nvidia_pickle import dump_nvidia_pickle, snapshot

    from model.bundle import read_bundle_info

    ctx = make_app(audio=str(_silent_file(tmp_path / "silence.wav")), atlas_samples=8)
    # W+ of another shape: a bundle without E_a/predictor (it plays with the rhythm layer and the atlas)
    other = Generator(StyleGAN2Config(z_dim=16, w_dim=16, mapping_layers=1, mapping_hidden_dim=16, resolution=16,
                                      channel_base=256, channel_max=16))
    stem = tmp_path / "other"
    save_generator(stem, other)
    info = read_bundle_info(ctx.combine_with_generator(str(stem)))
    assert (info.num_ws, info.w_dim) == (6, 16) and info.parts == ("generator", "clip", "audio_encoder")
    # a matching NVIDIA pickle: converted in a child process, then played as a bundle
    G = nv.randomize_(nv.Generator(z_dim=64, c_dim=0, w_dim=64, img_resolution=32, img_channels=3,
                                   mapping_kwargs=dict(num_layers=2),
                                   synthesis_kwargs=dict(channel_base=256, channel_max=32)), 3).eval()
    pkl = dump_nvidia_pickle(tmp_path / "network-snapshot.pkl", snapshot(G, D=None, G_ema=G))
    _wait_frames(qtbot, ctx, 2)
    before = _wait_still(qtbot, ctx)
    old_engine = ctx.engine
    ctx.window.choose_bundle_path(str(pkl))
    assert ctx.window.convert_progress.isVisible()
    qtbot.waitUntil(lambda: ctx.engine is not old_engine, timeout=60000)
    assert ctx.bundle.predictor is not None  # the same W+ shape: E_a and the predictor come along
    assert ctx.window.convert_progress.format() == "latent atlas %v / %m"  # the atlas builds meanwhile
    qtbot.waitUntil(lambda: ctx.atlas_state == "attached", timeout=60000)
    assert not ctx.window.convert_progress.isVisible()
    assert (tmp_path / "data" / "converted" / "network-snapshot.safetensors").is_file()
    assert ctx.bundle_path == tmp_path / "data" / "bundles" / "network-snapshot"
    assert ctx.bundle.info.trained["generator"] and "network-snapshot" in ctx.bundle.info.notes
    _wait_change(qtbot, ctx, before)  # another generator: another picture


def test_gui_run_quits_after_the_time_given_and_writes_a_screenshot(qapp, qtbot, tmp_path, tiny_bundle_dir):
    from vjapp import gui

    png = tmp_path / "shot.png"
    args = default_args(bundle=str(tiny_bundle_dir), windowed=True, osc_port=0, mute=True, threads=1,
                        settings=str(tmp_path / "settings.ini"), data_dir=str(tmp_path / "data"),
                        audio=str(_tone_file(tmp_path / "tone.wav")), quit_after=2.0, screenshot=str(png))
    t0 = time.monotonic()
    assert gui.run(args) == 0
    assert time.monotonic() - t0 < 30
    from PyQt6.QtGui import QImage

    img = QImage(str(png))
    assert not img.isNull() and img.width() >= 160
    colours = {img.pixel(x, y) for x in range(0, img.width(), 7) for y in range(0, img.height(), 7)}
    assert len(colours) > 50  # a generated picture, not an empty window
    assert (tmp_path / "settings.ini").read_text().count("geometry") >= 2  # window state saved
    from PyQt6.QtCore import QTimer

    fired: list[int] = []
    QTimer.singleShot(20, lambda: fired.append(1))
    qtbot.waitUntil(lambda: bool(fired), timeout=2000)  # the shared QApplication's event loops still run
    assert gui.run(default_args(size="100")) == 2  # a bad option: one clear error, no window


def _bundle_shown_larger(tiny_bundle_dir: Path, dest: Path, output_size: int = 64) -> Path:
    """A copy of the tiny bundle (32 px generator) whose display size ("native") is ``output_size``."""
    import json
    import shutil

    shutil.copytree(tiny_bundle_dir, dest)
    doc = json.loads((dest / "bundle.json").read_text())
    doc["output_size"] = output_size
    (dest / "bundle.json").write_text(json.dumps(doc))
    return dest


def _decoded_sizes(path: Path) -> list[tuple[int, int]]:
    import av

    with av.open(str(path)) as c:
        return [(f.height, f.width) for f in c.decode(video=0)]


def test_a_take_records_what_the_output_shows_at_one_size_throughout(make_app, qtbot, tmp_path, tiny_bundle_dir):
    """Item 4: "native" records the display size (64), not the generator's 32 px; a size change
    mid-take keeps the take's size with the new picture scaled; a chosen size holds for a take."""
    bundle = _bundle_shown_larger(tiny_bundle_dir, tmp_path / "shown64")
    ctx = make_app(bundle=str(bundle), audio=str(_tone_file(tmp_path / "tone.wav")))
    _wait_frames(qtbot, ctx, 3)
    assert _frame(ctx).shape == (64, 64, 3)  # what the audience sees
    ctx.set_recording(True)
    qtbot.wait(800)
    ctx.set_control("size", 128)  # the output grows mid-take
    qtbot.waitUntil(lambda: _frame(ctx) is not None and _frame(ctx).shape == (128, 128, 3), timeout=10000)
    qtbot.wait(800)
    ctx.set_recording(False)
    first = ctx.recorder_status()
    sizes = _decoded_sizes(first.path)
    assert len(sizes) >= 10 and set(sizes) == {(64, 64)}, sorted(set(sizes))
    assert first.error is None and first.size == (64, 64) and first.frames_resized > 0
    assert any("at 64x64" in t for _, t in ctx.window.messages)

    ctx.window.record_size_combo.setCurrentText("256")  # a chosen recording size
    ctx.set_recording(True)
    qtbot.wait(600)
    ctx.set_control("size", 64)
    qtbot.wait(600)
    ctx.set_recording(False)
    second = ctx.recorder_status()
    assert second.error is None and second.path != first.path
    assert set(_decoded_sizes(second.path)) == {(256, 256)}


def test_a_full_disk_says_so_once_per_failure_and_leaves_no_empty_file(make_app, qtbot, tmp_path, monkeypatch, caplog):
    """Item 8: one message per failed take (panel and log), and pressing Record again on the full
    disk leaves no 0-byte .mp4 behind."""
    import logging

    from disk_fixtures import FillingDisk

    from vjapp.output import mp4 as mp4mod

    caplog.set_level(logging.INFO)
    room = {"bytes": 60_000}  # the first take fills the disk after a fragment or two
    monkeypatch.setattr(mp4mod, "_open_output", lambda p: FillingDisk(p, room["bytes"]))
    ctx = make_app(audio=str(_tone_file(tmp_path / "tone.wav")))
    _wait_frames(qtbot, ctx, 3)
    win = ctx.window

    def press_record_until_it_fails() -> None:
        qtbot.waitUntil(lambda: not win.record_button.isChecked(), timeout=5000)
        qtbot.mouseClick(win.record_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: ctx.recorder_status().error is not None and not ctx._recording, timeout=20000)
        qtbot.wait(300)  # let the panel drain

    def errors_shown() -> list[str]:
        return [t for level, t in win.messages if level == "error"]

    def errors_logged() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]

    press_record_until_it_fails()
    first = ctx.recorder_status()
    assert "No space left on device" in first.error
    assert len(errors_shown()) == 1 and "No space left on device" in errors_shown()[0]
    assert len(errors_logged()) == 1
    assert first.path.stat().st_size > 0 and probe_mp4(first.path)["video"]["frames"] > 0  # kept: it plays

    room["bytes"] = 0  # still full when Record is pressed again
    press_record_until_it_fails()
    second = ctx.recorder_status()
    assert second.path != first.path and second.file_removed
    assert len(errors_shown()) == 2 and len(errors_logged()) == 2
    assert sorted(p.name for p in (tmp_path / "rec").glob("*.mp4")) == [first.path.name]  # no empty file


def test_a_storm_of_huge_bad_preset_names_over_osc_gives_a_few_short_lines(make_app, qtbot, tmp_path, caplog):
    """Item 7: 100 garbage preset names of 60,000 characters over real UDP: the panel and the log
    get the first error (the name cut to a readable length) and one "99 more like this" line."""
    import logging

    from pythonosc.udp_client import SimpleUDPClient

    caplog.set_level(logging.INFO)
    ctx = make_app(audio=str(_silent_file(tmp_path / "silence.wav")))
    client = SimpleUDPClient("127.0.0.1", ctx.osc.port)
    sent = 100
    for i in range(sent):
        client.send_message("/vjapp/preset", f"{i:03d}" + "x" * 60_000)
        time.sleep(0.005)
    qtbot.waitUntil(lambda: ctx.osc.stats()["actions"] == sent, timeout=20000)
    deadline = time.monotonic() + 6.0  # the summary of the held-back ones comes after 2 s
    while time.monotonic() < deadline and not any("more messages like this" in t for _, t in ctx.window.messages):
        qtbot.wait(100)
    qtbot.wait(300)
    shown = [t for _, t in ctx.window.messages if "no preset named" in t]
    panel = [line for line in ctx.window.log_view.toPlainText().splitlines() if "no preset named" in line]
    logged = [r.getMessage() for r in caplog.records if "no preset named" in r.getMessage()]
    for lines in (shown, panel, logged):
        assert len(lines) == 2, [len(t) for t in lines]
        assert max(len(t) for t in lines) < 400
    assert "'000xxx" in shown[0] and "(60003 chars)" in shown[0]
    assert shown[1].startswith(f"{sent - 1} more messages like this")
