"""The latent atlas built in a child process (``python -m vjapp.atlas_build``) while the show plays.

``progress(done, total)`` follows the builder's ``progress DONE TOTAL`` lines; ``finished(ok,
message)`` ends it (``message``: the builder's error line on failure, else ``done N``).
Also: what may be dropped onto the windows (a bundle directory or a generator file).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from PyQt6.QtCore import QMimeData, QObject, QProcess, QProcessEnvironment, pyqtSignal

from model.bundle import BUNDLE_FILE
from vjapp.atlas_build import DONE_PREFIX, ERROR_PREFIX, parse_progress
from vjapp.imported import GENERATOR_FILES


def droppable_path(mime: QMimeData) -> str | None:
    """The first dropped local path that is a bundle directory or a .pkl/.pt generator, else None."""
    if not mime.hasUrls():
        return None
    for url in mime.urls():
        if not url.isLocalFile():
            continue
        p = Path(url.toLocalFile())
        if (p.is_file() and p.suffix.lower() in GENERATOR_FILES) or (p.is_dir() and (p / BUNDLE_FILE).is_file()):
            return str(p)
    return None


class AtlasJob(QObject):
    """One atlas build for ``bundle`` in a child process; the GUI stays live."""

    progress = pyqtSignal(int, int)
    finished = pyqtSignal(bool, str)

    def __init__(self, bundle: str | Path, samples: int, threads: int = 1, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.bundle = str(bundle)
        self.samples = int(samples)
        self.threads = int(threads)
        self.process = QProcess(self)
        env = QProcessEnvironment.systemEnvironment()
        root = str(Path(__file__).resolve().parents[2])  # the source tree, so `-m vjapp.atlas_build` resolves
        env.insert("PYTHONPATH", os.pathsep.join(p for p in (root, env.value("PYTHONPATH")) if p))
        self.process.setProcessEnvironment(env)
        self.process.setProcessChannelMode(QProcess.ProcessChannelMode.SeparateChannels)
        self.process.readyReadStandardOutput.connect(self._read)
        self.process.finished.connect(self._done)
        self.process.errorOccurred.connect(self._error)
        self._last = ""
        self._error_line = ""
        self._reported = False

    def start(self) -> None:
        self.process.start(sys.executable, ["-m", "vjapp.atlas_build", self.bundle, "--samples", str(self.samples),
                                            "--threads", str(self.threads)])

    def running(self) -> bool:
        return self.process.state() != QProcess.ProcessState.NotRunning

    def kill(self) -> None:
        if self.running():
            self.process.kill()
            self.process.waitForFinished(2000)

    def _read(self) -> None:
        text = bytes(self.process.readAllStandardOutput().data()).decode("utf-8", "replace")
        for line in text.splitlines():
            line = line.strip()
            got = parse_progress(line)
            if got is not None:
                self.progress.emit(*got)
            elif line.startswith(ERROR_PREFIX):
                self._error_line = line[len(ERROR_PREFIX):]
            elif line.startswith(DONE_PREFIX):
                self._last = line

    def _done(self, code: int, status: QProcess.ExitStatus) -> None:
        self._read()
        ok = status == QProcess.ExitStatus.NormalExit and code == 0
        if ok:
            self._finish(True, self._last)
            return
        tail = bytes(self.process.readAllStandardError().data()).decode("utf-8", "replace").strip().splitlines()
        self._finish(False, self._error_line or (tail[-1] if tail else f"the atlas builder stopped (exit code {code})"))

    def _error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._finish(False, f"could not start {sys.executable}: {self.process.errorString()}")

    def _finish(self, ok: bool, message: str) -> None:
        if not self._reported:
            self._reported = True
            self.finished.emit(ok, message)
