"""Pinned host buffers for a batch's output frames, lent to the caller instead of copied out.

The copy stream moves each batch's output frames (uint8, at the sinks' size) into pinned host
memory. Handing the caller a copy of that memory costs the runner's thread a fresh allocation
and a memcpy per frame: at B=16 and 1280x720 a 44 MB batch, which the C library maps and the
kernel zeroes anew every time. Measured on an H100 host (2026-12-07, e2e, the same run with
``EngineSettings.lend_frames`` off): the runner thread's CPU 0.97 -> 0.50-0.56 ms per frame at
B=16, and 1.77 -> 1.23 ms at B=1, where capture->sink p50 fell 9.82 -> 9.38 ms.

So the frames go out as numpy views of the pinned buffer itself, and the buffer is written
again only once no view of it is left: every view hangs from one ndarray (numpy keeps a view's
base alive), and a weak reference to that ndarray tells when the last one is gone.

Contract: :meth:`LentFrames.take` gives a buffer nothing reads or writes any more, tied to a
holder (the batch's ticket) until :meth:`LentFrames.lend` turns it into views; a buffer is free
again when its holder is gone. The pool grows as the consumers keep frames (a virtual camera's
pacer keeps the newest one, a preview its pair) up to ``limit`` buffers; past that ``take``
returns None, and the caller copies that batch out of a buffer of its own, as before (pinned
memory is scarcer than pageable: a consumer that hoards frames gets copies). Runner thread only
(views may die in any thread: a weak reference is safe to test from another). ``pin=False``
(no CUDA: the tests of this module) makes ordinary host buffers.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(eq=False)
class _Buffer:
    tensor: torch.Tensor
    holder: weakref.ref | None = None  # what keeps it busy: a ticket, then the views' ndarray

    def free(self) -> bool:
        return self.holder is None or self.holder() is None


class LentFrames:
    """Pinned ``(B, H, W, 3)`` uint8 buffers; ``count`` made at once, up to ``limit`` on demand."""

    def __init__(self, shape: tuple[int, ...], count: int, limit: int, pin: bool = True):
        if not 1 <= count <= limit:
            raise ValueError(f"LentFrames needs 1 <= count <= limit, got {count} and {limit}")
        self.shape = tuple(shape)
        self.limit = limit
        self.pin = pin
        self._buffers = [self._new() for _ in range(count)]

    def _new(self) -> _Buffer:
        return _Buffer(torch.empty(self.shape, dtype=torch.uint8, pin_memory=self.pin))

    def __len__(self) -> int:
        return len(self._buffers)

    def take(self, holder: object) -> torch.Tensor | None:
        """A buffer for the next batch's frames, busy while ``holder`` lives (then while its
        views live); None when ``limit`` buffers are all still in use."""
        buf = next((b for b in self._buffers if b.free()), None)
        if buf is None:
            if len(self._buffers) >= self.limit:
                return None
            buf = self._new()  # a consumer keeps more frames than expected: once per extra buffer
            self._buffers.append(buf)
        buf.holder = weakref.ref(holder)
        return buf.tensor

    def lend(self, tensor: torch.Tensor, count: int) -> list[np.ndarray] | None:
        """The first ``count`` frames of ``tensor`` (from :meth:`take`, its copy finished) as
        views; the buffer stays busy until none of them is left. None when ``tensor`` is not one
        of this pool's buffers (the caller's own: it copies that batch out)."""
        buf = next((b for b in self._buffers if b.tensor is tensor), None)
        if buf is None:
            return None
        array = tensor.numpy()
        buf.holder = weakref.ref(array)
        return list(array[:count])
