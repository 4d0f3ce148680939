"""The interface every stylizer backend implements.

The runner hands a backend lists of RGB uint8 ``(H, W, 3)`` frames, all of the engine size,
and gets back one output frame per input, same size, same order. Style changes arrive through
``set_style`` between batches, from the runner's thread only.
"""

from __future__ import annotations

import numpy as np

from ..styles import Style


class BackendError(RuntimeError):
    """A backend cannot start or run; the message says what is wrong and what to do."""


class Backend:
    name = "backend"
    #: How many frames the backend prefers per ``process`` call. The runner sends at most this
    #: many; it may send fewer (end of a stream, a live source that has nothing more yet).
    batch_size: int = 1
    #: How many batches may be in flight (submitted, not yet collected). A backend that overlaps
    #: work across batches (the diffusion engine encodes batch k+1 on a side CUDA stream while
    #: batch k denoises) says 2, and the runner submits the next batch before it collects the
    #: previous one whenever the next batch is already waiting.
    max_inflight: int = 1

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


def create_backend(style: Style, **options) -> Backend:
    """Build the backend a style needs. ``options`` pass through (``bundle``, ``device``, …)."""
    # ``steady=False`` turns the CPU backends' temporal stabilizer off (before/after measures).
    steady = options.pop("steady", True)
    if style.backend == "classic":
        from .classic import ClassicBackend

        backend = ClassicBackend(steady=steady)
    elif style.backend == "neural":
        from .neural import NeuralBackend

        backend = NeuralBackend(steady=steady, device=options.get("device"))
    elif style.backend == "diffusion":
        try:
            from .diffusion import DiffusionBackend
        except ImportError as e:  # the diffusion issue has not landed in this build
            raise BackendError(f"the diffusion backend is not available: {e}") from e
        backend = DiffusionBackend(**options)
    else:
        raise BackendError(f"unknown backend {style.backend!r}")
    backend.set_style(style)
    return backend
