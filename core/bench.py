"""``stylecam bench``: measure a stylizer, print a table, write one JSON row per configuration.

A row carries every condition needed to reproduce it (machine, versions, backend, style, size,
batch) beside the result (fps mean/min/max/std over per-call times, p50/p95 ms per frame).
Backends other than ``classic`` register their own benchmark through :data:`BENCHMARKS`.
"""

from __future__ import annotations

import argparse

import importlib
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from typing import Callable

import numpy as np

#: backend -> function(args) -> list of row dicts. Later backends add theirs here.
BENCHMARKS: dict[str, Callable] = {}

#: Benchmarks in modules of their own, by backend: imported by name on first use (the module adds
#: itself to BENCHMARKS), so this module never imports them back.
BENCHMARK_MODULES = {"diffusion": "stylecam.core.bench_diffusion", "neural": "stylecam.core.bench_neural"}


def benchmarks() -> dict[str, Callable]:
    """BENCHMARKS with every module of BENCHMARK_MODULES that this build has loaded."""
    for backend, module in BENCHMARK_MODULES.items():
        if backend not in BENCHMARKS:
            try:
                importlib.import_module(module)
            except ImportError as e:
                if not (e.name and module.startswith(e.name)):
                    raise  # the module is there but broken: say so
    return BENCHMARKS


def machine_info() -> dict:
    import cv2
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "host": platform.node(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "gpu": None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


class RowLog:
    """The rows of a benchmark run as they come: each gets ``elapsed_s`` (seconds since the run
    began) and ``machine``, is printed as a JSON line on stderr (without ``machine``) and, with a
    ``jsonl`` path, appended to ``jsonl + ".partial"`` at once, so a run cut short keeps what it
    measured. ``rows`` is the list in order; calling the log adds a row."""

    def __init__(self, machine: dict, jsonl: str | None = None):
        self.machine, self.jsonl = machine, jsonl
        self.rows: list[dict] = []
        self.started = time.perf_counter()

    def __call__(self, row: dict) -> None:
        row["elapsed_s"] = round(time.perf_counter() - self.started, 1)
        row["machine"] = self.machine
        self.rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "machine"}), file=sys.stderr, flush=True)
        if self.jsonl:
            with open(self.jsonl + ".partial", "a") as f:
                f.write(json.dumps(row) + "\n")


def sample_frames(size: tuple[int, int], count: int = 16) -> list[np.ndarray]:
    """Real footage at ``size``: frames of the bundled clip (speed depends on content for
    edge-aware filters, so never time on a flat or synthetic image)."""
    from .frames import fit
    from .sources import FileSource, demo_clip_path

    frames = []
    with FileSource(demo_clip_path()) as src:
        while len(frames) < count:
            img = src.read()
            if img is None:
                break
            frames.append(fit(img, size))
    return frames


def time_calls(fn: Callable[[], object], calls: int, warmup: int = 3, progress=None) -> np.ndarray:
    """Per-call times of ``calls`` timed calls after ``warmup`` untimed ones. ``progress`` (a
    tqdm bar, or anything with ``update(n)``) advances once per call, warm-up included."""
    for _ in range(warmup):
        fn()
        if progress is not None:
            progress.update(1)
    times = np.empty(calls)
    for i in range(calls):
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
        if progress is not None:
            progress.update(1)
    return times


def progress_bar(total: int, desc: str):
    """The bar ``bench`` shows per configuration (tqdm, on stderr; gone when it is done, the
    summary line stays)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="call", file=sys.stderr, leave=False, mininterval=0.5,
                dynamic_ncols=True)


def summary_line(row: dict) -> str:
    """One line per finished configuration, printed as soon as it is measured."""
    return (f"{row['backend']} {row['style']} {row['width']}x{row['height']} batch {row['batch']}: "
            f"{row['fps']} fps (p50 {row['ms_p50']} ms, p95 {row['ms_p95']} ms per frame)")


def summarize(times: np.ndarray, frames_per_call: int) -> dict:
    per_frame = times / frames_per_call
    fps = 1.0 / per_frame
    return {
        "fps": round(float(frames_per_call * len(times) / times.sum()), 2),
        "fps_min": round(float(fps.min()), 2),
        "fps_max": round(float(fps.max()), 2),
        "fps_std": round(float(fps.std()), 2),
        "ms_p50": round(float(np.percentile(per_frame, 50) * 1000), 2),
        "ms_p95": round(float(np.percentile(per_frame, 95) * 1000), 2),
    }


def bench_classic(args) -> list[dict]:
    from .styles import load_styles
    from .stylize.classic import ClassicBackend

    styles, _ = load_styles()
    names = [args.style] if args.style else sorted(n for n, s in styles.items() if s.backend == "classic")
    size = args.size or (1280, 720)
    # B=1 is the single-frame cost (latency); the backend's own batch (one frame per core) is
    # what a stream gets.
    probe = ClassicBackend()
    own_batch = probe.workers
    probe.close()
    batches = sorted({1, own_batch}) if args.batch is None else [args.batch]
    print(f"stylecam bench: {len(names)} classic style(s) x batch {', '.join(map(str, batches))} at "
          f"{size[0]}x{size[1]}, {args.frames} frames each", file=sys.stderr, flush=True)
    frames = sample_frames(size)
    machine = machine_info()
    rows = []
    for workers in batches:
        backend = ClassicBackend(workers=workers)
        for name in names:
            backend.set_style(styles[name])
            i = iter(range(1 << 30))
            calls = max(1, args.frames // workers)
            with progress_bar(calls + 3, f"{name} batch {workers}") as bar:
                times = time_calls(lambda: backend.process([frames[next(i) % len(frames)] for _ in range(workers)]),
                                   calls, progress=bar)
            row = {"bench": "stylize", "backend": "classic", "style": name,
                   "width": size[0], "height": size[1], "batch": workers, "frames": args.frames,
                   **summarize(times, workers), "machine": machine}
            print(summary_line(row), flush=True)
            rows.append(row)
        backend.close()
    return rows


BENCHMARKS["classic"] = bench_classic


def print_table(rows: list[dict]) -> None:
    if not rows:
        print("(no rows)")
        return
    cols = ["backend", "style", "width", "height", "batch", "fps", "fps_min", "fps_max", "ms_p50", "ms_p95"]
    cols += sorted({k for r in rows for k in r} - set(cols) - {"machine", "bench", "frames"})
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols))
    if rows:
        m = rows[0]["machine"]
        print(f"\n{m['cpu']} ({m['cpu_count']} cores), gpu {m['gpu']}, torch {m['torch']}, {m['date']}")


def configure_parser(p) -> None:
    from .cli_args import positive_int as _positive_int
    from .cli_args import size as _size

    p.add_argument("--backend", default="classic", help="classic | neural | diffusion")
    p.add_argument("--style", default=None, help="one style (default: every style of the backend)")
    p.add_argument("--size", type=_size, default=None, help="frame size WxH (default 1280x720)")
    p.add_argument("--frames", type=_positive_int, default=120, help="timed frames per configuration")
    p.add_argument("--batch", type=_positive_int, default=None,
                   help="frames per call (default: 1 and the backend's own batch)")
    p.add_argument("--json", default=None, help="append one JSON row per configuration to this file")
    p.add_argument("--e2e", action="store_true",
                   help="diffusion: beside each engine row, the path a user runs (the runner, a 1280x720 "
                        "file source, the diffusion backend, a virtual camera and a null sink)")
    p.add_argument("--profile", action="store_true",
                   help="diffusion: first profile one batch per stack kernel by kernel (time by component and by "
                        "kernel kind, achieved TFLOP/s) and print the table")
    p.add_argument("--quality", nargs=argparse.REMAINDER, default=None, metavar="QUALITY OPTIONS",
                   help="instead: `stylecam quality` (flicker, shimmer, edges, strength) with the options "
                        "that follow, e.g. --quality --source demo --styles oil")


def command(args) -> int:
    from .cli_args import UsageError, check_output

    if args.quality is not None:  # an alias: the quality harness, its own options
        # (by name: the quality harness imports this module for the machine description)
        quality = importlib.import_module("stylecam.core.quality")
        qp = argparse.ArgumentParser(prog="stylecam bench --quality")
        quality.configure_parser(qp)
        return quality.command(qp.parse_args(args.quality))

    check_output(args.json, "--json")
    table = benchmarks()
    if args.backend not in table:
        raise UsageError(f"no benchmark for backend {args.backend!r} (known: {', '.join(sorted(table))})")
    if args.style:
        from .styles import load_styles

        styles, _ = load_styles()
        if args.style not in styles or styles[args.style].backend != args.backend:
            known = sorted(n for n, s in styles.items() if s.backend == args.backend)
            raise UsageError(f"unknown {args.backend} style {args.style!r}; known: {', '.join(known)}")
    rows = table[args.backend](args)
    print()
    print_table(rows)
    if args.json:
        with open(args.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        print(f"rows appended to {args.json}", file=sys.stderr)
    return 0
