"""The guide above the preview: what runs, what each output does, and for each missing piece a
button that fixes it or copies the exact command.

It opens on the first start (no settings yet) and whenever a chosen output fails; it reads the
app's :class:`~.status.StatusModel`, so it says what the menu, the icon and Settings say.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
from pathlib import Path

from PySide6.QtCore import QProcess, Qt, QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout,
                               QWidget)

from stylecam.core.stylize.stacks import hub_stacks

from .notify import plain_text
from .status import DAMAGED_MODEL, FAILING, ON, OUTPUT_LABELS

#: The dot before each output's line.
DOT_COLOURS = {"on": "#3aa757", "failing": "#f29900", "off": "#7d8590", "starting": "#7d8590"}


#: Where Windows and macOS get their virtual camera: OBS Studio's, which stylecam drives.
OBS_URL = "https://obsproject.com"


def virtualcam_command() -> str:
    """The exact command that gives Linux a virtual camera (Windows and macOS get OBS Studio)."""
    from stylecam.core import doctor

    return f"sudo apt install v4l2loopback-dkms && {doctor.MODPROBE_LINE}"


def models_command() -> list[str]:
    """How the guide runs the model pull: this Python and the CLI module; in the packaged app,
    the ``stylecam`` program beside the tray's (the one program by its CLI name: it takes no
    ``-m``, see installer/pyinstaller/entry.py)."""
    from stylecam.core import doctor

    args = doctor.MODELS_PULL_COMMAND.split()[1:]
    if getattr(sys, "frozen", False):
        cli = Path(sys.executable).with_name("stylecam.exe" if sys.platform == "win32" else "stylecam")
        return [str(cli), *args]
    return [sys.executable, "-m", "stylecam.core", *args]


class _Row(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.dot = QLabel("●")
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.buttons = QHBoxLayout()
        self.buttons.setSpacing(4)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.dot)
        layout.addWidget(self.text, 1)
        layout.addLayout(self.buttons)

    def button(self, text: str, slot) -> QPushButton:
        b = QPushButton(text)
        b.clicked.connect(slot)
        self.buttons.addWidget(b)
        return b

    def set_dot(self, state: str) -> None:
        self.dot.setStyleSheet(f"color: {DOT_COLOURS.get(state, '#7d8590')}")


class GuidePanel(QFrame):
    """Source line, one line per output, the AI styles line; buttons that act."""

    def __init__(self, app):
        super().__init__()
        self.app = app
        self.setObjectName("stylecam-guide")
        self.setStyleSheet("#stylecam-guide { background: #30353d; border-radius: 4px; } "
                           "#stylecam-guide QLabel { color: #f1f3f5; }")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        layout.setSpacing(4)

        self.source_row = _Row()
        self.source_row.set_dot("on")
        self.pick_button = QPushButton("pick your camera or screen ▸")
        self.pick_button.setMenu(app.source_menu)
        self.source_row.buttons.addWidget(self.pick_button)
        self.hide_button = self.source_row.button("Hide", self.dismiss)
        layout.addWidget(self.source_row)

        self.rows: dict[str, _Row] = {}
        self.actions: dict[str, dict[str, QPushButton]] = {}
        for name in OUTPUT_LABELS:
            row = _Row()
            self.rows[name] = row
            layout.addWidget(row)
        vc = self.rows["virtual_camera"]
        self.actions["virtual_camera"] = {
            # A command to paste on Linux; elsewhere a program to install, so its page.
            "copy": vc.button("Copy the command", self.copy_virtualcam_command) if platform.system() == "Linux"
            else vc.button("Get OBS Studio", self.get_obs),
            "mjpeg": vc.button("Use the MJPEG stream instead", self.use_mjpeg),
            "retry": vc.button("Try again", lambda: app.retry_output("virtual_camera")),
            "details": vc.button("Details", lambda: app.show_details("virtual_camera")),
        }
        self.actions["mjpeg"] = {
            "copy": self.rows["mjpeg"].button("Copy URL", app.copy_mjpeg_url),
            "retry": self.rows["mjpeg"].button("Try again", lambda: app.retry_output("mjpeg")),
            "details": self.rows["mjpeg"].button("Details", lambda: app.show_details("mjpeg")),
        }
        self.actions["record"] = {"stop": self.rows["record"].button("Stop recording", app.stop_recording)}

        self.ai_row = _Row()
        self.ai_row.set_dot("off")
        self.ai_get = self.ai_row.button("Get the AI styles", self.get_models)
        self.ai_copy = self.ai_row.button("Copy the command", self.copy_models_command)
        self.ai_progress = QProgressBar()
        self.ai_progress.setMaximumWidth(160)
        self.ai_progress.hide()
        self.ai_row.buttons.addWidget(self.ai_progress)
        layout.addWidget(self.ai_row)
        self._pull: QProcess | None = None
        self.dismissed = False
        self.refresh()

    # -- what it shows ---------------------------------------------------------------------------

    def source_text(self) -> str:
        spec = self.app.source_spec
        action = self.app.source_actions.get(spec)
        label = plain_text(action.text()) if action is not None else spec
        if self.app.failed_source == spec:
            return f"Source: {label} — cannot be read; pick another"
        return f"Source: {label}" + (" —" if spec in ("demo", "pattern") else "")

    def refresh(self) -> None:
        app = self.app
        self.source_row.set_dot(FAILING if app.failed_source == app.source_spec else ON)
        self.source_row.text.setText(self.source_text())
        self.pick_button.setText("pick your camera or screen ▸" if app.source_spec in ("demo", "pattern")
                                 else "another source ▸")
        for name, row in self.rows.items():
            out = app.status.output(name)
            row.set_dot(out.state if out.chosen else "off")
            row.text.setText(f"{out.label}: {out.line()}")
            row.setVisible(out.chosen or name != "record")
            buttons = self.actions.get(name, {})
            failing = out.state == FAILING and out.chosen
            for key, button in buttons.items():
                if key in ("retry", "details", "mjpeg"):
                    button.setVisible(failing)
                elif key == "copy":
                    button.setVisible(failing if name == "virtual_camera" else out.state == ON)
                elif key == "stop":
                    button.setVisible(out.state == ON)
        ai = app.diffusion_status
        show_ai = bool(app.diffusion_styles) and ai is not None and not ai[0]
        self.ai_row.setVisible(show_ai or self._pull is not None)
        if show_ai and self._pull is None:
            if not ai[1].startswith(DAMAGED_MODEL):
                text = ("AI styles: need a model; fetch the default one, or give a model folder in Settings > "
                        "Model bundle")
            elif app.settings.bundle and app.settings.bundle not in hub_stacks():
                text = ("AI styles: files in the model folder are damaged (a copy or download was cut short); "
                        "give a good copy in Settings > Model bundle, or fetch the default model")
            else:
                text = ("AI styles: the model's files are damaged (a download was cut short); fetch it again, "
                        "or give a model folder in Settings > Model bundle")
            self.ai_row.text.setText(text)

    def dismiss(self) -> None:
        self.dismissed = True
        self.hide()

    # -- fixes ---------------------------------------------------------------------------------

    def copy_virtualcam_command(self) -> str:
        text = virtualcam_command()
        QGuiApplication.clipboard().setText(text)
        self.app.notify("Command copied", "Paste it into a terminal, then press Try again.", "info")
        return text

    def get_obs(self) -> None:
        QDesktopServices.openUrl(QUrl(OBS_URL))
        self.app.notify("Get OBS Studio", "Install OBS Studio 30 or newer, click Start Virtual Camera in it once, "
                        "then press Try again.", "info")

    def use_mjpeg(self) -> None:
        self.app.mjpeg_action.setChecked(True)
        self.app.copy_mjpeg_url()

    def copy_models_command(self) -> str:
        from stylecam.core import doctor

        QGuiApplication.clipboard().setText(doctor.MODELS_PULL_COMMAND)
        return doctor.MODELS_PULL_COMMAND

    def get_models(self) -> None:
        """Run the model pull in a child process, with its progress in a bar."""
        if self._pull is not None:
            return
        cmd = models_command()
        proc = QProcess(self)
        proc.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        proc.readyReadStandardOutput.connect(lambda: self._pull_output(proc))
        proc.finished.connect(lambda code, _status: self._pull_done(proc, code))
        self._pull = proc
        self._pull_tail = ""
        self.ai_get.setEnabled(False)
        self.ai_progress.setRange(0, 0)  # busy until the first percentage
        self.ai_progress.show()
        self.ai_row.text.setText("AI styles: fetching the model…")
        proc.start(cmd[0], cmd[1:])

    def _pull_output(self, proc: QProcess) -> None:
        import re

        text = bytes(proc.readAllStandardOutput()).decode("utf-8", "replace")
        self._pull_tail = (self._pull_tail + text)[-4000:]
        found = re.findall(r"(\d{1,3})%\|", text)
        if found:
            self.ai_progress.setRange(0, 100)
            self.ai_progress.setValue(min(100, int(found[-1])))

    def _pull_done(self, proc: QProcess, code: int) -> None:
        self._pull = None
        self.ai_progress.hide()
        self.ai_get.setEnabled(True)
        proc.deleteLater()
        if code == 0:
            self.ai_row.text.setText("AI styles: model fetched; checking…")
            bundle = self.app.settings.bundle
            if bundle and bundle not in hub_stacks():
                # The user fetched the default model over a model folder that does not work: use
                # what was fetched (checking the folder again would ask for the same fetch).
                # Applying the change checks the model again, as any change of model does.
                self.app.apply_settings(dataclasses.replace(self.app.settings, bundle=""))
            else:
                self.app.check_diffusion()
            return
        last = next((line.strip() for line in reversed(self._pull_tail.replace("\r", "\n").splitlines())
                     if line.strip()), f"exit code {code}")
        self.ai_row.text.setText(f"AI styles: the download failed ({last[:120]})")

    def stop(self) -> None:
        if self._pull is not None:
            self._pull.kill()
            self._pull.waitForFinished(2000)
