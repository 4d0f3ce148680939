"""A Hugging Face hub cache laid out on disk for tests (no network): one snapshot per repository,
its files either plain copies or, as the hub itself writes them, links to content-named blobs."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

#: The one snapshot revision every fake repository has.
REVISION = "0" * 40


def snapshot_of(cache: Path, repo: str) -> Path:
    return cache / ("models--" + repo.replace("/", "--")) / "snapshots" / REVISION


def fake_hub_repo(cache: Path, repo: str, files: dict[str, Path], *, blobs: bool = False) -> None:
    """Lay out ``files`` (path in repo -> source) as a cached snapshot of ``repo``; with ``blobs``,
    the content goes to blobs/ and the snapshot's files are links to it. Adding files to a
    repository already there keeps what it holds."""
    snapshot = snapshot_of(cache, repo)
    base = snapshot.parent.parent
    for name, src in files.items():
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not blobs:
            shutil.copyfile(src, target)
            continue
        data = src.read_bytes()
        blob = base / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(exist_ok=True)
        blob.write_bytes(data)
        if not target.exists():
            target.symlink_to(blob)
    (base / "refs").mkdir(exist_ok=True)
    (base / "refs" / "main").write_text(REVISION)


def sd_turbo_repos(tiny: Path) -> dict[str, dict[str, Path]]:
    """The sd-turbo stack's two hub repositories, filled from a tiny sd-turbo bundle: the U-Net,
    text encoder, tokenizer and scheduler folders of one, TAESD at the other's root."""
    turbo = {str(p.relative_to(tiny)): p for sub in ("unet", "text_encoder", "tokenizer", "scheduler")
             for p in (tiny / sub).iterdir()}
    return {"stabilityai/sd-turbo": turbo, "madebyollin/taesd": {p.name: p for p in (tiny / "vae").iterdir()}}


def fill_cache_with_tiny_sd_turbo(cache: Path, tiny: Path, *, blobs: bool = False) -> None:
    for repo, files in sd_turbo_repos(tiny).items():
        fake_hub_repo(cache, repo, files, blobs=blobs)
