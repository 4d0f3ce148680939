"""Make the icons in ``icons/``: tray state icons (SVG + PNG sizes) and one icon per built-in
style, painted from a real frame of the bundled clip through that style.

Run from a checkout: ``python -m stylecam.desktop.make_icons`` (rewrites ``icons/``). Needs no
display (Qt's offscreen platform renders the SVGs). Diffusion styles need model weights to
paint anything, so they get no made icon; the app draws a swatch for them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from .icons import PNG_SIZES, STATES, STYLE_ICON_SIZE, icon_dir

#: The frame of the bundled clip (DAVIS blackswan, 512x512) and the square around the swan's
#: head and neck that every style icon shows.
CLIP_FRAME = 25
CROP = (150, 70, 300)  # x, y, side

_LENS = {
    "idle": '<circle cx="32" cy="31" r="14" fill="#7d8590"/>',
    "running": ('<defs><linearGradient id="paint" x1="0" y1="0" x2="1" y2="1">'
                '<stop offset="0" stop-color="#ff8a3d"/><stop offset="0.5" stop-color="#e84a8a"/>'
                '<stop offset="1" stop-color="#3db4ff"/></linearGradient></defs>'
                '<circle cx="32" cy="31" r="14" fill="url(#paint)"/>'),
    "paused": '<circle cx="32" cy="31" r="14" fill="#8a96a8"/>',
    "error": '<circle cx="32" cy="31" r="14" fill="#7d8590"/>',
    # Still painting (the lens keeps its colours), but a chosen output does not work.
    "warning": ('<defs><linearGradient id="paint" x1="0" y1="0" x2="1" y2="1">'
                '<stop offset="0" stop-color="#ff8a3d"/><stop offset="0.5" stop-color="#e84a8a"/>'
                '<stop offset="1" stop-color="#3db4ff"/></linearGradient></defs>'
                '<circle cx="32" cy="31" r="14" fill="url(#paint)"/>'),
}

_BADGE = {
    "idle": "",
    "running": '<circle cx="50" cy="50" r="10" fill="#3aa757" stroke="#ffffff" stroke-width="2.5"/>',
    "paused": ('<circle cx="50" cy="50" r="11" fill="#e0a100" stroke="#ffffff" stroke-width="2.5"/>'
               '<rect x="45" y="44" width="3.6" height="12" rx="1" fill="#ffffff"/>'
               '<rect x="51.4" y="44" width="3.6" height="12" rx="1" fill="#ffffff"/>'),
    "error": ('<circle cx="50" cy="50" r="11" fill="#d93025" stroke="#ffffff" stroke-width="2.5"/>'
              '<rect x="48.2" y="42.5" width="3.6" height="9" rx="1.2" fill="#ffffff"/>'
              '<circle cx="50" cy="56" r="2" fill="#ffffff"/>'),
    # Amber triangle with "!": unlike the round amber pause badge at a glance.
    "warning": ('<path d="M50 37 L63 60 L37 60 Z" fill="#f29900" stroke="#ffffff" stroke-width="2.5" '
                'stroke-linejoin="round"/>'
                '<rect x="48.3" y="44" width="3.4" height="9" rx="1.2" fill="#ffffff"/>'
                '<circle cx="50" cy="56.5" r="1.9" fill="#ffffff"/>'),
}


def state_svg(state: str) -> str:
    """A camera body with a painted lens (a brush stroke across it) and a state badge."""
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64" viewBox="0 0 64 64">\n'
        f'  <title>stylecam {state}</title>\n'
        '  <rect x="20" y="7" width="20" height="10" rx="3" fill="#30353d"/>\n'
        '  <rect x="3" y="13" width="58" height="38" rx="9" fill="#30353d"/>\n'
        '  <circle cx="32" cy="31" r="17" fill="#e9ecef"/>\n'
        f'  {_LENS[state]}\n'
        '  <path d="M21 36 C 26 22, 33 40, 43 25" stroke="#ffffff" stroke-width="4.5" fill="none" '
        'stroke-linecap="round" opacity="0.9"/>\n'
        '  <circle cx="52" cy="20" r="2.5" fill="#e9ecef"/>\n'
        f'  {_BADGE[state]}\n'
        '</svg>\n'
    )


def render_svg(svg: str, size: int):
    """The SVG drawn into a transparent ``size``² QImage."""
    from PySide6.QtCore import QByteArray, Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(QByteArray(svg.encode()))
    if not renderer.isValid():
        raise ValueError("invalid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter)
    painter.end()
    return image


def clip_frame() -> np.ndarray:
    """The RGB square of the bundled clip that the style icons are made from."""
    from stylecam.core.sources import demo_clip_path

    cap = cv2.VideoCapture(demo_clip_path())
    cap.set(cv2.CAP_PROP_POS_FRAMES, CLIP_FRAME)
    ok, bgr = cap.read()
    cap.release()
    if not ok:
        raise RuntimeError(f"cannot read frame {CLIP_FRAME} of {demo_clip_path()}")
    x, y, side = CROP
    return cv2.cvtColor(bgr[y:y + side, x:x + side], cv2.COLOR_BGR2RGB)


def style_thumbnails(size: int = STYLE_ICON_SIZE) -> dict[str, np.ndarray]:
    """Every built-in classic style applied to the clip square, reduced to ``size``."""
    from stylecam.core.styles import builtin_styles
    from stylecam.core.stylize.base import create_backend

    frame = clip_frame()
    out = {}
    backend = None
    for style in builtin_styles():
        if style.backend != "classic":
            continue
        if backend is None:
            backend = create_backend(style)
        else:
            backend.set_style(style)
        painted = backend.process([frame])[0]
        out[style.name] = cv2.resize(painted, (size, size), interpolation=cv2.INTER_AREA)
    if backend is not None:
        backend.close()
    return out


def rounded(image: np.ndarray, radius_frac: float = 0.16) -> np.ndarray:
    """RGBA with rounded, anti-aliased corners (menu icons read better as tiles)."""
    h, w = image.shape[:2]
    scale = 4  # draw the mask large and shrink it: anti-aliased corners without a library
    mask = np.zeros((h * scale, w * scale), np.uint8)
    r = int(min(h, w) * radius_frac * scale)
    cv2.rectangle(mask, (r, 0), (w * scale - r - 1, h * scale - 1), 255, -1)
    cv2.rectangle(mask, (0, r), (w * scale - 1, h * scale - r - 1), 255, -1)
    for cx, cy in ((r, r), (w * scale - r - 1, r), (r, h * scale - r - 1), (w * scale - r - 1, h * scale - r - 1)):
        cv2.circle(mask, (cx, cy), r, 255, -1, cv2.LINE_AA)
    alpha = cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA)
    return np.dstack([image, alpha])


def make_icons(out: Path) -> list[Path]:
    written = []
    (out / "png").mkdir(parents=True, exist_ok=True)
    (out / "styles").mkdir(parents=True, exist_ok=True)
    for state in STATES:
        svg = state_svg(state)
        path = out / f"stylecam-{state}.svg"
        path.write_text(svg, encoding="utf-8")
        written.append(path)
        for size in PNG_SIZES:
            png = out / "png" / f"stylecam-{state}-{size}.png"
            if not render_svg(svg, size).save(str(png)):
                raise RuntimeError(f"cannot write {png}")
            written.append(png)
    # The application icon (desktop entries, window titles) is the running state.
    app_icon = out / "stylecam.svg"
    app_icon.write_text(state_svg("running"), encoding="utf-8")
    written.append(app_icon)
    for name, thumb in style_thumbnails().items():
        path = out / "styles" / f"{name}.png"
        rgba = rounded(thumb)
        if not cv2.imwrite(str(path), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA), [cv2.IMWRITE_PNG_COMPRESSION, 9]):
            raise RuntimeError(f"cannot write {path}")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=icon_dir(), help="folder to write (default: icons/)")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtGui import QGuiApplication

    # QPainter needs an application object; keep a reference for the whole run.
    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])
    for path in make_icons(args.out):
        print(f"{path}  {path.stat().st_size} bytes")
    del app
    return 0


if __name__ == "__main__":
    sys.exit(main())
