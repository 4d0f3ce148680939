"""Drive the real tray app with real clicks (xdotool) and take screenshots (ImageMagick).

``python -m stylecam.desktop.screenshots --out docs/images`` starts its own Xvfb screen and
``trayer`` tray host, runs the app on the bundled clip, then: right-clicks the tray icon and
photographs the menu, clicks a style in it, opens the Source submenu, clicks "Show preview" and
photographs the preview (with the first-run guide above it), drags the strength slider and
photographs it again. Every click is checked (the menu opened, the style changed, the preview
shows frames of the new style), so the script fails rather than save a misleading picture. The
desktop tests run the same :func:`run_scenario` on their own screen.

Needs Debian ``xvfb trayer xdotool imagemagick``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The style the scenario starts with, and the one it clicks in the menu.
START_STYLE = "oil"
CLICK_STYLE = "toon"
TOOLS = ("Xvfb", "trayer", "xdotool", "import")


class ScenarioError(RuntimeError):
    pass


def pump(ms: int) -> None:
    """Run the Qt event loop for ``ms`` milliseconds.

    A QEventLoop, not ``QTest.qWait``: qWait keeps Python's GIL while it waits, which starves
    the stream's threads (a 24 fps clip dropped to a few fps).
    """
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(ms, loop.quit)
    loop.exec()


def wait_until(predicate, timeout: float, what: str) -> None:
    """Run the Qt event loop until ``predicate()`` holds; ScenarioError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise ScenarioError(f"timed out after {timeout:.0f} s waiting for {what}")
        pump(20)


def xdotool(*args: str) -> None:
    subprocess.run(["xdotool", *args], check=True, timeout=10)


def click_at(x: int, y: int, button: int = 1) -> None:
    # Move, let the hover register, then click: menus act on the item under the pointer.
    xdotool("mousemove", str(x), str(y))
    pump(150)
    xdotool("click", str(button))


def hover_at(x: int, y: int) -> None:
    xdotool("mousemove", str(x), str(y))


def screenshot(path: Path, crop=None) -> Path:
    """The whole X screen (``import -window root``), cropped to ``crop`` = (x, y, w, h)."""
    pump(200)  # let the last paint reach the X server
    args = ["import", "-window", "root"]
    if crop is not None:
        x, y, w, h = (int(v) for v in crop)
        args += ["-crop", f"{w}x{h}+{x}+{y}", "+repage"]
    if path.suffix.lower() in (".jpg", ".jpeg"):
        args += ["-quality", "85"]
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(args + [str(path)], check=True, timeout=20)
    return path


def _global_center(menu, action):
    rect = menu.actionGeometry(action)
    point = menu.mapToGlobal(rect.center())
    return point.x(), point.y()


def _union(*rects):
    from PySide6.QtCore import QRect

    out = QRect()
    for r in rects:
        out = out.united(r)
    return out


def run_scenario(app, out_dir: Path, pad: int = 24, expect_notification: bool = False,
                 strength_shot: bool = False) -> dict:
    """Click through the running ``app``'s tray menu; returns what happened and the screenshots.

    ``expect_notification``: the app was started with an output that cannot open; the
    notification is photographed and closed with a click first. ``strength_shot``: the
    strength slider is dragged to about 40 % and the preview photographed again.
    """
    from PySide6.QtCore import QRect

    result: dict = {"shots": {}}
    shown = []
    app.frame_shown.connect(shown.append)
    wait_until(lambda: any(p.style == START_STYLE for p in shown), 20, f"frames in the {START_STYLE} style")

    icon = app.tray.geometry()
    if icon.isEmpty():
        raise ScenarioError("the tray icon has no geometry (no tray host?)")
    screen = app.menu.screen().geometry()

    # 0. The virtual camera cannot open here (no v4l2loopback): a short notification with Details.
    if expect_notification:
        toast = app.toast
        wait_until(toast.isVisible, 10, "the virtual-camera notification")
        result["notification"] = app.last_notification
        result["notification_lines"] = toast.body_lines()
        geo = toast.frameGeometry()
        result["shots"]["notification"] = screenshot(out_dir / "notification.png",
                                                     _clip(geo.adjusted(-pad, -pad, pad, pad), screen))
        close = toast.close_button
        point = close.mapToGlobal(close.rect().center())
        click_at(point.x(), point.y())
        wait_until(lambda: not toast.isVisible(), 5, "the notification to close when its Close is clicked")
        result["notification_closed_by_click"] = True

    # 1. Right-click the tray icon: the menu opens.
    click_at(icon.center().x(), icon.center().y(), button=3)
    wait_until(app.menu.isVisible, 5, "the tray menu to open after a right-click")
    result["menu_opened_by_click"] = True
    crop = _union(app.menu.geometry(), icon).adjusted(-pad, -4, 4, pad)
    result["shots"]["menu"] = screenshot(out_dir / "tray-menu.png", _clip(crop, screen))

    # 2. Click a style in the menu: the worker switches and the menu closes.
    target = app.style_actions[CLICK_STYLE]
    click_at(*_global_center(app.menu, target))
    wait_until(lambda: not app.menu.isVisible(), 5, "the menu to close after the click")
    wait_until(lambda: any(p.style == CLICK_STYLE for p in shown[-5:]), 10, f"frames in the {CLICK_STYLE} style")
    result["style_after_click"] = app.style_name

    # 3. Open the menu again and hover Source: the submenu lists monitors, cameras, files.
    click_at(icon.center().x(), icon.center().y(), button=3)
    wait_until(app.menu.isVisible, 5, "the tray menu to open again")
    hover_at(*_global_center(app.menu, app.source_menu.menuAction()))
    wait_until(app.source_menu.isVisible, 5, "the Source submenu to open on hover")
    crop = _union(app.menu.geometry(), app.source_menu.geometry(), icon).adjusted(-pad, -4, 4, pad)
    result["shots"]["source_menu"] = screenshot(out_dir / "tray-source-menu.png", _clip(crop, screen))

    # 4. Click "Show preview": the preview opens and shows input | output with its numbers.
    hover_at(*_global_center(app.menu, app.preview_action))
    wait_until(lambda: not app.source_menu.isVisible(), 5, "the Source submenu to close")
    click_at(*_global_center(app.menu, app.preview_action))
    wait_until(app.preview.isVisible, 5, "the preview to open after the click")
    preview = app.preview
    count = preview.frames_shown
    wait_until(lambda: preview.frames_shown > count + 10 and "fps" in preview.overlay_text(), 15,
               "the preview to show frames with fps and latency")
    result["preview_frames"] = preview.frames_shown
    result["overlay"] = preview.overlay_text()
    geo = preview.frameGeometry()
    # JPEG: a photo-like picture, a tenth of the PNG's size.
    result["guide_shown"] = app.guide.isVisible()
    name = "first-run.jpg" if result["guide_shown"] else "preview.jpg"
    result["shots"]["preview"] = screenshot(out_dir / name, _clip(QRect(geo), screen))
    result["preview_canvas"] = _clip(QRect(preview.canvas.mapTo(preview, preview.canvas.rect().topLeft()),
                                           preview.canvas.size()), QRect(0, 0, geo.width(), geo.height()))

    # 5. The strength slider at 40 %: a drag on the slider, then the blended picture.
    if strength_shot:
        if app.guide.isVisible():
            hide = app.guide.hide_button
            point = hide.mapToGlobal(hide.rect().center())
            click_at(point.x(), point.y())
            wait_until(lambda: not app.guide.isVisible(), 5, "the guide to hide when Hide is clicked")
            pump(300)
        slider = preview.strength_slider
        y = slider.mapToGlobal(slider.rect().center()).y()
        x0 = slider.mapToGlobal(slider.rect().topLeft()).x()
        handle = slider.mapToGlobal(slider.rect().topRight()).x() - 6
        xdotool("mousemove", str(handle), str(y))
        pump(100)
        xdotool("mousedown", "1")
        target = x0 + 6 + int(0.4 * (slider.width() - 12))
        for x in range(handle, target - 1, -20):
            xdotool("mousemove", str(x), str(y))
            pump(20)
        xdotool("mousemove", str(target), str(y))
        pump(100)
        xdotool("mouseup", "1")
        wait_until(lambda: slider.value() < 60, 5, "the slider to follow the drag")
        result["strength_after_drag"] = slider.value()
        count = preview.frames_shown
        wait_until(lambda: preview.frames_shown > count + 10, 15, "frames at the new strength")
        area = _clip(QRect(preview.frameGeometry()), screen)
        result["shots"]["strength"] = screenshot(out_dir / "strength.jpg", area)
    return result


def _clip(rect, screen):
    r = rect.intersected(screen)
    return r.x(), r.y(), r.width(), r.height()


def _virtual_camera_works() -> bool:
    try:
        from stylecam.core.sinks import open_sink

        open_sink("virtualcam").close()
        return True
    except Exception:
        return False


def _start_display() -> tuple[list[subprocess.Popen], str]:
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1280x720x24",
                             "-nolisten", "tcp", "-ac"], pass_fds=(write_fd,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        display = ":" + f.readline().strip()
    env = dict(os.environ, DISPLAY=display)
    trayer = subprocess.Popen(["trayer", "--edge", "top", "--align", "right", "--widthtype", "request",
                               "--height", "24", "--SetDockType", "true", "--transparent", "false",
                               "--tint", "0x30353d"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [trayer, xvfb], display


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Click through the tray app under Xvfb and take screenshots.")
    parser.add_argument("--out", type=Path, default=Path("docs/images"), help="folder for the PNGs")
    args = parser.parse_args(argv)
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        print(f"screenshots: missing {', '.join(missing)} (apt-get install xvfb trayer xdotool imagemagick)",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.ERROR)  # the notification text is in the result, once
    procs, display = _start_display()
    os.environ["DISPLAY"] = display
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    tmp = Path(tempfile.mkdtemp(prefix="stylecam-shots-"))
    os.environ["XDG_CONFIG_HOME"] = str(tmp / "config")
    os.environ["STYLECAM_LOG_DIR"] = str(tmp / "logs")
    try:
        from PySide6.QtWidgets import QApplication, QSystemTrayIcon

        from .settings import AppSettings, SettingsStore
        from .tray import TrayApp

        qapp = QApplication(["stylecam"])
        qapp.setQuitOnLastWindowClosed(False)
        wait_until(QSystemTrayIcon.isSystemTrayAvailable, 10, "the tray host")
        # A first start: no settings file, so the preview opens with the guide; the style the
        # scenario starts from is the default one.
        store = SettingsStore(tmp / "settings.ini")
        assert AppSettings().style == START_STYLE
        app = TrayApp(store, probe_diffusion=False)
        app.preview.resize(1060, 640)
        app.preview.move(110, 60)
        app.start()
        try:
            result = run_scenario(app, args.out, expect_notification=not _virtual_camera_works(),
                                  strength_shot=True)
        finally:
            app.shutdown()
        for name, path in result["shots"].items():
            print(f"{name}: {path} ({path.stat().st_size // 1024} KB)")
        print(f"style after the click: {result['style_after_click']}; preview: {result['overlay']}")
        return 0
    except ScenarioError as e:
        print(f"screenshots: {e}", file=sys.stderr)
        return 1
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
