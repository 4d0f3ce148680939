"""Damaged files of a bundle: weight files found from their headers, named in the user's terms, and
damaged files cleared from the hub cache so that the next download fetches them again.

Contract: :func:`safetensors_problem` reads a ``.safetensors`` file's 8-byte length and JSON header
(never the tensors, never a model library) and says what is wrong with the file's framing, or
None. The rule is the safetensors library's own: the header parses and its tensors' byte ranges
end exactly at the end of the file. So a file cut short by an interrupted download or copy, one
with bytes after its end, a Git LFS pointer (a repository cloned without git-lfs) and a file that
is not safetensors at all are each named before ``from_pretrained`` meets them (where they become
an ``OSError`` that names no cause and no fix). ``checks.check_bundle`` gathers every damaged file
(these, and JSON configs and tokenizer files that do not parse) in ``BundleError.damaged``;
:func:`remove_cached_copies` deletes such files only where they are the hub cache's own copies
(never in a folder of the user's).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

#: The start of the text file Git LFS leaves in place of the real one.
_LFS_POINTER = b"version https://git-lfs"
#: The safetensors library refuses headers over 100 MB; so do we, before reading one.
_MAX_HEADER = 100_000_000
#: What the user does about any damaged weight file; one place for the words.
FIX = "download the model again, or use a good copy of its folder"


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n:,} bytes"


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` cannot load as safetensors, as a sentence naming it, or None if its framing is whole."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if head.startswith(_LFS_POINTER[:8]) and (head + f.read(len(_LFS_POINTER) - 8)) == _LFS_POINTER:
                return (f"{path} is a Git LFS pointer, not the weights (the repository was cloned without "
                        f"git-lfs): run `git lfs pull` in that repository, or {FIX}")
            if len(head) < 8:
                return f"{path} is damaged: it holds {_mb(size)}, too few for a safetensors file; {FIX}"
            n = int.from_bytes(head, "little")
            if n > min(_MAX_HEADER, size - 8):
                return f"{path} is damaged or not a safetensors file: its header is cut short or unreadable; {FIX}"
            header = json.loads(f.read(n))
    except OSError as e:
        return f"cannot read {path} ({e.strerror or e})"
    except (UnicodeDecodeError, json.JSONDecodeError):
        return f"{path} is damaged or not a safetensors file: its header is not readable; {FIX}"
    try:
        end = max([int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"], default=0)
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        return f"{path} is damaged or not a safetensors file: its header lists no tensors' places; {FIX}"
    expected = 8 + n + end
    if size < expected:
        return (f"{path} is damaged: it holds {_mb(size)} of the {_mb(expected)} its header describes, as an "
                f"interrupted download or copy leaves it; {FIX}")
    if size > expected:
        return (f"{path} is damaged: it holds {_mb(size - expected)} more than the {_mb(expected)} its header "
                f"describes; {FIX}")
    return None


def remove_cached_copies(paths, cache: Path) -> list[Path]:
    """Delete each of ``paths`` that is the hub cache's copy (the snapshot's link, and the blob it
    points to, inside ``cache``), so that the next download fetches it again. A file whose real place
    is outside ``cache`` (a folder of the user's) is never touched. Returns the paths removed."""
    cache = cache.resolve()
    removed = []
    for path in paths:
        path = Path(path)
        real = path.resolve()
        if not real.is_relative_to(cache):
            continue
        for victim in (path, real):  # the link first: a link to nothing is never left behind
            try:
                os.unlink(victim)
            except FileNotFoundError:
                pass
        removed.append(path)
    return removed
