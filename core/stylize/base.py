"""The interface every stylizer backend implements.

The runner hands a backend lists of RGB uint8 ``(H, W, 3)`` frames, all of the engine size,
and gets back one output frame per input, same size, same order. Style changes arrive through
``set_style`` between batches, from the runner's thread only.
"""

from __future__ import annotations

import numpy as np

from ..styles import Style
from . import registry


class BackendError(RuntimeError):
    """A backend cannot start or run; the message says what is wrong and what to do."""


class Backend:
    """A stylizer. Contract (the runner keeps it, and tests hold each backend to it):

    * one thread: every method is called from the runner's thread (the thread that made the
      backend, for the diffusion backend's CUDA streams), never two at once;
    * frames are RGB uint8 ``(H, W, 3)``, all of one size per call; outputs come back one per
      input, in order, at the input's size (or at ``set_output_size``'s when ``resizes``), and
      are the caller's to keep: a backend never writes into an output it returned;
    * ``submit`` returns at once or after the host part of the work; ``collect`` waits; tickets
      are collected in the order they were submitted, at most ``max_inflight`` out at a time;
    * errors: :class:`BackendError` for what the user can fix (the message says how), anything
      else for a failed batch (the runner passes that batch through unstyled and retries);
    * ``set_style`` applies from the next batch; ``close`` is safe to call twice;
    * streams: a backend paints one stream of frames at a time, and its temporal state (what it
      keeps of earlier frames) is that stream's. ``temporal(style)`` says whether there is any;
      ``detach_temporal``/``attach_temporal`` move it out and back in, so that one backend can
      paint several streams in turn (``stylecam serve``'s callers) with each stream continuing
      from its own frames only. Both apply in submit order, with batches in flight.
    """

    name = "backend"
    #: How many frames the backend prefers per ``process`` call. The runner sends at most this
    #: many; it may send fewer (end of a stream, a live source that has nothing more yet).
    batch_size: int = 1
    #: How many batches may be in flight (submitted, not yet collected). A backend that overlaps
    #: work across batches (the diffusion engine encodes batch k+1 on a side CUDA stream while
    #: batch k denoises) says 2, and the runner submits the next batch before it collects the
    #: previous one whenever the next batch is already waiting.
    max_inflight: int = 1
    #: Frame geometry. False: the runner fits every frame to the output size on the host
    #: (``frames.fit``, cover) and the backend returns frames of the size it was given. True: the
    #: backend takes frames at the source's own size and returns them at the size given to
    #: :meth:`set_output_size` (the diffusion backend does both resizes on the GPU, so the host
    #: copies each frame once each way and never resizes).
    resizes: bool = False

    def pace(self) -> float:
        """Seconds to hold the next batch back when its frames are already waiting and a batch
        is in flight, so that it starts on the device just when the device can take it (a
        fresher frame, the same rate); 0: submit at once. The runner asks only then, and then
        takes the newest frames. The diffusion engine learns it at the latency operating point
        (:mod:`.pacing`); a backend that does not overlap batches never needs it."""
        return 0.0

    def reset_temporal(self) -> None:
        """The next frame does not follow the last one (the stream was paused, or its source
        changed): forget what temporal stabilization kept of earlier frames. Runner thread only."""

    def temporal(self, style: Style) -> bool:
        """Whether, with ``style``, an output frame depends on other frames than its own input:
        on earlier ones (a stabilizer, feedback, a conditioning reused between refreshes) or on
        others of its batch (a conditioning taken from one frame for all). Where it does, frames
        of two streams must never share a batch, and a backend that paints two streams in turn
        must swap their state (:meth:`detach_temporal`, :meth:`attach_temporal`), or one stream's
        pictures would show in the other's. The default, for a backend that does not say: True."""
        return True

    def detach_temporal(self) -> object | None:
        """Hand over the temporal state of the stream painted so far (as of every batch
        submitted, collected or not) and start a fresh stream, as after :meth:`reset_temporal`.
        Returns an object only :meth:`attach_temporal` of this backend reads, or None where there
        is nothing to hand over. The default keeps nothing: it resets, so the next stream starts
        afresh (less steady for a moment) instead of continuing another stream's pictures."""
        self.reset_temporal()
        return None

    def attach_temporal(self, state: object | None) -> None:
        """From the next submitted batch, continue the stream ``state`` was detached from (None:
        a fresh stream). The caller attaches a state under the style and frame size it was
        detached under, after ``set_style``; a stream whose style or size changed starts fresh.
        The default, for a backend that keeps no state it can hand over: a fresh stream."""
        if state is None:
            self.reset_temporal()

    def set_output_size(self, size: tuple[int, int] | None) -> None:
        """The (W, H) of the frames the sinks want (``resizes`` backends; None: the input's).
        Called by the runner's thread with no batch in flight."""

    def set_style(self, style: Style) -> None:
        raise NotImplementedError

    def process(self, images: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def submit(self, images: list[np.ndarray]):
        """Start stylizing ``images``; returns a ticket for :meth:`collect` (collected in order).

        The default does the work at once, so a backend need only implement ``process``.
        """
        return self.process(images)

    def collect(self, ticket) -> list[np.ndarray]:
        """The output frames of a ticket from :meth:`submit`, waiting for them if need be."""
        return ticket

    def close(self) -> None:
        """Release models and device memory. Safe to call twice."""


class BackendWrapper(Backend):
    """A backend around another (``inner``) that adds to what it does: every part of the
    :class:`Backend` contract passes straight through unless a subclass overrides it, so a
    wrapper never hides what the backend under it can do (two batches in flight, GPU resizes,
    just-in-time submits, its temporal state moving between streams). The tray app's wrappers
    (strength, failure tracking) are these; a method added to :class:`Backend` is added here.
    """

    def __init__(self, inner: Backend):
        self.inner = inner
        self.name = inner.name
        self.batch_size = inner.batch_size
        self.max_inflight = getattr(inner, "max_inflight", 1)
        self.resizes = getattr(inner, "resizes", False)

    def pace(self) -> float:
        return self.inner.pace()

    def reset_temporal(self) -> None:
        self.inner.reset_temporal()

    def temporal(self, style: Style) -> bool:
        return self.inner.temporal(style)

    def detach_temporal(self) -> object | None:
        return self.inner.detach_temporal()

    def attach_temporal(self, state: object | None) -> None:
        self.inner.attach_temporal(state)

    def set_output_size(self, size: tuple[int, int] | None) -> None:
        self.inner.set_output_size(size)

    def set_style(self, style: Style) -> None:
        self.inner.set_style(style)

    def process(self, images: list[np.ndarray]) -> list[np.ndarray]:
        return self.collect(self.submit(images))

    def submit(self, images: list[np.ndarray]):
        return self.inner.submit(images)

    def collect(self, ticket) -> list[np.ndarray]:
        return self.inner.collect(ticket)

    def close(self) -> None:
        self.inner.close()


def create_backend(style: Style, **options) -> Backend:
    """Build the backend a style needs (see ``registry.BACKENDS``). ``options`` pass through to
    backends that take them (``bundle``, ``device``, …); ``steady=False`` turns the CPU
    backends' temporal stabilizer off (before/after measures).

    With a ``server`` option the style is painted by that ``stylecam serve`` instead, whatever its
    backend (:class:`~..remote.client.RemoteBackend`; its other options pass through)."""
    if options.get("server"):
        options.pop("steady", None)
        return registry.remote_backend_class()(style=style, **options)
    try:
        cls = registry.backend_class(style.backend)
    except KeyError:
        raise BackendError(f"unknown backend {style.backend!r}") from None
    except ImportError as e:  # e.g. torch missing: the classic styles still run
        raise BackendError(f"the {style.backend} backend is not available: {e}") from e
    backend = cls(**registry.options_for(style.backend, options))
    backend.set_style(style)
    return backend
