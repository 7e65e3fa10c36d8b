"""The latent atlas built in a child process (``python -m vjapp.atlas_build``) while the show plays.

``progress(done, total)`` follows the builder's ``progress DONE TOTAL`` lines; ``finished(ok,
message)`` ends it (``message``: the builder's error line on failure, else ``done N``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from PyQt6.QtCore import QObject, QProcessEnvironment, pyqtSignal

from vjapp.atlas_build import DONE_PREFIX, ERROR_PREFIX, parse_progress
from vjapp.ui.child_job import ChildJob


class AtlasJob(ChildJob):
    """One atlas build for ``bundle`` in a child process; the GUI stays live."""

    progress = pyqtSignal(int, int)
    finished = pyqtSignal(bool, str)

    def __init__(self, bundle: str | Path, samples: int, threads: int = 1, parent: QObject | None = None) -> None:
        super().__init__(parent, merged=False)
        self.bundle = str(bundle)
        self.samples = int(samples)
        self.threads = int(threads)
        env = QProcessEnvironment.systemEnvironment()
        root = str(Path(__file__).resolve().parents[2])  # the source tree, so `-m vjapp.atlas_build` resolves
        env.insert("PYTHONPATH", os.pathsep.join(p for p in (root, env.value("PYTHONPATH")) if p))
        self.process.setProcessEnvironment(env)
        self._last = ""
        self._error_line = ""

    def start(self) -> None:
        self.process.start(sys.executable, ["-m", "vjapp.atlas_build", self.bundle, "--samples", str(self.samples),
                                            "--threads", str(self.threads)])

    def take_output(self, text: str) -> None:
        for line in text.splitlines():
            line = line.strip()
            got = parse_progress(line)
            if got is not None:
                self.progress.emit(*got)
            elif line.startswith(ERROR_PREFIX):
                self._error_line = line[len(ERROR_PREFIX):]
            elif line.startswith(DONE_PREFIX):
                self._last = line

    def success_message(self) -> str:
        return self._last

    def failure_message(self, code: int) -> str:
        tail = bytes(self.process.readAllStandardError().data()).decode("utf-8", "replace").strip().splitlines()
        return self._error_line or (tail[-1] if tail else f"the atlas builder stopped (exit code {code})")

    def report(self, ok: bool, message: str) -> None:
        self.finished.emit(ok, message)
