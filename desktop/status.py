"""One status model for the whole app: the tray icon, the menu, Settings and the preview's guide
all read it, so they cannot disagree.

Each output (virtual camera, MJPEG stream, recording) is *chosen* or not (the user's setting,
which a failure never changes) and is ``on``, ``failing`` (with one line saying why, and the
full fix for a Details view) or ``off``. The icon is amber while any chosen output fails.

Problems are announced once: :meth:`StatusModel.first_time` says whether a problem has been
shown before, so re-applying the same settings, or a retry that fails the same way, never
shows the same notification twice. A problem is forgotten once its output works or is switched
off, so a later failure is news again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from PySide6.QtCore import QObject, Signal

from .qtcompat import emit

#: output name -> what the user calls it (menus, Settings, the guide).
OUTPUT_LABELS = {"virtual_camera": "Virtual camera", "mjpeg": "MJPEG stream", "record": "Recording"}

ON, FAILING, OFF, STARTING = "on", "failing", "off", "starting"

#: How the background model check's reason starts when the model's weight files are damaged (cut
#: short by a download or copy): the guide then offers to fetch it again rather than a first time.
DAMAGED_MODEL = "the model's files are damaged"


@dataclass(frozen=True)
class OutputStatus:
    name: str
    chosen: bool = False
    state: str = OFF
    #: One line: why it fails, or what it does when on (the MJPEG URL, the file recorded).
    reason: str = ""
    #: The full fix text, for Details.
    details: str = ""

    @property
    def label(self) -> str:
        return OUTPUT_LABELS.get(self.name, self.name)

    @property
    def failing(self) -> bool:
        return self.chosen and self.state == FAILING

    def line(self) -> str:
        """What the menu, Settings and the guide say about this output, in the same words."""
        if self.failing:
            return f"not available: {self.reason}" if self.reason else "not available"
        if self.state == ON:
            return f"on: {self.reason}" if self.reason else "on"
        if self.chosen:
            return "starting…"
        return "off"


class StatusModel(QObject):
    """The state of the stream and its outputs; ``changed`` fires on every change."""

    changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.outputs: dict[str, OutputStatus] = {n: OutputStatus(n) for n in OUTPUT_LABELS}
        #: "idle", "starting", "running", "paused", "error", "stopped": the worker's state.
        self.stream = "idle"
        self._shown: set[tuple] = set()

    def output(self, name: str) -> OutputStatus:
        return self.outputs[name]

    def _set(self, name: str, **changes) -> None:
        old = self.outputs[name]
        new = dataclasses.replace(old, **changes)
        if new != old:
            self.outputs[name] = new
            emit(self.changed)

    def choose(self, name: str, chosen: bool) -> None:
        """The user's choice (the setting); switching an output off forgets its problem."""
        if not chosen:
            self.forget(name)
            self._set(name, chosen=False, state=OFF, reason="", details="")
        elif not self.outputs[name].chosen:
            self._set(name, chosen=True, state=STARTING, reason="", details="")

    def set_on(self, name: str, reason: str = "") -> None:
        self.forget(name)
        self._set(name, state=ON, reason=reason, details="")

    def set_off(self, name: str) -> None:
        self._set(name, state=OFF if not self.outputs[name].chosen else STARTING, reason="", details="")

    def set_failing(self, name: str, reason: str, details: str = "") -> None:
        self._set(name, state=FAILING, reason=reason, details=details)

    def set_stream(self, state: str) -> None:
        if state != self.stream:
            self.stream = state
            emit(self.changed)

    def failing(self) -> list[OutputStatus]:
        return [o for o in self.outputs.values() if o.failing]

    def icon_state(self) -> str:
        """The tray icon: error > warning (amber: a chosen output fails) > paused/running > idle."""
        if self.stream == "error":
            return "error"
        if self.stream in ("running", "paused") and self.failing():
            return "warning"
        return {"starting": "idle", "stopped": "idle"}.get(self.stream, self.stream)

    # -- problems shown once ------------------------------------------------------------------

    def first_time(self, key: tuple) -> bool:
        """True the first time ``key`` (a problem) is seen; False after, until it is forgotten."""
        if key in self._shown:
            return False
        self._shown.add(key)
        return True

    def forget(self, component: str) -> None:
        """The problems of ``component`` are over: the next one is shown again."""
        self._shown = {k for k in self._shown if not (k and k[0] == component)}
