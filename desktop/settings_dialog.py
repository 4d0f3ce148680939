"""The Settings dialog: one widget per setting, validated on OK by the same parsers as the file."""

from __future__ import annotations

import sys

from PySide6.QtWidgets import (QCheckBox, QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox,
                               QFormLayout, QHBoxLayout, QLabel, QLineEdit, QSpinBox, QVBoxLayout, QWidget)

from stylecam.core.styles import Style

from .icons import style_icon
from .settings import MODES, PARSERS, AppSettings, autostart_supported

SIZES = ("source", "640x360", "640x480", "960x540", "1280x720", "1920x1080")
MODE_LABELS = {"latency": "Low latency (calls): one frame at a time",
               "throughput": "Throughput (streams): the stylizer's batch size"}


def cuda_devices() -> list[str]:
    """``cuda:N`` for each visible GPU, when PyTorch is already loaded (never loaded just for this)."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available():
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except Exception:
        pass
    return []


class SettingsDialog(QDialog):
    """``status`` (the app's :class:`~.status.StatusModel`) adds each output's state beside its
    switch, in the words the menu and the guide use; ``hotkey_text`` says what the global
    shortcut is (or why there is none)."""

    def __init__(self, settings: AppSettings, styles: list[Style], sources: list[tuple[str, str]], parent=None,
                 *, status=None, hotkey_text: str = ""):
        super().__init__(parent)
        self.setObjectName("stylecam-settings")
        self.setWindowTitle("stylecam settings")
        self._result: AppSettings | None = None
        form = QFormLayout()

        self.style_box = QComboBox()
        for style in styles:
            self.style_box.addItem(style_icon(style.name), style.title, style.name)
        form.addRow("Style", self.style_box)

        self.source_box = QComboBox()
        self.source_box.setEditable(True)
        self.source_box.addItem("Automatic (camera, else demo)", "auto")
        for spec, label in sources:
            self.source_box.addItem(f"{label}  [{spec}]", spec)
        form.addRow("Source", self.source_box)

        self.size_box = QComboBox()
        self.size_box.setEditable(True)
        for size in SIZES:
            self.size_box.addItem(size)
        form.addRow("Output size", self.size_box)

        self.fps_box = QDoubleSpinBox()
        self.fps_box.setRange(1.0, 120.0)
        self.fps_box.setDecimals(1)
        self.fps_box.setSuffix(" fps")
        form.addRow("Frame rate", self.fps_box)

        self.mirror_box = QCheckBox("Flip left-right (as a selfie camera shows you)")
        form.addRow("Mirror", self.mirror_box)

        self.mode_box = QComboBox()
        for mode in MODES:
            self.mode_box.addItem(MODE_LABELS[mode], mode)
        form.addRow("Mode", self.mode_box)

        self.device_box = QComboBox()
        self.device_box.setEditable(True)
        for device in ["auto", "cpu", "cuda"] + cuda_devices():
            self.device_box.addItem(device)
        form.addRow("GPU (diffusion styles)", self.device_box)

        self.bundle_edit = QLineEdit()
        self.bundle_edit.setPlaceholderText("sd-turbo from the hub cache")
        self.bundle_edit.setToolTip("A model bundle folder or hub id for the AI styles (see `stylecam models`)")
        form.addRow("Model bundle", self.bundle_edit)

        self.speed_box = QCheckBox("Speed up AI styles on the GPU: the first start of each takes a minute "
                                   "or two, later starts a few seconds")
        form.addRow("AI speed", self.speed_box)

        self.login_box = QCheckBox("Start stylecam when I log in")
        self.login_box.setEnabled(autostart_supported())
        form.addRow("Login", self.login_box)

        self.virtualcam_box = QCheckBox("Send to the virtual camera")
        self.virtualcam_status = QLabel("")
        self.virtualcam_status.setWordWrap(True)
        vc_row = QWidget()
        vc_layout = QVBoxLayout(vc_row)
        vc_layout.setContentsMargins(0, 0, 0, 0)
        vc_layout.addWidget(self.virtualcam_box)
        vc_layout.addWidget(self.virtualcam_status)
        form.addRow("Virtual camera", vc_row)
        mjpeg_row = QWidget()
        row = QHBoxLayout(mjpeg_row)
        row.setContentsMargins(0, 0, 0, 0)
        self.mjpeg_box = QCheckBox("Serve on 127.0.0.1, port")
        self.port_box = QSpinBox()
        self.port_box.setRange(1024, 65535)
        row.addWidget(self.mjpeg_box)
        row.addWidget(self.port_box)
        row.addStretch(1)
        self.mjpeg_status = QLabel("")
        self.mjpeg_status.setWordWrap(True)
        mjpeg_box = QWidget()
        mjpeg_layout = QVBoxLayout(mjpeg_box)
        mjpeg_layout.setContentsMargins(0, 0, 0, 0)
        mjpeg_layout.addWidget(mjpeg_row)
        mjpeg_layout.addWidget(self.mjpeg_status)
        form.addRow("MJPEG stream", mjpeg_box)
        self.hotkey_label = QLabel(hotkey_text.partition(": ")[2] or hotkey_text)
        self.hotkey_label.setWordWrap(True)
        if hotkey_text:
            form.addRow("Global shortcut", self.hotkey_label)

        # Where styles are painted: here, or on a GPU machine running `stylecam serve`.
        self.stylize_box = QComboBox()
        self.stylize_box.addItem("This computer", "this-computer")
        self.stylize_box.addItem("A remote GPU", "remote")
        form.addRow("Stylize on", self.stylize_box)
        self.remote_edit = QLineEdit()
        self.remote_edit.setPlaceholderText("http://gpu-box:8890")
        self.remote_edit.setToolTip("The address the GPU machine's stylecam server shows when it starts")
        form.addRow("Remote GPU address", self.remote_edit)
        self.token_edit = QLineEdit()
        self.token_edit.setPlaceholderText("none (a server on this computer or through a tunnel)")
        self.token_edit.setToolTip("A file holding the server's access token")
        form.addRow("Remote GPU token file", self.token_edit)
        self.stylize_box.currentIndexChanged.connect(self._remote_changed)

        self.error_label = QLabel("")
        self.error_label.setStyleSheet("color: #c62828")
        self.error_label.setWordWrap(True)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.error_label)
        layout.addWidget(buttons)
        self.load(settings)
        if status is not None:
            self.show_status(status)

    def show_status(self, status) -> None:
        """Each output's state under its switch: the same line as the menu's tooltip and the guide."""
        for name, label in (("virtual_camera", self.virtualcam_status), ("mjpeg", self.mjpeg_status)):
            out = status.output(name)
            label.setText(f"{out.line()[:1].upper()}{out.line()[1:]}" if out.chosen else "")
            label.setStyleSheet("color: #b26a00" if out.failing else "")
            label.setVisible(out.chosen)

    # -- settings <-> widgets ----------------------------------------------------------------------

    def load(self, s: AppSettings) -> None:
        self._base = s
        _select(self.style_box, s.style)
        _select(self.source_box, s.source)
        self.size_box.setCurrentText("source" if s.output_size is None else f"{s.output_size[0]}x{s.output_size[1]}")
        self.fps_box.setValue(s.fps)
        self.mirror_box.setChecked(s.mirror)
        _select(self.mode_box, s.mode)
        self.device_box.setCurrentText(s.device)
        self.bundle_edit.setText(s.bundle)
        self.speed_box.setChecked(s.speed_up_ai)
        self.login_box.setChecked(s.start_on_login)
        self.virtualcam_box.setChecked(s.virtual_camera)
        self.mjpeg_box.setChecked(s.mjpeg)
        self.port_box.setValue(s.mjpeg_port)
        _select(self.stylize_box, s.stylize_on)
        self.remote_edit.setText(s.remote_url)
        self.token_edit.setText(s.remote_token_file)
        self._remote_changed()

    def _remote_changed(self) -> None:
        remote = self.stylize_box.currentData() == "remote"
        self.remote_edit.setEnabled(remote)
        self.token_edit.setEnabled(remote)
        # Painted on the remote GPU, the server decides how (`stylecam serve --compile`).
        self.speed_box.setEnabled(not remote)

    def read(self) -> AppSettings:
        """The settings the widgets show; raises ValueError naming the field that does not parse."""
        index = self.source_box.findText(self.source_box.currentText())
        # An entry of the list gives its spec; anything else was typed by hand and is a spec.
        source = self.source_box.itemData(index) if index >= 0 else self.source_box.currentText().strip()
        raw = {
            "style": self.style_box.currentData() or self._base.style,
            "source": source,
            "output_size": self.size_box.currentText(),
            "fps": self.fps_box.value(),
            "mirror": self.mirror_box.isChecked(),
            "mode": self.mode_box.currentData(),
            "device": self.device_box.currentText(),
            "bundle": self.bundle_edit.text(),
            "speed_up_ai": self.speed_box.isChecked(),
            "start_on_login": self.login_box.isChecked(),
            "virtual_camera": self.virtualcam_box.isChecked(),
            "mjpeg": self.mjpeg_box.isChecked(),
            "mjpeg_port": self.port_box.value(),
            # Set with the preview's slider, not here: kept as loaded.
            "strengths": self._base.strengths,
            "stylize_on": self.stylize_box.currentData(),
            "remote_url": self.remote_edit.text(),
            "remote_token_file": self.token_edit.text(),
        }
        if raw["stylize_on"] != "remote":
            # The remote fields are greyed out, so they cannot be fixed here: one that does not
            # parse keeps its saved value instead of refusing OK.
            for key in ("remote_url", "remote_token_file"):
                try:
                    PARSERS[key](raw[key])
                except (ValueError, TypeError):
                    raw[key] = getattr(self._base, key)
        values = {}
        for key, value in raw.items():
            try:
                values[key] = PARSERS[key](value)
            except (ValueError, TypeError) as e:
                raise ValueError(f"{key.replace('_', ' ')}: {value!r} is not valid ({e})") from None
        if values["stylize_on"] == "remote" and not values["remote_url"]:
            raise ValueError("remote GPU address: give the address of the GPU machine, e.g. http://gpu-box:8890")
        return AppSettings(**values)

    def result_settings(self) -> AppSettings | None:
        return self._result

    def accept(self) -> None:
        try:
            self._result = self.read()
        except ValueError as e:
            self.error_label.setText(str(e))
            return
        super().accept()


def _select(box: QComboBox, data) -> None:
    index = box.findData(data)
    if index >= 0:
        box.setCurrentIndex(index)
    elif box.isEditable():
        box.setEditText(str(data))
