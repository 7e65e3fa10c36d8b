"""What may be dropped onto the app's windows (a bundle directory or a .pkl/.pt generator), and the
drag-and-drop handlers both windows share."""

from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import QMimeData
from PyQt6.QtGui import QDragEnterEvent, QDropEvent


def droppable_path(mime: QMimeData) -> str | None:
    """The first dropped local path that is a bundle directory or a .pkl/.pt generator, else None."""
    from model.bundle import BUNDLE_FILE  # (torch: not at the windows' import)
    from vjapp.imported import GENERATOR_FILES

    if not mime.hasUrls():
        return None
    for url in mime.urls():
        if not url.isLocalFile():
            continue
        p = Path(url.toLocalFile())
        if (p.is_file() and p.suffix.lower() in GENERATOR_FILES) or (p.is_dir() and (p / BUNDLE_FILE).is_file()):
            return str(p)
    return None


class GeneratorDrops:
    """Drag and drop of a bundle directory or a .pkl/.pt generator onto a Qt window: list it before the
    Qt base class (``class W(GeneratorDrops, QWidget)``), call ``setAcceptDrops(True)``, and define
    :meth:`generator_dropped`."""

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802 - Qt's name
        if droppable_path(event.mimeData()) is not None:
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802 - Qt's name
        path = droppable_path(event.mimeData())
        if path is not None:
            event.acceptProposedAction()
            self.generator_dropped(path)

    def generator_dropped(self, path: str) -> None:
        raise NotImplementedError
