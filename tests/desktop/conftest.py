"""Fixtures for the desktop tests: a real X screen with a system-tray host, one QApplication on
it, isolated settings/log/config folders, an app factory, and a check that no test leaves a
QThread, a QTimer or a stream thread running (as napari's conftest does)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import weakref

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QThread, QTimer  # noqa: E402


from desktop_helpers import SIZE  # noqa: E402


@pytest.fixture(scope="session")
def tray_host(xvfb_display):
    """``trayer`` on the Xvfb screen: a freedesktop system tray that QSystemTrayIcon can use."""
    if shutil.which("trayer") is None:
        pytest.skip("trayer is not installed (apt-get install trayer)")
    proc = subprocess.Popen(["trayer", "--edge", "top", "--align", "right", "--widthtype", "request",
                             "--height", "24", "--SetDockType", "true", "--transparent", "false",
                             "--tint", "0x30353d"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def qapp(tray_host, qapp_args):
    """The session's QApplication, on the xcb platform of the Xvfb screen, with a tray available.

    Overrides pytest-qt's fixture: the platform must be chosen before the application exists,
    and the application must be gone before the X server is stopped (Qt aborts the process
    when its X connection breaks).
    """
    from PySide6.QtWidgets import QApplication, QSystemTrayIcon

    previous = os.environ.get("QT_QPA_PLATFORM")
    os.environ["QT_QPA_PLATFORM"] = "xcb"
    app = QApplication.instance()
    if app is None:
        app = QApplication(list(qapp_args) or ["stylecam-tests"])
    elif app.platformName() != "xcb":
        pytest.skip(f"a QApplication on the {app.platformName()} platform already exists")
    app.setQuitOnLastWindowClosed(False)
    deadline = time.monotonic() + 10
    while not QSystemTrayIcon.isSystemTrayAvailable() and time.monotonic() < deadline:
        app.processEvents()
        time.sleep(0.05)
    if not QSystemTrayIcon.isSystemTrayAvailable():
        pytest.fail("trayer runs but Qt sees no system tray")
    yield app
    for widget in app.topLevelWidgets():
        widget.close()
    app.processEvents()
    app.shutdown()
    if previous is None:
        os.environ.pop("QT_QPA_PLATFORM", None)
    else:
        os.environ["QT_QPA_PLATFORM"] = previous


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path, monkeypatch):
    """Autostart entries, user styles and logs go to the test's own folders."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("STYLECAM_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.delenv("STYLECAM_SETTINGS", raising=False)


@pytest.fixture(autouse=True)
def no_leaks(monkeypatch, request):
    """Fail a test that leaves a QThread or QTimer running, or a stylecam stream thread alive.

    Requested first (autouse, before the app fixtures), so it is checked after they tear down.
    """
    threads: list[weakref.ref] = []
    timers: list[weakref.ref] = []
    single_shots = [0]
    original_start = QThread.start
    original_timer_start = QTimer.start
    original_single_shot = QTimer.singleShot

    def thread_start(self, *args):
        threads.append(weakref.ref(self))
        return original_start(self, *args)

    def timer_start(self, *args):
        timers.append(weakref.ref(self))
        return original_timer_start(self, *args)

    def single_shot(msec, *args):
        if len(args) == 1 and callable(args[0]):
            single_shots[0] += 1
            target = args[0]

            def fire():
                single_shots[0] -= 1
                target()
            return original_single_shot(msec, fire)
        return original_single_shot(msec, *args)

    monkeypatch.setattr(QThread, "start", thread_start)
    monkeypatch.setattr(QTimer, "start", timer_start)
    monkeypatch.setattr(QTimer, "singleShot", staticmethod(single_shot))
    yield
    problems = []
    for ref in threads:
        thread = ref()
        try:
            if thread is not None and thread.isRunning():
                problems.append(f"QThread {thread.objectName() or thread!r} still running")
        except RuntimeError:  # the C++ object is gone: not running
            pass
    for ref in timers:
        timer = ref()
        try:
            if timer is not None and timer.isActive():
                problems.append(f"QTimer {timer.objectName() or timer!r} (interval {timer.interval()} ms) still active")
        except RuntimeError:
            pass
    if single_shots[0]:
        problems.append(f"{single_shots[0]} QTimer.singleShot callback(s) still pending")
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        # QThreads show up as never-removed "dummy" entries; the QThread check above covers them.
        alive = [t.name for t in threading.enumerate() if t.name.startswith("stylecam-") and t.is_alive()
                 and not isinstance(t, threading._DummyThread)]
        if not alive:
            break
        time.sleep(0.02)
    else:
        problems.append(f"stream threads still alive: {alive}")
        if any(name.startswith("stylecam-classic") for name in alive):
            problems.append("a classic backend's thread pool outlived its stream (ClassicBackend.close() "
                            "was not called)")
    if problems and not getattr(request.node, "rep_call_failed", lambda: True)():
        pytest.fail("; ".join(problems))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # no_leaks reports leaks only when the test itself passed (a failed test's leaks are noise).
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call_failed = lambda failed=report.failed: failed


@pytest.fixture
def make_app(qtbot, tmp_path):
    """Build a TrayApp over a fresh settings file (small pattern frames, no outputs by default)."""
    from stylecam.desktop.settings import AppSettings, SettingsStore
    from stylecam.desktop.tray import TrayApp

    apps = []

    def make(use_tray=None, styles=None, probe_diffusion=False, **settings):
        values = dict(source="pattern", style="toon", output_size=SIZE, fps=30.0, virtual_camera=False,
                      mjpeg=False)
        values.update(settings)
        store = SettingsStore(tmp_path / "settings.ini")
        store.save(AppSettings(**values))
        app = TrayApp(store, use_tray=use_tray, styles=styles, probe_diffusion=probe_diffusion)
        apps.append(app)
        return app

    yield make
    for app in apps:
        assert app.shutdown(), "the worker did not stop within 2 s"


@pytest.fixture
def classic_reference():
    """style name -> function(frame) -> the classic backend's output for that frame."""
    from stylecam.core.styles import load_styles
    from stylecam.core.stylize.base import create_backend

    styles, _ = load_styles()
    backends = {}

    def paint(name, frame):
        if name not in backends:
            backends[name] = create_backend(styles[name])
        return backends[name].process([frame])[0]

    yield paint
    for backend in backends.values():
        backend.close()
