"""``stylecam gallery``: one picture with the input beside each style, from real footage.

README's picture is made by this command from the shared test clips; users run it on their own
clip or camera to compare styles before going live.
"""

from __future__ import annotations

import sys

import cv2
import numpy as np


def render_gallery(frames: list[np.ndarray], styles: list, tile: tuple[int, int], labels: bool = True) -> np.ndarray:
    """Rows = frames, columns = input + each style. RGB uint8."""
    from .frames import fit
    from .stylize.base import create_backend

    backends = {}
    rows = []
    for frame in frames:
        img = fit(frame, tile)
        cells = [_label(img, "input") if labels else img]
        for style in styles:
            backend = backends.get(style.backend)
            if backend is None:
                backend = backends[style.backend] = create_backend(style)
            backend.set_style(style)
            out = backend.process([img])[0]
            cells.append(_label(out, style.title) if labels else out)
        rows.append(np.concatenate(cells, axis=1))
    for backend in backends.values():
        backend.close()
    return np.concatenate(rows, axis=0)


def _label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    h = out.shape[0]
    scale = max(0.45, h / 400)
    thick = max(1, int(round(scale * 2)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = int(6 * scale)
    cv2.rectangle(out, (0, 0), (tw + 2 * pad, th + base + 2 * pad), (0, 0, 0), -1)
    cv2.putText(out, text, (pad, th + pad), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


def configure_parser(p) -> None:
    from .cli_args import size as _size

    p.add_argument("--source", action="append", default=None,
                   help="file:PATH or demo; repeat for several rows (default: demo)")
    p.add_argument("--at", type=float, default=0.3, help="where in each clip to take the frame (0..1)")
    p.add_argument("--styles", default=None, help="comma-separated style names (default: every classic style)")
    p.add_argument("--tile", type=_size, default=(320, 240), help="size of each cell WxH")
    p.add_argument("--out", default="gallery.jpg", help="output image (.jpg or .png)")


def command(args) -> int:
    from .cli_args import PICTURE_EXTENSIONS, UsageError, check_output
    from .sources import SourceError, open_source
    from .styles import find_style, load_styles
    from .stylize.base import BackendError

    check_output(args.out, "--out", extensions=PICTURE_EXTENSIONS)
    styles_by_name, _ = load_styles()
    if args.styles:
        try:
            styles = [find_style(n.strip(), styles_by_name) for n in args.styles.split(",") if n.strip()]
        except ValueError as e:
            raise UsageError(str(e)) from None
    else:
        styles = sorted((s for s in styles_by_name.values() if s.backend == "classic"), key=lambda s: s.name)
    frames = []
    for spec in args.source or ["demo"]:
        try:
            src = open_source(spec)
        except ValueError as e:
            raise UsageError(str(e)) from None
        try:
            with src:
                count = getattr(src, "frame_count", 0) or 1
                want = int(max(0.0, min(1.0, args.at)) * max(0, count - 1))
                img = None
                for _ in range(want + 1):
                    nxt = src.read()
                    if nxt is None:
                        break
                    img = nxt
        except SourceError as e:
            print(f"stylecam: {e}", file=sys.stderr)
            return 1
        if img is None:
            print(f"stylecam: {spec} gave no frame", file=sys.stderr)
            return 1
        frames.append(img)
    try:
        picture = render_gallery(frames, styles, args.tile)
    except BackendError as e:  # e.g. an AI style with no model here
        print(f"stylecam: {e}", file=sys.stderr)
        return 1
    quality = [cv2.IMWRITE_JPEG_QUALITY, 88] if args.out.lower().endswith((".jpg", ".jpeg")) else []
    if not cv2.imwrite(args.out, cv2.cvtColor(picture, cv2.COLOR_RGB2BGR), quality):
        print(f"stylecam: cannot write {args.out}", file=sys.stderr)
        return 1
    print(f"stylecam: gallery of {len(styles)} styles x {len(frames)} frames -> {args.out}")
    return 0
