"""The tray's "Stylize on: a remote GPU" setting driving a real `stylecam serve` (Xvfb, tray,
worker, preview), and the setting's round trip through the dialog and the file."""

from __future__ import annotations

import json
import urllib.request

import pytest

pytest.importorskip("aiortc")

from remote_helpers import Server, saturation  # noqa: E402

from stylecam.desktop.settings import AppSettings, SettingsStore  # noqa: E402
from stylecam.desktop.settings_dialog import SettingsDialog  # noqa: E402


def test_stylize_on_is_remembered_and_checked(qtbot, tmp_path):
    store = SettingsStore(tmp_path / "s.ini")
    assert store.load().remote_server is None  # this computer by default
    dialog = SettingsDialog(AppSettings(), [], [])
    qtbot.addWidget(dialog)
    assert not dialog.remote_edit.isEnabled() and dialog.speed_box.isEnabled()
    dialog.stylize_box.setCurrentIndex(dialog.stylize_box.findData("remote"))
    assert dialog.remote_edit.isEnabled()
    assert not dialog.speed_box.isEnabled()  # the server decides (`stylecam serve --compile`)
    with pytest.raises(ValueError, match="address of the GPU machine"):
        dialog.read()
    dialog.remote_edit.setText("ftp://nope")
    with pytest.raises(ValueError, match="remote url"):
        dialog.read()
    # Back to this computer: the greyed-out address cannot be fixed, so it does not block OK
    # (the saved one is kept).
    dialog.stylize_box.setCurrentIndex(dialog.stylize_box.findData("this-computer"))
    assert not dialog.remote_edit.isEnabled()
    assert dialog.read().remote_url == AppSettings().remote_url and dialog.read().remote_server is None
    dialog.stylize_box.setCurrentIndex(dialog.stylize_box.findData("remote"))
    dialog.remote_edit.setText("http://gpu-box:8890")
    chosen = dialog.read()
    store.save(chosen)
    loaded = store.load()
    assert loaded.stylize_on == "remote" and loaded.remote_server == "http://gpu-box:8890"


def test_the_tray_paints_on_a_remote_server_and_the_preview_shows_the_round_trip(qtbot, make_app,
                                                                                 classic_reference):
    import numpy as np

    from desktop_helpers import next_pair

    with Server("--style", "sketch") as server:
        app = make_app(style="sketch", stylize_on="remote", remote_url=server.url)
        app.start()
        qtbot.waitUntil(lambda: app.last_stats.get("remote_round_trip_ms") is not None, timeout=30000)
        status = json.loads(urllib.request.urlopen(server.base + "/status", timeout=10).read())
        assert status["sessions"] == 1 and status["hub"]["batches"] > 0
        inner = app.worker._backend.inner.inner  # tracking -> strength -> remote
        assert inner.name == "remote" and inner.stats()["frames_back"] > 0
        app.show_preview()
        qtbot.waitUntil(lambda: "ms round trip" in app.preview.overlay_text(), timeout=5000)
        pair = next_pair(qtbot, app, lambda p: p.style == "sketch" and not p.paused, timeout=10000)
        # The server's pencil sketch (nearly grey), come through the codec: not the painting this
        # computer would make of the same frame, which is exact.
        assert saturation(pair.output) < 0.5 * saturation(pair.input)
        assert not np.array_equal(pair.output, classic_reference("sketch", pair.input))
