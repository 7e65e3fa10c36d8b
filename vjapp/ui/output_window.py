"""The audience's window: paints the newest frame, fit or fill, windowed or fullscreen on a screen.

It only paints. Frames are handed in by :meth:`OutputWindow.set_frame` (from the bridge's signal,
on the GUI thread); the window keeps a reference to the newest array only, so there is never a
queue to grow, and an older frame is simply never painted.

Keys: F toggles fullscreen, Esc leaves it. In fullscreen the window is frameless, covers the
chosen screen, and hides the cursor. A right click opens a menu: fit/fill, screen, fullscreen.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from PyQt6.QtCore import QRect, QSize, Qt, pyqtSignal
from PyQt6.QtGui import (
    QAction,
    QActionGroup,
    QColor,
    QGuiApplication,
    QImage,
    QKeyEvent,
    QPainter,
)
from PyQt6.QtWidgets import QMenu, QWidget

from vjapp.ui.drops import GeneratorDrops

log = logging.getLogger(__name__)

__all__ = ["OutputWindow", "target_rect", "place_beside", "SCALE_MODES"]

SCALE_MODES = ("fit", "fill")
SAME_SHAPE = 0.01  # image and window shapes closer than this (relative) count as the same: no bars


def target_rect(img_w: int, img_h: int, win_w: int, win_h: int, mode: str = "fit") -> tuple[int, int, int, int]:
    """Where an ``img_w x img_h`` image lands in a ``win_w x win_h`` window: ``(x, y, w, h)``.

    ``fit`` shows the whole image, centred, with bars on two sides (letterbox/pillarbox);
    ``fill`` covers the whole window, centred, cropping the overflowing sides. Aspect is kept,
    except that an image within 1% of the window's shape fills it exactly (a 456x256 frame, 16:9
    rounded to even sides, covers a 1920x1080 screen with no 1-pixel bars).
    """
    if mode not in SCALE_MODES:
        raise ValueError(f"scale mode must be one of {SCALE_MODES}, got {mode!r}")
    if img_w <= 0 or img_h <= 0 or win_w <= 0 or win_h <= 0:
        return (0, 0, max(win_w, 0), max(win_h, 0))
    sx, sy = win_w / img_w, win_h / img_h
    if abs(sx / sy - 1.0) < SAME_SHAPE:
        return (0, 0, win_w, win_h)
    scale = min(sx, sy) if mode == "fit" else max(sx, sy)
    w, h = round(img_w * scale), round(img_h * scale)
    return ((win_w - w) // 2, (win_h - h) // 2, w, h)


def place_beside(area: QRect, control: QRect, size: QSize, min_size: QSize, gap: int = 8) -> QRect:
    """Where a window of ``size`` goes in ``area`` (a screen's available geometry) beside ``control``
    (the control window's frame), all in frame coordinates.

    To the right of ``control`` when that side has room, else to the left; narrowed to the free side
    (keeping its aspect, not below ``min_size``) when it is too wide; level with ``control``'s top.
    The result always lies inside ``area``; it overlaps ``control`` only when not even ``min_size``
    fits on either side.
    """
    right_free = area.right() - control.right() - gap
    left_free = control.left() - area.left() - gap
    w, h = size.width(), size.height()
    if right_free >= min(w, min_size.width()) and right_free >= min(w, left_free):
        w = min(w, right_free)
        x = control.right() + 1 + gap
    elif left_free >= min(w, min_size.width()):
        w = min(w, left_free)
        x = control.left() - gap - w
    else:
        x = area.right() + 1 - w
    if w < size.width():
        h = max(min_size.height(), round(size.height() * w / size.width()))
    w, h = min(w, area.width()), min(h, area.height())
    x = min(max(x, area.left()), area.right() + 1 - w)
    y = min(max(control.top(), area.top()), area.bottom() + 1 - h)
    return QRect(x, y, w, h)


class OutputWindow(GeneratorDrops, QWidget):
    """Shows the newest frame. ``fullscreen_changed(bool)`` reports F/Esc/menu changes."""

    fullscreen_changed = pyqtSignal(bool)
    scale_mode_changed = pyqtSignal(str)
    screen_changed = pyqtSignal(int)
    dropped = pyqtSignal(str)  # a bundle directory or generator file dropped onto the output

    def __init__(self, parent: QWidget | None = None, scale_mode: str = "fit", screen_index: int = 0) -> None:
        super().__init__(parent, Qt.WindowType.Window)
        self.setWindowTitle("vjapp output")
        self.setObjectName("output_window")
        self.setMinimumSize(160, 120)
        self.resize(640, 640)
        self.setAttribute(Qt.WidgetAttribute.WA_OpaquePaintEvent, True)
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setAcceptDrops(True)
        self._image: QImage | None = None
        self._array: np.ndarray | None = None  # keeps the QImage's memory alive
        self.frame_index = -1
        self.frames_shown = 0
        self.scale_mode = scale_mode if scale_mode in SCALE_MODES else "fit"
        self.screen_index = int(screen_index)
        self._fullscreen = False
        self._windowed_geometry: QRect | None = None
        self.allow_close = False  # closing only hides it, until the app shuts down
        self._frame_ratio: float | None = None  # width / height of the frames shown

    # ------------------------------------------------------------------ frames
    def set_frame(self, image: np.ndarray, index: int = -1) -> None:
        """Take a new ``[H, W, 3]`` uint8 frame (its memory is used, not copied) and repaint."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"output frames must be [H, W, 3] uint8, got {image.shape} {image.dtype}")
        arr = image if image.flags.c_contiguous else np.ascontiguousarray(image)
        h, w, _ = arr.shape
        self._follow_aspect(w / h)
        self._image = QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888)
        self._array = arr
        self.frame_index = index
        self.frames_shown += 1
        self.update()

    def _follow_aspect(self, ratio: float) -> None:
        """When the frames change shape (the aspect control), a window (not fullscreen) takes the
        new shape, keeping its height: the picture fills it with no bars."""
        previous, self._frame_ratio = self._frame_ratio, ratio
        if previous is None or abs(ratio / previous - 1.0) < SAME_SHAPE or self._fullscreen:
            return
        self.resize(self.size_for(ratio))

    def size_for(self, ratio: float) -> QSize:
        """The window size of shape ``ratio`` (width / height) with this window's height, narrowed
        (and lowered with it) to fit its screen's available width."""
        h = self.height()
        w = max(self.minimumWidth(), round(h * ratio))
        screen = self.screen() or QGuiApplication.primaryScreen()
        if screen is not None and w > screen.availableGeometry().width():
            w = screen.availableGeometry().width()
            h = max(self.minimumHeight(), round(w / ratio))
        return QSize(w, h)

    def newest_image(self) -> np.ndarray | None:
        """The frame being shown (the caller must not modify it)."""
        return self._array

    def paintEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(0, 0, 0))
        if self._image is not None:
            x, y, w, h = target_rect(self._image.width(), self._image.height(), self.width(), self.height(),
                                     self.scale_mode)
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            p.drawImage(QRect(x, y, w, h), self._image)
        p.end()

    # ------------------------------------------------------------------ modes
    def set_scale_mode(self, mode: str) -> None:
        if mode not in SCALE_MODES:
            raise ValueError(f"scale mode must be one of {SCALE_MODES}, got {mode!r}")
        if mode != self.scale_mode:
            self.scale_mode = mode
            self.scale_mode_changed.emit(mode)
            self.update()

    def set_screen(self, index: int) -> None:
        """Choose the screen fullscreen goes to (moves there now if fullscreen)."""
        screens = QGuiApplication.screens()
        if not 0 <= index < len(screens):
            raise ValueError(f"no screen {index}; there are {len(screens)} (0..{len(screens) - 1})")
        self.screen_index = index
        self.screen_changed.emit(index)
        if self._fullscreen:
            self._enter_fullscreen()

    @property
    def is_fullscreen(self) -> bool:
        return self._fullscreen

    def set_fullscreen(self, on: bool) -> None:
        if on == self._fullscreen:
            return
        if on:
            self._windowed_geometry = self.geometry()
            self._fullscreen = True
            self._enter_fullscreen()
        else:
            self._fullscreen = False
            self.setWindowFlag(Qt.WindowType.FramelessWindowHint, False)
            self.unsetCursor()
            self.showNormal()
            if self._windowed_geometry is not None:
                self.setGeometry(self._windowed_geometry)
        self.fullscreen_changed.emit(self._fullscreen)

    def toggle_fullscreen(self) -> None:
        self.set_fullscreen(not self._fullscreen)

    def _enter_fullscreen(self) -> None:
        screens = QGuiApplication.screens()
        index = self.screen_index if 0 <= self.screen_index < len(screens) else 0
        if index != self.screen_index:
            log.warning("screen %d is gone; fullscreen on screen %d", self.screen_index, index)
        screen = screens[index]
        self.setWindowFlag(Qt.WindowType.FramelessWindowHint, True)
        self.setCursor(Qt.CursorShape.BlankCursor)
        if self.windowHandle() is not None:
            self.windowHandle().setScreen(screen)
        self.setGeometry(screen.geometry())
        self.showFullScreen()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        if self.allow_close:
            super().closeEvent(event)
            return
        event.ignore()  # the show goes on: the control window's "Show output" brings it back
        self.set_fullscreen(False)
        self.hide()

    # ------------------------------------------------------------------ input
    def generator_dropped(self, path: str) -> None:
        self.dropped.emit(path)

    def keyPressEvent(self, event: QKeyEvent) -> None:  # noqa: N802 - Qt's name
        if event.key() == Qt.Key.Key_F:
            self.toggle_fullscreen()
        elif event.key() == Qt.Key.Key_Escape and self._fullscreen:
            self.set_fullscreen(False)
        else:
            super().keyPressEvent(event)

    def mouseDoubleClickEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self.toggle_fullscreen()

    def contextMenuEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self.build_menu(QMenu(self)).exec(event.globalPos())

    def build_menu(self, menu: QMenu) -> QMenu:
        """Fit/fill, screen choice and fullscreen, as a menu (also used by the control window)."""
        modes = QActionGroup(menu)
        for mode in SCALE_MODES:
            act = QAction(f"Aspect {mode}", menu, checkable=True, checked=mode == self.scale_mode)
            act.triggered.connect(lambda _=False, m=mode: self.set_scale_mode(m))
            modes.addAction(act)
            menu.addAction(act)
        menu.addSeparator()
        screens = QActionGroup(menu)
        for i, screen in enumerate(QGuiApplication.screens()):
            g = screen.geometry()
            act = QAction(f"Screen {i}: {screen.name()} {g.width()}x{g.height()}", menu, checkable=True,
                          checked=i == self.screen_index)
            act.triggered.connect(lambda _=False, k=i: self.set_screen(k))
            screens.addAction(act)
            menu.addAction(act)
        menu.addSeparator()
        full = QAction("Fullscreen (F, Esc leaves)", menu, checkable=True, checked=self._fullscreen)
        full.triggered.connect(self.set_fullscreen)
        menu.addAction(full)
        return menu
