"""Carry Inductor's tuning results from one machine to the next (the device scripts' helper).

Contract: :func:`pack` copies what Inductor's search found, out of a ``TORCHINDUCTOR_CACHE_DIR``,
into a small folder of text files; :func:`unpack` puts such a folder back into a cache dir,
keeping what is already there. Two kinds of result, both JSON, both keyed so that another
torch, Triton or card never reads them:

* **per op** (max-autotune's GEMM and convolution choices): ``cache/<hash>``, one file per
  torch/Triton/card (the hash), holding every op tuned so far. Unpacking merges it with the
  file already there, op by op (the one there wins).
* **per kernel** (coordinate descent over Inductor's own Triton kernels, which max-autotune
  includes): a ``<key>.best_config`` file beside each generated kernel, in the kernel's own
  two-letter folder. Packed as ``best-configs.jsonl``, one ``{"path", "content"}`` row each.

Why: every device session gets a fresh machine, and max-autotune's first start for mllm-edit at
B=16 outlasts a session's device time (H100, 2026-12-07: 989 s over two calls reached the U-Net's
second level). Without the per-op file each session searched from the start again. A fresh
machine also spent 148 s more outside the search than a warm one (287 s against 139 s, calls 1
and 2 of the tenth session); the per-kernel files carry the part of that which is coordinate
descent (how much that is was not measured). ``scripts/gpu_hw.sh`` packs after each autotune
call, the folder is committed in ``docs/data/autotune-cache/``, and the next call unpacks it.

Run as ``python -m stylecam.core.bench_autotune_cache pack CACHE_DIR DEST`` or
``... unpack SRC CACHE_DIR [--as-system HASH]``; no torch needed.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

#: The per-kernel results' file in a packed folder.
BEST_CONFIGS = "best-configs.jsonl"


def pack(cache_dir: str | os.PathLike, dest: str | os.PathLike) -> dict:
    """Copy the per-op files and the per-kernel ``.best_config`` files of ``cache_dir`` into
    ``dest`` (created; files there are replaced). Returns how many of each were packed, and how
    many were skipped because they did not parse.

    Safe to call while Inductor is still searching (``gpu_hw.sh``'s ``SNAPSHOT`` packs every
    30 s): a file caught half-written does not parse and is skipped, so ``dest`` keeps its last
    good copy of a per-op file, and a kernel's result comes with the next pack."""
    cache_dir, dest = Path(cache_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    per_op = skipped = 0
    ops_dir = cache_dir / "cache"
    if ops_dir.is_dir():
        for f in sorted(ops_dir.iterdir()):
            if not f.is_file():
                continue
            data = f.read_bytes()
            if _per_op_table(data) is None:
                skipped += 1
                continue
            (dest / f.name).write_bytes(data)
            per_op += 1
    rows = []
    if cache_dir.is_dir():
        for f in sorted(cache_dir.rglob("*.best_config")):
            content = f.read_text(errors="replace")
            if _parsed(content) is None:
                skipped += 1
                continue
            rows.append({"path": f.relative_to(cache_dir).as_posix(), "content": content})
    if rows:
        with open(dest / BEST_CONFIGS, "w") as out:
            out.writelines(json.dumps(r) + "\n" for r in rows)
    return {"per_op_files": per_op, "best_configs": len(rows), "skipped_unparsable": skipped}


def _parsed(text: str | bytes):
    """The JSON in ``text``, or None where it does not parse (a file caught mid-write)."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def _per_op_table(text: str | bytes) -> dict | None:
    """An Inductor per-op file's contents (a dict with a ``cache`` table), or None if it is not one."""
    data = _parsed(text)
    return data if isinstance(data, dict) and isinstance(data.get("cache"), dict) else None


def _merge(into: dict, new: dict) -> None:
    """Add ``new``'s entries missing from ``into``, recursively (``into``'s win)."""
    for key, value in new.items():
        if key not in into:
            into[key] = value
        elif isinstance(into[key], dict) and isinstance(value, dict):
            _merge(into[key], value)


def _ops(cache: dict) -> int:
    """Ops in a per-op table: ``cache[op name][input shapes, strides, dtypes] -> timings``."""
    return sum(len(v) for v in cache.values() if isinstance(v, dict))


def _safe_relative(path: str) -> bool:
    """A packed path stays inside the cache dir: relative, no ``..``, ends in ``.best_config``."""
    parts = Path(path).parts
    return (bool(parts) and not Path(path).is_absolute() and ".." not in parts
            and path.endswith(".best_config"))


def unpack(src: str | os.PathLike, cache_dir: str | os.PathLike, as_system: str | None = None) -> dict:
    """Put a packed folder back into ``cache_dir``, keeping what is there: per-op files are
    merged op by op, ``.best_config`` files are written only where none exists. Raises
    ``ValueError`` for a per-op file that is not Inductor's JSON or a path that would leave
    ``cache_dir``. Returns how many ops and kernel results were added.

    ``as_system`` (a system hash, Inductor's ``CacheBase.get_system()["hash"]``) merges every
    per-op file into that system's file instead of its own: one card's choices reused on
    another. Only sound between cards whose kernels compile the same (H100 SXM and H200: both
    sm_90 with 132 SMs, so the same candidate kernels and keys), with the same torch and Triton
    (other versions' keys never match, so their ops stay unused). The timings, and so the
    choices, are the other card's. That system's own file goes first, so its ops win."""
    src, cache_dir = Path(src), Path(cache_dir)
    added_ops = added_kernels = 0
    if not src.is_dir():
        return {"ops_added": 0, "best_configs_added": 0}
    for f in sorted(src.iterdir(), key=lambda f: (f.name != as_system, f.name)):
        if not f.is_file() or f.name.startswith("."):
            continue
        if f.name == BEST_CONFIGS:
            for n, line in enumerate(f.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not _safe_relative(row.get("path", "")):
                    raise ValueError(f"{f}:{n}: {row.get('path')!r} is not a .best_config path inside the cache")
                target = cache_dir / row["path"]
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_text(row["content"])
                    added_kernels += 1
            continue
        new = _per_op_table(f.read_bytes())
        if new is None:
            raise ValueError(f"{f} is not one of Inductor's autotune cache files (JSON with a 'cache' table)")
        target = cache_dir / "cache" / (as_system or f.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        there = json.loads(target.read_text()) if target.exists() else {**new, "cache": {}}
        before = _ops(there.setdefault("cache", {}))
        _merge(there["cache"], new["cache"])
        added = _ops(there["cache"]) - before
        if added or not target.exists():
            target.write_text(json.dumps(there, indent=4))
        added_ops += added
    return {"ops_added": added_ops, "best_configs_added": added_kernels}


def main(argv: list[str]) -> int:
    as_system = None
    if len(argv) == 5 and argv[0] == "unpack" and argv[3] == "--as-system":
        argv, as_system = argv[:3], argv[4]
    if len(argv) != 3 or argv[0] not in ("pack", "unpack"):
        print("usage: python -m stylecam.core.bench_autotune_cache pack CACHE_DIR DEST"
              " | unpack SRC CACHE_DIR [--as-system HASH]", file=sys.stderr)
        return 2
    verb, a, b = argv
    print(json.dumps(pack(a, b) if verb == "pack" else unpack(a, b, as_system)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
