"""``stylecam quality``: how steady, faithful and strong each style is on real clips.

For every style and clip, with the stabilizer off and on (same frames, same command):

``flicker``   the warp error of Lai et al. 2018 ("Learning Blind Video Temporal Consistency") as
              a ratio: mean |X_t - warp(X_t-1)| over pixels whose optical flow is consistent,
              output over input. The flow is the *input's* (OpenCV DIS, medium preset, at the
              clip's size), with the forward-backward test of Sundaram et al. 2010 masking
              occlusions. 1.0 = the output changes, along the motion, as much as the camera's
              picture does; 3.0 = three times as much (flicker).
``shimmer``   on still pixels (flow under 0.25 px both ways): mean output change over mean
              input change, frame to frame. Sensor noise is the input's; hatching that crawls
              over a still wall is the style's.
``edges``     correlation of the Gaussian-smoothed Sobel magnitudes of input and output luma:
              does the picture keep the scene's structure (1 = same edges where they were).
``strength``  mean absolute colour difference between input and output (levels of 255): is
              the picture still visibly stylized.

Pairs that straddle a scene cut (most of the flow inconsistent, or the moved previous frame far
from the next) are counted in ``cuts`` and left out of the clip-wide figures, which are ratios of
sums over the remaining pairs. Each row is one JSON object (``--json``); the table goes to stdout
(Markdown with ``--markdown``); ``--strips DIR`` writes one small JPEG per style: input frames
over the output without and with the stabilizer.

A clip spec is ``file:PATH``, ``demo`` (the bundled clip), or ``A+B`` (two clips one after the
other, the second fitted to the first's size: a hard scene cut).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass

import cv2
import numpy as np

from .temporal import consistency, grid, scene_cut

#: Pixels that move less than this (px, both directions) count as still.
STILL_PX = 0.25
#: Shimmer is reported only where at least this share of the pixels is still.
STILL_SHARE = 0.01
#: Sigma (px) of the blur on the Sobel magnitudes before correlating them.
EDGE_SIGMA = 2.0


# --------------------------------------------------------------------------------------------
# Measures on one pair / one frame


@dataclass
class PairFlow:
    back: np.ndarray     # (h, w, 2): where each pixel of frame t was in frame t-1
    mask: np.ndarray     # bool (h, w): consistent flow (not occluded), and lands inside the frame
    still: np.ndarray    # bool (h, w): consistent and moving < STILL_PX both ways
    maps: tuple          # float remap maps for the backward warp


def pair_flow(prev: np.ndarray, cur: np.ndarray) -> PairFlow:
    """The input's flow between two RGB frames and the masks the measures use."""
    a, b = cv2.cvtColor(prev, cv2.COLOR_RGB2GRAY), cv2.cvtColor(cur, cv2.COLOR_RGB2GRAY)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    back = dis.calc(b, a, None)
    fwd = dis.calc(a, b, None)
    h, w = a.shape
    xs, ys = grid(w, h)
    mx, my = xs + back[..., 0], ys + back[..., 1]
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    mask = consistency(back, fwd) & inside
    slow = (np.hypot(back[..., 0], back[..., 1]) < STILL_PX) & (np.hypot(fwd[..., 0], fwd[..., 1]) < STILL_PX)
    return PairFlow(back, mask, mask & slow, (mx, my))


def warp_error(prev: np.ndarray, cur: np.ndarray, flow: PairFlow) -> tuple[float, int]:
    """(sum of |cur - warp(prev)| over masked pixels and channels, count of masked pixels)."""
    moved = cv2.remap(prev, *flow.maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    diff = cv2.absdiff(cur, moved).astype(np.float32).sum(-1)
    return float(diff[flow.mask].sum()) / cur.shape[2], int(flow.mask.sum())


def still_change(prev: np.ndarray, cur: np.ndarray, flow: PairFlow) -> tuple[float, int]:
    diff = cv2.absdiff(cur, prev).astype(np.float32).sum(-1)
    return float(diff[flow.still].sum()) / cur.shape[2], int(flow.still.sum())


def edge_map(img: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mag = cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3))
    return cv2.GaussianBlur(mag, (0, 0), EDGE_SIGMA)


def edge_correlation(inp: np.ndarray, out: np.ndarray) -> float:
    a, b = edge_map(inp).ravel(), edge_map(out).ravel()
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def colour_difference(inp: np.ndarray, out: np.ndarray) -> float:
    """Mean absolute difference over pixels and the three channels, in levels of 255."""
    return float(np.mean(cv2.mean(cv2.absdiff(inp, out))[:3]))


# --------------------------------------------------------------------------------------------
# A clip


@dataclass
class ClipFlows:
    """The input's per-pair flows and cut flags, computed once per clip and shared by styles."""

    flows: list            # PairFlow or None (cut) for pairs (0,1), (1,2), ...
    cuts: int
    input_error: tuple[float, int]
    input_still: tuple[float, int]


def clip_flows(frames: list[np.ndarray]) -> ClipFlows:
    flows, cuts, err, cnt, st, scnt = [], 0, 0.0, 0, 0.0, 0
    for prev, cur in zip(frames, frames[1:]):
        if scene_cut(prev, cur)[0]:
            flows.append(None)
            cuts += 1
            continue
        f = pair_flow(prev, cur)
        flows.append(f)
        e, n = warp_error(prev, cur, f)
        err, cnt = err + e, cnt + n
        s, m = still_change(prev, cur, f)
        st, scnt = st + s, scnt + m
    return ClipFlows(flows, cuts, (err, cnt), (st, scnt))


def measure(inputs: list[np.ndarray], outputs: list[np.ndarray], cf: ClipFlows) -> dict:
    """The clip-wide figures for one style's outputs of ``inputs``."""
    err = cnt = st = scnt = 0.0
    for prev, cur, f in zip(outputs, outputs[1:], cf.flows):
        if f is None:
            continue
        e, n = warp_error(prev, cur, f)
        err, cnt = err + e, cnt + n
        s, m = still_change(prev, cur, f)
        st, scnt = st + s, scnt + m
    in_err = cf.input_error[0] / max(1, cf.input_error[1])
    in_still = cf.input_still[0] / max(1, cf.input_still[1])
    out_err = err / max(1, cnt)
    out_still = st / max(1, scnt)
    pairs = max(1, len(inputs) - 1 - cf.cuts)
    still_share = cf.input_still[1] / pairs / inputs[0][..., 0].size
    return {
        "flicker": round(out_err / in_err, 3) if in_err > 0 else None,
        "shimmer": round(out_still / in_still, 3) if in_still > 0 and still_share >= STILL_SHARE else None,
        "edges": round(float(np.mean([edge_correlation(i, o) for i, o in zip(inputs, outputs)])), 3),
        "strength": round(float(np.mean([colour_difference(i, o) for i, o in zip(inputs, outputs)])), 2),
        "input_warp_error": round(in_err, 3),
        "output_warp_error": round(out_err, 3),
        "still_pixels": round(still_share, 3),
        "cuts": cf.cuts,
    }


def stylize_clip(style, frames: list[np.ndarray], steady: bool) -> tuple[list[np.ndarray], float]:
    """The style's outputs for ``frames`` in order, batch by batch as the runner sends them, and fps."""
    from .stylize.base import create_backend

    backend = create_backend(style, steady=steady)
    try:
        backend.process(frames[:1])  # warm up (thread pool, caches), then start the stream afresh
        backend.set_style(style)
        out: list[np.ndarray] = []
        t0 = time.perf_counter()
        b = max(1, backend.batch_size)
        for i in range(0, len(frames), b):
            out.extend(backend.process(frames[i:i + b]))
        fps = len(frames) / max(1e-9, time.perf_counter() - t0)
    finally:
        backend.close()
    return out, fps


# --------------------------------------------------------------------------------------------
# Clips


def read_clip_spec(spec: str, frames: int | None = None,
                   size: tuple[int, int] | None = None) -> tuple[str, list[np.ndarray]]:
    """(name, RGB frames) for ``file:PATH``, ``demo`` or ``A+B`` (a hard cut between two clips)."""
    from pathlib import Path

    from .frames import fit
    from .sources import FileSource, demo_clip_path

    parts = spec.split("+")
    out: list[np.ndarray] = []
    names = []
    for part in parts:
        path = Path(demo_clip_path()) if part == "demo" else Path(part[5:] if part.startswith("file:") else part)
        if not path.is_file():
            raise ValueError(f"no such clip: {path}")
        names.append("demo" if part == "demo" else path.stem)
        want = None if frames is None else (frames + len(parts) - 1) // len(parts)
        with FileSource(str(path)) as src:
            got = 0
            while want is None or got < want:
                img = src.read()
                if img is None:
                    break
                if size is None and out:
                    size = (out[0].shape[1], out[0].shape[0])  # the second clip fits the first
                out.append(fit(img, size) if size else img)
                got += 1
    if len(out) < 2:
        raise ValueError(f"{spec} has fewer than two frames")
    return "+".join(names), out


# --------------------------------------------------------------------------------------------
# Strip pictures


def strip(inputs: list[np.ndarray], rows: list[list[np.ndarray]], count: int = 5, tile_w: int = 160) -> np.ndarray:
    """Input frames across the top, each row of outputs below, ``count`` frames evenly spaced."""
    n = len(inputs)
    idx = [round(i * (n - 1) / max(1, count - 1)) for i in range(count)]
    h, w = inputs[0].shape[:2]
    tile = (tile_w, max(2, round(tile_w * h / w)))
    lines = [np.concatenate([cv2.resize(frames[i], tile, interpolation=cv2.INTER_AREA) for i in idx], 1)
             for frames in [inputs] + rows]
    return np.concatenate(lines, 0)


# --------------------------------------------------------------------------------------------
# CLI


def configure_parser(p) -> None:
    from .cli_args import positive_int as _positive_int, size as _size

    p.add_argument("--source", action="append", default=None,
                   help="clip: file:PATH, demo, or A+B for a hard cut between two (repeat for several; default: demo)")
    p.add_argument("--styles", default=None,
                   help="comma-separated style names (default: every classic and neural style)")
    p.add_argument("--frames", type=_positive_int, default=None, help="frames per clip (default: all)")
    p.add_argument("--size", type=_size, default=None, help="fit every clip to WxH (default: each clip's own size)")
    p.add_argument("--steady", choices=["both", "on", "off"], default="both",
                   help="stabilizer off, on, or both (before/after, the default)")
    p.add_argument("--json", default=None, help="append one JSON row per style, clip and setting to this file")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--strips", default=None, help="write one strip picture per style into this folder (JPEG)")


def _styles(arg: str | None):
    from .cli_args import UsageError
    from .styles import find_style, load_styles

    styles, _ = load_styles()
    if arg:
        try:
            return [find_style(n.strip(), styles) for n in arg.split(",") if n.strip()]
        except ValueError as e:
            raise UsageError(str(e)) from None
    return sorted((s for s in styles.values() if s.backend in ("classic", "neural")), key=lambda s: (s.backend, s.name))


def command(args) -> int:
    from .bench import machine_info
    from .cli_args import UsageError, check_output
    from .sources import SourceError
    from .stylize.base import BackendError

    check_output(args.json, "--json")
    check_output(args.strips, "--strips", folder=True)
    styles = _styles(args.styles)
    settings = {"both": [False, True], "on": [True], "off": [False]}[args.steady]
    clips = []
    for spec in args.source or ["demo"]:
        try:
            clips.append(read_clip_spec(spec, args.frames, args.size))
        except (ValueError, OSError) as e:
            raise UsageError(str(e)) from None
        except SourceError as e:  # e.g. a file that is not a video
            print(f"stylecam: {e}", file=sys.stderr)
            return 1
    machine = machine_info()
    rows: list[dict] = []
    strips: dict[str, list] = {}
    for name, frames in clips:
        cf = clip_flows(frames)
        for style in styles:
            outs = []
            for steady in settings:
                try:
                    out, fps = stylize_clip(style, frames, steady)
                except BackendError as e:
                    print(f"stylecam: {style.name}: {e}", file=sys.stderr)
                    break
                outs.append(out)
                row = {"bench": "quality", "style": style.name, "backend": style.backend, "clip": name,
                       "width": frames[0].shape[1], "height": frames[0].shape[0], "frames": len(frames),
                       "steady": steady, **measure(frames, out, cf), "fps": round(fps, 1), "machine": machine}
                rows.append(row)
                _print_row(row, args.markdown, first=len(rows) == 1)
            if outs and style.name not in strips:
                strips[style.name] = [frames, outs]
    if args.json:
        with open(args.json, "a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        print(f"rows appended to {args.json}", file=sys.stderr)
    if args.strips:
        from pathlib import Path

        folder = Path(args.strips)
        folder.mkdir(parents=True, exist_ok=True)
        for style_name, (frames, outs) in strips.items():
            pic = strip(frames, outs)
            cv2.imwrite(str(folder / f"{style_name}.jpg"), cv2.cvtColor(pic, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, 80])
        print(f"stylecam: {len(strips)} strip pictures in {folder}", file=sys.stderr)
    if not rows:  # every style failed: nothing was measured
        print("stylecam: no style could be measured (see above)", file=sys.stderr)
        return 1
    m = rows[0]["machine"]
    print(f"\n{m['cpu']} ({m['cpu_count']} cores), gpu {m['gpu']}, {m['date']}")
    return 0


COLUMNS = ("style", "clip", "steady", "flicker", "shimmer", "edges", "strength", "cuts", "fps")


def _print_row(row: dict, markdown: bool, first: bool) -> None:
    cells = [("on" if row[c] else "off") if c == "steady" else str(row[c]) for c in COLUMNS]
    if markdown:
        if first:
            print("| " + " | ".join(COLUMNS) + " |")
            print("|" + "---|" * len(COLUMNS))
        print("| " + " | ".join(cells) + " |", flush=True)
    else:
        if first:
            print("  ".join(f"{c:<14}" if i < 2 else f"{c:>8}" for i, c in enumerate(COLUMNS)))
        print("  ".join(f"{v:<14}" if i < 2 else f"{v:>8}" for i, v in enumerate(cells)), flush=True)
