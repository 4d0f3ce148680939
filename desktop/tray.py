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

from PySide6.QtCore import QObject, Qt, QUrl, Signal
from PySide6.QtGui import QAction, QActionGroup, QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QMainWindow, QMenu,
                               QSystemTrayIcon, QToolButton, QVBoxLayout, QWidget)

from stylecam.core.styles import Style, load_styles

from . import devices
from .fixes import describe_output_problem
from .hotkey import GlobalHotkey
from .icons import state_icon, style_icon
from .logs import log_dir
from .notify import DetailsDialog, Toast, no_cli_flags, plain_text, two_lines
from .preview import PreviewWindow, add_style_shortcuts
from .qtcompat import emit
from .region import RegionPicker, region_spec
from .settings import AppSettings, SettingsStore, set_autostart
from .status import DAMAGED_MODEL, OUTPUT_LABELS, StatusModel
from .worker import FramePair, StreamConfig, StreamWorker

log = logging.getLogger(__name__)

#: Quit must finish within this (the issue's bound); the worker gets most of it.
QUIT_TIMEOUT_S = 2.0
DEMO_SPEC = "demo"
#: What marks the running style in menus (a radio mark alone is faint next to an icon).
ACTIVE_MARK = "  ✓"


def open_folder(path) -> bool:
    """Open ``path`` in the desktop's file manager (tests patch this)."""
    return QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))


def ask_record_path(parent=None) -> str:
    """Ask where to record; '' when cancelled (tests patch this)."""
    from pathlib import Path

    folder = Path.home() / "Videos"
    default = folder if folder.is_dir() else Path.home()
    name = time.strftime("stylecam-%Y%m%d-%H%M%S.mp4")
    path, _ = QFileDialog.getSaveFileName(parent, "Record to a video file", str(default / name),
                                          "Video (*.mp4 *.mkv *.avi)")
    return path


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
        if getattr(e, "damaged", ()):
            return False, f"{DAMAGED_MODEL} ({e})"
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
        for action in (app.pause_action, app.record_action, app.preview_action, app.settings_action):
            stream.addAction(action)
        stream.addSeparator()
        stream.addAction(app.quit_action)
        self.style_menu = bar.addMenu("St&yle")
        self.style_menu.addActions(app.style_group.actions())
        bar.addMenu(app.source_menu)
        bar.addMenu(app.output_menu)
        bar.addMenu(app.help_menu)
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
        self.buttons: dict[str, QToolButton] = {}
        for name, action in (("pause", app.pause_action), ("record", app.record_action),
                             ("preview", app.preview_action), ("settings", app.settings_action),
                             ("quit", app.quit_action)):
            # The action's own button: its text (Pause/Resume, Record/Stop recording) and its
            # checked state follow the action wherever it is changed.
            button = QToolButton()
            button.setDefaultAction(action)
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
            self.buttons[name] = button
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
                 probe_diffusion: bool = True, first_start: bool | None = None):
        super().__init__()
        self.store = store
        self.settings = store.load()
        #: No settings file was found: the preview opens with the guide at start.
        self.first_start = store.first_start if first_start is None else first_start
        #: One status for the icon, the menus, Settings and the guide.
        self.status = StatusModel(self)
        self.status.choose("virtual_camera", self.settings.virtual_camera)
        self.status.choose("mjpeg", self.settings.mjpeg)
        self.details: dict[str, tuple[str, str]] = {}
        self.toast = Toast()
        self.toast.details_requested.connect(lambda: self.show_details(self._toast_key))
        self._toast_key = ""
        self.hotkey: GlobalHotkey | None = None
        self.worker: StreamWorker | None = None
        self.state = "idle"
        #: The source that failed with nothing to go back to, until a run starts again.
        self.failed_source: str | None = None
        self.last_stats: dict = {}
        self.last_notification: tuple[str, str, str] | None = None
        self.last_details = ""
        #: The last notifications shown: (title, two lines, details).
        self.history: list[tuple[str, str, str]] = []
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
        self.preview.strength_changed.connect(self.set_strength)
        from .guide import GuidePanel

        self.guide = GuidePanel(self)
        self.preview.set_guide(self.guide)
        self.guide.setVisible(self.first_start)
        self._sync_strength()
        self.picker: RegionPicker | None = None
        self.status.changed.connect(self._on_status_changed)

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
            self.window.resize(480, 180)
            self.window.show()
        self._mark_active_style()
        self._on_status_changed()
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
        self.ai_hint_action.triggered.connect(self.show_guide)
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
        self.record_action = self.menu.addAction("&Record to file…")
        self.record_action.triggered.connect(self.toggle_recording)
        self.menu.addSeparator()

        self.pause_action = self.menu.addAction("&Pause")
        self.pause_action.setCheckable(True)
        self.pause_action.toggled.connect(self.set_paused)
        self.preview_action = self.menu.addAction("Show &preview")
        self.preview_action.triggered.connect(self.show_preview)
        self.settings_action = self.menu.addAction("&Settings…")
        self.settings_action.triggered.connect(self.show_settings)
        self.help_menu = QMenu("&Help", self.menu)
        self.help_menu.setObjectName("stylecam-help-menu")
        self.guide_action = self.help_menu.addAction("What works and what is missing…")
        self.guide_action.triggered.connect(self.show_guide)
        self.log_folder_action = self.help_menu.addAction("Open log folder")
        self.log_folder_action.triggered.connect(self.open_log_folder)
        self.hotkey_action = self.help_menu.addAction("Global shortcut: checking…")
        self.hotkey_action.setEnabled(False)
        self.menu.addMenu(self.help_menu)
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
            action = QAction(label.replace("&", "&&"), self)  # "Tom & Jerry.mp4": no mnemonic
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
                            bundle=s.bundle or None, compiled=s.speed_up_ai, remote=s.remote_server,
                            remote_token_file=s.remote_token_file or None)

    def start(self) -> None:
        if self.worker is not None:
            return
        worker = StreamWorker(self.stream_config(), self.fallback_style)
        for signal, slot in self._worker_links(worker):
            signal.connect(slot)
        self.worker = worker
        worker.strengths.update(self.settings.strengths)
        self._apply_outputs()
        worker.set_paused(self.pause_action.isChecked())
        worker.start()
        if self.diffusion_styles and self.settings.remote_server:
            self._on_diffusion_result(True, "painted on the remote GPU")  # the server runs them
        elif self.diffusion_styles and self.probe_diffusion:
            self.check_diffusion()
        if self.first_start:
            self.show_guide()
        self.start_hotkey()

    def _worker_links(self, worker: StreamWorker) -> list[tuple]:
        """Each worker signal and the slot it drives (connected at start, cut at shutdown)."""
        return [(worker.frame_ready, self._on_frame_ready), (worker.stats, self._on_stats),
                (worker.notify, self.notify), (worker.state_changed, self._on_state),
                (worker.run_started, self._on_run_started), (worker.style_fallback, self._on_style_fallback),
                (worker.source_fallback, self._on_source_fallback), (worker.source_failed, self._on_source_failed),
                (worker.remote_refused, self._on_remote_refused), (worker.output_changed, self._on_output_changed),
                (worker.output_failed, self._on_output_failed), (worker.output_closed, self._on_output_closed)]

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
                    self._mark_active_style()
                    if self.window is not None:
                        self.window.style_menu.addAction(self.style_actions[style.name])
            log.info("diffusion styles offered: %s", ", ".join(s.name for s in self.diffusion_styles))
            if self.settings.style in self.styles and self.settings.style != self.style_name:
                self.select_style(self.settings.style)  # the saved style was waiting for this check
        else:
            self._withdraw_diffusion_styles()
            self.ai_hint_action.setText("AI styles: get a model…")
            self.ai_hint_action.setVisible(True)
            self.ai_hint_action.setEnabled(True)
            self.ai_hint_action.setToolTip(no_cli_flags(why))
            log.info("diffusion styles not offered: %s", why)
        self.guide.refresh()
        emit(self.diffusion_checked, ok, why)

    def _withdraw_diffusion_styles(self) -> None:
        """Take the AI styles off the menus (they were offered, and can no longer run here);
        one that runs gives way to the fallback style."""
        names = [style.name for style in self.diffusion_styles if style.name in self.styles]
        for name in names:
            action = self.style_actions.pop(name, None)
            del self.styles[name]
            if action is not None:
                self.style_group.removeAction(action)
                self.menu.removeAction(action)
                if self.window is not None:
                    self.window.style_menu.removeAction(action)
        if self.style_name in names:
            self.select_style(self.fallback_style.name)

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
        self._show_style(name)
        self._update_status()
        if self.worker is not None:
            self.worker.set_style(style)

    def _show_style(self, name: str) -> None:
        """The menu, the saved settings and the strength slider follow ``name``, the running style."""
        self.style_actions[name].setChecked(True)
        self.style_name = name
        self._save(style=name)
        self._mark_active_style()
        self._sync_strength()

    def cycle_style(self, step: int = 1) -> None:
        names = list(self.styles)
        current = self.style_name if self.style_name in names else names[0]
        self.select_style(names[(names.index(current) + step) % len(names)])

    def select_source(self, spec: str) -> None:
        self.source_spec = spec
        self._mark_source(spec)
        self._save(source=spec)
        self.guide.refresh()
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
        dialog = SettingsDialog(shown, list(self.styles.values()), self.source_actions_specs(), status=self.status,
                                hotkey_text=self.hotkey_action.text())
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        # The dialog is not modal: apply what it changed, not the snapshot it opened with.
        dialog.accepted.connect(lambda: self.apply_settings(
            dataclasses.replace(self.settings, style=self.style_name).with_edits(shown, dialog.result_settings())))
        self.settings_dialog = dialog
        dialog.show()

    def source_actions_specs(self) -> list[tuple[str, str]]:
        return [(spec, plain_text(a.text())) for spec, a in self.source_actions.items()]

    def apply_settings(self, new: AppSettings) -> None:
        """Save ``new`` and carry every change to the running stream."""
        old = self.settings
        if new.style not in self.styles:
            new = dataclasses.replace(new, style=old.style)
        self.settings = new
        self._store_settings()
        if new.style != self.style_name:
            self.select_style(new.style)
        if new.source != old.source:
            self.select_source(resolve_source(new.source))
            self._save(source=new.source)
        if new.mirror != old.mirror and self.worker is not None:
            self.worker.set_mirror(new.mirror)
        if (new.output_size, new.fps, new.batch_size, new.device, new.bundle, new.speed_up_ai) \
                != (old.output_size, old.fps, old.batch_size, old.device, old.bundle, old.speed_up_ai) \
                and self.worker is not None:
            self.worker.reconfigure(size=new.output_size, fps=new.fps, batch_size=new.batch_size, device=new.device,
                                    bundle=new.bundle or None, compiled=new.speed_up_ai)
        if (new.remote_server, new.remote_token_file) != (old.remote_server, old.remote_token_file) \
                and self.worker is not None:
            self.worker.reconfigure(remote=new.remote_server, remote_token_file=new.remote_token_file or None)
            if new.remote_server and self.diffusion_styles:
                self._on_diffusion_result(True, "painted on the remote GPU")
        # Whether AI styles can run here is asked again for a new model, and when painting comes
        # back to this computer (the remote GPU had offered them).
        back_here = bool(old.remote_server) and not new.remote_server
        if (new.bundle != old.bundle or back_here) and not new.remote_server and self.diffusion_styles \
                and self.probe_diffusion and self.worker is not None:
            self.check_diffusion()
        # The outputs' actions carry the choice to the status and the worker (toggled); an
        # unchanged choice is not applied again, so OK never re-announces a known problem.
        self.virtualcam_action.setChecked(new.virtual_camera)
        self.mjpeg_action.setChecked(new.mjpeg)
        if (new.mjpeg_port, new.output_size, new.fps) != (old.mjpeg_port, old.output_size, old.fps):
            self._apply_outputs()  # the virtual camera's spec names the size and rate
        if new.start_on_login != old.start_on_login:
            self.set_start_on_login(new.start_on_login)

    def set_start_on_login(self, enabled: bool) -> None:
        from .icons import icon_dir

        try:
            set_autostart(enabled, icon=str(icon_dir() / "stylecam.svg"))
        except (OSError, NotImplementedError) as e:
            self.notify("Start on login", f"Could not change the login entry: {e}", "warning")
            self._save(start_on_login=False)

    def mjpeg_url(self) -> str:
        sink = self.worker.hub.sink("mjpeg") if self.worker is not None else None
        return getattr(sink, "url", None) or f"http://127.0.0.1:{self.settings.mjpeg_port}/stream.mjpg"

    def copy_mjpeg_url(self) -> str:
        url = self.mjpeg_url()
        QGuiApplication.clipboard().setText(url)
        self.notify("MJPEG URL copied", url, "info")
        return url

    def _on_virtualcam_toggled(self, on: bool) -> None:
        self._save(virtual_camera=on)
        self.status.choose("virtual_camera", on)
        self._apply_outputs()

    def _on_mjpeg_toggled(self, on: bool) -> None:
        self.copy_url_action.setEnabled(on)
        self._save(mjpeg=on)
        self.status.choose("mjpeg", on)
        self._apply_outputs()

    def retry_output(self, name: str) -> None:
        """Open a failing output again (the guide's Try again)."""
        if self.worker is None:
            return
        spec = {"virtual_camera": self._virtualcam_spec(),
                "mjpeg": f"mjpeg:{self.settings.mjpeg_port}"}.get(name)
        if spec is not None and self.status.output(name).chosen:
            # "starting…" until it opens or fails again: the press shows (a problem seen before
            # is not notified again; the status line says it).
            self.status.set_off(name)
            self.worker.set_output(name, None)
            self.worker.set_output(name, spec)

    # -- recording ---------------------------------------------------------------------------

    def toggle_recording(self) -> None:
        if self.status.output("record").chosen:
            self.stop_recording()
        else:
            path = ask_record_path()
            if path:
                self.start_recording(path)

    def start_recording(self, path: str) -> None:
        """Record the painted stream to ``path`` (the file sink's format for its extension)."""
        import os

        if not os.path.splitext(path)[1]:
            path += ".mp4"
        self.recording_path = path
        self.status.choose("record", True)
        self.record_action.setText("Stop &recording")
        if self.worker is not None:
            self.worker.set_output("record", f"file:{path}")

    def stop_recording(self) -> None:
        if not self.status.output("record").chosen:
            return
        # "Recording saved" comes when the worker has closed the file (_on_output_closed).
        if self.worker is not None:
            self.worker.set_output("record", None)
        self.status.choose("record", False)
        self.record_action.setText("&Record to file…")

    def _on_output_closed(self, name: str, frames) -> None:
        if name != "record":
            return
        path = getattr(self, "recording_path", "")
        what = f"{frames} frames" if frames is not None else "the recording"
        self.notify("Recording saved", f"{what} in {path}", "info")

    def record_format(self) -> str:
        """What the recording is written as: the codec the file sink names, else 'video file'."""
        sink = self.worker.hub.sink("record") if self.worker is not None else None
        codec = getattr(sink, "codec", None)
        return f"{codec} video" if codec else "video file"

    # -- strength ---------------------------------------------------------------------------

    def set_strength(self, value: float) -> None:
        """The running style's strength (0..1), kept per style."""
        self.settings = self.settings.with_strength(self.style_name, value)
        self._store_settings()
        if self.worker is not None:
            self.worker.set_strength(self.style_name, self.settings.strength(self.style_name))

    def _sync_strength(self) -> None:
        style = self.styles.get(self.style_name)
        if style is not None:
            self.preview.set_strength(style.title, self.settings.strength(style.name))

    # -- help --------------------------------------------------------------------------------

    def open_log_folder(self) -> bool:
        folder = log_dir()
        folder.mkdir(parents=True, exist_ok=True)
        ok = open_folder(folder)
        if not ok:
            self.notify("Log folder", f"The logs are in {folder}", "info")
        return ok

    def show_guide(self) -> None:
        self.guide.dismissed = False
        self.guide.refresh()
        self.guide.show()
        self.show_preview()

    def show_details(self, key: str) -> None:
        title, text = self.details.get(key) or (OUTPUT_LABELS.get(key, key), self.status.output(key).details
                                                if key in OUTPUT_LABELS else "")
        self.details_dialog = DetailsDialog(title, text or "Nothing more to say.")
        self.details_dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.details_dialog.show()

    def start_hotkey(self) -> None:
        """The global shortcut that cycles styles, where the desktop lets an app have one."""
        if self.hotkey is not None:
            return
        self.hotkey = GlobalHotkey(self)
        self.hotkey.activated.connect(lambda: self.cycle_style(1))
        ok, why = self.hotkey.start()
        self.hotkey_action.setText(f"Global shortcut: {self.hotkey.keys} cycles styles" if ok
                                   else f"Global shortcut: not available ({why})")

    # -- the one status ----------------------------------------------------------------------

    def _mark_active_style(self) -> None:
        for name, action in self.style_actions.items():
            style = self.styles.get(name)
            title = style.title if style is not None else name
            active = name == self.style_name
            action.setText(title + (ACTIVE_MARK if active else ""))
            font = action.font()
            font.setBold(active)
            action.setFont(font)

    def _on_status_changed(self) -> None:
        status = self.status
        icon = state_icon(status.icon_state())
        if self.tray is not None:
            self.tray.setIcon(icon)
        if self.window is not None:
            self.window.setWindowIcon(icon)
        for name, action in (("virtual_camera", self.virtualcam_action), ("mjpeg", self.mjpeg_action)):
            out = status.output(name)
            action.blockSignals(True)
            action.setChecked(out.chosen)
            action.blockSignals(False)
            action.setText(out.label + (" (not available)" if out.failing else ""))
            action.setToolTip(out.line())
        self.copy_url_action.setEnabled(status.output("mjpeg").state == "on")
        if status.failing() and not self.guide.dismissed:
            self.guide.show()
        self.guide.refresh()
        dialog = getattr(self, "settings_dialog", None)
        try:
            if dialog is not None and dialog.isVisible():
                dialog.show_status(status)
        except RuntimeError:  # the dialog was deleted on close
            self.settings_dialog = None
        self._update_status()

    def _save(self, **changes) -> None:
        self.settings = dataclasses.replace(self.settings, **changes)
        self._store_settings()

    def _store_settings(self) -> None:
        problem = self.store.save(self.settings)
        if problem:  # said once; the app goes on with the settings in memory
            self.notify("Settings are not saved", problem[:1].upper() + problem[1:] + ".", "warning",
                        key=("settings", "save"))

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
        self.status.set_stream(state)  # the icon follows through _on_status_changed
        self._update_status()
        emit(self.state_changed, state)

    def _update_status(self) -> None:
        style = self.styles.get(self.style_name)
        text = f"stylecam · {self.state}" + (f" · {style.title}" if style else "")
        failing = self.status.failing()
        if failing:
            text += " · " + ", ".join(f"{o.label} not available" for o in failing)
        self.status_action.setText(text)
        if self.window is not None:
            self.window.status_label.setText(text)
        self.preview.set_status(text)
        self.preview.set_live(self.state in ("running", "paused"))

    def _on_run_started(self, source: str, style: str) -> None:
        if self.failed_source is not None:
            self.failed_source = None
            self.guide.refresh()
        emit(self.source_changed, source)
        emit(self.style_changed, style)

    def _on_remote_refused(self) -> None:
        # The AI styles were offered for the remote GPU: whether they run here is another matter.
        if self.diffusion_styles and self.probe_diffusion:
            self.check_diffusion()

    def _on_source_failed(self, spec: str) -> None:
        # The guide's source line turns red until a run starts (a new pick, or a retry).
        self.failed_source = spec
        self.guide.refresh()

    def _on_style_fallback(self, name: str) -> None:
        # The menu shows what runs, and the next start keeps it; a fallback that arrives after
        # the user picked again is stale (the worker already runs the new pick).
        if self.worker is not None and self.worker.config.style.name != name:
            return
        if name in self.style_actions:
            self._show_style(name)
        self._update_status()

    def _on_source_fallback(self, spec: str) -> None:
        # The failed source is not saved: the next start opens the one that worked. Stale when
        # the user picked another source after it was sent (the worker runs that one).
        if self.worker is not None and self.worker.config.source != spec:
            return
        self.source_spec = spec
        self._mark_source(spec)
        self._save(source=spec)
        self.guide.refresh()

    def _on_output_changed(self, name: str, on: bool) -> None:
        if name not in OUTPUT_LABELS:
            return
        if on:
            what = {"mjpeg": self.mjpeg_url, "record": lambda: f"{getattr(self, 'recording_path', '')} "
                    f"({self.record_format()})"}.get(name, lambda: "")()
            self.status.set_on(name, what)
            if name == "record":
                self.notify("Recording", f"Recording to {what}", "info")
        elif self.status.output(name).state != "failing":
            self.status.set_off(name)
            if name == "record" and self.status.output("record").chosen:
                # Closed by the stream (a size change): the file is complete; say so once.
                self.stop_recording()

    def _on_output_failed(self, name: str, error) -> None:
        # The failure is not the user's choice: the setting stays, the status says it fails.
        title, reason, details = describe_output_problem(name, error)
        self.status.set_failing(name, reason, details)
        self.details[name] = (title, details)
        short = f"{reason[:1].upper()}{reason[1:]}. The stream goes on to the preview and the other outputs."
        self.notify(title, short, "warning", details=details, key=(name, reason), details_key=name)
        if name == "record":
            self.status.choose("record", False)
            self.record_action.setText("&Record to file…")

    def _on_tray_activated(self, reason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.show_preview()

    def notify(self, title: str, message: str, level: str = "info", *, details: str | None = None,
               key: tuple | None = None, details_key: str | None = None) -> bool:
        """Show a notification: a title and at most two lines, with Details for the rest.

        A warning or error is shown once: the same problem (``key``, by default title and
        text) again is only logged. Returns whether it was shown.
        """
        message = no_cli_flags(message)
        details = no_cli_flags(details) if details else None
        log.log({"error": logging.ERROR, "warning": logging.WARNING}.get(level, logging.INFO),
                "notification: %s: %s", title, (details or message).replace("\n", " "))
        short, cut = two_lines(message)
        if cut and not details:
            details = message
        if level in ("warning", "error"):
            key = (key[0], *key[1:]) if key else ("note", title, short)
            if not self.status.first_time(key):
                log.info("not shown again: %s", title)
                return False
        self._toast_key = details_key or f"note:{title}"
        if details:
            self.details[self._toast_key] = (title, details)
        self.toast.show_message(title, short, bool(details))
        if self.window is not None:
            self.window.message_label.setText(f"<b>{title}</b><br>{short}")
        self.last_notification = (title, short, level)
        #: The whole text behind the last notification's Details (its message when none).
        self.last_details = details or short
        self.history.append((title, short, self.last_details))
        del self.history[:-50]
        emit(self.notified, title, short, level)
        return True

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
            for sig, _ in self._worker_links(worker):
                try:
                    sig.disconnect()
                except (RuntimeError, TypeError):
                    pass
        self.preview.close()
        self.toast.hide()
        self.guide.stop()
        if self.hotkey is not None:
            self.hotkey.stop()
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

