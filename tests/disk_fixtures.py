"""Helpers for the recording tests: a file that fills up like a disk, a writer killed mid-take."""

from __future__ import annotations

import errno
import io
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_until_ready_then_kill(child_code: str, path: Path) -> int:
    """Run ``child_code`` (given ``path`` as argv[1]) until it prints READY, then SIGKILL it.

    Returns the child's exit code (``-SIGKILL`` when it was still running, as it should be).
    """
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-c", child_code, str(path)], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    return proc.returncode


class FillingDisk(io.RawIOBase):
    """A file that accepts ``limit`` bytes, then fails with ENOSPC like a full disk."""

    def __init__(self, path: str, limit: int) -> None:
        self._f = open(path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        self._limit = limit
        self._written = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        if self._written + len(b) > self._limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._written += len(b)
        return self._f.write(b) or 0

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def close(self) -> None:
        self._f.close()
        super().close()
