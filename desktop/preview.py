"""The preview window: the input and the stylized output side by side, with fps and latency.

It shows whatever frame pair it is handed last (the worker's hand-off already drops stale
frames) and paints on demand, so a hidden preview costs nothing but the hand-off.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QKeySequence, QPainter, QShortcut
from PySide6.QtWidgets import QWidget

from .qtcompat import emit
from .worker import FramePair

#: Keys that work in the preview and the main window (a global hotkey is not registered).
CYCLE_STYLE_KEYS = ("S", "Ctrl+Right")
CYCLE_STYLE_BACK_KEYS = ("Shift+S", "Ctrl+Left")
PAUSE_KEYS = ("Space",)


def to_qimage(image: np.ndarray) -> QImage:
    """A QImage that owns a copy of an RGB uint8 ``(H, W, 3)`` array."""
    h, w = image.shape[:2]
    data = np.ascontiguousarray(image)
    return QImage(data.data, w, h, data.strides[0], QImage.Format.Format_RGB888).copy()


def add_style_shortcuts(widget: QWidget, forward, back, pause) -> list[QShortcut]:
    """Window shortcuts: cycle styles forward/back and pause; returns them (kept by the widget)."""
    shortcuts = []
    for keys, slot in ((CYCLE_STYLE_KEYS, forward), (CYCLE_STYLE_BACK_KEYS, back), (PAUSE_KEYS, pause)):
        for key in keys:
            sc = QShortcut(QKeySequence(key), widget)
            sc.setContext(Qt.ShortcutContext.WindowShortcut)
            sc.activated.connect(slot)
            shortcuts.append(sc)
    return shortcuts


class PreviewWindow(QWidget):
    """Input | output, scaled to fit, with the live numbers drawn over the output."""

    cycle_style = Signal(int)
    toggle_pause = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("stylecam preview")
        self.setObjectName("stylecam-preview")
        self.resize(960, 400)
        self.setMinimumSize(320, 160)
        # Keyboard focus of its own, so the window shortcuts work as soon as it is shown.
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self._input: QImage | None = None
        self._output: QImage | None = None
        self._pair: FramePair | None = None
        self._stats: dict = {}
        self._status = "waiting for frames…"
        self.frames_shown = 0
        #: style name -> what to call it (the menu's titles).
        self.style_titles: dict[str, str] = {}
        self._shortcuts = add_style_shortcuts(self, lambda: emit(self.cycle_style, 1),
                                              lambda: emit(self.cycle_style, -1), lambda: emit(self.toggle_pause))

    @property
    def pair(self) -> FramePair | None:
        return self._pair

    def show_pair(self, pair: FramePair) -> None:
        if not self.isVisible():
            return
        self._pair = pair
        self._input = to_qimage(pair.input)
        self._output = to_qimage(pair.output)
        self.frames_shown += 1
        self.update()

    def set_stats(self, stats: dict) -> None:
        self._stats = dict(stats)
        if self.isVisible():
            self.update()

    def set_status(self, text: str) -> None:
        self._status = text
        if self.isVisible():
            self.update()

    def overlay_text(self) -> str:
        s = self._stats
        fps = s.get("fps_recent")
        lat = s.get("latency_recent_ms")
        parts = []
        if fps is not None:
            parts.append(f"{fps:.1f} fps")
        if lat is not None:
            parts.append(f"latency {lat:.0f} ms")
        if s.get("latency_p95_ms") is not None:
            parts.append(f"p95 {s['latency_p95_ms']:.0f} ms")
        if s.get("dropped"):
            parts.append(f"{s['dropped']} dropped")
        if s.get("remote_round_trip_ms") is not None:
            parts.append(f"remote: {s['remote_round_trip_ms']:.0f} ms round trip")
        return "  ·  ".join(parts) if parts else "measuring…"

    def paintEvent(self, event):  # noqa: N802 (Qt override)
        painter = QPainter(self)
        try:
            self._paint(painter)
        finally:
            painter.end()

    def _paint(self, painter: QPainter) -> None:
        painter.fillRect(self.rect(), QColor(24, 24, 28))
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        w, h = self.width(), self.height()
        pad, bar = 8, 26
        half = (w - 3 * pad) / 2
        boxes = [QRectF(pad, bar + pad, half, h - bar - 2 * pad),
                 QRectF(2 * pad + half, bar + pad, half, h - bar - 2 * pad)]
        font = QFont(self.font())
        font.setPointSizeF(max(8.0, font.pointSizeF()))
        painter.setFont(font)
        painter.setPen(QColor(220, 220, 220))
        if self._pair is None:
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self._status)
            return
        style = self.style_titles.get(self._pair.style, self._pair.style)
        titles = ["input", "paused: passthrough" if self._pair.paused else f"output: {style}"]
        for box, image, title in zip(boxes, (self._input, self._output), titles):
            target = _fit_rect(box, image.width(), image.height())
            painter.drawImage(target, image)
            painter.drawText(QRectF(box.left(), pad, box.width(), bar - 4),
                             Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, title)
        # The numbers sit on a dark band over the output so they read on any picture.
        text = self.overlay_text()
        out = _fit_rect(boxes[1], self._output.width(), self._output.height())
        metrics = painter.fontMetrics()
        band = QRectF(out.left(), out.top(), min(out.width(), metrics.horizontalAdvance(text) + 16),
                      metrics.height() + 8)
        painter.fillRect(band, QColor(0, 0, 0, 160))
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(band, Qt.AlignmentFlag.AlignCenter, text)


def _fit_rect(box: QRectF, iw: int, ih: int) -> QRectF:
    scale = min(box.width() / max(1, iw), box.height() / max(1, ih))
    w, h = iw * scale, ih * scale
    return QRectF(box.left() + (box.width() - w) / 2, box.top() + (box.height() - h) / 2, w, h)
