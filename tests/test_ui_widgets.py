"""The UI pieces on their own (no engine, no torch): throttling, fit/fill, fullscreen keys, the
bridge's newest-wins pull, exception hooks, the scope's numbers, and widgets following the mailbox."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PyQt6.QtCore import Qt
from PyQt6.QtGui import QColor

from vjapp.engine.controls import CONTROL_SPECS, Controls, set_path
from vjapp.engine.mailbox import LatestSlot, Mailbox
from vjapp.ui.bridge import EngineBridge, GuiInvoker, install_exception_hooks
from vjapp.ui.main_window import MainWindow, NdiView, SourceView
from vjapp.ui.output_window import OutputWindow, target_rect
from vjapp.ui.scope import ScopePanel, SpectrumAnalyzer, block_levels
from vjapp.ui.widgets import ControlSlider, Throttler


def test_ui_package_imports_no_torch_and_no_sounddevice():
    import subprocess

    code = ("import sys, vjapp.ui.main_window, vjapp.ui.bridge, vjapp.ui.scope, vjapp.ui.output_window; "
            "bad = [m for m in ('torch', 'sounddevice') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stdout + done.stderr


# ------------------------------------------------------------------------------ throttling
def test_throttler_limits_a_burst_and_delivers_the_last_value(qtbot):
    throttler = Throttler(interval_ms=40)
    fired: list[Any] = []
    fired_at: list[float] = []
    throttler.fired.connect(lambda v: (fired.append(v), fired_at.append(time.monotonic())))
    t0 = time.monotonic()
    for i in range(300):  # a fast drag: 300 values in about 0.3 s
        throttler.trigger(i)
        qtbot.wait(1)
    burst_s = time.monotonic() - t0
    qtbot.waitUntil(lambda: not throttler.pending, timeout=1000)
    assert fired[0] == 0  # the first value goes through at once
    assert fired[-1] == 299  # and the last one always arrives
    assert len(fired) <= burst_s / 0.040 + 2
    assert len(fired) >= 2
    gaps = [b - a for a, b in zip(fired_at, fired_at[1:])]
    assert min(gaps) >= 0.040 - 0.001  # never two values within one interval (1 ms clock slack)


def test_control_slider_is_throttled_and_silent_when_set_from_outside(qtbot):
    slider = ControlSlider("gain", CONTROL_SPECS["gain"], "Gain", throttle_ms=50)
    qtbot.addWidget(slider)
    sent: list[tuple[str, Any]] = []
    slider.value_changed.connect(lambda path, value: sent.append((path, value)))
    t0 = time.monotonic()
    for pos in range(0, 1001, 5):  # 201 slider positions as fast as the event loop goes
        slider.slider.setValue(pos)
        qtbot.wait(1)
    elapsed = time.monotonic() - t0
    qtbot.waitUntil(lambda: not slider.throttler.pending, timeout=1000)
    assert len(sent) <= elapsed / 0.050 + 2 < 201
    assert sent[-1] == ("gain", pytest.approx(4.0))  # the end of the range, as the spec says
    n = len(sent)
    slider.set_value_silently(1.5)
    qtbot.wait(80)
    assert len(sent) == n  # following the mailbox never writes back
    assert slider.value() == pytest.approx(1.5, abs=0.004)
    assert slider.value_label.text() == "1.50"
    slider.set_value_silently(99.0)  # clamped like the control itself
    assert slider.value() == pytest.approx(4.0)


def test_int_slider_maps_one_step_per_integer(qtbot):
    slider = ControlSlider("seed", CONTROL_SPECS["seed"].__class__(0, 20), "Seed")
    qtbot.addWidget(slider)
    slider.slider.setValue(7)
    assert slider.value() == 7 and isinstance(slider.value(), int)


# ------------------------------------------------------------------------------ output window
@pytest.mark.parametrize(
    "img, win, mode, expected",
    [
        ((32, 32), (640, 360), "fit", (140, 0, 360, 360)),  # pillarbox
        ((32, 32), (640, 360), "fill", (0, -140, 640, 640)),  # cropped top and bottom
        ((64, 32), (400, 400), "fit", (0, 100, 400, 200)),  # letterbox
        ((64, 32), (400, 400), "fill", (-200, 0, 800, 400)),
        ((100, 100), (100, 100), "fit", (0, 0, 100, 100)),
    ],
)
def test_fit_and_fill_geometry(img, win, mode, expected):
    assert target_rect(*img, *win, mode) == expected


def test_fit_keeps_aspect_and_stays_inside_fill_covers():
    rng = np.random.default_rng(0)
    for _ in range(200):
        iw, ih, ww, wh = (int(v) for v in rng.integers(1, 2000, 4))
        x, y, w, h = target_rect(iw, ih, ww, wh, "fit")
        assert 0 <= x and 0 <= y and x + w <= ww + 1 and y + h <= wh + 1
        assert abs(w / h - iw / ih) <= 2 * max(iw / ih, 1) / min(w, h) + 1e-9
        x, y, w, h = target_rect(iw, ih, ww, wh, "fill")
        assert x <= 0 and y <= 0 and x + w >= ww - 1 and y + h >= wh - 1
    with pytest.raises(ValueError, match="scale mode"):
        target_rect(1, 1, 1, 1, "stretch")


def _solid(rgb: tuple[int, int, int], size: int = 32) -> np.ndarray:
    img = np.empty((size, size, 3), np.uint8)
    img[:] = rgb
    return img


def test_output_window_paints_the_newest_frame_fitted(qtbot):
    out = OutputWindow()
    qtbot.addWidget(out)
    out.resize(400, 200)
    out.show()
    qtbot.waitExposed(out)
    out.set_frame(_solid((255, 0, 0)), 1)
    out.set_frame(_solid((0, 200, 0)), 2)  # only the newest is kept
    assert out.frame_index == 2 and out.newest_image()[0, 0, 1] == 200
    img = out.grab().toImage()
    w, h = img.width(), img.height()
    assert QColor(img.pixel(w // 2, h // 2)).getRgb()[:3] == (0, 200, 0)
    assert QColor(img.pixel(5, h // 2)).getRgb()[:3] == (0, 0, 0)  # pillarbox bar
    out.set_scale_mode("fill")
    img = out.grab().toImage()
    assert QColor(img.pixel(5, img.height() // 2)).getRgb()[:3] == (0, 200, 0)  # filled to the edge
    with pytest.raises(ValueError, match=r"\[H, W, 3\] uint8"):
        out.set_frame(np.zeros((4, 4), np.uint8))


def test_f_toggles_fullscreen_and_escape_leaves_it(qtbot):
    out = OutputWindow()
    qtbot.addWidget(out)
    out.show()
    qtbot.waitExposed(out)
    changes: list[bool] = []
    out.fullscreen_changed.connect(changes.append)
    qtbot.keyClick(out, Qt.Key.Key_F)
    assert out.is_fullscreen and out.isFullScreen()
    assert out.cursor().shape() == Qt.CursorShape.BlankCursor
    assert out.windowFlags() & Qt.WindowType.FramelessWindowHint
    qtbot.keyClick(out, Qt.Key.Key_Escape)
    assert not out.is_fullscreen and not out.isFullScreen()
    assert out.cursor().shape() != Qt.CursorShape.BlankCursor
    qtbot.keyClick(out, Qt.Key.Key_Escape)  # Esc when windowed does nothing
    assert not out.is_fullscreen
    qtbot.keyClick(out, Qt.Key.Key_F)
    qtbot.keyClick(out, Qt.Key.Key_F)
    assert changes == [True, False, True, False]
    with pytest.raises(ValueError, match="no screen 7"):
        out.set_screen(7)


# ------------------------------------------------------------------------------ bridge
class _FakeEngine:
    def __init__(self) -> None:
        self.frames: LatestSlot[Any] = LatestSlot()
        self.analysis: LatestSlot[Any] = LatestSlot()
        self.stats = SimpleNamespace(snapshot=lambda: {"display_fps": 1.0})


def test_bridge_pulls_only_the_newest_frame_and_drains_messages(qtbot):
    engine = _FakeEngine()
    bridge = EngineBridge(poll_ms=5)
    bridge.set_engine(engine)
    frames: list[Any] = []
    messages: list[tuple[str, str]] = []
    stats: list[dict] = []
    bridge.frame.connect(frames.append)
    bridge.message.connect(lambda level, text: messages.append((level, text)))
    bridge.stats.connect(stats.append)

    def produce() -> None:  # the engine thread: a burst of frames and an error
        for i in range(50):
            engine.frames.publish(SimpleNamespace(index=i))
        bridge.report_error("engine error: boom")

    t = threading.Thread(target=produce)
    t.start()
    t.join()
    bridge.start()
    qtbot.waitUntil(lambda: bool(frames and messages and stats), timeout=2000)
    qtbot.wait(30)
    bridge.stop()
    assert [f.index for f in frames] == [49]  # no backlog: the newest only
    assert engine.frames.dropped == 49
    assert messages == [("error", "engine error: boom")]


def test_bridge_bounds_a_message_storm(qtbot):
    bridge = EngineBridge(max_messages=10)
    got: list[str] = []
    bridge.message.connect(lambda level, text: got.append(text))
    for i in range(100):
        bridge.report(f"m{i}")
    bridge.poll()
    assert got[:10] == [f"m{i}" for i in range(90, 100)]
    assert "90 more messages were dropped" in got[-1]


def test_exception_hooks_show_errors_from_slots_and_threads(qtbot):
    shown: list[str] = []
    restore = install_exception_hooks(shown.append)
    try:
        try:
            raise RuntimeError("slot exploded")
        except RuntimeError:
            sys.excepthook(*sys.exc_info())  # what PyQt does with an exception escaping a slot
        t = threading.Thread(target=lambda: 1 / 0, name="worker")
        t.start()
        t.join()
    finally:
        restore()
    assert any("slot exploded" in s for s in shown)
    assert any("worker" in s and "ZeroDivisionError" in s for s in shown)


def test_gui_invoker_runs_calls_from_other_threads_on_the_gui_thread(qtbot):
    errors: list[str] = []
    invoker = GuiInvoker(on_error=errors.append)
    ran_on: list[threading.Thread] = []
    t = threading.Thread(target=lambda: (invoker.call(lambda: ran_on.append(threading.current_thread())),
                                         invoker.call(lambda: [][1])))
    t.start()
    t.join()
    qtbot.waitUntil(lambda: bool(ran_on and errors), timeout=2000)
    assert ran_on == [threading.main_thread()]
    assert "IndexError" in errors[0]


# ------------------------------------------------------------------------------ scope
def test_spectrum_peaks_at_the_tone_and_levels_read_in_dbfs():
    sr = 22050
    t = np.arange(4096) / sr
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    analyzer = SpectrumAnalyzer(sr, n_bands=96)
    bands = analyzer.bands(tone)
    edges = np.geomspace(40.0, sr / 2, 97)
    peak = int(np.argmax(bands))
    assert edges[peak] * 0.8 <= 1000 <= edges[peak + 1] * 1.25
    assert bands.min() >= 0 and bands.max() <= 1 and bands[peak] > bands[5] + 0.3
    rms, pk = block_levels(tone)
    assert rms == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.1)
    assert pk == pytest.approx(20 * np.log10(0.5), abs=0.1)
    assert block_levels(np.zeros(100, np.float32))[0] == float("-inf")


def test_scope_panel_scrolls_and_shows_the_mel(qtbot):
    panel = ScopePanel(columns=20)
    qtbot.addWidget(panel)
    rng = np.random.default_rng(0)
    for _ in range(25):
        panel.update_audio(rng.uniform(-0.3, 0.3, (1024, 2)).astype(np.float32), 44100)
    assert panel.blocks_seen == 25
    assert panel.spectrum_view.image.image.shape == (96, 20)
    assert "dBFS" in panel.level_label.text()
    panel.update_analysis(SimpleNamespace(mel=rng.random((32, 16), np.float32), loudness=0.5, loudness_db=-20.0,
                                          motion=0.1))
    assert panel.mel_view.image.image.shape == (32, 16)
    panel.update_analysis(SimpleNamespace(mel=None, loudness=0.0, loudness_db=-120.0, motion=0.0))
    assert "silence" in panel.mel_label.text()


# ------------------------------------------------------------------------------ following the mailbox
class _FakeBackend:
    """The smallest Backend: a mailbox and a log of what the window asked for."""

    def __init__(self) -> None:
        self.controls: Mailbox[Controls] = Mailbox(Controls())
        self.writes: list[tuple[str, Any]] = []
        self.bundle_description = "fake bundle"
        self.bundle_warning = "a warning banner"
        self.bundle_busy = False
        self.converted_dir = Path("/nonexistent")
        self.current_preset = None

    def set_control(self, path: str, value: Any) -> None:
        self.writes.append((path, value))
        self.controls.update(lambda c: set_path(c, path, value))

    def source_view(self) -> SourceView:
        return SourceView("demo", "demo audio", None, None, 0, False)

    def recorder_status(self) -> Any:
        return SimpleNamespace(recording=False, path=None)

    def input_devices(self) -> list:
        return []

    def preset_names(self) -> list[str]:
        return ["a", "b"]

    def osc_summary(self) -> str:
        return "OSC off"

    def midi_summary(self) -> str:
        return "MIDI off"

    def midi_port(self) -> None:
        return None

    def midi_binding(self, target: str) -> None:
        return None

    def ndi_view(self) -> NdiView:
        return NdiView(available=True, on=False, text="off")

    def __getattr__(self, name: str) -> Any:  # every other action: recorded, does nothing
        return lambda *a: self.writes.append((name, a))


def test_widgets_follow_the_mailbox_without_writing_back(qtbot, tmp_path):
    from PyQt6.QtCore import QSettings

    backend = _FakeBackend()
    out = OutputWindow()
    qtbot.addWidget(out)
    win = MainWindow(backend, out, settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(win)
    assert win.banner.text() == "a warning banner"
    # a change from elsewhere (OSC, a preset) moves the widgets; nothing is written back
    new = set_path(set_path(Controls().replace(gain=2.5, prompt="lava", seed=77), "mix.fine.source_kind", "seed"),
                   "group_gains.mid", 3.0)
    backend.controls.put(new)
    assert win.sync_controls()
    assert win._sliders["gain"].value_label.text() == "2.50"
    assert win._sliders["group_gains.mid"].value() == pytest.approx(3.0)
    assert win.prompt_edit.text() == "lava" and win.seed_spin.value() == 77
    assert win.mix_rows["fine"]["kind"].currentText() == "seed"
    assert not win.mix_rows["fine"]["seed"].isHidden() and win.mix_rows["fine"]["prompt"].isHidden()
    assert backend.writes == []
    # the user's own edits go into the mailbox
    win.prompt_edit.setText("ice cave")
    qtbot.keyClick(win.prompt_edit, Qt.Key.Key_Return)
    assert backend.controls.get()[1].prompt == "ice cave"
    win._sliders["smoothing"].slider.setValue(900)
    qtbot.waitUntil(lambda: backend.controls.get()[1].smoothing == pytest.approx(0.891, abs=1e-3), timeout=1000)
    # window state persists
    out.set_scale_mode("fill")
    win.save_settings()
    out2 = OutputWindow()
    qtbot.addWidget(out2)
    win2 = MainWindow(backend, out2, settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(win2)
    win2.restore_settings()
    assert out2.scale_mode == "fill"


def test_library_warnings_reach_the_message_panel(qtbot):
    """A warning logged by library code shows in the GUI; loggers that report themselves don't."""
    import logging

    from vjapp.ui.bridge import EngineBridge, LogToBridge

    bridge = EngineBridge()
    handler = LogToBridge(bridge, skip=("vjapp.app",))
    logger, own = logging.getLogger("vjapp.audio.testsource"), logging.getLogger("vjapp.app")
    for lg in (logger, own):
        lg.addHandler(handler)
    seen: list[tuple[str, str]] = []
    bridge.message.connect(lambda level, text: seen.append((level, text)))
    try:
        logger.info("not shown: below warning")
        own.warning("not shown: the app reports its own messages")
        logger.warning("no output device; feeding the ring from a wall clock")
        logger.error("stream died")
        bridge.poll()
    finally:
        for lg in (logger, own):
            lg.removeHandler(handler)
    assert seen == [
        ("warning", "vjapp.audio.testsource: no output device; feeding the ring from a wall clock"),
        ("error", "vjapp.audio.testsource: stream died"),
    ]


def test_engine_and_record_boxes_name_each_frame_counter_and_show_its_recent_share(qtbot, tmp_path):
    """Frames skipped by the engine to keep time, frames never painted and frames not recorded
    read as three different things, each with its share of the last seconds; the painted rate
    is not 0.0 while frames arrive in the first second."""
    import re

    from PyQt6.QtCore import QSettings

    takes = [SimpleNamespace(recording=True, path=Path("/rec/take.mp4"), elapsed_s=10.0, frames_written=300,
                             frames_dropped=0, size=(256, 256), error=None, file_removed=False),
             SimpleNamespace(recording=True, path=Path("/rec/take.mp4"), elapsed_s=11.2, frames_written=330,
                             frames_dropped=3, size=(256, 256), error=None, file_removed=False)]
    backend = _FakeBackend()
    backend.recorder_status = lambda: takes[0]  # type: ignore[method-assign]
    out = OutputWindow()
    qtbot.addWidget(out)
    win = MainWindow(backend, out, settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(win)
    for i in range(10):  # 30 fps for a third of a second
        win.on_frame(SimpleNamespace(image=np.zeros((32, 32, 3), np.uint8), index=i))
        qtbot.wait(33)

    def snap(skipped: int, rendered: int, not_painted: int) -> dict:
        return {"display_fps": 30.0, "model_fps": 10.0, "frames": {"display": rendered, "model": 0},
                "counters": {"skipped_frames": skipped, "errors": 0}, "frames_not_painted": not_painted,
                "latency_ms": {}, "stages": {}}

    win.on_stats(snap(100, 1000, 150))
    assert "painted 0.0 fps" not in win.stats_label.text()
    assert 20.0 < win.display_fps < 40.0
    win.refresh_status()
    qtbot.wait(1200)
    win.on_stats(snap(110, 1090, 160))  # 10 of the last 100 slots skipped, 10 of 90 frames not painted
    text = win.stats_label.text()
    assert re.search(r"skipped to keep time 110 \(10\.0% of the last \d s\)", text), text
    assert re.search(r"not painted 160 \(11\.1% of the last \d s\)", text), text
    assert "dropped" not in text
    backend.recorder_status = lambda: takes[1]  # type: ignore[method-assign]
    win.refresh_status()
    record = win.record_label.text()
    assert re.search(r"330 frames at 256x256 · not recorded 3 \(9\.1% of the last \d s\)", record), record


def test_rhythm_panel_shows_tempo_flashes_onsets_and_taps(qtbot, tmp_path):
    from PyQt6.QtCore import QSettings

    from vjapp.audio.rhythm import RhythmSnapshot

    backend = _FakeBackend()
    out = OutputWindow()
    qtbot.addWidget(out)
    win = MainWindow(backend, out, settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(win)
    meter = win.rhythm_meter
    assert "—" in meter.text()  # no tempo yet
    win.on_rhythm(RhythmSnapshot(strength=(0.9, 0.1, 0.0), onsets=(1, 0, 0), bpm=128.0, bar_phase=0.3,
                                 confidence=0.8, tempo_source="audio"))
    assert "128.0 BPM" in meter.text() and meter.flash == [1.0, 0.0, 0.0]
    win.on_rhythm(RhythmSnapshot(strength=(0.0, 0.0, 0.0), onsets=(1, 0, 0), bpm=128.0))
    assert meter.flash[0] < 1.0  # no new onset: the flash fades
    assert not meter.grab().isNull()
    win.tap_button.click()
    assert ("tap_tempo", ()) in backend.writes
    assert ("rhythm.tempo_source", "tap") in backend.writes
    # the rhythm controls follow the mailbox like every other control
    backend.controls.put(set_path(Controls(), "rhythm.amount", 1.25))
    assert win.sync_controls()
    assert win._sliders["rhythm.amount"].value() == pytest.approx(1.25, abs=0.01)  # slider steps
