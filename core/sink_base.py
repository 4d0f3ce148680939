"""The sink interface and its errors: a leaf that every kind of output imports.

(:mod:`.sinks` holds the ``--sink`` grammar and re-exports these names.)
"""

from __future__ import annotations

from .frames import Frame


class SinkError(RuntimeError):
    """A sink cannot be opened or written. The message says what to do."""


class Sink:
    """Where frames go: a file, a virtual camera, an MJPEG server, the tray's preview.

    Contract: ``open``, ``write`` and ``close`` are called from the runner's thread only, in that
    order (``open`` again after a failure for ``reopenable`` sinks). ``write`` gets each output
    frame once, in order, at the size ``open`` was given; it must not modify the pixels, may keep
    a reference (backends never reuse an output buffer), and must not block the stream for long
    (outputs that pace or serve hand frames to a thread of their own). Failures raise
    :class:`SinkError` (or an ``OSError``) with a message that says what to do; the runner then
    switches the output off and tells the user, and the other outputs go on.
    """

    name: str = "sink"

    def open(self, size: tuple[int, int], fps: float) -> None:
        """Prepare for frames of ``size`` = (W, H) at ``fps``."""

    def write(self, frame: Frame) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release. Safe to call twice."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
