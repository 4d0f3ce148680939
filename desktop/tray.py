"""The tray app: menu, state icon, notifications, and the worker that streams.

:class:`TrayApp` holds the actions (one set, shown in the tray menu, or in a small main window
where the desktop has no system tray), the settings, the preview and the worker. It never
touches frames or the stylizer itself: it asks the worker and listens to its signals.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import threading
import time

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QAction, QActionGroup, QGuiApplication
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QMainWindow, QMenu,
                               QPushButton, QSystemTrayIcon, QVBoxLayout, QWidget)

from stylecam.core.styles import Style, load_styles

from . import devices
from .icons import state_icon, style_icon
from .preview import PreviewWindow, add_style_shortcuts
from .qtcompat import emit
from .region import RegionPicker, region_spec
from .settings import AppSettings, SettingsStore, set_autostart
from .worker import FramePair, StreamConfig, StreamWorker

log = logging.getLogger(__name__)

#: Quit must finish within this (the issue's bound); the worker gets most of it.
QUIT_TIMEOUT_S = 2.0
NOTIFY_MS = 8000
DEMO_SPEC = "demo"


def diffusion_runnable(bundle: str = "") -> tuple[bool, str]:
    """Whether diffusion styles can run here, and if not, why. Slow (imports PyTorch and checks
    the bundle's files): called from a background thread, never the UI thread."""
    if importlib.util.find_spec("torch") is None:
        return False, "PyTorch is not installed"
    if importlib.util.find_spec("stylecam.core.stylize.diffusion") is None:
        return False, "this build has no diffusion backend"
    try:
        from stylecam.core.stylize import diffusion
        from stylecam.core.stylize.bundle import check_bundle, resolve_bundle
    except Exception as e:
        return False, f"the diffusion backend does not load: {e}"
    ref = bundle or diffusion.DEFAULT_STACK
    try:
        check_bundle(resolve_bundle(ref, offline=True))
    except Exception as e:
        return False, f"no usable model bundle ({e})"
    return True, ""


def resolve_source(spec: str) -> str:
    """``auto`` becomes the first camera found, else the demo clip."""
    if spec != "auto":
        return spec
    found = devices.cameras()
    return found[0].spec if found else DEMO_SPEC


def camera_gone(spec: str) -> bool:
    """True when ``spec`` names a camera that is not there now (unplugged, renamed). Cheap: a
    look at the device node, no open (a start must not wait on a driver)."""
    if not spec.startswith("camera"):
        return False
    from stylecam.core.sources import CameraSource, open_source

    try:
        source = open_source(spec)
    except ValueError:
        return False  # the worker says what is wrong with it
    return isinstance(source, CameraSource) and source.present() is False


class MainWindow(QMainWindow):
    """The stand-in for the tray where no system tray exists: the same actions, in menus and buttons."""

    def __init__(self, app: "TrayApp"):
        super().__init__()
        self.setObjectName("stylecam-main")
        self.setWindowTitle("stylecam")
        self.setWindowIcon(state_icon("running"))
        bar = self.menuBar()
        stream = bar.addMenu("&Stream")
        for action in (app.pause_action, app.preview_action, app.settings_action):
            stream.addAction(action)
        stream.addSeparator()
        stream.addAction(app.quit_action)
        self.style_menu = bar.addMenu("St&yle")
        self.style_menu.addActions(app.style_group.actions())
        bar.addMenu(app.source_menu)
        bar.addMenu(app.output_menu)
        central = QWidget()
        layout = QVBoxLayout(central)
        self.status_label = QLabel("starting…")
        self.stats_label = QLabel("")
        self.message_label = QLabel("")
        self.message_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        layout.addWidget(self.stats_label)
        layout.addWidget(self.message_label)
        buttons = QHBoxLayout()
        for action in (app.pause_action, app.preview_action, app.settings_action, app.quit_action):
            button = QPushButton(action.text().replace("&", "").rstrip("…"))
            button.clicked.connect(action.trigger)
            if action.isCheckable():
                button.setCheckable(True)
                action.toggled.connect(button.setChecked)
            buttons.addWidget(button)
        layout.addLayout(buttons)
        self.setCentralWidget(central)
        self._shortcuts = add_style_shortcuts(self, lambda: app.cycle_style(1), lambda: app.cycle_style(-1),
                                              app.pause_action.toggle)
        self._app = app

    def closeEvent(self, event):  # noqa: N802 (Qt override): closing the window is quitting
        self._app.quit()
        event.accept()


class TrayApp(QObject):
    """The app's controller. ``start()`` begins streaming; ``quit()`` ends everything."""

    #: title, message, level: every notification, whether shown in the tray or the window.
    notified = Signal(str, str, str)
    #: Each frame pair the UI takes from the worker (the preview shows the same).
    frame_shown = Signal(object)
    stats_updated = Signal(dict)
    state_changed = Signal(str)
    #: The style the worker runs, after a switch or a fallback.
    style_changed = Signal(str)
    source_changed = Signal(str)
    quit_requested = Signal()
    _diffusion_result = Signal(bool, str)

    #: ok, reason: the background check of the diffusion backend finished.
    diffusion_checked = Signal(bool, str)

    def __init__(self, store: SettingsStore, *, use_tray: bool | None = None, styles: dict | None = None,
                 probe_diffusion: bool = True):
        super().__init__()
        self.store = store
        self.settings = store.load()
        self.worker: StreamWorker | None = None
        self.state = "idle"
        self.last_stats: dict = {}
        self.last_notification: tuple[str, str, str] | None = None
        self._shut_down = False
        self.stopped_cleanly = True
        self._pending_notes: list[tuple[str, str, str]] = []

        loaded, warnings = load_styles() if styles is None else (styles, [])
        for w in warnings:
            log.warning("%s", w)
        # Diffusion styles join the menu once a background check finds PyTorch and a bundle.
        self.styles: dict[str, Style] = {n: s for n, s in loaded.items() if s.backend != "diffusion"}
        self.diffusion_styles = [s for s in loaded.values() if s.backend == "diffusion"]
        self.diffusion_status: tuple[bool, str] | None = None
        self.probe_diffusion = probe_diffusion
        classic = [s for s in self.styles.values() if s.backend == "classic"]
        if not classic:
            raise RuntimeError("no classic style found: the installation is incomplete "
                               "(core/data/styles.toml is missing)")
        self.fallback_style = self.styles.get("oil", classic[0])
        #: The style that is selected now (the saved one may wait for the diffusion check).
        self.style_name = self.settings.style
        if self.style_name not in self.styles:
            if self.style_name not in {s.name for s in self.diffusion_styles}:
                log.warning("style %r from the settings is not available; using %s",
                            self.style_name, self.fallback_style.name)
            self.style_name = self.fallback_style.name
        self.source_spec = resolve_source(self.settings.source)
        #: Why the saved camera is not used this time (shown once the tray is up), if it is not.
        self._camera_note: str | None = None
        self._frames_seen = False
        if camera_gone(self.source_spec):
            # The saved camera stays saved (it may be back next time); this run shows the demo.
            self._camera_note = (f"The camera in your settings ({self.source_spec.partition(':')[2] or '0'}) "
                                 "is not connected. Showing the demo clip instead; pick a source in the "
                                 "Source menu.")
            log.warning("%s", self._camera_note)
            self.source_spec = DEMO_SPEC

        self._build_actions()
        self._diffusion_result.connect(self._on_diffusion_result)
        self.preview = PreviewWindow()
        self.preview.cycle_style.connect(self.cycle_style)
        self.preview.toggle_pause.connect(self.pause_action.toggle)
        self.picker: RegionPicker | None = None

        if use_tray is None:
            use_tray = QSystemTrayIcon.isSystemTrayAvailable()
        self.tray: QSystemTrayIcon | None = None
        self.window: MainWindow | None = None
        if use_tray:
            self.tray = QSystemTrayIcon(state_icon("idle"), self)
            self.tray.setContextMenu(self.menu)
            self.tray.setToolTip("stylecam")
            self.tray.activated.connect(self._on_tray_activated)
            self.tray.show()
        else:
            log.info("no system tray on this desktop: showing the main window")
            self.window = MainWindow(self)
            self.window.resize(420, 160)
            self.window.show()
        if self._camera_note:
            self.notify("Camera not found", self._camera_note, "warning")

    # -- actions and menus -----------------------------------------------------------------------

    def _build_actions(self) -> None:
        self.menu = QMenu()
        self.menu.setObjectName("stylecam-tray-menu")
        self.status_action = self.menu.addAction("stylecam")
        self.status_action.setEnabled(False)
        self.menu.addSection("Style")
        self.style_group = QActionGroup(self)
        self.style_group.setExclusive(True)
        self.style_actions: dict[str, QAction] = {}
        for style in self.styles.values():
            self.menu.addAction(self._style_action(style))
        self.ai_hint_action = self.menu.addAction("AI styles: checking…")
        self.ai_hint_action.setEnabled(False)
        self.ai_hint_action.setVisible(bool(self.diffusion_styles) and self.probe_diffusion)
        self.style_group.triggered.connect(lambda a: self.select_style(a.data()))
        self.menu.addSeparator()

        self.source_menu = QMenu("&Source", self.menu)
        self.source_menu.setObjectName("stylecam-source-menu")
        self.source_group = QActionGroup(self)
        self.source_group.setExclusive(True)
        self.source_actions: dict[str, QAction] = {}
        self._custom_source = None
        self._fill_source_menu()
        self.source_menu.aboutToShow.connect(self._refresh_sources)
        self.menu.addMenu(self.source_menu)

        self.output_menu = QMenu("&Output", self.menu)
        self.output_menu.setObjectName("stylecam-output-menu")
        self.virtualcam_action = self.output_menu.addAction("Virtual camera")
        self.virtualcam_action.setCheckable(True)
        self.virtualcam_action.setChecked(self.settings.virtual_camera)
        self.virtualcam_action.toggled.connect(self._on_virtualcam_toggled)
        self.mjpeg_action = self.output_menu.addAction("MJPEG stream")
        self.mjpeg_action.setCheckable(True)
        self.mjpeg_action.setChecked(self.settings.mjpeg)
        self.mjpeg_action.toggled.connect(self._on_mjpeg_toggled)
        self.copy_url_action = self.output_menu.addAction("Copy MJPEG URL")
        self.copy_url_action.triggered.connect(self.copy_mjpeg_url)
        self.copy_url_action.setEnabled(self.settings.mjpeg)
        self.menu.addMenu(self.output_menu)
        self.menu.addSeparator()

        self.pause_action = self.menu.addAction("&Pause")
        self.pause_action.setCheckable(True)
        self.pause_action.toggled.connect(self.set_paused)
        self.preview_action = self.menu.addAction("Show &preview")
        self.preview_action.triggered.connect(self.show_preview)
        self.settings_action = self.menu.addAction("&Settings…")
        self.settings_action.triggered.connect(self.show_settings)
        self.menu.addSeparator()
        self.quit_action = self.menu.addAction("&Quit")
        self.quit_action.triggered.connect(self.quit)

    def _style_action(self, style: Style) -> QAction:
        action = QAction(style_icon(style.name), style.title, self)
        action.setCheckable(True)
        action.setData(style.name)
        action.setToolTip(style.description or style.title)
        action.setStatusTip(style.description)
        action.setChecked(style.name == self.style_name)
        self.style_group.addAction(action)
        self.style_actions[style.name] = action
        return action

    def _fill_source_menu(self, screens=None, cams=None) -> None:
        menu = self.source_menu
        for action in list(self.source_group.actions()):
            self.source_group.removeAction(action)
        menu.clear()
        self.source_actions.clear()
        self._custom_source: str | None = None

        def add(spec: str, label: str) -> QAction:
            action = menu.addAction(label)
            action.setCheckable(True)
            action.setData(spec)
            self.source_group.addAction(action)
            self.source_actions[spec] = action
            action.triggered.connect(lambda checked=False, s=spec: self.select_source(s))
            return action

        screens = devices.monitors() if screens is None else screens
        cams = devices.cameras() if cams is None else cams
        self._device_choices = (screens, cams)
        for choice in screens:
            add(choice.spec, choice.label)
        self.region_action = menu.addAction("Screen region…")
        self.region_action.setEnabled(bool(screens))
        self.region_action.triggered.connect(self.pick_region)
        menu.addSeparator()
        for choice in cams:
            add(choice.spec, choice.label)
        if not cams:
            none = menu.addAction("No camera found")
            none.setEnabled(False)
        menu.addSeparator()
        self.file_action = menu.addAction("Video file…")
        self.file_action.triggered.connect(self.choose_file)
        add(DEMO_SPEC, "Demo clip")
        add("pattern", "Test pattern")
        self._mark_source(self.source_spec)

    def _refresh_sources(self) -> None:
        """A camera plugged in or a monitor added since: the menu lists it when it opens."""
        found = (devices.monitors(), devices.cameras())
        if found != self._device_choices:
            self._fill_source_menu(*found)

    def _mark_source(self, spec: str) -> None:
        custom = self._custom_source
        if custom is not None and custom != spec:
            # One entry for a region, file or typed spec: the one that runs now.
            action = self.source_actions.pop(custom)
            self.source_group.removeAction(action)
            self.source_menu.removeAction(action)
            self._custom_source = None
        action = self.source_actions.get(spec)
        if action is None:
            label = ("Region " + spec.partition(":")[2]) if spec.startswith("screen:") and "," in spec \
                else f"File {spec.partition(':')[2].rsplit('/', 1)[-1]}" if spec.startswith("file:") else spec
            action = QAction(label, self)
            action.setCheckable(True)
            action.setData(spec)
            action.triggered.connect(lambda checked=False, s=spec: self.select_source(s))
            self.source_group.addAction(action)
            self.source_menu.insertAction(self.file_action, action)
            self.source_actions[spec] = action
            self._custom_source = spec
        action.setChecked(True)

    # -- streaming -----------------------------------------------------------------------------

    def stream_config(self) -> StreamConfig:
        s = self.settings
        return StreamConfig(source=self.source_spec, style=self.styles[self.style_name], size=s.output_size,
                            fps=s.fps, mirror=s.mirror, batch_size=s.batch_size, device=s.device,
                            bundle=s.bundle or None)

    def start(self) -> None:
        if self.worker is not None:
            return
        worker = StreamWorker(self.stream_config(), self.fallback_style)
        worker.frame_ready.connect(self._on_frame_ready)
        worker.stats.connect(self._on_stats)
        worker.notify.connect(self.notify)
        worker.state_changed.connect(self._on_state)
        worker.run_started.connect(self._on_run_started)
        worker.style_fallback.connect(self._on_style_fallback)
        worker.source_fallback.connect(self._on_source_fallback)
        worker.output_changed.connect(self._on_output_changed)
        self.worker = worker
        self._apply_outputs()
        worker.set_paused(self.pause_action.isChecked())
        worker.start()
        if self.diffusion_styles and self.probe_diffusion:
            self.check_diffusion()

    def check_diffusion(self) -> None:
        """Check in the background whether diffusion styles can run; they join the menu if so."""
        bundle = self.settings.bundle
        signal = self._diffusion_result

        def probe():
            result = diffusion_runnable(bundle)
            try:
                emit(signal, *result)
            except RuntimeError:  # the app was deleted while PyTorch loaded
                pass

        self.ai_hint_action.setText("AI styles: checking…")
        threading.Thread(target=probe, name="stylecam-probe", daemon=True).start()

    def _on_diffusion_result(self, ok: bool, why: str) -> None:
        if self._shut_down:
            return
        self.diffusion_status = (ok, why)
        if ok:
            self.ai_hint_action.setVisible(False)
            for style in self.diffusion_styles:
                if style.name not in self.styles:
                    self.styles[style.name] = style
                    self.menu.insertAction(self.ai_hint_action, self._style_action(style))
                    if self.window is not None:
                        self.window.style_menu.addAction(self.style_actions[style.name])
            log.info("diffusion styles offered: %s", ", ".join(s.name for s in self.diffusion_styles))
            if self.settings.style in self.styles and self.settings.style != self.style_name:
                self.select_style(self.settings.style)  # the saved style was waiting for this check
        else:
            self.ai_hint_action.setText("AI styles need a model (stylecam models)")
            self.ai_hint_action.setToolTip(why)
            log.info("diffusion styles not offered: %s", why)
        emit(self.diffusion_checked, ok, why)

    def _virtualcam_spec(self) -> str:
        s = self.settings
        size = s.output_size or (1280, 720)
        return f"virtualcam:{size[0]}x{size[1]}@{s.fps:g}"

    def _apply_outputs(self) -> None:
        if self.worker is None:
            return
        self.worker.set_output("virtual_camera", self._virtualcam_spec() if self.virtualcam_action.isChecked() else None)
        self.worker.set_output("mjpeg", f"mjpeg:{self.settings.mjpeg_port}" if self.mjpeg_action.isChecked() else None)

    def select_style(self, name: str) -> None:
        style = self.styles.get(name)
        if style is None:
            self.notify("Unknown style", f"No style called {name!r}.", "warning")
            return
        self.style_actions[name].setChecked(True)
        self.style_name = name
        self._save(style=name)
        self._update_status()
        if self.worker is not None:
            self.worker.set_style(style)

    def cycle_style(self, step: int = 1) -> None:
        names = list(self.styles)
        current = self.style_name if self.style_name in names else names[0]
        self.select_style(names[(names.index(current) + step) % len(names)])

    def select_source(self, spec: str) -> None:
        self.source_spec = spec
        self._mark_source(spec)
        self._save(source=spec)
        if self.worker is not None:
            self.worker.set_source(spec)

    def set_paused(self, paused: bool) -> None:
        if self.pause_action.isChecked() != paused:
            self.pause_action.setChecked(paused)  # re-enters through toggled
            return
        self.pause_action.setText("&Resume" if paused else "&Pause")
        if self.worker is not None:
            self.worker.set_paused(paused)

    def pick_region(self) -> None:
        if self.picker is None:
            self.picker = RegionPicker()
            self.picker.picked.connect(lambda rect: self.select_source(region_spec(rect)))
        self.picker.start()

    def choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(None, "Play a video file", "",
                                              "Videos (*.mp4 *.mkv *.avi *.mov *.webm);;All files (*)")
        if path:
            self.select_source(f"file:{path}")

    def show_preview(self) -> None:
        self.preview.show()
        self.preview.raise_()
        self.preview.activateWindow()
        self.preview.setFocus()
        pair = self.worker.take_frame() if self.worker is not None else None
        if pair is not None:
            self._show(pair)

    def show_settings(self) -> None:
        from .settings_dialog import SettingsDialog

        shown = dataclasses.replace(self.settings, style=self.style_name)
        dialog = SettingsDialog(shown, list(self.styles.values()), self.source_actions_specs())
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.accepted.connect(lambda: self.apply_settings(dialog.result_settings()))
        self.settings_dialog = dialog
        dialog.show()

    def source_actions_specs(self) -> list[tuple[str, str]]:
        return [(spec, a.text()) for spec, a in self.source_actions.items()]

    def apply_settings(self, new: AppSettings) -> None:
        """Save ``new`` and carry every change to the running stream."""
        old = self.settings
        if new.style not in self.styles:
            new = dataclasses.replace(new, style=old.style)
        self.store.save(new)
        self.settings = new
        if new.style != self.style_name:
            self.select_style(new.style)
        if new.source != old.source:
            self.select_source(resolve_source(new.source))
            self._save(source=new.source)
        if new.mirror != old.mirror and self.worker is not None:
            self.worker.set_mirror(new.mirror)
        if (new.output_size, new.fps, new.batch_size, new.device, new.bundle) \
                != (old.output_size, old.fps, old.batch_size, old.device, old.bundle) and self.worker is not None:
            self.worker.reconfigure(size=new.output_size, fps=new.fps, batch_size=new.batch_size, device=new.device,
                                    bundle=new.bundle or None)
        if new.bundle != old.bundle and self.diffusion_styles and self.probe_diffusion and self.worker is not None:
            self.check_diffusion()
        self.virtualcam_action.setChecked(new.virtual_camera)
        self.mjpeg_action.setChecked(new.mjpeg)
        self._apply_outputs()
        if new.start_on_login != old.start_on_login:
            self.set_start_on_login(new.start_on_login)

    def set_start_on_login(self, enabled: bool) -> None:
        from .icons import icon_dir

        try:
            set_autostart(enabled, icon=str(icon_dir() / "stylecam.svg"))
        except (OSError, NotImplementedError) as e:
            self.notify("Start on login", f"Could not change the login entry: {e}", "warning")
            self._save(start_on_login=False)

    def copy_mjpeg_url(self) -> str:
        sink = self.worker.hub.sink("mjpeg") if self.worker is not None else None
        url = getattr(sink, "url", None) or f"http://127.0.0.1:{self.settings.mjpeg_port}/stream.mjpg"
        QGuiApplication.clipboard().setText(url)
        self.notify("MJPEG URL copied", url, "info")
        return url

    def _on_virtualcam_toggled(self, on: bool) -> None:
        self._save(virtual_camera=on)
        self._apply_outputs()

    def _on_mjpeg_toggled(self, on: bool) -> None:
        self.copy_url_action.setEnabled(on)
        self._save(mjpeg=on)
        self._apply_outputs()

    def _save(self, **changes) -> None:
        self.settings = dataclasses.replace(self.settings, **changes)
        self.store.save(self.settings)

    # -- worker signals ------------------------------------------------------------------------

    def _on_frame_ready(self) -> None:
        if self.worker is None:
            return
        pair = self.worker.take_frame()
        if pair is not None:
            self._show(pair)

    def _show(self, pair: FramePair) -> None:
        self._frames_seen = True
        if pair.style not in self.preview.style_titles and pair.style in self.styles:
            self.preview.style_titles[pair.style] = self.styles[pair.style].title
        self.preview.show_pair(pair)
        emit(self.frame_shown, pair)

    def _on_stats(self, stats: dict) -> None:
        self.last_stats = stats
        self.preview.set_stats(stats)
        text = f"{stats.get('fps_recent', 0):.1f} fps · {stats.get('latency_recent_ms') or 0:.0f} ms"
        if self.tray is not None:
            self.tray.setToolTip(f"stylecam: {self.styles[self.style_name].title} · {text}")
        if self.window is not None:
            self.window.stats_label.setText(text)
        emit(self.stats_updated, stats)

    def _on_state(self, state: str) -> None:
        if state == "error" and not self._frames_seen and self.source_spec.startswith("camera"):
            # The saved camera is there but does not open (busy, broken driver): rather than no
            # picture at all, the demo clip, once. The camera stays the saved source.
            self._camera_note = (f"The camera {self.source_spec.partition(':')[2] or '0'} could not be "
                                 "opened. Showing the demo clip instead; pick a source in the Source menu.")
            self.notify("Camera not available", self._camera_note, "warning")
            self.source_spec = DEMO_SPEC
            self._mark_source(DEMO_SPEC)
            if self.worker is not None:
                self.worker.set_source(DEMO_SPEC)
            return
        self.state = state
        icon_state = {"starting": "idle", "stopped": "idle"}.get(state, state)
        if self.tray is not None:
            self.tray.setIcon(state_icon(icon_state))
        if self.window is not None:
            self.window.setWindowIcon(state_icon(icon_state))
        self._update_status()
        emit(self.state_changed, state)

    def _update_status(self) -> None:
        style = self.styles.get(self.style_name)
        text = f"stylecam · {self.state}" + (f" · {style.title}" if style else "")
        self.status_action.setText(text)
        if self.window is not None:
            self.window.status_label.setText(text)
        self.preview.set_status(text)

    def _on_run_started(self, source: str, style: str) -> None:
        emit(self.source_changed, source)
        emit(self.style_changed, style)

    def _on_style_fallback(self, name: str) -> None:
        # The menu shows what runs, and the next start keeps it.
        if name in self.style_actions:
            self.style_actions[name].setChecked(True)
            self.style_name = name
            self._save(style=name)
        self._update_status()

    def _on_source_fallback(self, spec: str) -> None:
        # The failed source is not saved: the next start opens the one that worked.
        self.source_spec = spec
        self._mark_source(spec)
        self._save(source=spec)

    def _on_output_changed(self, name: str, on: bool) -> None:
        action = {"virtual_camera": self.virtualcam_action, "mjpeg": self.mjpeg_action}.get(name)
        if action is not None and action.isChecked() != on:
            # The failure is not the user's choice: the setting stays, only the menu shows it is off.
            action.blockSignals(True)
            action.setChecked(on)
            action.blockSignals(False)
            if name == "mjpeg":
                self.copy_url_action.setEnabled(on)

    def _on_tray_activated(self, reason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.show_preview()

    def notify(self, title: str, message: str, level: str = "info") -> None:
        log.log({"error": logging.ERROR, "warning": logging.WARNING}.get(level, logging.INFO),
                "notification: %s: %s", title, message.replace("\n", " "))
        icon = {"error": QSystemTrayIcon.MessageIcon.Critical,
                "warning": QSystemTrayIcon.MessageIcon.Warning}.get(level, QSystemTrayIcon.MessageIcon.Information)
        if self.tray is not None and self.tray.isVisible():
            self.tray.showMessage(title, message, icon, NOTIFY_MS)
        if self.window is not None:
            self.window.message_label.setText(f"<b>{title}</b><br>{message}".replace("\n", "<br>"))
        self.last_notification = (title, message, level)
        emit(self.notified, title, message, level)

    # -- ending ----------------------------------------------------------------------------------

    def shutdown(self, timeout: float = QUIT_TIMEOUT_S) -> bool:
        """Stop the worker and close every window; True when the worker ended within ``timeout``."""
        if self._shut_down:
            return self.stopped_cleanly
        self._shut_down = True
        t0 = time.perf_counter()
        ok = True
        worker, self.worker = self.worker, None
        if worker is not None:
            worker.stop()
            ok = worker.wait(int(timeout * 1000))
            if not ok:
                log.error("the stream worker did not stop within %.1f s", timeout)
            for sig in (worker.frame_ready, worker.stats, worker.notify, worker.state_changed,
                        worker.run_started, worker.style_fallback, worker.source_fallback,
                        worker.output_changed):
                try:
                    sig.disconnect()
                except (RuntimeError, TypeError):
                    pass
        self.preview.close()
        if self.picker is not None:
            self.picker.close()
        if self.tray is not None:
            self.tray.hide()
        if self.window is not None:
            self.window.hide()
        log.info("stopped in %.2f s", time.perf_counter() - t0)
        self.stopped_cleanly = ok
        return ok

    def quit(self) -> None:
        """Stop everything, then ask the application to end (``quit_requested``)."""
        self.shutdown()
        emit(self.quit_requested)

