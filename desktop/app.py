"""``stylecam-tray``: the system-tray app.

Start-up order matters: the standard streams are fixed first (a GUI launch has none, and a
library that prints would crash), then logging (so everything after is recorded), then Qt with
its messages routed into the log, then the settings, the tray and the worker.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from .logs import ensure_std_streams, route_qt_messages, setup_logging

log = logging.getLogger("stylecam.desktop")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stylecam-tray", description="stylecam in the system tray.")
    p.add_argument("--settings", metavar="FILE", help="settings INI file (default: the per-user one)")
    p.add_argument("--window", action="store_true", help="show the main window even where a system tray exists")
    p.add_argument("--source", help="start with this source (e.g. screen:1, camera:0, demo); saved")
    p.add_argument("--style", help="start with this style; saved")
    p.add_argument("--preview", action="store_true", help="open the preview at start")
    p.add_argument("--quit-after", type=float, metavar="SECONDS", help=argparse.SUPPRESS)
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    return p


def main(argv: list[str] | None = None) -> int:
    fixed = ensure_std_streams()
    args = build_parser().parse_args(argv)
    log_file = setup_logging(args.verbose)
    if fixed:
        log.info("no console: %s go to the log", " and ".join(fixed))
    log.info("stylecam-tray starting; log file %s", log_file)
    from stylecam.core.quiet import quiet_decoder_logs
    from stylecam.core.runtime import configure_runtime

    quiet_decoder_logs()
    configure_runtime()

    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication, QMessageBox

    from .icons import state_icon
    from .settings import SettingsStore
    from .tray import TrayApp

    route_qt_messages()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("stylecam")
    app.setOrganizationName("stylecam")
    app.setWindowIcon(state_icon("running"))
    # A tray app lives on with no window open: closing the preview must not end it.
    app.setQuitOnLastWindowClosed(False)

    store = SettingsStore(args.settings)
    if args.source or args.style:
        changes = {k: v for k, v in (("source", args.source), ("style", args.style)) if v}
        try:
            store.update(**changes)
        except ValueError as e:
            print(f"stylecam-tray: {e}", file=sys.stderr)
            return 2
    try:
        controller = TrayApp(store, use_tray=False if args.window else None)
    except RuntimeError as e:
        log.error("%s", e)
        QMessageBox.critical(None, "stylecam", str(e))
        return 1
    controller.quit_requested.connect(app.quit)
    app.aboutToQuit.connect(controller.shutdown)
    for warning in store.warnings:
        controller.notify("Settings reset", warning, "warning")

    # Ctrl-C, SIGTERM (logout, systemd) and SIGHUP (the terminal closed) end the app the same
    # way as Quit. Python runs signal handlers only between bytecodes, so a timer wakes the
    # interpreter now and then.
    for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if sig is not None:
            signal.signal(sig, lambda *_: QTimer.singleShot(0, controller.quit))
    wake = QTimer()
    wake.start(250)
    wake.timeout.connect(lambda: None)
    if args.quit_after:
        QTimer.singleShot(int(args.quit_after * 1000), controller.quit)

    controller.start()
    if args.preview:
        controller.show_preview()
    # The line the frozen-app smoke test (installer/smoke_frozen.sh) and support look for.
    QTimer.singleShot(0, lambda: log.info("stylecam-tray ready (%s)", "tray" if controller.tray is not None else "window"))
    code = app.exec()
    wake.stop()
    clean = controller.shutdown()
    logging.shutdown()
    if not clean:
        # The worker is stuck in a driver call; a QThread destroyed while running aborts the
        # process, so leave at once (the log says which call hung).
        os._exit(code or 1)
    return code


if __name__ == "__main__":
    sys.exit(main())
