"""A file object that fails like a full disk, for the recording tests."""

from __future__ import annotations

import errno
import io
import os


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
