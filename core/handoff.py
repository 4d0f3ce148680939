"""The hand-off between the runner's capture thread and its loop: :class:`Handoff`, a bounded
FIFO that drops the oldest frame when a live source is ahead and blocks a file that is ahead.
No stylecam imports: a leaf.
"""

from __future__ import annotations

import collections
import threading
import time


class Handoff:
    """A bounded, thread-safe FIFO between capture and stylizer.

    ``lossy`` mode drops the oldest item when full (live sources); otherwise ``put`` waits for
    room. ``close()`` wakes every waiter; ``get`` then drains what is left and returns None.
    """

    def __init__(self, capacity: int, lossy: bool):
        self.capacity = max(1, capacity)
        self.lossy = lossy
        self.dropped = 0
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False

    def put(self, item) -> bool:
        with self._cond:
            while not self.lossy and len(self._items) >= self.capacity and not self._closed:
                self._cond.wait(0.1)
            if self._closed:
                return False
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get_batch(self, n: int, timeout: float | None = None, newest: bool = False) -> list:
        """Wait for at least one item, then take up to ``n`` without waiting further.

        Oldest first, also when lossy: the hand-off holds two batches so that a backend keeping
        two in flight finds the next batch waiting when it submits one (taking only the newest
        batch and dropping the rest would leave nothing to overlap with). ``newest`` (lossy
        only): the newest ``n``, the older ones dropped — for a caller that held the batch back
        on purpose (the backend's ``pace``) and wants the freshest frames.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return []
                self._cond.wait(0.1 if remaining is None else min(0.1, remaining))
            while newest and self.lossy and len(self._items) > n:
                self._items.popleft()
                self.dropped += 1
            batch = [self._items.popleft() for _ in range(min(n, len(self._items)))]
            self._cond.notify_all()
            return batch

    def waiting(self) -> int:
        """How many items are ready now."""
        with self._cond:
            return len(self._items)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
