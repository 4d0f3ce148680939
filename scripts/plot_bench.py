"""Plot the diffusion benchmark's JSON rows: fps vs batch size per mode, and latency vs fps.

    python scripts/plot_bench.py bench.jsonl docs/images/bench_diffusion.png

Needs matplotlib (not a stylecam dependency; the GPU image has it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(path: str) -> list[dict]:
    p = Path(path)
    if not p.is_file() and Path(path + ".partial").is_file():
        p = Path(path + ".partial")
    rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("bench") == "diffusion" and "fps" in r and not _ab_only(r["mode"])]


#: Settings that appear only in A/B rows (one optimisation switched off or a knob that gained
#: nothing): they stay in the JSON and the tables, not in the plot.
AB_ONLY = ("main_priority", "cudnn_benchmark", "text_bucket", "channels_last_unet")


def _ab_only(mode: str) -> bool:
    return any(k in mode for k in AB_ONLY)


def short(mode: str) -> str:
    """``stream+mode=compile+compile_mode=default+broadcast=True`` -> ``stream compiled, broadcast``."""
    parts = mode.split("+")
    words = [parts[0]]
    for p in parts[1:]:
        if p == "mode=compile":
            words.append("compiled")
        elif p == "broadcast=True":
            words.append("broadcast")
        elif p == "compile_encoder=True":
            words.append("encoder compiled")
        elif not p.startswith(("compile_mode=", "compile_encoder=")):
            words.append(p)
    return words[0] + (" " + ", ".join(words[1:]) if len(words) > 1 else "")


def main(src: str, dst: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = load(src)
    stacks = sorted({r["stack"] for r in rows})
    fig, axes = plt.subplots(len(stacks), 2, figsize=(12, 4.2 * len(stacks)), squeeze=False)
    for row_axes, stack in zip(axes, stacks):
        mine = [r for r in rows if r["stack"] == stack]
        ax = row_axes[0]
        series: dict[str, list[tuple[int, float]]] = {}
        for r in mine:
            label = short(r["mode"]) if r["mode"].startswith("naive") else f"{short(r['mode'])} N={r['refresh']}"
            series.setdefault(label, []).append((r["batch"], r["fps"]))
        for label, pts in sorted(series.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size B")
        ax.set_ylabel("frames per second")
        ax.set_title(f"{stack}: fps vs B")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        ax = row_axes[1]
        for r in mine:
            ax.scatter(r["fps"], r["latency_p50_ms"], s=20 + 4 * r["batch"])
            ax.annotate(f"{short(r['mode'])} B={r['batch']} N={r['refresh']}", (r["fps"], r["latency_p50_ms"]),
                        fontsize=6)
        ax.set_xlabel("frames per second")
        ax.set_ylabel("p50 capture→output latency (ms)")
        ax.set_yscale("log")
        ax.set_title(f"{stack}: latency vs fps")
        ax.grid(True, alpha=0.3)
    machine = rows[0]["machine"] if rows else {}
    fig.suptitle(f"stylecam diffusion engine — {machine.get('gpu')}, torch {machine.get('torch')}, "
                 f"{machine.get('date')}", fontsize=10)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    print(f"wrote {dst}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
