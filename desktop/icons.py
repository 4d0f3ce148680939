"""Icons for the tray states and the styles, read from ``icons/`` (made by ``make_icons.py``).

State icons come as SVG plus PNGs of several sizes; a QIcon gets every PNG so the tray picks
the sharpest for its size. A style without a made icon (a user preset, a diffusion style) gets
a colour swatch with its initial, so every menu entry lines up.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from PySide6.QtCore import QRect, Qt
from PySide6.QtGui import QColor, QFont, QIcon, QPainter, QPixmap

STATES = ("idle", "running", "paused", "error", "warning")
PNG_SIZES = (16, 22, 24, 32, 48, 64, 128, 256)
STYLE_ICON_SIZE = 96


def icon_dir() -> Path:
    """``icons/``: installed as the data package ``stylecam.icons`` (a wheel or a frozen app),
    else beside the package folders (a source checkout)."""
    try:
        from importlib import resources

        installed = Path(str(resources.files("stylecam.icons")))
        if (installed / "stylecam.svg").is_file():
            return installed
    except (ImportError, TypeError):
        pass
    return Path(__file__).resolve().parent.parent / "icons"


def state_icon_path(state: str, size: int | None = None) -> Path:
    base = icon_dir()
    return base / f"stylecam-{state}.svg" if size is None else base / "png" / f"stylecam-{state}-{size}.png"


@lru_cache(maxsize=None)
def state_icon(state: str) -> QIcon:
    icon = QIcon()
    for size in PNG_SIZES:
        path = state_icon_path(state, size)
        if path.is_file():
            icon.addFile(str(path))
    if icon.isNull():
        svg = state_icon_path(state)
        if svg.is_file():
            icon = QIcon(str(svg))
    if icon.isNull():
        icon = _swatch_icon(state, {"idle": "#6b717c", "running": "#3aa757", "paused": "#e0a100",
                                    "error": "#d93025", "warning": "#f29900"}.get(state, "#6b717c"))
    return icon


def style_icon_path(name: str) -> Path:
    return icon_dir() / "styles" / f"{name}.png"


@lru_cache(maxsize=None)
def style_icon(name: str) -> QIcon:
    path = style_icon_path(name)
    if path.is_file():
        return QIcon(str(path))
    digest = hashlib.sha1(name.encode()).digest()
    colour = QColor.fromHsv(digest[0] * 360 // 256, 150, 200).name()
    return _swatch_icon(name, colour)


def _swatch_icon(text: str, colour: str) -> QIcon:
    pix = QPixmap(64, 64)
    pix.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pix)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setBrush(QColor(colour))
    painter.setPen(Qt.PenStyle.NoPen)
    painter.drawRoundedRect(QRect(4, 4, 56, 56), 12, 12)
    font = QFont()
    font.setPixelSize(34)
    font.setBold(True)
    painter.setFont(font)
    painter.setPen(QColor("white"))
    painter.drawText(QRect(0, 0, 64, 64), Qt.AlignmentFlag.AlignCenter, text[:1].upper())
    painter.end()
    return QIcon(pix)
