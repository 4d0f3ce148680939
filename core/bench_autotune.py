"""What Inductor's ``max-autotune`` searched and chose, read back from a bench log.

Contract: :func:`parse_autotune_log` takes the text of a process's stderr (Inductor prints one
``Autotune Choices Stats:`` JSON line, an ``AUTOTUNE op(shapes)`` table of the fastest choices
and a ``... AUTOTUNE benchmarking takes N seconds ...`` line for each GEMM or convolution it
tunes) and returns one row per tuned op; :func:`summarize` turns the rows into a few lines.
Pure text in, rows out: no torch, no I/O.

Why: a first start under max-autotune can outlast a device call (mllm-edit at B=16 on an H100,
2026-12-07: more than 1105 s over two device calls, cut before the U-Net was through), and a cut process writes no
bench row. The log still says, op by op, how long each search took and how much the winner
beat the library kernel (cuBLAS / cuDNN, the choice Inductor's default mode makes), which is
what the ``max-autotune`` decision needs.
"""

from __future__ import annotations

import json
import re

_OP = re.compile(r"^AUTOTUNE (\w+)\((.*)\)\s*$")
_CHOICE = re.compile(r"^\s+(\S+)\s+([\d.]+) ms\s+[\d.]+%")
_SEARCH = re.compile(r"AUTOTUNE benchmarking takes ([\d.]+) seconds and ([\d.]+) seconds precompiling"
                     r" for (\d+) choices")
_STATS = "Autotune Choices Stats:"


def _library(name: str) -> bool:
    """A choice that is not a generated Triton template: ATen's own kernel (cuBLAS, cuDNN)."""
    return not name.startswith(("triton_", "decompose_k", "cutlass", "cuda_", "cpp_"))


def parse_autotune_log(text: str) -> list[dict]:
    """One row per tuned op: ``op``, ``shapes``, ``choices``, ``best`` (kernel), ``best_ms``,
    ``library_ms`` (the fastest library choice shown, None when it was not among the fastest
    listed), ``triton_won``, ``saved_ms`` (library − best, 0 where the library won; None when
    unknown) and ``search_s`` (the benchmarking and precompiling seconds)."""
    rows: list[dict] = []
    stats: dict | None = None
    row: dict | None = None
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(_STATS) and i + 1 < len(lines):
            try:
                stats = json.loads(lines[i + 1])
            except ValueError:
                stats = None
            continue
        m = _OP.match(line)
        if m:
            row = {"op": m.group(1), "shapes": m.group(2), "choices": (stats or {}).get("num_choices"),
                   "times": []}
            rows.append(row)
            stats = None
            continue
        if row is None:
            continue
        m = _CHOICE.match(line)
        if m:
            row["times"].append((m.group(1), float(m.group(2))))
            continue
        m = _SEARCH.search(line)
        if m:
            row["search_s"] = round(float(m.group(1)) + float(m.group(2)), 2)
            row["choices"] = row["choices"] or int(m.group(3))
            row = None
    for r in rows:
        times = r.pop("times")
        best = min(times, key=lambda t: t[1]) if times else (None, None)
        lib = [t for n, t in times if _library(n)]
        r["best"], r["best_ms"] = best
        r["library_ms"] = min(lib) if lib else None
        r["triton_won"] = best[0] is not None and not _library(best[0])
        r["saved_ms"] = (round(r["library_ms"] - r["best_ms"], 4) if r["library_ms"] is not None
                         and r["best_ms"] is not None else None)
        r.setdefault("search_s", None)
    return rows


def summarize(rows: list[dict]) -> list[str]:
    """A few lines: ops tuned, search time, how often Triton won, and the time it saved on the
    ops whose library time is known."""
    if not rows:
        return ["max-autotune: no tuned op in the log"]
    known = [r for r in rows if r["saved_ms"] is not None]
    lib = sum(r["library_ms"] for r in known)
    best = sum(r["best_ms"] for r in known)
    search = sum(r["search_s"] or 0 for r in rows)
    lines = [f"max-autotune: {len(rows)} ops tuned ({', '.join(sorted({r['op'] for r in rows}))}), "
             f"{search:.0f} s of searching; Triton won {sum(r['triton_won'] for r in rows)}",
             f"on the {len(known)} ops whose library time is known: {lib:.3f} -> {best:.3f} ms per call of each "
             f"({100 * (lib - best) / lib if lib else 0:.1f} % less)"]
    top = sorted(known, key=lambda r: -r["saved_ms"])[:3]
    lines += [f"  {r['op']}({r['shapes']}): {r['library_ms']} -> {r['best_ms']} ms ({r['best']})"
              for r in top if r["saved_ms"] > 0]
    return lines
