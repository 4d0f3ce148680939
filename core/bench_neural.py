"""``stylecam bench --backend neural``: the neural styles on the path a user runs, beside the
network alone.

Rows, per frame size and preset (and working side):

* ``path: "network"`` — the style network alone (:class:`~.stylize.neural.NeuralBackend`'s torch
  module, in the backend's dtype and layout) on a batch of frames already on the device at the
  working size: no runner, no upload, no stabilizer, no guided filter. The ceiling.
* ``path: "e2e"`` — what ``stylecam run`` does: the real :class:`~.runner.Runner` reading a video
  file of the bundled clip's footage at the frame size (looped; :func:`.bench_e2e.e2e_clip`),
  the :class:`NeuralBackend`, a virtual camera at that size through a registered pyvirtualcam
  backend and a null sink (:mod:`.bench_e2e`), with the stabilizer off and on in the same run,
  one after the other. fps is the rate frames reach the sinks; latency is capture (the decoded
  file frame) to sink; ``cpu_loop_ms_per_frame`` / ``cpu_capture_ms_per_frame`` are the CPU time
  of the runner's thread and of the capture thread per frame. ``live`` rows read the file as a
  camera that always has a new frame (the newest wins), as the diffusion e2e latency rows do.

Each row says its ``device``, ``settings`` (:class:`~.stylize.neural.DeviceSettings`: dtype,
layout, compile, where the resizes and guided filter run), ``batch``, ``paint_side`` (the short
side the network painted at) and ``paint_size``. Runs on the CPU too (the tests run it with a few
small frames). Rows land in ``--json``'s file plus ``.partial`` as they come, so a run cut short
keeps what it measured. The plan (environment; defaults in brackets):

``STYLECAM_BENCH_SIZES`` [1280x720; ``--size`` gives one], ``STYLECAM_BENCH_PRESETS``
[neural-starry-blue,neural-blend,picture; ``picture``: any picture as the style, a frame of the
bundled clip; ``picture:PATH`` another; ``--style`` gives one], ``STYLECAM_BENCH_SIDES`` [preset:
the preset's own working side; numbers, or ``full`` for the frame's short side],
``STYLECAM_BENCH_STEADY`` [off,on], ``STYLECAM_BENCH_MODES`` [stream; ``live`` adds the camera-like
rows], ``STYLECAM_BENCH_FRAMES`` [--frames: timed frames per e2e row], ``STYLECAM_BENCH_CALLS``
[32: timed network calls per network row], ``STYLECAM_BENCH_DEVICE`` [cuda when there is one],
``STYLECAM_BENCH_BATCH`` [--batch, else the backend's: 4 on CUDA, 1 on the CPU],
``STYLECAM_BENCH_SETTINGS`` [[]: a JSON list of DeviceSettings overrides, e.g.
``[{"dtype": "float32", "channels_last": false}, {"compile": "inductor"}]``: each adds network
rows beside the default's, and ``STYLECAM_BENCH_SETTINGS_E2E=1`` e2e rows too (first preset,
stabilizer on)], ``STYLECAM_BENCH_NETWORK`` [1: the network rows].
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import logging
import os
import sys
import tempfile
import time

import numpy as np

from .bench import BENCHMARKS, RowLog, machine_info, sample_frames, summarize, time_calls

log = logging.getLogger(__name__)

DEFAULT_PRESETS = "neural-starry-blue,neural-blend,picture"
#: Seconds one row may take before the watchdog dumps the stacks and ends the process (a
#: compiled variant's first call compiles).
WATCHDOG_S = 300


def _env_list(name: str, default: str) -> list[str]:
    return [x.strip() for x in os.environ.get(name, default).split(",") if x.strip()]


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    return int(w), int(h)


def picture_style(path: str | None = None):
    """The "any picture" style: ``path``, else a frame of the bundled clip (real footage) saved
    once in the temp folder."""
    import cv2

    from .styles import make_style

    if path is None:
        path = os.path.join(tempfile.gettempdir(), "stylecam-bench-style-picture.png")
        if not os.path.exists(path):
            frame = sample_frames((384, 384), 40)[-1]
            cv2.imwrite(path + ".part.png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            os.replace(path + ".part.png", path)
    return make_style({"name": "neural-picture", "backend": "neural", "label": "Any picture (bench)",
                       "params": {"image": path}})


def presets(names: list[str]):
    """(kind, Style) per name: ``built-in``, ``blend`` or ``picture``."""
    from .styles import load_styles

    styles, _ = load_styles()
    out = []
    for name in names:
        if name == "picture" or name.startswith("picture:"):
            out.append(("picture", picture_style(name.partition(":")[2] or None)))
            continue
        if name not in styles or styles[name].backend != "neural":
            known = sorted(n for n, s in styles.items() if s.backend == "neural")
            raise ValueError(f"unknown neural preset {name!r} (known: picture, {', '.join(known)})")
        style = styles[name]
        out.append(("blend" if "blend" in style.params else "picture" if "image" in style.params else "built-in",
                    style))
    return out


def with_side(style, side: str, size: tuple[int, int]):
    """``style`` painted at ``side`` (``preset``: its own; ``full``: the frame's short side)."""
    import dataclasses

    if side == "preset":
        return style
    value = min(size) if side == "full" else int(side)
    return dataclasses.replace(style, params={**style.params, "size": value})


def paint_geometry(style, size: tuple[int, int]) -> tuple[int, list[int]]:
    """(the short side painted at, [w, h] painted at) for ``style`` on frames of ``size``."""
    from .stylize.neural import work_size
    from .stylize.params import NEURAL_DEFAULT_SIDE, validate_neural

    side = validate_neural(dict(style.params)).get("size", NEURAL_DEFAULT_SIDE)
    w, h = work_size(size[0], size[1], side)
    return min(w, h), [w, h]


def network_row(backend, frames: list[np.ndarray], *, calls: int) -> dict:
    """The backend's network alone, on a batch already on the device at the working size."""
    import cv2
    import torch

    from .stylize.neural import to_batch, work_size

    h, w = frames[0].shape[:2]
    ww, wh = work_size(w, h, backend._side)
    small = [cv2.resize(f, (ww, wh), interpolation=cv2.INTER_AREA) for f in frames[:backend.batch_size]]
    while len(small) < backend.batch_size:
        small.append(small[len(small) % len(frames)])
    x = to_batch(small, backend.device)  # uploaded once, outside the timing
    cuda = backend.device.type == "cuda"

    def call():
        with torch.inference_mode():
            backend._run(x)
        if cuda:
            torch.cuda.synchronize()

    t0 = time.perf_counter()
    call()  # the first call: cuDNN's choices, or the compile
    first_s = time.perf_counter() - t0
    times = time_calls(call, calls, warmup=3)
    return {"path": "network", "first_call_s": round(first_s, 2), "calls": calls,
            **summarize(times, backend.batch_size)}


def e2e_row(backend, style, size: tuple[int, int], *, frames_total: int, live: bool) -> dict:
    """One run of the path a user runs (see the module docstring), after a warm-up run."""
    import torch

    from .bench_e2e import CAMERA_BACKEND, CountingCamera, LiveFile, StopAfter, e2e_clip, registered_camera
    from .runner import Runner
    from .sinks import open_sink
    from .sources import FileSource

    clip = e2e_clip(size)
    w, h = size
    cuda = backend.device.type == "cuda"
    t0 = time.perf_counter()
    with registered_camera():
        def run(frames: int) -> dict:
            source = FileSource(clip, loop=True)
            sinks = [open_sink(f"virtualcam:{w}x{h}@30,backend={CAMERA_BACKEND}"), open_sink("null")]
            runner = Runner(LiveFile(source) if live else source, backend, sinks, size=size,
                            max_frames=None if live else frames, batch_size=backend.batch_size, style=style)
            if live:  # (a live source drops frames: stop after ``frames`` reached the sinks)
                runner.sinks.append(StopAfter(frames, runner.stop))
            return runner.run()

        backend.set_style(style)  # a fresh stream for each run
        run(max(2 * backend.batch_size, 8))
        if cuda:
            torch.cuda.synchronize()
        setup_s = time.perf_counter() - t0
        backend.set_style(style)
        summary = run(frames_total)
    keys = ("frames_in", "frames_out", "dropped", "fps_out", "latency_p50_ms", "latency_p95_ms", "batch_p50_ms",
            "passthrough", "backend_errors", "cpu_loop_ms_per_frame", "cpu_capture_ms_per_frame")
    row = {k: summary.get(k) for k in keys}
    row["fps"] = row.pop("fps_out")
    return {"path": "e2e", "live_source": live, "sinks": [f"virtualcam {w}x{h}@30 (registered backend)", "null"],
            "virtualcam_sent": CountingCamera.last.sent if CountingCamera.last else None,
            "setup_s": round(setup_s, 2), **row}


def bench_neural(args) -> list[dict]:
    import torch

    from .cli_args import UsageError
    from .stylize.neural import NeuralBackend, device_settings
    from .stylize.onnx_weights import unavailable_reason

    missing = unavailable_reason()
    if missing:
        raise UsageError(missing)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    device = torch.device(os.environ.get("STYLECAM_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
    sizes = [args.size] if args.size else [_size(s) for s in _env_list("STYLECAM_BENCH_SIZES", "1280x720")]
    try:
        plan = presets([args.style] if args.style else _env_list("STYLECAM_BENCH_PRESETS", DEFAULT_PRESETS))
    except ValueError as e:
        raise UsageError(str(e)) from None
    sides = _env_list("STYLECAM_BENCH_SIDES", "preset")
    steadies = [s == "on" for s in _env_list("STYLECAM_BENCH_STEADY", "off,on")]
    modes = _env_list("STYLECAM_BENCH_MODES", "stream")
    frames_total = int(os.environ.get("STYLECAM_BENCH_FRAMES", args.frames))
    calls = int(os.environ.get("STYLECAM_BENCH_CALLS", 32))
    batch = int(os.environ.get("STYLECAM_BENCH_BATCH", 0)) or args.batch
    network = os.environ.get("STYLECAM_BENCH_NETWORK", "1") == "1"
    variants = [device_settings(device, **v) for v in json.loads(os.environ.get("STYLECAM_BENCH_SETTINGS", "[]"))]
    variants_e2e = os.environ.get("STYLECAM_BENCH_SETTINGS_E2E", "0") == "1"
    default = device_settings(device)
    machine = machine_info()
    jsonl = getattr(args, "json", None)
    log_row = RowLog(machine, jsonl)
    rows = log_row.rows
    print(f"stylecam bench: neural on {device}, {len(plan)} preset(s) x {len(sides)} side(s) at "
          f"{', '.join(f'{w}x{h}' for w, h in sizes)}, {frames_total} frames per e2e row", file=sys.stderr, flush=True)

    def emit(row: dict) -> None:
        if device.type == "cuda":
            row["mem_peak_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
        log_row(row)

    def guarded(fn, *a, **kw) -> dict:
        # One failing row must not lose the others; a hung one ends the process (rows so far kept).
        faulthandler.dump_traceback_later(WATCHDOG_S, exit=True, file=sys.__stderr__)
        try:
            return fn(*a, **kw)
        except Exception as e:
            log.exception("row failed")
            return {"error": f"{type(e).__name__}: {e}"}
        finally:
            faulthandler.cancel_dump_traceback_later()

    backends: dict = {}

    def backend_for(settings, steady: bool) -> NeuralBackend:
        key = (settings, steady)
        if key not in backends:
            backends[key] = NeuralBackend(steady=steady, device=str(device), settings=settings, batch_size=batch)
        return backends[key]

    # Sides outermost: a run cut short has every preset at the first side (the headline) already.
    for size in sizes:
        frames = sample_frames(size, 8)
        for side in sides:
            for index, (kind, preset) in enumerate(plan):
                style = with_side(preset, side, size)
                paint_side, paint_size = paint_geometry(style, size)
                for settings in [default] + variants:
                    be = backend_for(settings, True)
                    base = {"bench": "neural", "backend": "neural", "style": preset.name, "preset_kind": kind,
                            "width": size[0], "height": size[1], "size": f"{size[0]}x{size[1]}",
                            "paint_side": paint_side, "paint_size": paint_size, "device": str(device),
                            "settings": settings.describe(), "dtype": settings.dtype, "batch": be.batch_size}
                    if network:
                        be.set_style(style)
                        emit(base | {"path": "network", "steady": None} | guarded(network_row, be, frames, calls=calls))
                    if settings != default and not (variants_e2e and index == 0):
                        continue
                    for steady in ([True] if settings != default else steadies):
                        for mode in modes:
                            emit(base | {"path": "e2e", "steady": steady, "mode": mode} |
                                 guarded(e2e_row, backend_for(settings, steady), style, size,
                                         frames_total=frames_total, live=mode == "live"))
    for be in backends.values():
        be.close()
    for line in summarize_rows(rows):
        print(f"stylecam bench: {line}", file=sys.stderr, flush=True)
    if jsonl:  # the whole run is written by ``bench``: the partial copy is no longer needed
        with contextlib.suppress(OSError):
            os.remove(jsonl + ".partial")
    return rows


def summarize_rows(rows: list[dict]) -> list[str]:
    """One line per e2e row, with the network's rate for the same configuration beside it."""
    network = {}
    lines = []
    for r in rows:
        key = (r.get("style"), r.get("size"), r.get("paint_side"), r.get("settings"))
        if r.get("path") == "network" and r.get("fps"):
            network[key] = r["fps"]
        elif r.get("path") == "e2e":
            net = network.get(key)
            ratio = (f"{100.0 * r['fps'] / net:.0f} % of the network's {net:.1f}" if net and r.get("fps")
                     else "no network row")
            steady = "on" if r.get("steady") else "off"
            lines.append(f"{r.get('style')} {r.get('size')} painted at {r.get('paint_side')} ({r.get('settings')}, "
                         f"B={r.get('batch')}, stabilizer {steady}{', live' if r.get('live_source') else ''}): "
                         f"{r.get('fps')} fps, p50 {r.get('latency_p50_ms')} / p95 {r.get('latency_p95_ms')} ms, "
                         f"host {r.get('cpu_loop_ms_per_frame')} ms/frame ({ratio})"
                         + (f" ERROR {r['error']}" if "error" in r else ""))
        if "error" in r and r.get("path") != "e2e":
            lines.append(f"{r.get('style')} {r.get('size')} {r.get('path', '')}: ERROR {r['error']}")
    return lines


BENCHMARKS["neural"] = bench_neural


if __name__ == "__main__":  # python -m stylecam.core.bench_neural ROWS.jsonl: the summary of a rows file
    with open(sys.argv[1]) as f:
        print("\n".join(summarize_rows([json.loads(line) for line in f if line.strip()])))
