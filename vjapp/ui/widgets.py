"""Small reusable widgets: a signal throttler, control sliders bound to a control spec, a level meter.

Sliders move many times per second while dragged; the engine only needs the newest value a few
dozen times a second. :class:`Throttler` passes the first value of a burst at once (the picture
reacts immediately), then at most one value per interval, and always the last one (the control
ends exactly where the hand stopped). Widgets set from the outside (OSC, presets) use
``set_value_silently`` so that following the controls mailbox never writes back into it.
A slider made ``learnable`` offers "MIDI learn" on right-click (``learn_requested(path)``), and
"Forget MIDI mapping" when its control is bound; :class:`MidiLearnMenu` gives any other widget
(a checkbox, a combo box, a button) the same menu.

Qt and numpy only: no torch, no sounddevice (``vjapp/ui`` layering rule).
"""

from __future__ import annotations

import math
from typing import Any, Callable

from PyQt6.QtCore import QObject, QRectF, Qt, QTimer, pyqtSignal
from PyQt6.QtGui import QColor, QPainter
from PyQt6.QtCore import QPoint
from PyQt6.QtWidgets import QHBoxLayout, QLabel, QMenu, QSizePolicy, QSlider, QWidget

from vjapp.engine.controls import FloatSpec, IntSpec

__all__ = ["Throttler", "ControlSlider", "LevelMeter", "MidiLearnMenu", "midi_menu", "DEFAULT_THROTTLE_MS"]

DEFAULT_THROTTLE_MS = 33  # at most ~30 updates per second into the controls mailbox


class Throttler(QObject):
    """Leading + trailing throttle: ``trigger(v)`` emits ``fired(v)`` at most once per interval.

    The first trigger of a burst fires immediately and opens an interval; triggers inside the
    interval only replace the pending value, which fires when the interval ends (and opens the
    next one). So a burst of any length over ``T`` ms fires at most ``T / interval + 2`` times, and
    the last value always arrives.
    """

    fired = pyqtSignal(object)

    def __init__(self, interval_ms: int = DEFAULT_THROTTLE_MS, parent: QObject | None = None) -> None:
        super().__init__(parent)
        if interval_ms <= 0:
            raise ValueError(f"interval_ms must be positive, got {interval_ms}")
        self._timer = QTimer(self)
        # A coarse timer (Qt's default) may fire up to 5% early, which would let two values
        # through less than one interval apart; a precise one never fires early.
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(interval_ms))
        self._timer.timeout.connect(self._on_timeout)
        self._pending: Any = None
        self._has_pending = False

    @property
    def interval_ms(self) -> int:
        return self._timer.interval()

    @property
    def pending(self) -> bool:
        """A value waits for the end of the current interval."""
        return self._has_pending

    def trigger(self, value: Any) -> None:
        if self._timer.isActive():
            self._pending, self._has_pending = value, True
            return
        self.fired.emit(value)
        self._timer.start()

    def flush(self) -> None:
        """Emit the pending value now (e.g. before the window closes)."""
        if self._has_pending:
            value, self._pending, self._has_pending = self._pending, None, False
            self.fired.emit(value)

    def _on_timeout(self) -> None:
        if self._has_pending:
            value, self._pending, self._has_pending = self._pending, None, False
            self.fired.emit(value)
            self._timer.start()  # the value just sent opens a new interval


def midi_menu(parent: QWidget, target: str, bound: str | None, learn: Callable[[], None],
              forget: Callable[[], None]) -> QMenu:
    """The right-click menu of a MIDI-learnable widget: "MIDI learn", and "Forget MIDI mapping"
    when ``bound`` (what drives ``target`` now, e.g. ``CC 21 (ch 1)``) is not None."""
    menu = QMenu(parent)
    action = menu.addAction("MIDI learn: move a knob or fader, or hit a pad, next")
    action.setObjectName(f"midi-learn:{target}")
    action.triggered.connect(learn)
    if bound is not None:
        action = menu.addAction(f"Forget MIDI mapping ({bound})")
        action.setObjectName(f"midi-forget:{target}")
        action.triggered.connect(forget)
    return menu


class MidiLearnMenu(QObject):
    """Gives ``widgets`` (a control and its parts, e.g. a spin box and its line edit) a right-click
    menu for MIDI learn of ``target``. ``bound(target)`` says what drives it now (or None)."""

    learn_requested = pyqtSignal(str)
    forget_requested = pyqtSignal(str)

    def __init__(self, target: str, widgets: list[QWidget], bound: Callable[[str], str | None]) -> None:
        super().__init__(widgets[0])
        self.target = target
        self.widget = widgets[0]
        self._bound = bound
        for widget in widgets:
            widget.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
            widget.customContextMenuRequested.connect(lambda pos, w=widget: self._show(w, pos))

    def context_menu(self) -> QMenu:
        return midi_menu(self.widget, self.target, self._bound(self.target),
                         lambda: self.learn_requested.emit(self.target),
                         lambda: self.forget_requested.emit(self.target))

    def _show(self, widget: QWidget, pos: QPoint) -> None:
        self.context_menu().exec(widget.mapToGlobal(pos))


class ControlSlider(QWidget):
    """A labelled horizontal slider for one numeric control (a :class:`FloatSpec` or :class:`IntSpec`).

    ``value_changed(path, value)`` is throttled; ``set_value_silently`` moves the slider without
    emitting. The slider works in integer steps (``steps`` for floats, one per integer for ints).
    """

    value_changed = pyqtSignal(str, object)
    learn_requested = pyqtSignal(str)  # "MIDI learn" chosen from the right-click menu
    forget_requested = pyqtSignal(str)  # "Forget MIDI mapping" chosen from the right-click menu

    def __init__(
        self,
        path: str,
        spec: FloatSpec | IntSpec,
        label: str,
        steps: int = 1000,
        decimals: int = 2,
        throttle_ms: int = DEFAULT_THROTTLE_MS,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        if not isinstance(spec, (FloatSpec, IntSpec)):
            raise TypeError(f"{path}: a slider needs a FloatSpec or IntSpec, got {type(spec).__name__}")
        self.path = path
        self.spec = spec
        self.is_int = isinstance(spec, IntSpec)
        self.decimals = 0 if self.is_int else decimals
        self.steps = int(spec.hi - spec.lo) if self.is_int else int(steps)
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, self.steps)
        self.slider.setObjectName(f"slider:{path}")
        self.slider.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.name_label = QLabel(label)
        self.name_label.setMinimumWidth(110)
        self.value_label = QLabel()
        self.value_label.setMinimumWidth(48)
        self.value_label.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if spec.doc:
            self.setToolTip(f"{spec.doc} ({path}, {spec.lo:g} to {spec.hi:g})")
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.name_label)
        row.addWidget(self.slider, 1)
        row.addWidget(self.value_label)
        self.throttler = Throttler(throttle_ms, self)
        self.throttler.fired.connect(lambda v: self.value_changed.emit(self.path, v))
        self.slider.valueChanged.connect(self._on_slider)
        self.slider.sliderReleased.connect(self.throttler.flush)
        self._show(self.value())
        self.learnable = False
        self._bound: Callable[[str], str | None] = lambda _target: None
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(self._show_context_menu)

    # -- MIDI learn -----------------------------------------------------------------------------
    def set_learnable(self, on: bool, bound: Callable[[str], str | None] | None = None) -> None:
        """Offer "MIDI learn" on right-click (the app has a MIDI learn to offer); ``bound(path)``
        says what drives the control now, for "Forget MIDI mapping"."""
        self.learnable = on
        if bound is not None:
            self._bound = bound

    def context_menu(self) -> QMenu | None:
        """The right-click menu (None when there is nothing to offer)."""
        if not self.learnable:
            return None
        return midi_menu(self, self.path, self._bound(self.path), lambda: self.learn_requested.emit(self.path),
                         lambda: self.forget_requested.emit(self.path))

    def _show_context_menu(self, pos: QPoint) -> None:
        menu = self.context_menu()
        if menu is not None:
            menu.exec(self.mapToGlobal(pos))

    # -- mapping --------------------------------------------------------------------------------
    def to_position(self, value: float) -> int:
        lo, hi = float(self.spec.lo), float(self.spec.hi)
        x = min(max(float(value), lo), hi)
        return int(round((x - lo) / (hi - lo) * self.steps)) if hi > lo else 0

    def from_position(self, pos: int) -> float | int:
        lo, hi = float(self.spec.lo), float(self.spec.hi)
        x = lo + (hi - lo) * pos / self.steps if self.steps else lo
        return int(round(x)) if self.is_int else float(x)

    def value(self) -> float | int:
        return self.from_position(self.slider.value())

    # -- in/out ---------------------------------------------------------------------------------
    def busy(self) -> bool:
        """The user is dragging, or a value has not reached the mailbox yet: don't move it."""
        return self.slider.isSliderDown() or self.throttler.pending

    def set_value_silently(self, value: float | int) -> None:
        pos = self.to_position(value)
        if pos != self.slider.value():
            self.slider.blockSignals(True)
            self.slider.setValue(pos)
            self.slider.blockSignals(False)
        self._show(value)

    def _on_slider(self, pos: int) -> None:
        value = self.from_position(pos)
        self._show(value)
        self.throttler.trigger(value)

    def _show(self, value: float | int) -> None:
        self.value_label.setText(f"{value:.{self.decimals}f}" if not self.is_int else str(int(value)))


class LevelMeter(QWidget):
    """A horizontal dBFS bar (-60..0 dB) with a falling peak-hold marker."""

    FLOOR_DB = -60.0

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.level_db = self.FLOOR_DB
        self.peak_db = self.FLOOR_DB
        self.setMinimumHeight(14)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("input level (RMS dBFS) with peak hold")

    def set_level(self, rms_db: float, peak_db: float | None = None, decay_db: float = 1.0) -> None:
        """Show ``rms_db``; the held peak falls by ``decay_db`` per call unless pushed up."""
        level = rms_db if math.isfinite(rms_db) else self.FLOOR_DB
        self.level_db = min(max(level, self.FLOOR_DB), 0.0)
        top = self.level_db if peak_db is None or not math.isfinite(peak_db) else min(max(peak_db, self.FLOOR_DB), 0.0)
        self.peak_db = max(top, self.peak_db - decay_db)
        self.update()

    def _x(self, db: float) -> float:
        return (db - self.FLOOR_DB) / -self.FLOOR_DB * self.width()

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(25, 25, 25))
        x = self._x(self.level_db)
        colour = QColor(60, 200, 90) if self.level_db < -12 else QColor(230, 200, 40) if self.level_db < -3 else QColor(230, 60, 40)
        p.fillRect(QRectF(0, 0, x, self.height()), colour)
        p.fillRect(QRectF(self._x(self.peak_db) - 1, 0, 2, self.height()), QColor(240, 240, 240))
        p.end()
