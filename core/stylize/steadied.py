"""The part the CPU backends with a temporal stabilizer share: its state per stream.

:class:`SteadiedBackend` is a :class:`~.base.Backend` whose outputs pass through one
:class:`~..temporal.Stabilizer` (the classic and the neural styles). It keeps that stabilizer
and the view the next frame's motion is measured from (``_last_view``), and implements the
stream part of the backend contract from them: ``reset_temporal``, ``temporal`` and moving a
stream's state out and back in (``detach_temporal`` / ``attach_temporal``, for ``stylecam
serve``'s callers). A subclass says how its stabilizer is made (:meth:`_new_stabilizer`) and
how strong a style asks it to be (:meth:`_style_steady`), and calls :meth:`_restart_steady`
from ``set_style``.
"""

from __future__ import annotations

from ..styles import Style
from ..temporal import Stabilizer, Steadiness
from .base import Backend


class SteadiedBackend(Backend):
    """A backend with one temporal stabilizer per stream (see the module docstring)."""

    #: False turns the stabilizer off whatever the style says (the before/after measures).
    steady: bool = True

    def __init__(self, steady: bool = True) -> None:
        self.steady = steady
        self.stabilizer = self._new_stabilizer(None)
        self._last_view = None  # (the view the next frame's motion is measured from)

    def _new_stabilizer(self, steadiness: Steadiness | None) -> Stabilizer:
        """A fresh stabilizer (a new stream's) with ``steadiness`` (None: the default)."""
        raise NotImplementedError

    def _style_steady(self, style: Style) -> float:
        """The stabilizer strength ``style`` asks for (raises ValueError for an invalid style)."""
        raise NotImplementedError

    def _restart_steady(self, steadiness: Steadiness) -> None:
        """A new style's steadiness, from a fresh start: its first frame is not mixed with
        another style's."""
        self.stabilizer.set_steadiness(steadiness)
        self.reset_temporal()

    def reset_temporal(self) -> None:
        self.stabilizer.reset()
        self._last_view = None

    def temporal(self, style: Style) -> bool:
        """True while the stabilizer is on for ``style`` (its ``steady`` > 0, and not ``steady=False``)."""
        if not self.steady:
            return False
        try:
            return self._style_steady(style) > 0
        except ValueError:
            return True  # set_style refuses it anyway; never claim a style is stateless by mistake

    def detach_temporal(self):
        state = (self.stabilizer, self._last_view)
        self.stabilizer, self._last_view = self._new_stabilizer(self.stabilizer.steadiness), None
        return state

    def attach_temporal(self, state) -> None:
        steadiness = self.stabilizer.steadiness  # the style's, as set_style left it
        if state is None:
            self.stabilizer, self._last_view = self._new_stabilizer(steadiness), None
            return
        self.stabilizer, self._last_view = state
        self.stabilizer.set_steadiness(steadiness)  # (resets it, were the style another)
