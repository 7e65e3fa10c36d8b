"""A child process the GUI follows without blocking (convert, atlas build, adapt).

:class:`ChildJob` owns the :class:`QProcess`: ``running``, ``kill``, output read as it comes
(:meth:`take_output`, per job), and exactly one end report (:meth:`report`) whether the process
ends, fails or never starts. On failure the message is the job's own (:meth:`failure_message`;
by default the last output line that mentions an error, else the last line, else the exit code).
"""

from __future__ import annotations

import sys

from PyQt6.QtCore import QObject, QProcess

KEPT_LINES = 200


class ChildJob(QObject):
    """Base of the app's child-process jobs; subclasses define :meth:`start` and :meth:`report`."""

    def __init__(self, parent: QObject | None = None, merged: bool = True) -> None:
        super().__init__(parent)
        self.program = sys.executable
        self.process = QProcess(self)
        mode = QProcess.ProcessChannelMode.MergedChannels if merged else QProcess.ProcessChannelMode.SeparateChannels
        self.process.setProcessChannelMode(mode)
        self.process.readyReadStandardOutput.connect(self._read)
        self.process.finished.connect(self._done)
        self.process.errorOccurred.connect(self._error)
        self._lines: list[str] = []
        self._reported = False

    def running(self) -> bool:
        return self.process.state() != QProcess.ProcessState.NotRunning

    def kill(self) -> None:
        if self.running():
            self.process.kill()
            self.process.waitForFinished(2000)

    # -- per job ------------------------------------------------------------------------------
    def take_output(self, text: str) -> None:
        """New standard output: by default every non-empty line is kept (the newest 200)."""
        for line in text.splitlines():
            if line.strip():
                self.keep(line.rstrip())

    def keep(self, line: str) -> None:
        self._lines.append(line)
        del self._lines[:-KEPT_LINES]

    def success_message(self) -> str:
        return ""

    def failure_message(self, code: int) -> str:
        errors = [ln for ln in self._lines if "error" in ln.lower()]
        return errors[-1] if errors else (self._lines[-1] if self._lines else f"exit code {code}")

    def report(self, ok: bool, message: str) -> None:
        raise NotImplementedError

    # -- the process --------------------------------------------------------------------------
    def _read(self) -> None:
        self.take_output(bytes(self.process.readAllStandardOutput().data()).decode("utf-8", "replace"))

    def _done(self, code: int, status: QProcess.ExitStatus) -> None:
        self._read()
        ok = status == QProcess.ExitStatus.NormalExit and code == 0
        self._finish(ok, self.success_message() if ok else self.failure_message(code))

    def _error(self, error: QProcess.ProcessError) -> None:
        if error == QProcess.ProcessError.FailedToStart:
            self._finish(False, f"could not start {self.program}: {self.process.errorString()}")

    def _finish(self, ok: bool, message: str) -> None:
        if not self._reported:
            self._reported = True
            self.report(ok, message)
