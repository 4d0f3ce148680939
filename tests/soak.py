"""The soak (``make soak``; not part of ``make test``): long runs with the resident memory sampled.

Four runs, each judged on RSS growth after warm-up (must stay under ``--limit``, 5 %):

* ``classic``: what ``stylecam run --source pattern --sink null`` builds (open_source, open_sink,
  start_backend with the default style, Runner), in this process, for 20,000 frames, with the
  pattern unpaced so it runs as fast as the stylizer goes. RSS is sampled every 100 frames from
  inside the stream, so each sample sits at a known frame count; threads and file descriptors
  are compared before and after.
* ``classic-cli``: the command itself, ``stylecam run --source pattern --sink null --frames
  20000``, in a child process, its RSS read from /proc every 0.25 s (the first 10 % of samples
  are the warm-up).
* ``diffusion`` and ``diffusion-cli``: the same with the tiny sd-turbo bundle that ``stylecam
  models tiny`` writes, for 2,000 frames on the CPU in batches of 8 (the CLI run reads the
  bundled clip, looped, instead of the live pattern, which would outpace a CPU model and have
  most of its frames dropped).

Growth is (RSS at the end - RSS after warm-up) / RSS after warm-up; ``max`` uses the highest
sample after warm-up instead of the last. Results go to stdout as a table and to ``--out`` as
JSON (docs/reliability.md quotes them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from stylecam.core.runner import Runner, start_backend
from stylecam.core.sinks import Sink, open_sink
from stylecam.core.sources import open_source

REPO = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_of(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE


class Sampler(Sink):
    """Records (frames so far, RSS, time) every ``every`` frames, from the stream's own thread."""

    name = "rss-sampler"

    def __init__(self, every: int):
        self.every = every
        self.count = 0
        self.samples: list[tuple[int, int, float]] = []

    def write(self, frame):
        self.count += 1
        if self.count % self.every == 0:
            self.samples.append((self.count, rss_of(), time.monotonic()))


def judge(samples: list[tuple[int, int]], warmup: int) -> dict:
    """Growth figures from (position, rss) samples; the warm-up ends at the first position >= warmup."""
    after = [(n, r) for n, r in samples if n >= warmup]
    if len(after) < 2:
        raise SystemExit(f"soak: too few samples after warm-up ({len(after)}); run longer")
    base = after[0][1]
    end = after[-1][1]
    peak = max(r for _, r in after)
    return {
        "rss_start_mib": round(samples[0][1] / 2**20, 1),
        "rss_after_warmup_mib": round(base / 2**20, 1),
        "rss_end_mib": round(end / 2**20, 1),
        "rss_max_mib": round(peak / 2**20, 1),
        "growth_pct": round(100.0 * (end - base) / base, 2),
        "growth_max_pct": round(100.0 * (peak - base) / base, 2),
        "samples": len(samples),
    }


def soak_in_process(name: str, style_name: str | None, backend_kind: str | None, frames: int, size,
                    warmup: int, bundle: str | None = None, batch: int | None = None) -> dict:
    from stylecam.core.cli_args import resolve_style

    threads_before = threading.active_count()
    fds_before = len(os.listdir("/proc/self/fd"))
    style = resolve_style(style_name, backend_kind)
    source = open_source("pattern", size=size, realtime=False)
    sampler = Sampler(every=max(1, frames // 200))
    options = {"bundle": bundle, "device": "cpu"} if style.backend == "diffusion" else {}
    backend = start_backend(style, batch, **options)
    t0 = time.monotonic()
    summary = Runner(source, backend, [open_sink("null"), sampler], size=size, max_frames=frames,
                     batch_size=batch).run()
    seconds = time.monotonic() - t0
    backend.close()
    time.sleep(0.2)  # let the runner's threads leave /proc
    result = {"run": name, "style": style.name, "frames": summary["frames_out"], "size": f"{size[0]}x{size[1]}",
              "batch": backend.batch_size, "dropped": summary["dropped"],
              "seconds": round(seconds, 1), "fps": round(summary["frames_out"] / seconds, 1),
              "passthrough": summary["passthrough"], "warmup_frames": warmup,
              "threads_before": threads_before, "threads_after": threading.active_count(),
              "fds_before": fds_before, "fds_after": len(os.listdir("/proc/self/fd"))}
    result.update(judge([(n, r) for n, r, _ in sampler.samples], warmup))
    return result


def soak_cli(name: str, args: list[str], warmup_fraction: float = 0.1) -> dict:
    """Run ``stylecam -v run ARGS`` in a child process and sample its RSS from outside.

    The warm-up is the first ``warmup_fraction`` of the time between the runner's "stream
    started" debug line and the end (imports and model loading come before that line).
    """
    cmd = [sys.executable, "-m", "stylecam.core", "-v", "run", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started: list[float] = []
    errors: list[str] = []

    def read_stderr():
        for line in proc.stderr:
            if "stream started:" in line and not started:
                started.append(time.monotonic())
            if " ERROR " in line or line.startswith("stylecam:"):
                errors.append(line.strip())

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    t0 = time.monotonic()
    samples = []
    while proc.poll() is None:
        try:
            samples.append((time.monotonic(), rss_of(proc.pid)))
        except (FileNotFoundError, ProcessLookupError, IndexError):
            break
        time.sleep(0.25)
    out = proc.stdout.read()
    proc.wait()
    reader.join(5)
    seconds = time.monotonic() - t0
    if proc.returncode != 0 or not started:
        raise SystemExit(f"soak: {' '.join(cmd)} failed ({proc.returncode}): {errors[-3:]}")
    line = out.strip().splitlines()[0]
    frames = int(line.split("stylecam: ")[1].split(" frames")[0])
    t_start, t_end = started[0], samples[-1][0]
    result = {"run": name, "command": "stylecam run " + " ".join(args), "frames": frames,
              "seconds": round(seconds, 1), "stream_seconds": round(t_end - t_start, 1),
              "fps": round(frames / (t_end - t_start), 1), "summary": line, "warmup_fraction": warmup_fraction}
    streaming = [(t, r) for t, r in samples if t >= t_start]
    result.update(judge(streaming, t_start + warmup_fraction * (t_end - t_start)))
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=20000, help="classic frames (default 20000)")
    p.add_argument("--diffusion-frames", type=int, default=2000, help="diffusion frames (default 2000; 0 skips)")
    p.add_argument("--size", default="128x96", help="frame size (default 128x96)")
    p.add_argument("--cli-fps", type=float, default=300.0, help="pattern rate of the classic CLI run (default 300)")
    p.add_argument("--batch", type=int, default=8, help="diffusion batch size (default 8)")
    p.add_argument("--limit", type=float, default=5.0, help="largest RSS growth allowed, in %% (default 5)")
    p.add_argument("--skip-cli", action="store_true", help="only the in-process runs")
    p.add_argument("--out", default=str(REPO / "out" / "soak.json"), help="JSON results (default out/soak.json)")
    args = p.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    results = []

    def report(r):
        results.append(r)
        print(f"soak {r['run']:<14} {r['frames']:>6} frames {r['seconds']:>6} s {r['fps']:>7} fps  RSS "
              f"{r['rss_after_warmup_mib']} -> {r['rss_end_mib']} MiB (max {r['rss_max_mib']})  growth "
              f"{r['growth_pct']} % (max {r['growth_max_pct']} %)", flush=True)

    report(soak_in_process("classic", None, None, args.frames, (w, h), warmup=args.frames // 10))
    if not args.skip_cli:
        # The pattern is a live source in the CLI: paced at a rate the stylizer keeps up with, so
        # (nearly) every one of its frames is stylized rather than dropped as stale.
        report(soak_cli("classic-cli", ["--source", "pattern", "--sink", "null", "--frames", str(args.frames),
                                        "--size", args.size, "--fps", str(args.cli_fps)]))
    if args.diffusion_frames:
        from stylecam.core.stylize.bundle import write_tiny_bundle

        with tempfile.TemporaryDirectory() as tmp:
            bundle = str(write_tiny_bundle("sd-turbo", Path(tmp) / "tiny-sd-turbo"))
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            report(soak_in_process("diffusion", None, "diffusion", args.diffusion_frames, (64, 64),
                                   warmup=args.diffusion_frames // 10, bundle=bundle, batch=args.batch))
            if not args.skip_cli:
                # A looped clip, not the live pattern: a file source is read only as fast as it is
                # stylized, so all 2,000 frames go through the CPU-bound model.
                report(soak_cli("diffusion-cli", ["--backend", "diffusion", "--bundle", bundle, "--source", "demo",
                                                  "--loop", "--sink", "null", "--frames", str(args.diffusion_frames),
                                                  "--size", "64x64", "--batch", str(args.batch)]))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"soak: results in {args.out}")
    failed = [r["run"] for r in results if r["growth_pct"] >= args.limit]
    leaks = [r["run"] for r in results if r.get("threads_after", 0) > r.get("threads_before", 0)
             or r.get("fds_after", 0) > r.get("fds_before", 0)]
    if failed or leaks:
        print(f"soak: FAILED: RSS grew {args.limit} % or more in {failed}; threads/fds left in {leaks}")
        return 1
    print(f"soak: passed (RSS growth under {args.limit} % after warm-up in every run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
