"""Speed of the CPU styles with the temporal stabilizer on and off, in the same run.

    python scripts/bench_steady.py [--frames 60] [--reps 3] [--stages] [--skip-neural] [--json rows.jsonl]

Classic styles at 1280x720 (their backend's own batch: one frame per core), stabilizer off and
on, interleaved ``--reps`` times so that both see the same machine load, best of each; with
``--stages``, also each step's CPU time per frame on one thread (the thread's own CPU clock, best
of three rounds: what the stabilizer adds, little moved by other jobs on the machine). Neural
styles at 640x360 and 1280x720, painted at full size and at a few working sizes. Frames are real
(the bundled clip) and consecutive, so the stabilizer does its real work. ``--scene webcam``:
what a video call looks like instead, a still room and a moving person (the clip's first frame
held still, with sensor noise, and the middle third of the consecutive frames moving in it).
Prints one line per row, and the load average; ``--json`` appends the rows.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from stylecam.core.bench import machine_info, sample_frames
from stylecam.core.runtime import configure_runtime
from stylecam.core.styles import load_styles, make_style
from stylecam.core.stylize import classic
from stylecam.core.stylize.classic import ClassicBackend
from stylecam.core.stylize.neural import NeuralBackend
from stylecam.core.stylize.params import NEURAL_DEFAULT_SIDE
from stylecam.core.temporal import Stabilizer, Steadiness


def fps(backend, frames, count: int) -> float:
    b = backend.batch_size
    for i in range(3):  # warm up (thread pool, caches; torch's kernels for a new size take a few calls)
        backend.process(frames[i * b:(i + 1) * b])
    t0 = time.perf_counter()
    done = 0
    while done < count:
        i = done % (len(frames) - b)
        backend.process(frames[i:i + b])
        done += b
    return done / (time.perf_counter() - t0)


def webcam(frames: list, noise: float = 2.0) -> list:
    """A video call's frames made of real ones: ``frames[0]`` held still as the room, with
    sensor noise (seeded), and the middle third of each frame (the person) moving in it."""
    h, w = frames[0].shape[:2]
    x0, x1, y0 = w // 3, 2 * w // 3, h // 4
    rng = np.random.default_rng(7)
    out = []
    for f in frames:
        img = frames[0].copy()
        img[y0:, x0:x1] = f[y0:, x0:x1]
        out.append(np.clip(img + rng.normal(0.0, noise, img.shape), 0, 255).astype(np.uint8))
    return out


def stages(style, frames, rounds: int = 3) -> dict:
    """CPU ms per frame of each step of a classic style, on this thread, best of ``rounds``."""
    params = classic.validate_params(dict(style.params))
    effect, strength = params.pop("effect"), params.pop("steady")
    st, fn = classic.STAGES[effect], classic.FUNCTIONS[effect]
    mode, threshold, *reach = classic.STEADY_MODE[effect]
    h, w = frames[0].shape[:2]
    best: dict[str, float] = {}
    for _ in range(rounds):
        # (the backend's own stabilizer; a plain one where the backend has no choice to make)
        stab = getattr(ClassicBackend, "_stabilizer", Stabilizer)(Steadiness(strength, mode, threshold, *reach))
        spent = dict.fromkeys(("off", "look", "motion", "anchor", "paint", "mix", "finish"), 0.0)
        last = None
        for k, img in enumerate(frames):
            clock = [time.thread_time()]
            fn(img, **params)
            clock.append(time.thread_time())
            view = stab.look(img, st.mix(h, w, **params))
            clock.append(time.thread_time())
            motion = stab.motion(last, view)
            last = view
            clock.append(time.thread_time())
            anchor = stab.anchor(motion)
            clock.append(time.thread_time())
            picture = st.paint(img, anchor, **params)
            clock.append(time.thread_time())
            picture = stab.apply(picture, motion)
            clock.append(time.thread_time())
            st.finish(picture, h, w, anchor, **params)
            clock.append(time.thread_time())
            if k >= 2:  # the first frames start the stream (no motion yet) and warm the caches
                for key, t0, t1 in zip(spent, clock, clock[1:]):
                    spent[key] += t1 - t0
        n = len(frames) - 2
        for key, total in spent.items():
            best[key] = min(best.get(key, 1e9), total / n * 1000.0)
    on = sum(v for k, v in best.items() if k != "off")
    return {**{k: round(v, 2) for k, v in best.items()}, "on": round(on, 2),
            "added": round(on - best["off"], 2), "on/off": round(on / best["off"], 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", default=None)
    ap.add_argument("--styles", default=None, help="comma-separated classic styles (default: all)")
    ap.add_argument("--stages", action="store_true", help="also each step's CPU time per frame")
    ap.add_argument("--scene", choices=("clip", "webcam"), default="clip",
                    help="the bundled clip as it is (a pan), or a video call made of it (still room, moving person)")
    ap.add_argument("--skip-classic", action="store_true")
    ap.add_argument("--skip-neural", action="store_true")
    ap.add_argument("--neural-sides", default=f"full,{NEURAL_DEFAULT_SIDE}",
                    help="working short sides to paint the neural style at (full = the frame's)")
    args = ap.parse_args()
    configure_runtime()
    machine = machine_info()
    styles, _ = load_styles()
    rows = []

    def emit(row):
        row["load"] = round(os.getloadavg()[0], 2)
        rows.append(row)
        print(row, flush=True)

    hd = sample_frames((1280, 720), 32)
    if args.scene == "webcam":
        hd = webcam(hd)
    names = args.styles.split(",") if args.styles else sorted(n for n, s in styles.items() if s.backend == "classic")
    for name in [] if args.skip_classic else names:
        res: dict[bool, list[float]] = {}
        for _ in range(args.reps):  # off, on, off, on, ...: the same load for both
            for steady in (False, True):
                be = ClassicBackend(steady=steady)
                be.set_style(styles[name])
                res.setdefault(steady, []).append(fps(be, hd, args.frames))
                be.close()
        off, on = max(res[False]), max(res[True])
        emit({"bench": "steady", "style": name, "size": "1280x720", "scene": args.scene,
              "workers": ClassicBackend().workers, "fps_off": round(off, 1), "fps_on": round(on, 1),
              "ratio": round(on / off, 3)})
        if args.stages:
            emit({"bench": "steady-stages", "style": name, "size": "1280x720", "scene": args.scene,
                  "cpu_ms_per_frame": stages(styles[name], hd[:12])})
    if not args.skip_neural:
        base = {"style": "starry-blue"}  # (the preset's defaults: steady 0.95, the 12-px guide)
        for size in ((640, 360), (1280, 720)):
            clip = sample_frames(size, 24)
            for side in args.neural_sides.split(","):
                side = size[1] if side == "full" else int(side)
                if side > size[1]:
                    continue
                for steady in (False, True):
                    be = NeuralBackend(steady=steady)
                    be.set_style(make_style({"name": "b", "backend": "neural", "params": {**base, "size": side}}))
                    emit({"bench": "neural", "size": f"{size[0]}x{size[1]}", "paint_side": side, "steady": steady,
                          "fps": round(fps(be, clip, max(8, args.frames // 3)), 1)})
    if args.json:
        with open(args.json, "a") as f:
            for r in rows:
                f.write(json.dumps({**r, "machine": machine}) + "\n")


if __name__ == "__main__":
    main()
