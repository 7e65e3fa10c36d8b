"""The control window: audio source, scope, bundle, picture, style mix, reactivity, output
(with NDI), recording, OSC, MIDI, stats, presets and a log.

The window never owns show state. Every control it shows lives in the controls
:class:`~vjapp.engine.mailbox.Mailbox`; widgets write into it (sliders through a throttle) via the
:class:`Backend`, and a timer follows the mailbox's version, moving widgets to whatever the
mailbox holds now (a preset, an OSC message) with their signals blocked, so following never
writes back. A widget the user is holding (slider pressed, value not yet sent, text being typed)
is left alone until released.

MIDI learn: every widget that drives a knob-settable control (sliders, checkboxes, choice combo
boxes, spin boxes) and the action buttons (Tap, Re-roll, Record, preset ◀ ▶) offer "MIDI learn"
on right-click, and "Forget MIDI mapping" when bound; the MIDI box picks the input and shows what
MIDI learn waits for.

Everything else (sources, bundles, recording, presets, OSC) goes through the :class:`Backend`
protocol that :mod:`vjapp.app` implements. Qt, pyqtgraph and numpy only: no torch, no sounddevice.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from PyQt6.QtCore import QByteArray, QObject, QSettings, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QAction, QCloseEvent, QGuiApplication, QKeySequence
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from vjapp.engine.controls import (
    ASPECTS,
    CONTROL_SPECS,
    LAYER_GROUPS,
    MAX_SEED,
    MEANINGS,
    NOISE_MODES,
    QUANTIZE_MODES,
    SOURCE_KINDS,
    TEMPO_SOURCES,
    BoolSpec,
    ChoiceSpec,
    Controls,
    FloatSpec,
    IntSpec,
    get_path,
)
from vjapp.ui.rhythm_meter import RhythmMeter
from vjapp.engine.mailbox import Mailbox
from vjapp.engine.stats import RateMeter, RecentCounts
from vjapp.ui.child_job import ChildJob
from vjapp.ui.drops import GeneratorDrops
from vjapp.ui.output_window import SCALE_MODES, OutputWindow
from vjapp.ui.scope import ScopePanel
from vjapp.ui.widgets import ControlSlider, MidiLearnMenu

log = logging.getLogger(__name__)

__all__ = ["Backend", "SourceView", "NdiView", "PresetSaveDialog", "MainWindow", "ConvertJob", "SIZES", "GENERATOR_SUFFIXES"]

SIZES = ("native", "64", "128", "256", "512", "1024")
GENERATOR_SUFFIXES = (".pkl", ".pt", ".pth")
_KNOB_SPECS = (FloatSpec, IntSpec, BoolSpec, ChoiceSpec)  # what a knob or pad can set (MIDI learn)


@dataclass(frozen=True)
class SourceView:
    """What the window shows about the current audio source."""

    key: str  # "demo", "file:<path>", "input:<device>", "silence"
    description: str  # one line for the user
    status: Any  # a vjapp.audio.SourceStatus (or None)
    ring: Any  # the source's RingBuffer (``latest_copy(n)``), or None
    sample_rate: int
    transport: bool  # play/pause/seek/loop apply (a file)
    loop: bool | None = None  # the file loops (None: not a file)


@dataclass(frozen=True)
class NdiView:
    """What the Output box shows about the NDI output."""

    available: bool  # ndi-python is installed
    on: bool  # sending now
    text: str  # the source name, or why NDI cannot run


class Backend(Protocol):
    """What the control window asks of the app (:class:`vjapp.app.AppContext` implements it)."""

    controls: Mailbox[Controls]

    def set_control(self, path: str, value: Any) -> None: ...
    def reroll_seed(self) -> None: ...
    def tap_tempo(self) -> None: ...
    # audio
    def input_devices(self) -> list[tuple[Any, str]]: ...
    def use_input(self, device: Any) -> None: ...
    def open_audio(self, path: str) -> None: ...
    def use_demo_audio(self) -> None: ...
    def play(self) -> None: ...
    def pause(self) -> None: ...
    def seek(self, seconds: float) -> None: ...
    def set_loop(self, on: bool) -> None: ...
    def source_view(self) -> SourceView: ...
    # bundle
    @property
    def bundle_description(self) -> str: ...
    @property
    def bundle_warning(self) -> str | None: ...
    @property
    def bundle_busy(self) -> bool: ...
    @property
    def converted_dir(self) -> Path: ...
    def open_bundle(self, path: str) -> None: ...
    def adopt_generator(self, stem: str) -> None: ...
    # presets
    def preset_names(self) -> list[str]: ...
    @property
    def current_preset(self) -> str | None: ...
    def load_preset(self, name: str) -> None: ...
    def save_preset(self, name: str, with_midi: bool = False) -> None: ...
    def step_preset(self, delta: int) -> None: ...
    # recording, OSC
    def set_recording(self, on: bool) -> None: ...
    def recorder_status(self) -> Any: ...
    def osc_summary(self) -> str: ...
    # NDI output
    def ndi_view(self) -> NdiView: ...
    def set_ndi(self, on: bool) -> None: ...
    # MIDI (optional: a backend without midi_learn offers no "MIDI learn")
    def midi_inputs(self) -> list[str]: ...
    def midi_port(self) -> str | None: ...
    def use_midi(self, port: str | None) -> None: ...
    def midi_summary(self) -> str: ...
    def midi_learn(self, target: str) -> None: ...
    def midi_binding(self, target: str) -> str | None: ...
    def midi_forget(self, target: str) -> None: ...


class PresetSaveDialog(QDialog):
    """Name a preset; with a MIDI input open, optionally keep its mapping in the preset."""

    def __init__(self, midi_port: str | None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Save preset")
        layout = QFormLayout(self)
        self.name_edit = QLineEdit()
        self.name_edit.setMaxLength(64)
        layout.addRow("Preset name:", self.name_edit)
        self.midi_check = QCheckBox("Keep the MIDI mapping" + (f" of {midi_port}" if midi_port else ""))
        self.midi_check.setEnabled(midi_port is not None)
        self.midi_check.setToolTip("loading the preset with this controller open brings its mapping back"
                                   if midi_port else "no MIDI input is open")
        layout.addRow(self.midi_check)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addRow(buttons)

    def name(self) -> str:
        return self.name_edit.text().strip()

    def with_midi(self) -> bool:
        return self.midi_check.isEnabled() and self.midi_check.isChecked()


class ConvertJob(ChildJob):
    """``python -m vjapp convert SRC -o OUT`` in a child process (the GUI stays live).

    ``finished(ok, out_stem, message)``: ``message`` is the converter's last error line on failure.
    """

    finished = pyqtSignal(bool, str, str)
    output = pyqtSignal(str)

    def __init__(self, src: str, out_stem: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.src = src
        self.out_stem = out_stem

    def start(self) -> None:
        Path(self.out_stem).parent.mkdir(parents=True, exist_ok=True)
        self.process.start(sys.executable, ["-m", "vjapp", "convert", self.src, "-o", self.out_stem, "--force"])

    def keep(self, line: str) -> None:
        super().keep(line)
        self.output.emit(line)

    def report(self, ok: bool, message: str) -> None:
        self.finished.emit(ok, self.out_stem, message)


@dataclass
class _Binding:
    """One widget following one control path."""

    path: str
    set_value: Callable[[Any], None]
    busy: Callable[[], bool]


def _silently(widget: QWidget, fn: Callable[[], None]) -> None:
    widget.blockSignals(True)
    try:
        fn()
    finally:
        widget.blockSignals(False)


RATE_WINDOW_S = 10.0  # the counters' shares are over this many seconds
FPS_WINDOW_S = 2.0  # the painted frame rate is over this many seconds (as the engine's)
RECORD_SIZES = ("output size", "256", "512", "1024")  # the Record box's size choices


def _recent_share(recent: RecentCounts, part: str, whole: str) -> str:
    """`` (2.1% of the last 10 s)`` for a counter beside its total; empty before there is a span."""
    share = recent.share(part, whole)
    if share is None:
        return ""
    return f" ({100 * share:.1f}% of the last {recent.span_s():.0f} s)"


def _fmt_time(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-:--"
    s = int(seconds)
    return f"{s // 60}:{s % 60:02d}"


class MainWindow(GeneratorDrops, QMainWindow):
    """The performer's window. ``backend`` does the work; ``output`` is the audience's window."""

    closing = pyqtSignal()

    def __init__(self, backend: Backend, output: OutputWindow, settings: QSettings | None = None,
                 follow_hz: float = 30.0, status_hz: float = 4.0, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.backend = backend
        self.settings = settings if settings is not None else QSettings()
        self.output = output
        self.setWindowTitle("vjapp")
        self.setObjectName("main_window")
        self.setAcceptDrops(True)  # a bundle directory or a .pkl/.pt generator
        self._bindings: list[_Binding] = []
        self._sliders: dict[str, ControlSlider] = {}
        self._learn_menus: dict[str, MidiLearnMenu] = {}
        self._seen_version = -1
        self.convert_job: ConvertJob | None = None
        self.adapt_job: Any = None  # vjapp.ui.adapt_job.AdaptJob while `vjapp-train adapt` runs
        self.adapt_progress: QProgressBar | None = None
        self._last_stats: dict[str, Any] = {}
        self._painted = RateMeter(256)  # frames this window handed to the output window
        self.display_fps = 0.0  # painted frames per second, as of the last stats update
        self._engine_recent = RecentCounts(RATE_WINDOW_S)
        self._take_recent = RecentCounts(RATE_WINDOW_S)
        self.messages: list[tuple[str, str]] = []  # (level, text), newest last (bounded)

        self.banner = QLabel()
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("background: #5a4a00; color: #fff3b0; padding: 6px; font-weight: bold;")
        self.banner.hide()

        columns = QHBoxLayout()
        columns.addWidget(self._scroll(self._audio_column()), 1)
        columns.addWidget(self._scroll(self._picture_column()), 1)
        columns.addWidget(self._scroll(self._reactivity_column()), 1)
        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(4, 4, 4, 4)
        top_layout.addWidget(self.banner)
        top_layout.addLayout(columns, 1)

        self.log_view = QPlainTextEdit()
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(1000)
        self.log_view.setPlaceholderText("messages: errors, warnings and notes appear here")
        self.splitter = QSplitter(Qt.Orientation.Vertical)
        self.splitter.addWidget(top)
        self.splitter.addWidget(self.log_view)
        self.splitter.setStretchFactor(0, 5)
        self.splitter.setStretchFactor(1, 1)
        self.setCentralWidget(self.splitter)
        self._build_menus()
        self.resize(1280, 820)

        self._follow_timer = QTimer(self)
        self._follow_timer.setInterval(int(1000 / follow_hz))
        self._follow_timer.timeout.connect(self._follow)
        self._status_timer = QTimer(self)
        self._status_timer.setInterval(int(1000 / status_hz))
        self._status_timer.timeout.connect(self.refresh_status)
        self.output.fullscreen_changed.connect(self._on_output_fullscreen)
        self.output.scale_mode_changed.connect(lambda m: _silently(self.scale_combo, lambda: self.scale_combo.setCurrentText(m)))
        self.refresh_devices()
        self.sync_controls(force=True)
        self.refresh_status()

    def start(self) -> None:
        """Start following the mailbox and the app's status."""
        self._follow_timer.start()
        self._status_timer.start()

    # ================================================================== layout
    @staticmethod
    def _scroll(widget: QWidget) -> QScrollArea:
        area = QScrollArea()
        area.setWidgetResizable(True)
        area.setWidget(widget)
        area.setFrameShape(QScrollArea.Shape.NoFrame)
        return area

    def _slider(self, path: str, label: str, decimals: int = 2) -> ControlSlider:
        spec = CONTROL_SPECS[path]
        slider = ControlSlider(path, spec, label, decimals=decimals)  # type: ignore[arg-type]
        slider.value_changed.connect(self.backend.set_control)
        if self._offers_midi_learn():
            slider.set_learnable(True, bound=self._midi_bound)
            slider.learn_requested.connect(self._midi_learn)
            slider.forget_requested.connect(self._midi_forget)
        self._sliders[path] = slider
        self._bindings.append(_Binding(path, slider.set_value_silently, slider.busy))
        return slider

    # ------------------------------------------------------------------ MIDI learn
    def _offers_midi_learn(self) -> bool:
        return getattr(self.backend, "midi_learn", None) is not None

    def _learnable(self, target: str, *widgets: QWidget) -> None:
        """Right-click "MIDI learn" (and "Forget") on ``widgets`` for ``target`` (a control path
        a knob can set, or an action name)."""
        spec = CONTROL_SPECS.get(target)
        if not self._offers_midi_learn() or (spec is not None and not isinstance(spec, _KNOB_SPECS)):
            return
        menu = MidiLearnMenu(target, list(widgets), self._midi_bound)
        menu.learn_requested.connect(self._midi_learn)
        menu.forget_requested.connect(self._midi_forget)
        self._learn_menus[target] = menu

    def midi_menu_for(self, target: str) -> QMenu | None:
        """The right-click menu of the widget driving ``target`` (None: it offers none)."""
        if target in self._sliders:
            return self._sliders[target].context_menu()
        menu = self._learn_menus.get(target)
        return menu.context_menu() if menu is not None else None

    def _midi_bound(self, target: str) -> str | None:
        bound = self.backend.midi_binding(target)
        return bound if isinstance(bound, str) else None

    def _midi_learn(self, target: str) -> None:
        self.backend.midi_learn(target)
        self.refresh_status()  # the MIDI box says what it waits for at once

    def _midi_forget(self, target: str) -> None:
        self.backend.midi_forget(target)
        self.refresh_status()

    def _spin(self, path: str, maximum: int = MAX_SEED) -> QSpinBox:
        spin = QSpinBox()
        spin.setRange(0, maximum)
        spin.setKeyboardTracking(False)  # valueChanged on Enter / arrows, not per keystroke
        spin.setObjectName(f"spin:{path}")
        spin.valueChanged.connect(lambda v, p=path: self.backend.set_control(p, int(v)))
        self._learnable(path, spin, spin.lineEdit())
        self._bindings.append(_Binding(path, lambda v, s=spin: _silently(s, lambda: s.setValue(int(v))),
                                       lambda s=spin: s.hasFocus() and s.lineEdit().isModified()))
        return spin

    def _combo(self, path: str, items: Sequence[str]) -> QComboBox:
        combo = QComboBox()
        combo.addItems(list(items))
        combo.setObjectName(f"combo:{path}")

        def write(text: str, p: str = path) -> None:
            value: Any = text
            if p == "size":
                value = "native" if text == "native" else int(text)
            self.backend.set_control(p, value)

        combo.currentTextChanged.connect(write)
        self._learnable(path, combo)
        self._bindings.append(_Binding(path, lambda v, c=combo: _silently(c, lambda: c.setCurrentText(str(v))),
                                       lambda c=combo: c.view().isVisible()))
        return combo

    def _text(self, path: str, placeholder: str) -> QLineEdit:
        edit = QLineEdit()
        edit.setPlaceholderText(placeholder)
        edit.setObjectName(f"text:{path}")
        edit.setMaxLength(200)

        def apply(p: str = path, e: QLineEdit = edit) -> None:
            e.setModified(False)
            self.backend.set_control(p, e.text())

        edit.returnPressed.connect(apply)

        def set_text(v: Any, e: QLineEdit = edit) -> None:
            if e.text() != v:
                e.setText(str(v))
            e.setModified(False)

        self._bindings.append(_Binding(path, set_text, lambda e=edit: e.isModified()))
        return edit

    def _audio_column(self) -> QWidget:
        col = QWidget()
        layout = QVBoxLayout(col)
        box = QGroupBox("Audio source")
        form = QVBoxLayout(box)
        row = QHBoxLayout()
        self.source_combo = QComboBox()
        self.source_combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.source_combo.activated.connect(self._on_source_chosen)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("list the audio input devices again")
        self.refresh_button.clicked.connect(self.refresh_devices)
        row.addWidget(self.source_combo, 1)
        row.addWidget(self.refresh_button)
        form.addLayout(row)
        row = QHBoxLayout()
        self.open_file_button = QPushButton("Open file…")
        self.open_file_button.clicked.connect(self._ask_audio_file)
        self.play_button = QPushButton("Play")
        self.play_button.clicked.connect(lambda: self.backend.play())
        self.pause_button = QPushButton("Pause")
        self.pause_button.clicked.connect(lambda: self.backend.pause())
        self.loop_check = QCheckBox("Loop")
        self.loop_check.toggled.connect(lambda on: self.backend.set_loop(on))
        for w in (self.open_file_button, self.play_button, self.pause_button, self.loop_check):
            row.addWidget(w)
        form.addLayout(row)
        row = QHBoxLayout()
        self.seek_slider = QSlider(Qt.Orientation.Horizontal)
        self.seek_slider.setRange(0, 1000)
        self.seek_slider.sliderReleased.connect(self._on_seek)
        self.position_label = QLabel("-:-- / -:--")
        row.addWidget(self.seek_slider, 1)
        row.addWidget(self.position_label)
        form.addLayout(row)
        self.source_label = QLabel("-")
        self.source_label.setWordWrap(True)
        form.addWidget(self.source_label)
        layout.addWidget(box)

        box = QGroupBox("Scope")
        inner = QVBoxLayout(box)
        self.scope = ScopePanel()
        inner.addWidget(self.scope)
        layout.addWidget(box)
        layout.addStretch(1)
        return col

    def _picture_column(self) -> QWidget:
        col = QWidget()
        layout = QVBoxLayout(col)

        box = QGroupBox("Bundle")
        inner = QVBoxLayout(box)
        self.bundle_label = QLabel("-")
        self.bundle_label.setWordWrap(True)
        inner.addWidget(self.bundle_label)
        row = QHBoxLayout()
        self.bundle_path_edit = QLineEdit()
        self.bundle_path_edit.setPlaceholderText("bundle directory, or a .pkl / .pt generator to import; Enter loads")
        self.bundle_path_edit.returnPressed.connect(lambda: self.choose_bundle_path(self.bundle_path_edit.text()))
        row.addWidget(self.bundle_path_edit, 1)
        inner.addLayout(row)
        row = QHBoxLayout()
        self.bundle_dir_button = QPushButton("Open bundle…")
        self.bundle_dir_button.clicked.connect(self._ask_bundle_dir)
        self.import_button = QPushButton("Import .pkl/.pt…")
        self.import_button.setToolTip("convert an NVIDIA StyleGAN2-ADA .pkl or rosinality .pt generator and play it "
                                      "with the current bundle's audio models")
        self.import_button.clicked.connect(self._ask_generator_file)
        row.addWidget(self.bundle_dir_button)
        row.addWidget(self.import_button)
        inner.addLayout(row)
        self.convert_progress = QProgressBar()
        self.convert_progress.setRange(0, 0)  # busy indicator: the converter reports no fraction
        self.convert_progress.setTextVisible(True)
        self.convert_progress.hide()
        inner.addWidget(self.convert_progress)
        self.convert_label = QLabel()
        self.convert_label.setWordWrap(True)
        self.convert_label.hide()
        inner.addWidget(self.convert_label)
        layout.addWidget(box)

        box = QGroupBox("Picture")
        form = QFormLayout(box)
        self.prompt_edit = self._text("prompt", "text prompt; Enter crossfades to it (empty = seed)")
        form.addRow("Prompt", self.prompt_edit)
        row = QHBoxLayout()
        self.seed_spin = self._spin("seed")
        self.reroll_button = QPushButton("Re-roll")
        self.reroll_button.clicked.connect(lambda: self.backend.reroll_seed())
        self._learnable("seed/reroll", self.reroll_button)
        row.addWidget(self.seed_spin, 1)
        row.addWidget(self.reroll_button)
        form.addRow("Seed", row)
        form.addRow(self._slider("truncation_psi", "Truncation ψ"))
        for path, label in (("camera.x", "Camera x (StyleGAN3)"), ("camera.y", "Camera y"), ("camera.rotate", "Camera turn (°)")):
            form.addRow(self._slider(path, label, decimals=1 if path == "camera.rotate" else 2))
        form.addRow("Noise", self._combo("noise_mode", NOISE_MODES))
        self.pause_picture = QCheckBox("Freeze picture")
        self.pause_picture.toggled.connect(lambda on: self.backend.set_control("paused", bool(on)))
        self._bindings.append(_Binding("paused", lambda v: _silently(self.pause_picture, lambda: self.pause_picture.setChecked(bool(v))),
                                       lambda: False))
        self._learnable("paused", self.pause_picture)
        form.addRow(self.pause_picture)
        row = QHBoxLayout()
        self.preset_combo = QComboBox()
        self.preset_combo.setPlaceholderText("choose a preset")
        self.preset_combo.activated.connect(lambda i: self.load_preset(self.preset_combo.itemText(i)))
        self.prev_preset_button = QPushButton("◀")
        self.prev_preset_button.setToolTip("previous preset (Ctrl+[)")
        self.prev_preset_button.clicked.connect(lambda: self.backend.step_preset(-1))
        self._learnable("preset/prev", self.prev_preset_button)
        self.next_preset_button = QPushButton("▶")
        self.next_preset_button.setToolTip("next preset (Ctrl+])")
        self.next_preset_button.clicked.connect(lambda: self.backend.step_preset(1))
        self._learnable("preset/next", self.next_preset_button)
        for button in (self.prev_preset_button, self.next_preset_button):
            button.setMaximumWidth(32)
        self.save_preset_button = QPushButton("Save…")
        self.save_preset_button.clicked.connect(self._ask_preset_name)
        row.addWidget(self.prev_preset_button)
        row.addWidget(self.preset_combo, 1)
        row.addWidget(self.next_preset_button)
        row.addWidget(self.save_preset_button)
        form.addRow("Preset", row)
        layout.addWidget(box)

        box = QGroupBox("Style mix (take layer groups from another latent)")
        inner = QVBoxLayout(box)
        self.mix_rows: dict[str, dict[str, QWidget]] = {}
        for group in LAYER_GROUPS:
            inner.addWidget(self._mix_row(group))
        layout.addWidget(box)
        layout.addStretch(1)
        return col

    def _mix_row(self, group: str) -> QWidget:
        frame = QWidget()
        lay = QVBoxLayout(frame)
        lay.setContentsMargins(0, 2, 0, 2)
        row = QHBoxLayout()
        row.addWidget(QLabel(group.capitalize()), 0)
        kind = self._combo(f"mix.{group}.source_kind", SOURCE_KINDS)
        seed = self._spin(f"mix.{group}.seed")
        prompt = self._text(f"mix.{group}.prompt", "prompt (Enter)")
        row.addWidget(kind)
        row.addWidget(seed)
        row.addWidget(prompt, 1)
        lay.addLayout(row)
        lay.addWidget(self._slider(f"mix.{group}.strength", "  strength"))

        def show_kind(text: str) -> None:
            seed.setVisible(text == "seed")
            prompt.setVisible(text == "prompt")

        kind.currentTextChanged.connect(show_kind)
        show_kind(kind.currentText())
        # set from the mailbox with signals blocked: show the matching value widget explicitly
        self._bindings.append(_Binding(f"mix.{group}.source_kind", lambda v: show_kind(str(v)), lambda: False))
        self.mix_rows[group] = {"kind": kind, "seed": seed, "prompt": prompt}
        return frame

    def _rhythm_box(self) -> QGroupBox:
        """Beat pulses per band, tempo (audio / tap / external) and beat-quantised changes."""
        box = QGroupBox("Rhythm (beat pulses)")
        inner = QVBoxLayout(box)
        self.rhythm_meter = RhythmMeter()
        inner.addWidget(self.rhythm_meter)
        row = QHBoxLayout()
        self.tap_button = QPushButton("Tap")
        self.tap_button.setToolTip("tap the beat (also /vjapp/tempo/tap over OSC); uses tap tempo")
        self.tap_button.clicked.connect(self._tap)
        self._learnable("tempo/tap", self.tap_button)
        row.addWidget(self.tap_button)
        row.addWidget(QLabel("Tempo from"))
        row.addWidget(self._combo("rhythm.tempo_source", TEMPO_SOURCES))
        row.addWidget(QLabel("Changes land on"))
        row.addWidget(self._combo("rhythm.quantize", QUANTIZE_MODES))
        inner.addLayout(row)
        inner.addWidget(self._slider("rhythm.amount", "Pulse amount"))
        inner.addWidget(self._slider("rhythm.attack", "Attack (s)", decimals=3))
        inner.addWidget(self._slider("rhythm.release", "Release (s)", decimals=3))
        inner.addWidget(self._slider("rhythm.offbeat", "Off-beat pulses"))
        inner.addWidget(self._slider("rhythm.camera_push", "Kick pushes camera"))  # StyleGAN3
        inner.addWidget(self._slider("rhythm.camera_turn", "Mid turns camera", decimals=1))
        for band in ("low", "mid", "high"):
            line = QHBoxLayout()
            line.addWidget(self._slider(f"rhythm.{band}.gain", f"{band.capitalize()} band gain"), 3)
            line.addWidget(self._combo(f"rhythm.{band}.group", LAYER_GROUPS), 1)
            inner.addLayout(line)
        return box

    def _tap(self) -> None:
        self.backend.tap_tempo()
        self.backend.set_control("rhythm.tempo_source", "tap")

    def on_rhythm(self, snap: Any) -> None:
        self.rhythm_meter.update_rhythm(snap)

    def _reactivity_column(self) -> QWidget:
        col = QWidget()
        layout = QVBoxLayout(col)
        box = QGroupBox("Reactivity")
        inner = QVBoxLayout(box)
        inner.addWidget(self._slider("gain", "Overall gain"))
        inner.addWidget(self._slider("smoothing", "Smoothing"))
        inner.addWidget(self._slider("loudness_reactivity", "Loudness reactivity"))
        meaning = QHBoxLayout()
        meaning.addWidget(QLabel("Meaning"))
        meaning.addWidget(self._combo("meaning", MEANINGS), 1)  # scene (atlas) | offsets (E_a) | both
        inner.addLayout(meaning)
        inner.addWidget(self._slider("scene", "Scene"))
        inner.addWidget(self._slider("semantic_reach", "Offset reach"))
        for group in LAYER_GROUPS:
            inner.addWidget(self._slider(f"group_gains.{group}", f"Gain {group}"))
        for group in LAYER_GROUPS:
            inner.addWidget(self._slider(f"group_smoothing.{group}", f"Smoothing {group}"))
        inner.addWidget(self._slider("model_rate", "Model rate (Hz)", decimals=1))
        layout.addWidget(box)
        layout.addWidget(self._rhythm_box())

        box = QGroupBox("Output")
        form = QFormLayout(box)
        form.addRow(self._slider("fps", "Frames/s", decimals=0))
        form.addRow("Resolution", self._combo("size", SIZES))
        form.addRow("Aspect", self._combo("aspect", ASPECTS))  # the frame's shape, synthesized natively
        self.screen_combo = QComboBox()
        for i, screen in enumerate(QGuiApplication.screens()):
            g = screen.geometry()
            self.screen_combo.addItem(f"{i}: {screen.name()} {g.width()}x{g.height()}")
        self.screen_combo.setCurrentIndex(min(self.output.screen_index, max(0, self.screen_combo.count() - 1)))
        self.screen_combo.currentIndexChanged.connect(lambda i: i >= 0 and self.output.set_screen(i))
        form.addRow("Screen", self.screen_combo)
        self.scale_combo = QComboBox()
        self.scale_combo.addItems(list(SCALE_MODES))
        self.scale_combo.setCurrentText(self.output.scale_mode)
        self.scale_combo.currentTextChanged.connect(self.output.set_scale_mode)
        form.addRow("Scale", self.scale_combo)  # how the window shows a frame of another shape
        row = QHBoxLayout()
        self.fullscreen_button = QPushButton("Fullscreen")
        self.fullscreen_button.setCheckable(True)
        self.fullscreen_button.toggled.connect(self.output.set_fullscreen)
        self.show_output_button = QPushButton("Show output")
        self.show_output_button.clicked.connect(lambda: (self.output.show(), self.output.raise_()))
        row.addWidget(self.fullscreen_button)
        row.addWidget(self.show_output_button)
        form.addRow(row)
        self.ndi_check = QCheckBox("Send over NDI")
        self.ndi_check.toggled.connect(self._on_ndi_toggled)
        self.ndi_label = QLabel("-")
        self.ndi_label.setWordWrap(True)
        form.addRow(self.ndi_check, self.ndi_label)
        layout.addWidget(box)

        box = QGroupBox("Record")
        inner = QVBoxLayout(box)
        self.record_button = QPushButton("● Record")
        self.record_button.setCheckable(True)
        self.record_button.toggled.connect(self._on_record_toggled)
        self._learnable("record", self.record_button)
        self.record_label = QLabel("not recording")
        self.record_label.setWordWrap(True)
        self.record_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.record_size_combo = QComboBox()
        self.record_size_combo.addItems(RECORD_SIZES)
        self.record_size_combo.setToolTip("Frame size of the next take: every frame of it is scaled to this size")
        size_row = QHBoxLayout()
        size_row.addWidget(QLabel("Size"))
        size_row.addWidget(self.record_size_combo, 1)
        inner.addWidget(self.record_button)
        inner.addLayout(size_row)
        inner.addWidget(self.record_label)
        layout.addWidget(box)

        box = QGroupBox("OSC")
        inner = QVBoxLayout(box)
        self.osc_label = QLabel("-")
        self.osc_label.setWordWrap(True)
        self.osc_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        inner.addWidget(self.osc_label)
        layout.addWidget(box)
        layout.addWidget(self._midi_box())

        box = QGroupBox("Engine")
        inner = QVBoxLayout(box)
        self.stats_label = QLabel("starting…")
        self.stats_label.setWordWrap(True)
        inner.addWidget(self.stats_label)
        layout.addWidget(box)
        layout.addStretch(1)
        return col

    def _midi_box(self) -> QGroupBox:
        """The MIDI input (none, or a port; Refresh lists them) and its status line."""
        box = QGroupBox("MIDI")
        inner = QVBoxLayout(box)
        row = QHBoxLayout()
        self.midi_combo = QComboBox()
        self.midi_combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.midi_combo.setToolTip("the MIDI input: knobs and pads drive what they learned, MIDI clock the tempo")
        self.midi_combo.activated.connect(self._on_midi_chosen)
        self.midi_refresh_button = QPushButton("Refresh")
        self.midi_refresh_button.setToolTip("list the MIDI inputs again")
        self.midi_refresh_button.clicked.connect(self.refresh_midi_inputs)
        row.addWidget(self.midi_combo, 1)
        row.addWidget(self.midi_refresh_button)
        inner.addLayout(row)
        self.midi_label = QLabel("-")
        self.midi_label.setWordWrap(True)
        self.midi_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        inner.addWidget(self.midi_label)
        self._fill_midi_combo([])  # listing ports opens a MIDI client: only when asked (Refresh)
        return box

    def refresh_midi_inputs(self) -> None:
        """List the MIDI inputs there are now."""
        names = self.backend.midi_inputs()
        self._fill_midi_combo(list(names) if isinstance(names, list) else [])

    def _fill_midi_combo(self, names: list[str]) -> None:
        combo = self.midi_combo
        current = self._midi_port()
        combo.blockSignals(True)
        combo.clear()
        combo.addItem("none", None)
        for name in names:
            combo.addItem(name, name)
        if current is not None and current not in names:
            combo.addItem(current, current)
        combo.blockSignals(False)
        self._select_midi(current)

    def _midi_port(self) -> str | None:
        port = self.backend.midi_port()
        return port if isinstance(port, str) else None

    def _select_midi(self, port: str | None) -> None:
        if port is not None and self.midi_combo.findData(port) < 0:
            _silently(self.midi_combo, lambda: self.midi_combo.addItem(port, port))
        index = self.midi_combo.findData(port) if port is not None else 0
        if self.midi_combo.currentIndex() != index and not self.midi_combo.view().isVisible():
            _silently(self.midi_combo, lambda: self.midi_combo.setCurrentIndex(index))

    def _on_midi_chosen(self, index: int) -> None:
        self.backend.use_midi(self.midi_combo.itemData(index))
        self.refresh_status()

    def _on_ndi_toggled(self, on: bool) -> None:
        self.backend.set_ndi(on)
        self.refresh_status()

    def _refresh_ndi(self) -> None:
        view = self.backend.ndi_view()
        if not isinstance(view, NdiView):
            return
        self.ndi_check.setEnabled(view.available)
        self.ndi_check.setToolTip(view.text if not view.available else "send the output as an NDI source")
        if self.ndi_check.isChecked() != view.on:
            _silently(self.ndi_check, lambda: self.ndi_check.setChecked(view.on))
        if self.ndi_label.text() != view.text:
            self.ndi_label.setText(view.text)

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file_menu = bar.addMenu("&File")
        act = file_menu.addAction("Open audio file…")
        act.setShortcut(QKeySequence.StandardKey.Open)
        act.triggered.connect(self._ask_audio_file)
        file_menu.addAction("Use demo audio").triggered.connect(lambda: self.backend.use_demo_audio())
        file_menu.addSeparator()
        file_menu.addAction("Open bundle…").triggered.connect(self._ask_bundle_dir)
        file_menu.addAction("Import generator (.pkl/.pt)…").triggered.connect(self._ask_generator_file)
        self.adapt_action = file_menu.addAction("Train sound meaning for this generator…")
        self.adapt_action.setToolTip("vjapp-train adapt: learn E_a and the predictor for the imported or playing "
                                     "generator from a folder of clips, then play the result")
        self.adapt_action.triggered.connect(self._ask_adapt)
        file_menu.addSeparator()
        quit_action = file_menu.addAction("Quit")
        quit_action.setShortcut(QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)

        self.presets_menu = bar.addMenu("&Presets")
        self.presets_menu.aboutToShow.connect(self._fill_presets_menu)
        self._fill_presets_menu()

        self.view_menu = bar.addMenu("&Output")
        self.view_menu.aboutToShow.connect(self._fill_output_menu)
        toggle = QAction("Toggle output fullscreen", self)
        toggle.setShortcut(QKeySequence("Ctrl+F"))
        toggle.triggered.connect(self.output.toggle_fullscreen)
        self.addAction(toggle)

    def _fill_presets_menu(self) -> None:
        menu = self.presets_menu
        menu.clear()
        menu.addAction("Save preset…").triggered.connect(self._ask_preset_name)
        nxt = menu.addAction("Next preset")
        nxt.setShortcut(QKeySequence("Ctrl+]"))
        nxt.triggered.connect(lambda: self.backend.step_preset(1))
        prev = menu.addAction("Previous preset")
        prev.setShortcut(QKeySequence("Ctrl+["))
        prev.triggered.connect(lambda: self.backend.step_preset(-1))
        menu.addSeparator()
        current = self.backend.current_preset
        for name in self.backend.preset_names():
            act = menu.addAction(name)
            act.setCheckable(True)
            act.setChecked(name == current)
            act.triggered.connect(lambda _=False, n=name: self.load_preset(n))

    def _fill_output_menu(self) -> None:
        self.view_menu.clear()
        self.view_menu.addAction("Show output window").triggered.connect(lambda: (self.output.show(), self.output.raise_()))
        self.view_menu.addSeparator()
        self.output.build_menu(self.view_menu)

    # ================================================================== drops
    def generator_dropped(self, path: str) -> None:
        """A bundle directory or a .pkl/.pt generator dropped onto the window: load or import it."""
        self.choose_bundle_path(path)

    # ================================================================== actions
    def choose_bundle_path(self, path: str) -> None:
        """A bundle directory loads; a .pkl/.pt file is converted first, then played as a bundle."""
        path = path.strip()
        if not path:
            return
        p = Path(path).expanduser()
        if p.suffix.lower() in GENERATOR_SUFFIXES and p.is_file():
            self.import_generator(str(p))
        elif p.is_dir():
            self.backend.open_bundle(str(p))
        else:
            self.show_message("error", f"{p}: not a bundle directory nor a .pkl/.pt generator file")

    def import_generator(self, src: str) -> None:
        """Convert ``src`` in a child process with a busy bar, then let the app adopt it."""
        if self.convert_job is not None and self.convert_job.running():
            self.show_message("warning", "a conversion is already running; wait for it to finish")
            return
        stem = str(self.backend.converted_dir / Path(src).stem)
        job = ConvertJob(src, stem, self)
        job.output.connect(lambda line: self.convert_label.setText(line))
        job.finished.connect(self._on_converted)
        self.convert_job = job
        self.convert_progress.setFormat(f"converting {Path(src).name}…")
        self.convert_progress.show()
        self.convert_label.setText(f"python -m vjapp convert {src} -o {stem}")
        self.convert_label.show()
        self.import_button.setEnabled(False)
        job.start()

    # ---------------------------------------------------------------- vjapp-train adapt
    def _ask_adapt(self) -> None:
        from vjapp.ui.adapt_job import AdaptDialog

        source = getattr(self.backend, "adapt_source", None)
        dialog = AdaptDialog(str(source()) if callable(source) else "",
                             str(self.settings.value("adapt/data", "") or ""), self)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return
        generator, data = dialog.generator_edit.text().strip(), dialog.data_edit.text().strip()
        if not generator or not data:
            self.show_message("error", "adapt needs a generator and a training data folder")
            return
        self.settings.setValue("adapt/data", data)
        self.start_adapt(generator, data, max_minutes=dialog.minutes_spin.value(),
                         device=dialog.device_combo.currentText(), amp=dialog.amp_check.isChecked())

    def start_adapt(self, generator: str, data: str, out: str | None = None, *, from_bundle: str | None = None,
                    device: str = "auto", amp: bool = False, max_minutes: float = 0.0,
                    extra_args: Sequence[str] = ()) -> Any:
        """Run ``vjapp-train adapt`` for ``generator`` in a child process; load its bundle when it ends."""
        from vjapp.ui.adapt_job import AdaptJob, adapt_command

        if self.adapt_job is not None and self.adapt_job.running():
            self.show_message("warning", "sound training is already running; wait for it to finish")
            return None
        if out is None:
            out = str(self.backend.converted_dir.parent / "bundles" / f"{Path(generator).stem or 'generator'}-sound")
        cmd = adapt_command(generator, data, out, from_bundle=from_bundle, device=device, amp=amp,
                            max_minutes=max_minutes, extra_args=extra_args)
        job = AdaptJob(cmd, out, self)
        job.progress.connect(self._on_adapt_progress)
        job.output.connect(lambda line: self.statusBar().showMessage(line, 6000))
        job.finished.connect(self._on_adapted)
        if self.adapt_progress is None:
            self.adapt_progress = QProgressBar()
            self.adapt_progress.setMaximumWidth(260)
            self.statusBar().addPermanentWidget(self.adapt_progress)
        self.adapt_progress.setRange(0, 0)
        self.adapt_progress.setFormat(f"learning sound for {Path(generator).name}… %p%")
        self.adapt_progress.show()
        self.adapt_action.setEnabled(False)
        self.adapt_job = job
        self.show_message("info", "training the sound's meaning: " + " ".join(cmd[1:]))
        job.start()
        return job

    def _on_adapt_progress(self, done: int, total: int) -> None:
        if self.adapt_progress is not None and total > 0:
            self.adapt_progress.setRange(0, total)
            self.adapt_progress.setValue(done)

    def _on_adapted(self, ok: bool, out: str, message: str) -> None:
        if self.adapt_progress is not None:
            self.adapt_progress.hide()
        self.adapt_action.setEnabled(True)
        if ok:
            self.show_message("info", f"sound training finished: loading {out}")
            self.backend.open_bundle(out)
        else:
            self.show_message("error", f"sound training failed: {message}")

    def _end_adapt_job(self) -> None:
        """On close: SIGTERM (the trainer checkpoints and leaves a usable bundle), then kill if it lingers."""
        job = self.adapt_job
        if job is not None and job.running():
            job.finished.disconnect()
            job.stop()
            if not job.process.waitForFinished(10000):
                job.kill()

    def _on_converted(self, ok: bool, stem: str, message: str) -> None:
        self.convert_progress.hide()
        self.import_button.setEnabled(True)
        if ok:
            self.convert_label.setText(f"converted to {stem}; building its bundle (it plays at once, the latent "
                                       "atlas follows)…")
            self.backend.adopt_generator(stem)
        else:
            self.convert_label.setText(f"conversion failed: {message}")
            self.show_message("error", f"conversion failed: {message}")

    def load_preset(self, name: str) -> None:
        self.backend.load_preset(name)

    def preset_save_dialog(self) -> PresetSaveDialog:
        return PresetSaveDialog(self._midi_port(), self)

    def _ask_preset_name(self) -> None:
        dialog = self.preset_save_dialog()
        if dialog.exec() == QDialog.DialogCode.Accepted:
            self.save_preset_from(dialog)

    def save_preset_from(self, dialog: PresetSaveDialog) -> None:
        """Save what the dialog says (nothing without a name)."""
        if dialog.name():
            self.backend.save_preset(dialog.name(), dialog.with_midi())
            self._refresh_presets()

    def _ask_audio_file(self) -> None:
        settings = self.settings
        start = str(settings.value("dirs/audio", str(Path.home())))
        path, _ = QFileDialog.getOpenFileName(self, "Open audio file", start,
                                              "Audio (*.wav *.flac *.ogg *.mp3 *.m4a *.aac *.mp4 *.opus);;All files (*)")
        if path:
            settings.setValue("dirs/audio", str(Path(path).parent))
            self.backend.open_audio(path)

    def _ask_bundle_dir(self) -> None:
        settings = self.settings
        start = str(settings.value("dirs/bundle", str(Path.home())))
        path = QFileDialog.getExistingDirectory(self, "Open bundle directory", start)
        if path:
            settings.setValue("dirs/bundle", path)
            self.backend.open_bundle(path)

    def _ask_generator_file(self) -> None:
        settings = self.settings
        start = str(settings.value("dirs/generator", str(Path.home())))
        path, _ = QFileDialog.getOpenFileName(self, "Import a StyleGAN2 generator", start,
                                              "Generators (*.pkl *.pt *.pth);;All files (*)")
        if path:
            settings.setValue("dirs/generator", str(Path(path).parent))
            self.import_generator(path)

    def _on_source_chosen(self, index: int) -> None:
        data = self.source_combo.itemData(index)
        if data is None:
            return
        kind, value = data
        if kind == "demo":
            self.backend.use_demo_audio()
        elif kind == "input":
            self.backend.use_input(value)
        elif kind == "file":
            self.backend.open_audio(value)

    def _on_seek(self) -> None:
        view = self.backend.source_view()
        duration = getattr(view.status, "duration", None) if view.status is not None else None
        if view.transport and duration:
            self.backend.seek(self.seek_slider.value() / 1000 * duration)

    def _on_record_toggled(self, on: bool) -> None:
        self.backend.set_recording(on)
        self.refresh_status()

    def _on_output_fullscreen(self, on: bool) -> None:
        _silently(self.fullscreen_button, lambda: self.fullscreen_button.setChecked(on))

    def refresh_devices(self) -> None:
        """Rebuild the source list: demo audio, the open file, then every input device."""
        view = self.backend.source_view()
        combo = self.source_combo
        combo.blockSignals(True)
        combo.clear()
        combo.addItem("Demo audio", ("demo", None))
        if view.key.startswith("file:"):
            path = view.key[5:]
            combo.addItem(f"File: {Path(path).name}", ("file", path))
        for device, label in self.backend.input_devices():
            combo.addItem(f"Input: {label}", ("input", device))
        listed = {f"{kind}:{value}" for kind, value in (combo.itemData(i) for i in range(combo.count()))}
        if view.key.startswith("input:") and view.key not in listed:
            combo.addItem(f"Input: {view.key[6:]} (no longer listed)", ("input", view.key[6:]))
        combo.blockSignals(False)
        self._select_source(view.key)

    def _select_source(self, key: str) -> None:
        combo = self.source_combo
        for i in range(combo.count()):
            kind, value = combo.itemData(i)
            if (kind == "demo" and key == "demo") or f"{kind}:{value}" == key:
                if combo.currentIndex() != i:
                    _silently(combo, lambda i=i: combo.setCurrentIndex(i))
                return

    def _refresh_presets(self) -> None:
        names = self.backend.preset_names()
        combo = self.preset_combo
        current = self.backend.current_preset
        if [combo.itemText(i) for i in range(combo.count())] != names:
            _silently(combo, lambda: (combo.clear(), combo.addItems(names)))
        if combo.view().isVisible():
            return
        index = names.index(current) if current in names else -1
        if combo.currentIndex() != index:
            _silently(combo, lambda: combo.setCurrentIndex(index))

    # ================================================================== following
    def sync_controls(self, force: bool = False) -> bool:
        """Move every widget that is not in the user's hands to the mailbox's value.

        Returns True if the mailbox had changed. Signals are blocked: nothing is written back.
        """
        version, controls = self.backend.controls.get()
        if version == self._seen_version and not force:
            return False
        self._seen_version = version
        for b in self._bindings:
            if not b.busy():
                b.set_value(get_path(controls, b.path))
        return True

    def _follow(self) -> None:
        self.sync_controls()
        view = self.backend.source_view()
        if view.ring is not None and view.sample_rate > 0:
            block, _ = view.ring.latest_copy(1024)
            self.scope.update_audio(block, view.sample_rate)

    # ================================================================== app -> window
    def on_frame(self, frame: Any) -> None:
        """The bridge's ``frame`` signal: paint it in the output window."""
        self.output.set_frame(frame.image, frame.index)
        self._painted.add(time.perf_counter_ns())

    def chosen_record_size(self) -> int | None:
        """The size picked in the Record box, or None for the output size at the take's start."""
        text = self.record_size_combo.currentText()
        return int(text) if text.isdigit() else None

    def on_analysis(self, analysis: Any) -> None:
        self.scope.update_analysis(analysis)

    def on_stats(self, snap: dict[str, Any]) -> None:
        """The bridge's ``stats`` signal: the Engine box. Each frame counter says what it counts,
        with its share of the last RATE_WINDOW_S seconds beside the total."""
        self._last_stats = snap
        self.display_fps = self._painted.rate(time.perf_counter_ns(), int(FPS_WINDOW_S * 1e9))
        lat = snap.get("latency_ms", {})
        counters = snap.get("counters", {})
        p50, p90 = lat.get("p50"), lat.get("p90")
        synth = snap.get("stages", {}).get("synthesis", {}).get("ema")
        skipped = int(counters.get("skipped_frames", 0))
        rendered = int(snap.get("frames", {}).get("display", 0))
        not_painted = int(snap.get("frames_not_painted", 0))
        recent = self._engine_recent
        recent.add(time.monotonic(), {"skipped": skipped, "slots": skipped + rendered, "rendered": rendered,
                                      "not_painted": not_painted})
        lines = [
            f"engine {snap.get('display_fps', 0.0):.1f} fps · model {snap.get('model_fps', 0.0):.1f} Hz · "
            f"painted {self.display_fps:.1f} fps",
            "latency " + (f"{p50:.0f} ms (p90 {p90:.0f})" if p50 is not None else "-")
            + (f" · synthesis {synth:.1f} ms" if synth is not None else ""),
            f"skipped to keep time {skipped}{_recent_share(recent, 'skipped', 'slots')} · "
            f"not painted {not_painted}{_recent_share(recent, 'not_painted', 'rendered')} · "
            f"errors {counters.get('errors', 0)}",
        ]
        self.stats_label.setText("\n".join(lines))

    def show_message(self, level: str, text: str) -> None:
        """The bridge's ``message`` signal: status bar + log panel (+ the Python log)."""
        self.messages.append((level, text))
        del self.messages[:-500]
        stamp = time.strftime("%H:%M:%S")
        self.log_view.appendPlainText(f"{stamp} {level.upper():7s} {text}")
        self.statusBar().showMessage(text, 15000 if level != "info" else 6000)

    def refresh_status(self) -> None:
        """Source, bundle, recorder and OSC lines (a few times a second)."""
        b = self.backend
        warning = b.bundle_warning
        self.banner.setVisible(bool(warning))
        if warning and self.banner.text() != warning:
            self.banner.setText(warning)
        desc = b.bundle_description + ("  (loading…)" if b.bundle_busy else "")
        if self.bundle_label.text() != desc:
            self.bundle_label.setText(desc)

        view = b.source_view()
        st = view.status
        self.source_label.setText(view.description)
        for w in (self.play_button, self.pause_button, self.loop_check, self.seek_slider):
            w.setEnabled(view.transport)
        if view.transport and st is not None:
            self.position_label.setText(f"{_fmt_time(st.position)} / {_fmt_time(st.duration)}"
                                        + ("  paused" if st.paused else ""))
            if st.duration and not self.seek_slider.isSliderDown():
                _silently(self.seek_slider, lambda: self.seek_slider.setValue(int(1000 * (st.position or 0) / st.duration)))
            if view.loop is not None:
                _silently(self.loop_check, lambda: self.loop_check.setChecked(bool(view.loop)))
        else:
            self.position_label.setText("live")
        self._select_source(view.key)

        rs = b.recorder_status()
        recording = bool(getattr(rs, "recording", False))
        if self.record_button.isChecked() != recording:
            _silently(self.record_button, lambda: self.record_button.setChecked(recording))
        self.record_button.setText("■ Stop recording" if recording else "● Record")
        self.record_label.setText(self._record_text(rs))
        self.osc_label.setText(b.osc_summary())
        midi_text = b.midi_summary()
        if isinstance(midi_text, str) and self.midi_label.text() != midi_text:
            self.midi_label.setText(midi_text)
        self._select_midi(self._midi_port())
        self._refresh_ndi()
        self._refresh_presets()

    def _record_text(self, rs: Any) -> str:
        """The Record box's line: the take's time, frames, size and frames not recorded (with
        their share of the last seconds), or the last take's file."""
        if not getattr(rs, "recording", False) and getattr(rs, "path", None) is None:
            return "not recording"
        written, dropped = int(rs.frames_written), int(rs.frames_dropped)
        size = getattr(rs, "size", None)
        at = f" at {size[0]}x{size[1]}" if size else ""
        if rs.recording:
            self._take_recent.add(time.monotonic(), {"not_recorded": dropped, "offered": written + dropped})
            return (f"REC {_fmt_time(rs.elapsed_s)} · {written} frames{at} · not recorded {dropped}"
                    f"{_recent_share(self._take_recent, 'not_recorded', 'offered')}\n{rs.path}")
        if getattr(rs, "file_removed", False):
            return f"last take: nothing saved ({rs.error or 'stopped before the first frame'})"
        tail = f" · error: {rs.error}" if rs.error else ""
        return f"last: {rs.path} ({_fmt_time(rs.elapsed_s)}, {written} frames{at}, not recorded {dropped}){tail}"

    # ================================================================== state
    def save_settings(self) -> None:
        """Window geometry, splitter, output window geometry / aspect mode / screen."""
        settings = self.settings
        settings.setValue("main/geometry", self.saveGeometry())
        settings.setValue("main/state", self.saveState())
        settings.setValue("main/splitter", self.splitter.saveState())
        settings.setValue("output/geometry", self.output.saveGeometry())
        settings.setValue("output/scale_mode", self.output.scale_mode)
        settings.setValue("record/size", self.record_size_combo.currentText())
        settings.sync()

    def restore_settings(self) -> set[str]:
        """Restore what :meth:`save_settings` kept; returns the keys restored (``main/geometry``...)."""
        settings = self.settings
        restored: set[str] = set()
        for key, fn in (("main/geometry", self.restoreGeometry), ("main/state", self.restoreState),
                        ("main/splitter", self.splitter.restoreState), ("output/geometry", self.output.restoreGeometry)):
            value = settings.value(key)
            if isinstance(value, QByteArray) and not value.isEmpty() and fn(value):
                restored.add(key)
        mode = settings.value("output/scale_mode")
        if mode in SCALE_MODES:
            self.output.set_scale_mode(str(mode))
        size = settings.value("record/size")
        if size in RECORD_SIZES:
            self.record_size_combo.setCurrentText(str(size))
        return restored

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 - Qt's name
        self._follow_timer.stop()
        self._status_timer.stop()
        for slider in self._sliders.values():
            slider.throttler.flush()
        if self.convert_job is not None:
            self.convert_job.kill()
        self._end_adapt_job()
        self.closing.emit()
        super().closeEvent(event)

