"""A global shortcut (Ctrl+Alt+S: next style) that works while another app has the focus.

Qt has no API for keys outside its own windows, so each desktop needs its own way. Only X11 is
done: the key is grabbed on the root window through Xlib (``XGrabKey``) on a connection of its
own, read by a small thread. Elsewhere :meth:`GlobalHotkey.start` says why there is none:
Wayland gives no app global keys (a desktop's own shortcut settings can run
``stylecam-tray`` actions instead), and macOS and Windows are not done yet. The window
shortcuts (S, Shift+S, Space in the preview) work everywhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import threading

from PySide6.QtCore import QObject, Signal

from .qtcompat import emit

log = logging.getLogger(__name__)

KEYS = "Ctrl+Alt+S"
_KEYSYM = b"s"
# X11 constants (X.h).
_KEY_PRESS = 2
_SHIFT, _LOCK, _CONTROL, _MOD1, _MOD2 = 1, 2, 4, 8, 16
_GRAB_MODE_ASYNC = 1
#: With Caps Lock and Num Lock on or off: X matches modifiers exactly.
_MODIFIER_SETS = [_CONTROL | _MOD1 | extra for extra in (0, _LOCK, _MOD2, _LOCK | _MOD2)]


class _XErrorEvent(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("display", ctypes.c_void_p), ("resourceid", ctypes.c_ulong),
                ("serial", ctypes.c_ulong), ("error_code", ctypes.c_ubyte), ("request_code", ctypes.c_ubyte),
                ("minor_code", ctypes.c_ubyte)]


_ERROR_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(_XErrorEvent))


def unsupported_reason() -> str | None:
    """Why this desktop gets no global shortcut, or None when it can have one."""
    if sys.platform.startswith("linux") or "bsd" in sys.platform:
        if not os.environ.get("DISPLAY"):
            if os.environ.get("WAYLAND_DISPLAY"):
                return "Wayland does not give apps global keys; use your desktop's shortcut settings"
            return "no X display"
        if ctypes.util.find_library("X11") is None:
            return "libX11 is not installed"
        return None
    return f"not done yet on {'macOS' if sys.platform == 'darwin' else sys.platform}"


class GlobalHotkey(QObject):
    """``activated`` fires (in the UI thread) each time the key is pressed anywhere."""

    activated = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self.keys = KEYS
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: str | None = None

    def start(self) -> tuple[bool, str]:
        """Grab the key; (True, "") when it works, else (False, why)."""
        why = unsupported_reason()
        if why:
            log.info("no global shortcut: %s", why)
            return False, why
        self._thread = threading.Thread(target=self._run, name="stylecam-hotkey", daemon=True)
        self._thread.start()
        self._ready.wait(3.0)
        if self._error:
            self.stop()
            log.info("no global shortcut: %s", self._error)
            return False, self._error
        log.info("global shortcut %s cycles styles", KEYS)
        return True, ""

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None

    def _run(self) -> None:
        x = ctypes.cdll.LoadLibrary(ctypes.util.find_library("X11"))
        x.XOpenDisplay.restype = ctypes.c_void_p
        x.XOpenDisplay.argtypes = [ctypes.c_char_p]
        x.XDefaultRootWindow.restype = ctypes.c_ulong
        x.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        x.XStringToKeysym.restype = ctypes.c_ulong
        x.XStringToKeysym.argtypes = [ctypes.c_char_p]
        x.XKeysymToKeycode.restype = ctypes.c_ubyte
        x.XKeysymToKeycode.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
        x.XGrabKey.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint, ctypes.c_ulong, ctypes.c_int,
                               ctypes.c_int, ctypes.c_int]
        x.XUngrabKey.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint, ctypes.c_ulong]
        x.XPending.argtypes = [ctypes.c_void_p]
        x.XNextEvent.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        x.XSync.argtypes = [ctypes.c_void_p, ctypes.c_int]
        x.XCloseDisplay.argtypes = [ctypes.c_void_p]
        x.XSetErrorHandler.restype = ctypes.c_void_p
        x.XSetErrorHandler.argtypes = [ctypes.c_void_p]
        display = x.XOpenDisplay(None)
        if not display:
            self._error = "the X display cannot be opened"
            self._ready.set()
            return
        try:
            root = x.XDefaultRootWindow(display)
            code = x.XKeysymToKeycode(display, x.XStringToKeysym(_KEYSYM))
            failed = []

            def on_error(_display, event):
                failed.append(event.contents.error_code)
                return 0

            handler = _ERROR_HANDLER(on_error)
            # Another app holding the key answers BadAccess, asynchronously: catch it here.
            previous = x.XSetErrorHandler(ctypes.cast(handler, ctypes.c_void_p))
            for mods in _MODIFIER_SETS:
                x.XGrabKey(display, code, mods, root, 1, _GRAB_MODE_ASYNC, _GRAB_MODE_ASYNC)
            x.XSync(display, 0)
            x.XSetErrorHandler(previous)
            if failed:
                self._error = f"{KEYS} is taken by another app"
                self._ready.set()
                return
            self._ready.set()
            event = (ctypes.c_long * 24)()
            while not self._stop.is_set():
                while x.XPending(display):
                    x.XNextEvent(display, ctypes.byref(event))
                    if ctypes.cast(event, ctypes.POINTER(ctypes.c_int))[0] == _KEY_PRESS:
                        emit(self.activated)
                self._stop.wait(0.05)
            for mods in _MODIFIER_SETS:
                x.XUngrabKey(display, code, mods, root)
            x.XSync(display, 0)
        finally:
            x.XCloseDisplay(display)
