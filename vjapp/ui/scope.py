"""The scope: input level, a scrolling spectrum of the input, and the mel window the model heard.

The spectrum is a plain numpy FFT of the newest block of the source's ring, computed on the GUI
thread (about 0.1 ms for 1024 samples); the mel comes from the engine's analysis slot, so the UI
never runs a model. Images are drawn with pyqtgraph ``ImageItem`` (row-major, fixed levels, no
auto-levelling per frame) into arrays allocated once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyqtgraph as pg
from PyQt6.QtWidgets import QLabel, QVBoxLayout, QWidget

from vjapp.ui.widgets import LevelMeter

__all__ = ["ScopePanel", "SpectrumAnalyzer", "block_levels"]

FFT_SIZE = 1024
FLOOR_DB = -90.0
TOP_DB = -10.0


def block_levels(block: np.ndarray) -> tuple[float, float]:
    """RMS and peak of a block in dBFS (``-inf`` for silence). ``block``: [n] or [n, channels]."""
    x = np.asarray(block, dtype=np.float32)
    if x.size == 0:
        return float("-inf"), float("-inf")
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    peak = float(np.max(np.abs(x)))
    with np.errstate(divide="ignore"):
        return 20 * np.log10(rms) if rms > 0 else float("-inf"), 20 * np.log10(peak) if peak > 0 else float("-inf")


class SpectrumAnalyzer:
    """Turns the newest ``FFT_SIZE`` samples into ``n_bands`` log-spaced band levels in [0, 1]."""

    def __init__(self, sample_rate: int, n_bands: int = 96, f_min: float = 40.0, fft_size: int = FFT_SIZE) -> None:
        self.sample_rate = int(sample_rate)
        self.fft_size = int(fft_size)
        self.n_bands = int(n_bands)
        self.window = np.hanning(self.fft_size).astype(np.float32)
        self._norm = float(np.sum(self.window)) ** 2 / 4  # a full-scale sine reads about 0 dB
        n_bins = self.fft_size // 2 + 1
        f_max = self.sample_rate / 2
        edges_hz = np.geomspace(f_min, f_max, self.n_bands + 1)
        edges = np.clip(np.round(edges_hz / f_max * (n_bins - 1)).astype(int), 1, n_bins - 1)
        edges = np.maximum.accumulate(edges)
        self._starts = edges[:-1]
        self._counts = np.maximum(edges[1:] - edges[:-1], 1)

    def bands(self, block: np.ndarray) -> np.ndarray:
        """``block`` [n] or [n, channels] float -> [n_bands] float32 in [0, 1] (FLOOR_DB..TOP_DB)."""
        x = np.asarray(block, dtype=np.float32)
        if x.ndim == 2:
            x = x.mean(axis=1)
        if x.size < self.fft_size:
            x = np.concatenate([np.zeros(self.fft_size - x.size, np.float32), x])
        spec = np.fft.rfft(x[-self.fft_size:] * self.window)
        power = (spec.real**2 + spec.imag**2) / self._norm  # [n_bins]
        csum = np.concatenate([[0.0], np.cumsum(power)])
        band = (csum[np.minimum(self._starts + self._counts, power.size)] - csum[self._starts]) / self._counts
        with np.errstate(divide="ignore"):
            db = 10 * np.log10(np.maximum(band, 1e-12))
        return np.clip((db - FLOOR_DB) / (TOP_DB - FLOOR_DB), 0.0, 1.0).astype(np.float32)


class _ImageView(pg.GraphicsLayoutWidget):
    """A bare image plot: no axes, no mouse, fixed levels, inferno colours."""

    def __init__(self, title: str, height: int) -> None:
        super().__init__()
        self.setMinimumHeight(height)
        self.setMaximumHeight(height * 2)
        self.ci.setContentsMargins(0, 0, 0, 0)
        self.view = self.addViewBox(lockAspect=False, enableMouse=False, enableMenu=False)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setLookupTable(pg.colormap.get("inferno").getLookupTable(0.0, 1.0, 256))
        self.view.addItem(self.image)
        self.setToolTip(title)

    def show(self, data: np.ndarray) -> None:  # type: ignore[override]
        first = self.image.image is None or self.image.image.shape != data.shape
        self.image.setImage(data, autoLevels=False, levels=(0.0, 1.0))
        if first:
            self.view.autoRange(padding=0.0)


class ScopePanel(QWidget):
    """Level meter + scrolling spectrum + the model's mel window."""

    def __init__(self, columns: int = 200, n_bands: int = 96, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.columns = int(columns)
        self.n_bands = int(n_bands)
        self.meter = LevelMeter()
        self.level_label = QLabel("level: -")
        self.spectrum_view = _ImageView("input spectrum (40 Hz .. Nyquist, log frequency), newest on the right", 90)
        self.mel_view = _ImageView("the mel window the model heard at its last step", 70)
        self.mel_label = QLabel("model hears: -")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.meter)
        layout.addWidget(self.level_label)
        layout.addWidget(self.spectrum_view)
        layout.addWidget(self.mel_label)
        layout.addWidget(self.mel_view)
        # [n_bands, 2 * columns]: every column written twice, so the newest `columns` are one view
        self._history = np.zeros((self.n_bands, 2 * self.columns), np.float32)
        self._col = 0
        self._analyzer: SpectrumAnalyzer | None = None
        self.blocks_seen = 0

    def update_audio(self, block: np.ndarray, sample_rate: int) -> None:
        """Show the newest samples of the source (``[n]`` or ``[n, channels]``)."""
        rms_db, peak_db = block_levels(block)
        self.meter.set_level(rms_db, peak_db)
        self.level_label.setText(f"level: {rms_db:6.1f} dBFS rms, {peak_db:6.1f} dBFS peak"
                                 if np.isfinite(rms_db) else "level: silence")
        if self._analyzer is None or self._analyzer.sample_rate != int(sample_rate):
            self._analyzer = SpectrumAnalyzer(int(sample_rate), self.n_bands)
        column = self._analyzer.bands(block)
        self._history[:, self._col] = column
        self._history[:, self._col + self.columns] = column
        self._col = (self._col + 1) % self.columns
        self.spectrum_view.show(self._history[:, self._col:self._col + self.columns])
        self.blocks_seen += 1

    def update_analysis(self, analysis: Any) -> None:
        """Show an engine ``Analysis`` (``mel`` [n_mels, T] in [0, 1] or None, ``loudness_db``, ...)."""
        mel = getattr(analysis, "mel", None)
        if mel is not None:
            self.mel_view.show(np.asarray(mel, dtype=np.float32))
        self.mel_label.setText(
            f"model hears: {getattr(analysis, 'loudness_db', float('nan')):.1f} dBFS, "
            f"reactivity {getattr(analysis, 'loudness', 0.0):.2f}, motion {getattr(analysis, 'motion', 0.0):.3f}"
            + ("" if mel is not None else " (silence)")
        )
