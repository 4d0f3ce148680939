"""Speed of the CPU styles with the temporal stabilizer on and off, in the same run.

    python scripts/bench_steady.py [--frames 60] [--json rows.jsonl]

Classic styles at 1280x720 (their backend's own batch: one frame per core), stabilizer off and
on, interleaved so that both see the same machine load; neural styles at 640x360 and 1280x720
painted at full size, and at the default working size. Frames are real (the bundled clip) and
consecutive, so the stabilizer does its real work. Prints one line per row; ``--json`` appends.
"""

from __future__ import annotations

import argparse
import json
import time

from stylecam.core.bench import machine_info, sample_frames
from stylecam.core.runtime import configure_runtime
from stylecam.core.styles import load_styles, make_style
from stylecam.core.stylize.classic import ClassicBackend
from stylecam.core.stylize.neural import NeuralBackend
from stylecam.core.stylize.params import NEURAL_DEFAULT_SIDE


def fps(backend, frames, count: int) -> float:
    b = backend.batch_size
    backend.process(frames[:b])  # warm up
    t0 = time.perf_counter()
    done = 0
    while done < count:
        i = done % (len(frames) - b)
        backend.process(frames[i:i + b])
        done += b
    return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--json", default=None)
    ap.add_argument("--skip-neural", action="store_true")
    args = ap.parse_args()
    configure_runtime()
    machine = machine_info()
    styles, _ = load_styles()
    rows = []
    hd = sample_frames((1280, 720), 32)
    for name in sorted(n for n, s in styles.items() if s.backend == "classic"):
        res = {}
        for rep in range(2):  # off, on, off, on: the same load for both
            for steady in (False, True):
                be = ClassicBackend(steady=steady)
                be.set_style(styles[name])
                res.setdefault(steady, []).append(fps(be, hd, args.frames))
                be.close()
        off, on = max(res[False]), max(res[True])
        rows.append({"bench": "steady", "style": name, "size": "1280x720", "fps_off": round(off, 1),
                     "fps_on": round(on, 1), "ratio": round(on / off, 3)})
        print(rows[-1], flush=True)
    if not args.skip_neural:
        base = {"style": "starry-blue", "steady": 0.8}
        for size in ((640, 360), (1280, 720)):
            clip = sample_frames(size, 24)
            for side in (size[1], NEURAL_DEFAULT_SIDE):
                be = NeuralBackend()
                be.set_style(make_style({"name": "b", "backend": "neural", "params": {**base, "size": side}}))
                rows.append({"bench": "neural", "size": f"{size[0]}x{size[1]}", "paint_side": side,
                             "fps": round(fps(be, clip, max(8, args.frames // 3)), 1)})
                print(rows[-1], flush=True)
    if args.json:
        with open(args.json, "a") as f:
            for r in rows:
                f.write(json.dumps({**r, "machine": machine}) + "\n")


if __name__ == "__main__":
    main()
