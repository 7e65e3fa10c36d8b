"""Training the sound's meaning for a generator from the app: ``vjapp-train adapt`` as a child process.

:class:`AdaptJob` runs ``python -m training.cli adapt --generator G --data DIR --out BUNDLE ...``
(:func:`adapt_command`), reports the stage's progress bar as ``progress(done, total)`` (parsed
from its tqdm output by :func:`parse_progress`) and ends with ``finished(ok, out, message)``;
the control window then loads ``out`` through the app's background bundle loader.
:class:`AdaptDialog` asks for the generator, the data folder and the limits.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Sequence

from PyQt6.QtCore import QObject, pyqtSignal
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QWidget,
)

from vjapp.ui.child_job import ChildJob

DEVICES = ("auto", "cpu", "cuda")
# tqdm's "desc:  10%|█   | 5/50 [00:01<00:10, ...]"
_PROGRESS = re.compile(r"(\d+)/(\d+) \[")


def adapt_command(
    generator: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    from_bundle: str | Path | None = None,
    device: str = "auto",
    amp: bool = False,
    max_minutes: float = 0.0,
    extra_args: Sequence[str] = (),
    python: str = sys.executable,
) -> list[str]:
    """The child process's command line: ``[python, -m, training.cli, adapt, ...]``."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    cmd = [python, "-m", "training.cli", "adapt", "--generator", str(generator), "--data", str(data),
           "--out", str(out), "--device", device]
    if from_bundle is not None:
        cmd += ["--from", str(from_bundle)]
    if amp:
        cmd.append("--amp")
    if max_minutes > 0:
        cmd += ["--max-minutes", f"{max_minutes:g}"]
    return cmd + [str(a) for a in extra_args]


def parse_progress(text: str) -> tuple[int, int] | None:
    """The newest ``(done, total)`` of a tqdm progress bar in ``text`` (None if there is none)."""
    matches = _PROGRESS.findall(text)
    if not matches:
        return None
    done, total = matches[-1]
    return int(done), int(total)


class AdaptJob(ChildJob):
    """``vjapp-train adapt`` in a child process; the GUI stays live.

    Signals: ``progress(done, total)`` as steps complete, ``output(line)`` for each log line,
    ``finished(ok, out, message)`` once (``message``: the last error line on failure).
    """

    progress = pyqtSignal(int, int)
    output = pyqtSignal(str)
    finished = pyqtSignal(bool, str, str)

    def __init__(self, command: Sequence[str], out: str | Path, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.command = list(command)
        self.program = self.command[0]
        self.out = str(out)

    def start(self) -> None:
        Path(self.out).parent.mkdir(parents=True, exist_ok=True)
        self.process.start(self.command[0], self.command[1:])

    def stop(self) -> None:
        """Ask the trainer to stop: SIGTERM makes it checkpoint and write a usable bundle."""
        if self.running():
            self.process.terminate()

    def take_output(self, text: str) -> None:
        step = parse_progress(text)
        if step is not None:
            self.progress.emit(*step)
        for line in re.split(r"[\r\n]+", text):
            line = line.strip()
            if line and parse_progress(line) is None:
                self.keep(line)
                self.output.emit(line)

    def report(self, ok: bool, message: str) -> None:
        self.finished.emit(ok, self.out, message)


class AdaptDialog(QDialog):
    """Generator, training data folder, time limit, device: what ``vjapp-train adapt`` needs."""

    def __init__(self, generator: str, data: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Train sound meaning for a generator")
        layout = QFormLayout(self)
        self.generator_edit = QLineEdit(generator)
        self.generator_edit.setToolTip("a bundle directory, an NVIDIA .pkl, a rosinality .pt or a converted generator")
        layout.addRow("Generator:", self.generator_edit)
        row = QHBoxLayout()
        self.data_edit = QLineEdit(data)
        self.data_edit.setPlaceholderText("folder of video clips with sound (or a manifest CSV)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row.addWidget(self.data_edit, 1)
        row.addWidget(browse)
        layout.addRow("Training data:", row)
        self.minutes_spin = QDoubleSpinBox()
        self.minutes_spin.setRange(1.0, 24 * 60.0)
        self.minutes_spin.setValue(30.0)
        self.minutes_spin.setSuffix(" min")
        layout.addRow("Stop after:", self.minutes_spin)
        self.device_combo = QComboBox()
        self.device_combo.addItems(DEVICES)
        layout.addRow("Device:", self.device_combo)
        self.amp_check = QCheckBox("Mixed precision (CUDA)")
        layout.addRow(self.amp_check)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addRow(buttons)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Training data folder", self.data_edit.text())
        if path:
            self.data_edit.setText(path)
