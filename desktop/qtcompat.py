"""Work-arounds for binding defects that matter to an app that runs for hours.

PySide6 6.12.0 on Python 3.11 (where ``True`` is not yet immortal): every ``SignalInstance.emit()``
called from Python returns ``True`` without taking a reference to it, so each emit drops one
reference to ``True``. A stream emits a signal per frame, so after a few thousand frames
(minutes) ``True``'s count reaches zero and the interpreter aborts with "Fatal Python error:
bool_dealloc". :func:`emit` checks once whether this build has the defect and, if so, gives the
reference back after each emit. Every signal stylecam emits from Python goes through it.
"""

from __future__ import annotations

import ctypes
import sys

from PySide6.QtCore import QObject, Signal

_PROBES = 256


class _Probe(QObject):
    fired = Signal()


def _emit_drops_a_true_reference() -> bool:
    if sys.version_info >= (3, 12):
        return False  # True is immortal: its count cannot run out
    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(_PROBES):
        probe.fired.emit()
    lost = before - sys.getrefcount(True)
    if lost >= _PROBES // 2:
        # Give back what the probe itself took.
        for _ in range(lost):
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(True))
        return True
    return False


EMIT_DROPS_TRUE = _emit_drops_a_true_reference()


def emit(signal, *args) -> None:
    """``signal.emit(*args)``, with the reference PySide drops given back where it drops one."""
    signal.emit(*args)
    if EMIT_DROPS_TRUE:
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(True))
