"""The rhythm panel's meter: three band bars that flash on onsets, the tempo and the beat phase.

Qt only; it paints a :class:`~vjapp.audio.rhythm.RhythmSnapshot` (duck-typed: ``strength``,
``onsets``, ``bpm``, ``beat_phase``, ``bar_phase``, ``confidence``, ``tempo_source``) and never
calls a model.
"""

from __future__ import annotations

from typing import Any

from PyQt6.QtCore import QRectF, Qt
from PyQt6.QtGui import QColor, QPainter
from PyQt6.QtWidgets import QWidget

# vjapp.audio.rhythm.BANDS, not imported: vjapp.audio's package loads sounddevice, which the UI must not
BANDS = ("low", "mid", "high")
BAND_COLOURS = ("#e5533d", "#e5b33d", "#3dbde5")


class RhythmMeter(QWidget):
    """Band strengths as bars (bright on a new onset), four beat dots, the BPM as text."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(64)
        self.strength = (0.0, 0.0, 0.0)
        self.flash = [0.0, 0.0, 0.0]  # 1 on a new onset, fading per update
        self._onsets = (0, 0, 0)
        self.bpm: float | None = None
        self.bar_phase = 0.0
        self.confidence = 0.0
        self.source = "audio"

    def update_rhythm(self, snap: Any) -> None:
        self.strength = tuple(float(s) for s in snap.strength)  # type: ignore[assignment]
        new = tuple(int(n) for n in snap.onsets)
        for i in range(3):
            self.flash[i] = 1.0 if new[i] > self._onsets[i] else self.flash[i] * 0.7
        self._onsets = new  # type: ignore[assignment]
        self.bpm = snap.bpm
        self.bar_phase = float(snap.bar_phase)
        self.confidence = float(snap.confidence)
        self.source = str(snap.tempo_source)
        self.update()

    def text(self) -> str:
        """What the meter says in words (also its tooltip)."""
        tempo = "—" if self.bpm is None else f"{self.bpm:.1f} BPM"
        return f"{tempo} ({self.source}, confidence {self.confidence:.0%})"

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        w, h = self.width(), self.height()
        p.fillRect(0, 0, w, h, QColor("#111"))
        bar_w = w * 0.5 / 3
        for i in range(3):
            x = 4 + i * bar_w
            level = max(self.strength[i], self.flash[i])
            colour = QColor(BAND_COLOURS[i])
            colour = colour.lighter(100 + int(80 * self.flash[i]))
            p.fillRect(QRectF(x, h - 4 - (h - 8) * level, bar_w - 6, (h - 8) * level), colour)
            p.setPen(QColor("#888"))
            p.drawText(QRectF(x, h - 16, bar_w - 6, 14), Qt.AlignmentFlag.AlignCenter, BANDS[i])
        beat = int(self.bar_phase * 4) % 4 if self.bpm is not None else -1
        for k in range(4):
            cx = w * 0.55 + k * 16
            p.setBrush(QColor("#eee" if k == beat else "#333"))
            p.setPen(Qt.PenStyle.NoPen)
            p.drawEllipse(QRectF(cx, 8, 10, 10))
        p.setPen(QColor("#ddd"))
        p.drawText(QRectF(w * 0.55, 24, w * 0.45 - 4, h - 28), Qt.AlignmentFlag.AlignLeft, self.text())
        self.setToolTip(self.text())
        p.end()
