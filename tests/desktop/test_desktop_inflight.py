"""The tray runs the engine's full path: two batches in flight, as `stylecam run` and the bench.

The diffusion engine overlaps batch k+1's encoders with batch k's U-Net on CUDA only when the
runner submits k+1 before it collects k. The tray used to wrap the backend in a way that only
forwarded ``process``, so it never did. Here a backend that says ``max_inflight = 2`` and takes
50 ms to collect (frames pile up at 30 fps) runs under the real worker and tray; the preview
still pairs each output with its own input and style.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from stylecam.core.stylize.base import Backend, create_backend
from stylecam.desktop.worker import StreamWorker

from desktop_helpers import next_pair


def style_named(name):
    from stylecam.core.styles import load_styles

    return load_styles()[0][name]


class Overlapping(Backend):
    """Paints like the classic backend, at collect time; records how many batches were out."""

    name = "overlapping"
    max_inflight = 2

    def __init__(self, style):
        self.inner = create_backend(style, steady=False)  # each frame on its own: comparable
        self.batch_size = 1
        self.out = 0
        self.most_out = 0
        self.lock = threading.Lock()

    def set_style(self, style):
        self.inner.set_style(style)

    def submit(self, images):
        with self.lock:
            self.out += 1
            self.most_out = max(self.most_out, self.out)
        return list(images)

    def collect(self, ticket):
        time.sleep(0.05)  # slower than the 30 fps source: the next frame is waiting
        with self.lock:
            self.out -= 1
        return self.inner.process(ticket)

    def process(self, images):
        return self.collect(self.submit(images))

    def close(self):
        self.inner.close()


def test_tray_keeps_two_batches_in_flight(qtbot, make_app, monkeypatch):
    made = []

    def create(worker, cfg):
        made.append(Overlapping(cfg.style))
        return made[-1]

    monkeypatch.setattr(StreamWorker, "_create_backend", create)
    app = make_app(style="toon")
    app.start()
    pair = next_pair(qtbot, app, lambda p: p.style == "toon" and not p.paused and p.index >= 10)
    assert made and made[-1].most_out == 2  # submit k+1 before collect k, through the tray's wrapper
    reference = create_backend(style_named("toon"), steady=False)
    assert np.array_equal(pair.output, reference.process([pair.input])[0])  # its own input's painting
    reference.close()
