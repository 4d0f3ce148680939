"""The host's share of the e2e path without a GPU: what the runner's loop thread costs per frame.

    python scripts/bench_host_floor.py [--frames 480]

The real runner reads the benchmark's looped 1280x720 file (core/bench_e2e.py) into a registered
virtual camera at 1280x720@30 and a null sink, through a backend that does no stylizing: once
handing the frames straight back (the runner, hand-off, metrics and sinks alone), once making the
one host copy the diffusion engine makes of each frame now (into its pinned input slot; its output
frames are lent, core/stylize/lent_frames.py), and once the two it made before (out of its pinned
output slot too). CPU time per frame of the loop thread and of the capture thread, as the e2e
rows report them (issue #13's goal: <= 1 ms of one core for the loop).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from stylecam.core.bench_e2e import CAMERA_BACKEND, E2E_SIZE, e2e_clip, registered_camera
from stylecam.core.runner import Runner
from stylecam.core.sinks import open_sink
from stylecam.core.sources import FileSource
from stylecam.core.stylize.base import Backend


class HostOnly(Backend):
    """Overlaps two batches like the engine; ``copies``: the engine's host copies per frame (0,
    1: into the input slot, 2: and out of the output slot)."""

    name = "host-only"
    resizes = True
    max_inflight = 2

    def __init__(self, batch: int, copies: int):
        self.batch_size, self.copies = batch, copies
        self._slot = None

    def set_style(self, style):
        pass

    def submit(self, images):
        if not self.copies:
            return list(images)
        if self._slot is None or len(self._slot) < len(images):
            self._slot = np.empty((len(images), *images[0].shape), np.uint8)
        for i, img in enumerate(images):  # into the (pinned) input slot
            self._slot[i] = img
        if self.copies == 1:  # the output is lent: the frames come back as views, no copy
            return list(images)
        return list(self._slot[:len(images)].copy())  # out of the output slot: frames the sinks may keep

    def collect(self, ticket):
        return ticket


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=480)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    clip = e2e_clip(E2E_SIZE)
    w, h = E2E_SIZE
    rows = []
    for copies in (0, 1, 2):
        for batch in (1, 16):
            with registered_camera():
                sinks = [open_sink(f"virtualcam:{w}x{h}@30,backend={CAMERA_BACKEND}"), open_sink("null")]
                summary = Runner(FileSource(clip, loop=True), HostOnly(batch, copies), sinks, size=E2E_SIZE,
                                 max_frames=args.frames, batch_size=batch).run()
            row = {"bench": "host-floor", "size": list(E2E_SIZE), "batch": batch, "engine_copies": copies,
                   **{k: summary[k] for k in ("fps_out", "cpu_loop_ms_per_frame", "cpu_capture_ms_per_frame")}}
            rows.append(row)
            print(json.dumps(row))
    if args.json:
        with open(args.json, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
