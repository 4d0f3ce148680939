"""Short notifications: a title, at most two lines, and a Details button for the whole story.

Qt's tray balloon has no buttons and cuts long text, and desktop notification services differ
in what they show, so stylecam draws its own small popup near the tray (the top-right corner
of the screen the tray is on). Its text wraps at a fixed width and the popup grows to fit it,
so nothing is cut off; what does not fit in two lines goes behind Details.
"""

from __future__ import annotations

import re

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (QApplication, QDialog, QDialogButtonBox, QFrame, QHBoxLayout, QLabel,
                               QPlainTextEdit, QPushButton, QVBoxLayout)

from .qtcompat import emit

#: How long a notification stays (ms); a click on Details or the close button ends it sooner.
NOTIFY_MS = 8000
#: The popup's text width in pixels: two lines of this hold about 110 characters.
TEXT_WIDTH = 380
#: The most characters a short message may have (two lines at TEXT_WIDTH in the default font).
MAX_CHARS = 110

_FLAG = re.compile(r"(?<![\w/.-])`?--[a-z][\w-]*(?:[ =][\w:./-]+)?`?")  # not the "--" inside a path


def plain_text(text: str) -> str:
    """A menu entry's text as words: mnemonic marks dropped, "&&" back to "&"."""
    return re.sub(r"&(.)", r"\1", text)


def no_cli_flags(text: str) -> str:
    """GUI text never tells a tray user to type a command-line flag: known ones become the menu
    or setting that does the same; any other is dropped."""
    replacements = {
        # The diffusion backend's "… or pass --bundle DIR": the setting, not a dangling "or pass".
        "pass --bundle DIR": "give a model folder in Settings > Model bundle",
        "--bundle DIR": "a model folder in Settings > Model bundle",
        "--sink mjpeg": "Output > MJPEG stream",
        "--sink virtualcam": "Output > Virtual camera",
        "--size": "a smaller Output size in Settings",
        "--source": "another source in the Source menu",
        "--style": "another style",
        "with --token-file": "in Settings > Remote GPU token file",
        "the server's --token-file": "the server's token file",
        # The MJPEG server's "pick another with mjpeg:PORT, or mjpeg:0 for any free port".
        "pick another with mjpeg:PORT, or mjpeg:0 for any free port": "pick another port in Settings",
    }
    for flag, words in replacements.items():
        text = text.replace(f"`{flag}`", words).replace(flag, words)
    return _FLAG.sub("", text)


def _fit(text: str, limit: int) -> tuple[str, bool]:
    """The leading whole sentences of ``text`` within ``limit`` characters, else its words cut
    with an ellipsis; True when something was left out."""
    if len(text) <= limit:
        return text, False
    short = ""
    for sentence in re.split(r"(?<=[.;!?])\s+", text):
        candidate = f"{short} {sentence}".strip()
        if len(candidate) > limit:
            break
        short = candidate
    if not short:
        short = text[:limit - 1].rsplit(" ", 1)[0].rstrip(",;:") + "…"
    return short, True


def two_lines(message: str, limit: int = MAX_CHARS) -> tuple[str, bool]:
    """What of ``message`` fits in two lines, and True when something was left for Details.

    A message of several paragraphs usually ends with what happens next ("Running the Oil
    paint style instead."): that last paragraph is kept whole when short, the first shortened.
    """
    paragraphs = [" ".join(p.split()) for p in message.splitlines() if p.strip()]
    if not paragraphs:
        return "", False
    text = " ".join(paragraphs)
    if len(text) <= limit:
        short, cut = text, False
    elif len(paragraphs) > 1 and len(paragraphs[-1]) <= limit // 2:
        head, _ = _fit(" ".join(paragraphs[:-1]), limit - len(paragraphs[-1]) - 1)
        short, cut = f"{head} {paragraphs[-1]}", True
    else:
        short, cut = _fit(text, limit)
    # A message shortened to its core may start with a runner's lower-case clause.
    return (short[:1].upper() + short[1:], True) if cut else (short, False)


class Toast(QFrame):
    """The popup: title, up to two lines, Details and a close button."""

    details_requested = Signal()

    def __init__(self):
        super().__init__(None, Qt.WindowType.ToolTip | Qt.WindowType.FramelessWindowHint
                         | Qt.WindowType.WindowStaysOnTopHint)
        self.setObjectName("stylecam-notification")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setStyleSheet("#stylecam-notification { background: #2b2f36; border: 1px solid #555b66; "
                           "border-radius: 6px; } QLabel { color: #f1f3f5; } "
                           "QPushButton { padding: 3px 10px; }")
        self.title_label = QLabel()
        font = self.title_label.font()
        font.setBold(True)
        self.title_label.setFont(font)
        self.body_label = QLabel()
        self.body_label.setWordWrap(True)
        self.body_label.setFixedWidth(TEXT_WIDTH)
        self.details_button = QPushButton("Details")
        self.details_button.clicked.connect(self._details)
        self.close_button = QPushButton("Close")
        self.close_button.clicked.connect(self.hide)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 10)
        layout.addWidget(self.title_label)
        layout.addWidget(self.body_label)
        row = QHBoxLayout()
        row.addStretch(1)
        row.addWidget(self.details_button)
        row.addWidget(self.close_button)
        layout.addLayout(row)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.hide)

    def show_message(self, title: str, body: str, has_details: bool, ms: int = NOTIFY_MS,
                     anchor=None) -> None:
        self.title_label.setText(title)
        self.body_label.setText(body)
        self.details_button.setVisible(has_details)
        self.adjustSize()
        screen = (anchor.screen() if anchor is not None and hasattr(anchor, "screen") else None) \
            or QGuiApplication.primaryScreen()
        area = screen.availableGeometry()
        self.move(area.right() - self.width() - 12, area.top() + 36)
        self.show()
        self.raise_()
        self._timer.start(ms)

    def body_lines(self) -> int:
        """How many lines the body takes at its width (what the user sees)."""
        metrics = self.body_label.fontMetrics()
        rect = metrics.boundingRect(0, 0, self.body_label.width(), 10000, int(Qt.TextFlag.TextWordWrap),
                                    self.body_label.text())
        return max(1, round(rect.height() / metrics.lineSpacing()))

    def _details(self) -> None:
        self.hide()
        emit(self.details_requested)

    def hideEvent(self, event):  # noqa: N802 (Qt override)
        self._timer.stop()
        super().hideEvent(event)


class DetailsDialog(QDialog):
    """The whole text of a notification, selectable, with a Copy button."""

    def __init__(self, title: str, text: str, parent=None):
        super().__init__(parent)
        self.setObjectName("stylecam-details")
        self.setWindowTitle(f"stylecam: {title}")
        self.resize(560, 280)
        self.text_edit = QPlainTextEdit(text)
        self.text_edit.setReadOnly(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        copy = buttons.addButton("Copy", QDialogButtonBox.ButtonRole.ActionRole)
        copy.clicked.connect(lambda: QApplication.clipboard().setText(text))
        buttons.rejected.connect(self.close)
        buttons.accepted.connect(self.close)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"<b>{title}</b>"))
        layout.addWidget(self.text_edit)
        layout.addWidget(buttons)
