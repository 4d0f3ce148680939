"""Pick a screen region by dragging a rectangle over a frozen picture of the desktop.

The picker covers the whole virtual desktop with a screenshot taken when it opens (so it works
without a compositor, where a translucent window would show black), dims it, and leaves the
dragged rectangle bright. Enter or a release of the mouse accepts, Esc cancels. The result is in
the desktop's physical pixels, the coordinates ``mss`` and the ``screen:X,Y,W,H`` source use.
"""

from __future__ import annotations

from PySide6.QtCore import QPoint, QRect, Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QWidget

from .qtcompat import emit

#: A drag smaller than this (physical pixels) is taken as a click, not a region.
MIN_SIDE = 16


def region_spec(rect: QRect) -> str:
    """The ``--source`` spec for a region (even sides, as encoders and cameras need)."""
    w, h = rect.width() - rect.width() % 2, rect.height() - rect.height() % 2
    return f"screen:{rect.x()},{rect.y()},{w},{h}"


class RegionPicker(QWidget):
    """A full-desktop overlay; emits ``picked(QRect)`` in physical pixels, or ``cancelled``."""

    picked = Signal(QRect)
    cancelled = Signal()

    def __init__(self, parent=None):
        super().__init__(parent, Qt.WindowType.FramelessWindowHint | Qt.WindowType.WindowStaysOnTopHint
                         | Qt.WindowType.Tool)
        self.setObjectName("stylecam-region-picker")
        self.setWindowTitle("stylecam: drag a region")
        self.setCursor(Qt.CursorShape.CrossCursor)
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)
        self._origin: QPoint | None = None
        self._current: QPoint | None = None
        self._backdrop: QPixmap | None = None
        self._desktop = QRect()

    def start(self) -> None:
        """Grab the desktop and cover it."""
        screens = QGuiApplication.screens()
        desktop = QRect()
        for screen in screens:
            desktop = desktop.united(screen.geometry())
        self._desktop = desktop
        backdrop = QPixmap(desktop.size())
        backdrop.fill(QColor(40, 40, 40))
        painter = QPainter(backdrop)
        for screen in screens:
            shot = screen.grabWindow(0)
            g = screen.geometry()
            painter.drawPixmap(QRect(g.topLeft() - desktop.topLeft(), g.size()), shot)
        painter.end()
        self._backdrop = backdrop
        self._origin = self._current = None
        self.setGeometry(desktop)
        self.show()
        self.raise_()
        self.activateWindow()
        self.grabKeyboard()

    def selection(self) -> QRect:
        """The dragged rectangle in widget (logical) coordinates."""
        if self._origin is None or self._current is None:
            return QRect()
        # Width = the distance dragged (QRect(p1, p2) would count both end pixels).
        x0, x1 = sorted((self._origin.x(), self._current.x()))
        y0, y1 = sorted((self._origin.y(), self._current.y()))
        return QRect(x0, y0, x1 - x0, y1 - y0)

    def physical(self, rect: QRect) -> QRect:
        """Widget coordinates -> desktop physical pixels."""
        ratio = self.devicePixelRatioF()
        top_left = rect.topLeft() + self._desktop.topLeft()
        return QRect(round(top_left.x() * ratio), round(top_left.y() * ratio),
                     round(rect.width() * ratio), round(rect.height() * ratio))

    def _finish(self, accept: bool) -> None:
        rect = self.physical(self.selection())
        self.releaseKeyboard()
        self.hide()
        self._backdrop = None
        if accept and rect.width() >= MIN_SIDE and rect.height() >= MIN_SIDE:
            emit(self.picked, rect)
        else:
            emit(self.cancelled)

    # -- Qt overrides ----------------------------------------------------------------------------

    def mousePressEvent(self, event):  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton:
            self._origin = self._current = event.position().toPoint()
            self.update()
        elif event.button() == Qt.MouseButton.RightButton:
            self._finish(False)

    def mouseMoveEvent(self, event):  # noqa: N802
        if self._origin is not None:
            self._current = event.position().toPoint()
            self.update()

    def mouseReleaseEvent(self, event):  # noqa: N802
        if event.button() == Qt.MouseButton.LeftButton and self._origin is not None:
            self._current = event.position().toPoint()
            self._finish(True)

    def keyPressEvent(self, event):  # noqa: N802
        if event.key() == Qt.Key.Key_Escape:
            self._finish(False)
        elif event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self._finish(True)

    def paintEvent(self, event):  # noqa: N802
        painter = QPainter(self)
        if self._backdrop is not None:
            painter.drawPixmap(0, 0, self._backdrop)
        painter.fillRect(self.rect(), QColor(0, 0, 0, 120))
        sel = self.selection()
        if not sel.isEmpty():
            if self._backdrop is not None:
                painter.drawPixmap(sel, self._backdrop, sel)
            painter.setPen(QPen(QColor(255, 200, 40), 2))
            painter.drawRect(sel.adjusted(0, 0, -1, -1))
            phys = self.physical(sel)
            painter.drawText(sel.bottomLeft() + QPoint(4, 16), f"{phys.width()}×{phys.height()} at {phys.x()},{phys.y()}")
        else:
            painter.setPen(QColor(255, 255, 255))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter,
                             "Drag a rectangle to capture · Esc cancels")
        painter.end()
