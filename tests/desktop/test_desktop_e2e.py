"""A real run driven by real clicks: xdotool right-clicks the tray icon, clicks a style and
"Show preview" in the menu, clicks the notification away; ImageMagick photographs the screen.

The same scenario makes the README's pictures (``python -m stylecam.desktop.screenshots``).
"""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from stylecam.desktop.screenshots import CLICK_STYLE, START_STYLE, TOOLS, run_scenario


@pytest.fixture
def tools():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (apt-get install xvfb trayer xdotool imagemagick)")


def test_clicks_on_the_tray_menu_drive_the_app(qtbot, make_app, tmp_path, tools):
    app = make_app(source="demo", style=START_STYLE, output_size=(320, 320), virtual_camera=True)
    app.preview.resize(700, 380)
    app.preview.move(200, 120)
    app.start()
    result = run_scenario(app, tmp_path / "shots", expect_notification=True)

    # The notification said what is wrong in two lines (the doctor's fix behind Details) and
    # went away on a click on its Close button.
    title, message, _ = result["notification"]
    assert title == "Virtual camera unavailable" and "driver" in message and result["notification_lines"] <= 2
    assert "v4l2loopback" in app.details["virtual_camera"][1]
    assert result["notification_closed_by_click"]
    # The right-click opened the menu; the click on a style switched the running stream.
    assert result["menu_opened_by_click"]
    assert result["style_after_click"] == CLICK_STYLE and app.style_actions[CLICK_STYLE].isChecked()
    assert app.store.load().style == CLICK_STYLE
    assert app.status_action.text() == (f"stylecam · running · {app.styles[CLICK_STYLE].title}"
                                        " · Virtual camera not available")
    # The click on "Show preview" opened it, and it shows live frames with its numbers.
    assert app.preview.isVisible() and result["preview_frames"] > 10
    assert "fps" in result["overlay"] and "latency" in result["overlay"]

    shots = {name: cv2.imread(str(path)) for name, path in result["shots"].items()}
    assert set(shots) == {"notification", "menu", "source_menu", "preview"}
    menu = shots["menu"]
    assert menu.shape[0] > 200 and menu.shape[1] > 150 and menu.std() > 20  # a drawn menu, not a blank
    # The preview picture: the input on the left, the cartoon of it on the right.
    preview = shots["preview"]
    assert preview.shape[:2] == (380, 700)
    x, y, w, h = result["preview_canvas"]  # the pictures, below the guide
    canvas = preview[y:y + h, x:x + w]
    left = canvas[40:h - 10, 10:w // 2 - 10].astype(np.int16)
    right = canvas[40:h - 10, w // 2 + 10:w - 10].astype(np.int16)
    assert left.std() > 20 and right.std() > 20
    assert np.abs(left - right).mean() > 10
