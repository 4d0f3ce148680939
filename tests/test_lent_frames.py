"""Output frames lent as views of the engine's pinned buffers (``core.stylize.lent_frames``).

A buffer may be written again only when no frame of it is left anywhere: not in the ticket of a
batch in flight, not in a sink's hands. On the CPU with ordinary host memory (``pin=False``); the
CUDA engine's use of it is checked in tests/test_backend_outputs.py on a GPU.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from stylecam.core.stylize.lent_frames import LentFrames


class Holder:
    """Stands for a batch's ticket."""


def test_a_buffer_comes_back_only_when_its_ticket_and_every_frame_of_it_are_gone():
    pool = LentFrames((2, 4, 6, 3), count=1, limit=3, pin=False)
    ticket = Holder()
    first = pool.take(ticket)
    assert first is not None and tuple(first.shape) == (2, 4, 6, 3)
    assert pool.take(Holder()) is not first  # busy while its batch is in flight
    first.fill_(7)
    frames = pool.lend(first, 2)
    assert len(frames) == 2 and all(np.shares_memory(f, first.numpy()) for f in frames)
    del ticket
    kept = frames[1]  # a sink keeps the batch's newest frame
    del frames
    gc.collect()
    again = [pool.take(Holder()) for _ in range(2)]  # the others are busy or new
    assert all(t is not first for t in again if t is not None)
    assert (kept == 7).all()
    del kept
    gc.collect()
    assert pool.take(Holder()) is first


def test_a_batch_collected_short_lends_only_its_frames():
    pool = LentFrames((4, 2, 2, 3), count=1, limit=1, pin=False)
    holder = Holder()
    buf = pool.take(holder)
    assert len(pool.lend(buf, 3)) == 3


def test_past_the_limit_the_caller_is_told_to_copy():
    pool = LentFrames((1, 2, 2, 3), count=1, limit=2, pin=False)
    holders = [Holder(), Holder()]
    taken = [pool.take(h) for h in holders]
    assert all(t is not None for t in taken) and len(pool) == 2
    assert pool.take(Holder()) is None  # both still in use: the caller copies this batch out
    del holders[0]
    gc.collect()
    assert pool.take(Holder()) is taken[0]


def test_count_and_limit_are_checked():
    with pytest.raises(ValueError, match="count <= limit"):
        LentFrames((1, 2, 2, 3), count=3, limit=2, pin=False)


def test_a_buffer_that_is_not_the_pools_is_not_lent():
    pool = LentFrames((1, 2, 2, 3), count=1, limit=1, pin=False)
    assert pool.lend(torch.zeros((1, 2, 2, 3), dtype=torch.uint8), 1) is None  # the caller copies it
