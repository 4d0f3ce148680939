"""The preview window: the input and the stylized output side by side, with fps and latency.

It shows whatever frame pair it is handed last (the worker's hand-off already drops stale
frames) and paints on demand, so a hidden preview costs nothing but the hand-off.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QImage, QKeySequence, QPainter, QShortcut
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from .qtcompat import emit
from .worker import FramePair

#: Keys that work in the preview and the main window (the global shortcut is in hotkey.py).
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
    """Input | output, scaled to fit, with the live numbers drawn over the output; above it the
    guide (the source, each output's status, what is missing and its fix: :mod:`.guide`), below
    it the strength slider of the running style."""

    cycle_style = Signal(int)
    toggle_pause = Signal()
    #: The strength slider moved: 0..1 for the style shown.
    strength_changed = Signal(float)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWindowTitle("stylecam preview")
        self.setObjectName("stylecam-preview")
        self.resize(960, 400)
        self.setMinimumSize(320, 160)
        # Keyboard focus of its own, so the window shortcuts work as soon as it is shown.
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.canvas = _Canvas(self)
        self.guide_slot = QVBoxLayout()
        self.guide_slot.setContentsMargins(0, 0, 0, 0)
        strength_row = QHBoxLayout()
        strength_row.setContentsMargins(8, 0, 8, 4)
        self.strength_title = QLabel("Strength")
        self.strength_slider = QSlider(Qt.Orientation.Horizontal)
        self.strength_slider.setObjectName("stylecam-strength")
        self.strength_slider.setRange(0, 100)
        self.strength_slider.setValue(100)
        self.strength_slider.setFocusPolicy(Qt.FocusPolicy.ClickFocus)  # S and Space stay shortcuts
        self.strength_slider.setToolTip("How much of the style is laid over the original picture")
        self.strength_label = QLabel("100 %")
        self.strength_label.setMinimumWidth(self.strength_label.fontMetrics().horizontalAdvance("100 %") + 6)
        strength_row.addWidget(self.strength_title)
        strength_row.addWidget(self.strength_slider, 1)
        strength_row.addWidget(self.strength_label)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addLayout(self.guide_slot)
        layout.addWidget(self.canvas, 1)
        layout.addLayout(strength_row)
        self.setStyleSheet("#stylecam-preview { background: rgb(24, 24, 28); } "
                           "#stylecam-preview QLabel { color: #dcdcdc; }")
        self.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.strength_slider.valueChanged.connect(self._on_slider)
        self._input: QImage | None = None
        self._output: QImage | None = None
        self._pair: FramePair | None = None
        self._stats: dict = {}
        self._status = "waiting for frames…"
        #: False while the stream is not running (starting a style, failed, stopped): the last
        #: pictures are dimmed under the status instead of passing for live ones with numbers.
        self.live = True
        self.frames_shown = 0
        #: style name -> what to call it (the menu's titles).
        self.style_titles: dict[str, str] = {}
        self._shortcuts = add_style_shortcuts(self, lambda: emit(self.cycle_style, 1),
                                              lambda: emit(self.cycle_style, -1), lambda: emit(self.toggle_pause))

    @property
    def pair(self) -> FramePair | None:
        return self._pair

    def set_guide(self, widget: QWidget) -> None:
        """Put the guide panel above the picture (once)."""
        self.guide_slot.addWidget(widget)

    def set_strength(self, style_title: str, value: float) -> None:
        """Show ``value`` (0..1) for ``style_title`` without reporting it back as a change."""
        self.strength_title.setText(f"Strength of {style_title}")
        self.strength_slider.blockSignals(True)
        self.strength_slider.setValue(round(value * 100))
        self.strength_slider.blockSignals(False)
        self.strength_label.setText(f"{round(value * 100)} %")

    def _on_slider(self, value: int) -> None:
        self.strength_label.setText(f"{value} %")
        emit(self.strength_changed, value / 100.0)

    def show_pair(self, pair: FramePair) -> None:
        if not self.isVisible():
            return
        self._pair = pair
        self._input = to_qimage(pair.input)
        self._output = to_qimage(pair.output)
        self.frames_shown += 1
        self.canvas.update()

    def set_stats(self, stats: dict) -> None:
        self._stats = dict(stats)
        if self.isVisible():
            self.canvas.update()

    def set_status(self, text: str) -> None:
        self._status = text
        if self.isVisible():
            self.canvas.update()

    def set_live(self, live: bool) -> None:
        """Whether frames are flowing; the rates and latencies start anew when they flow again."""
        if live != self.live:
            self.live = live
            self._stats = {}
            if self.isVisible():
                self.canvas.update()

    def overlay_text(self) -> str:
        if not self.live:
            return self._status
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

    def _paint(self, painter: QPainter, w: int, h: int) -> None:
        painter.fillRect(0, 0, w, h, QColor(24, 24, 28))
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        pad, bar = 8, 26
        half = (w - 3 * pad) / 2
        boxes = [QRectF(pad, bar + pad, half, h - bar - 2 * pad),
                 QRectF(2 * pad + half, bar + pad, half, h - bar - 2 * pad)]
        font = QFont(self.font())
        font.setPointSizeF(max(8.0, font.pointSizeF()))
        painter.setFont(font)
        painter.setPen(QColor(220, 220, 220))
        if self._pair is None:
            painter.drawText(QRectF(0, 0, w, h), Qt.AlignmentFlag.AlignCenter, self._status)
            return
        style = self.style_titles.get(self._pair.style, self._pair.style)
        titles = ["input", "paused: passthrough" if self._pair.paused else f"output: {style}"]
        for box, image, title in zip(boxes, (self._input, self._output), titles):
            target = _fit_rect(box, image.width(), image.height())
            painter.drawImage(target, image)
            painter.drawText(QRectF(box.left(), pad, box.width(), bar - 4),
                             Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, title)
        if not self.live:
            painter.fillRect(QRectF(0, 0, w, h), QColor(0, 0, 0, 170))
            painter.setPen(QColor(255, 255, 255))
            painter.drawText(QRectF(0, 0, w, h), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             self._status)
            return
        # The numbers sit on a dark band over the output so they read on any picture.
        text = self.overlay_text()
        out = _fit_rect(boxes[1], self._output.width(), self._output.height())
        metrics = painter.fontMetrics()
        band = QRectF(out.left(), out.top(), min(out.width(), metrics.horizontalAdvance(text) + 16),
                      metrics.height() + 8)
        painter.fillRect(band, QColor(0, 0, 0, 160))
        painter.setPen(QColor(255, 255, 255))
        painter.drawText(band, Qt.AlignmentFlag.AlignCenter, text)


class _Canvas(QWidget):
    """Where the preview paints the two pictures (the window around it holds the controls)."""

    def __init__(self, preview: PreviewWindow):
        super().__init__(preview)
        self._preview = preview
        self.setMinimumHeight(120)

    def paintEvent(self, event):  # noqa: N802 (Qt override)
        painter = QPainter(self)
        try:
            self._preview._paint(painter, self.width(), self.height())
        finally:
            painter.end()


def _fit_rect(box: QRectF, iw: int, ih: int) -> QRectF:
    scale = min(box.width() / max(1, iw), box.height() / max(1, ih))
    w, h = iw * scale, ih * scale
    return QRectF(box.left() + (box.width() - w) / 2, box.top() + (box.height() - h) / 2, w, h)
