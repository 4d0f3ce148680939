"""The committed icons: every state in SVG and PNG sizes, one icon per built-in classic style, and
those style icons are what make_icons paints from the bundled clip today."""

from __future__ import annotations

import cv2
import numpy as np

from stylecam.core.styles import builtin_styles
from stylecam.desktop import make_icons
from stylecam.desktop.icons import (PNG_SIZES, STATES, STYLE_ICON_SIZE, icon_dir, state_icon, style_icon,
                                    style_icon_path)


def test_state_icons_exist_in_every_size(qapp):
    for state in STATES:
        svg = icon_dir() / f"stylecam-{state}.svg"
        assert svg.read_text().startswith("<svg")
        for size in PNG_SIZES:
            img = cv2.imread(str(icon_dir() / "png" / f"stylecam-{state}-{size}.png"), cv2.IMREAD_UNCHANGED)
            assert img.shape == (size, size, 4), (state, size)
            assert img[..., 3].max() == 255 and img[0, 0, 3] == 0  # drawn, on a transparent corner
        assert sorted(s.width() for s in state_icon(state).availableSizes()) == sorted(PNG_SIZES)
    # The four states are told apart by their badge colour.
    badges = {s: cv2.imread(str(icon_dir() / "png" / f"stylecam-{s}-64.png"))[50, 50] for s in STATES}
    assert len({tuple(v) for v in badges.values()}) == 4


def test_each_builtin_classic_style_has_an_icon_made_from_the_clip(qapp, tmp_path):
    classic = [s.name for s in builtin_styles() if s.backend == "classic"]
    assert classic
    fresh = make_icons.style_thumbnails()
    assert set(fresh) == set(classic)
    for name in classic:
        committed = cv2.imread(str(style_icon_path(name)), cv2.IMREAD_UNCHANGED)
        assert committed.shape == (STYLE_ICON_SIZE, STYLE_ICON_SIZE, 4), name
        rgb = cv2.cvtColor(committed[..., :3], cv2.COLOR_BGR2RGB).astype(np.int16)
        inner = slice(16, -16)  # away from the rounded corners
        diff = np.abs(rgb[inner, inner] - fresh[name][inner, inner].astype(np.int16)).mean()
        assert diff < 4, f"icons/styles/{name}.png is stale (mean diff {diff:.1f}): run python -m stylecam.desktop.make_icons"
    # Styles differ from each other (a toon icon is not a sketch icon).
    assert np.abs(fresh["toon"].astype(np.int16) - fresh["sketch"]).mean() > 20


def test_a_style_without_a_made_icon_gets_a_swatch(qapp):
    icon = style_icon("no-such-style-xyz")
    assert not icon.isNull() and icon.pixmap(32, 32).width() == 32
