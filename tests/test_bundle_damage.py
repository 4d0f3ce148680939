"""Damaged weight files (a download or copy cut short, a Git LFS pointer, a file that is not
safetensors) are named before any model library meets them, with what to do; ``models pull``
clears the hub cache's damaged copies so the download fetches them again, and never touches a
folder of the user's. Real tiny bundles on disk, the real safetensors library as the reference for
what loads; the hub is replaced only at its network seam (``snapshot_download``). CPU only."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import safetensors.torch
import torch

from hub_cache import fake_hub_repo, fill_cache_with_tiny_sd_turbo, sd_turbo_repos, snapshot_of

from stylecam.core import cli
from stylecam.core.stylize import bundle as B
from stylecam.core.stylize.bundle import BundleError, load_bundle
from stylecam.core.stylize.damage import remove_cached_copies, safetensors_problem

UNET_WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return B.write_tiny_bundle("sd-turbo", tmp_path_factory.mktemp("tiny") / "sd-turbo")


def copy_of(tiny: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny, tmp_path / "bundle"))


def cut(path: Path, keep: int) -> None:
    os.truncate(path, keep)


# --------------------------------------------------------------------------------------------
# The header check agrees with the safetensors library


def _mutations(good: bytes) -> dict[str, bytes]:
    n = int.from_bytes(good[:8], "little")
    return {
        "whole": good,
        "half": good[: len(good) // 2],
        "one byte short": good[:-1],
        "one byte more": good + b"\0",
        "header only": good[: 8 + n],
        "header cut": good[: 8 + n // 2],
        "four bytes": good[:4],
        "empty": b"",
        "lfs pointer": b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n",
        "html page": b"<!DOCTYPE html><html><body>rate limited</body></html>",
        "huge header length": (10**15).to_bytes(8, "little") + good[8:],
        "header not json": good[:8] + b"\xff" * n + good[8 + n:],
    }


def test_the_header_check_agrees_with_the_safetensors_library_on_what_loads(tiny, tmp_path):
    good = (tiny / UNET_WEIGHTS).read_bytes()
    verdicts = {}
    for name, data in _mutations(good).items():
        path = tmp_path / f"{name.replace(' ', '-')}.safetensors"
        path.write_bytes(data)
        try:
            safetensors.torch.load_file(path)
            loads = True
        except Exception:
            loads = False
        problem = safetensors_problem(path)
        verdicts[name] = (loads, problem is None)
        if problem is not None:
            assert str(path) in problem  # every sentence names its file
    assert all(loads == ours for loads, ours in verdicts.values()), verdicts
    assert verdicts["whole"] == (True, True)
    assert sum(loads for loads, _ in verdicts.values()) == 1  # the mutations really are damage


def test_a_file_with_no_tensors_is_whole(tmp_path):
    path = tmp_path / "empty.safetensors"
    safetensors.torch.save_file({}, path)
    assert safetensors_problem(path) is None


# --------------------------------------------------------------------------------------------
# A damaged bundle is named before anything loads


def test_weights_cut_short_are_named_with_what_to_do_before_any_model_loads(tiny, tmp_path, monkeypatch):
    import diffusers

    folder = copy_of(tiny, tmp_path)
    weights = folder / UNET_WEIGHTS
    whole = weights.stat().st_size
    cut(weights, whole // 2)
    monkeypatch.setattr(diffusers.UNet2DConditionModel, "from_pretrained",
                        lambda *a, **k: pytest.fail("the damaged U-Net reached the model library"))
    with pytest.raises(BundleError) as e:
        load_bundle(folder)
    msg = str(e.value)
    assert f"{weights} is damaged" in msg
    assert f"{whole / 1e6:.1f} MB its header describes" in msg and "interrupted download or copy" in msg
    assert "download the model again, or use a good copy of its folder" in msg
    assert "OSError" not in msg
    assert e.value.damaged == (weights,)


def test_a_git_lfs_pointer_says_to_fetch_the_real_file(tiny, tmp_path):
    folder = copy_of(tiny, tmp_path)
    vae = folder / "vae" / "diffusion_pytorch_model.safetensors"
    vae.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "0" * 64 + "\nsize 1234\n")
    with pytest.raises(BundleError, match="is a Git LFS pointer, not the weights") as e:
        load_bundle(folder)
    assert "`git lfs pull`" in str(e.value) and e.value.damaged == (vae,)


def test_every_damaged_file_is_listed_and_an_unused_one_is_not_checked(tiny, tmp_path):
    folder = copy_of(tiny, tmp_path)
    cut(folder / UNET_WEIGHTS, 100)
    text = folder / "text_encoder" / "model.safetensors"
    with open(text, "ab") as f:
        f.write(b"junk")
    # A file nothing loads (another variant's name is not looked at once the plain one exists).
    (folder / "vae" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(b"not weights")
    with pytest.raises(BundleError) as e:
        load_bundle(folder)
    assert set(e.value.damaged) == {folder / UNET_WEIGHTS, text}
    assert "4 bytes more than" in str(e.value)


def test_a_damaged_shard_named_by_an_index_is_named(tiny, tmp_path):
    folder = copy_of(tiny, tmp_path)
    unet = load_bundle(folder).unet
    (folder / UNET_WEIGHTS).unlink()
    unet.save_pretrained(folder / "unet", safe_serialization=True, max_shard_size="200KB")
    index = json.loads((folder / "unet" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1
    last = folder / "unet" / shards[-1]
    cut(last, last.stat().st_size - 1)
    with pytest.raises(BundleError, match="is damaged") as e:
        load_bundle(folder)
    assert e.value.damaged == (last,)


def test_a_damaged_lllite_adapter_is_named(tmp_path):
    folder = B.write_tiny_bundle("sd-turbo", tmp_path / "with-lllite", lllite=True)
    adapter = folder / "lllite" / "lllite.safetensors"
    assert adapter.is_file()
    cut(adapter, adapter.stat().st_size // 3)
    with pytest.raises(BundleError, match="lllite.safetensors is damaged") as e:
        load_bundle(folder)
    assert e.value.damaged == (adapter,)


def test_a_tokenizer_or_config_file_cut_short_is_damaged_too(tiny, tmp_path):
    folder = copy_of(tiny, tmp_path)
    tokenizer = folder / "tokenizer" / "tokenizer.json"
    config = folder / "vae" / "config.json"
    for path in (tokenizer, config):
        cut(path, path.stat().st_size // 2)
    with pytest.raises(BundleError) as e:
        load_bundle(folder)
    assert set(e.value.damaged) == {tokenizer, config}
    assert f"{tokenizer} is damaged (" in str(e.value) and "download the model again" in str(e.value)


def test_the_cli_says_which_file_is_damaged_and_how_to_fix_it(tiny, tmp_path, capsys):
    folder = copy_of(tiny, tmp_path)
    cut(folder / UNET_WEIGHTS, 1000)
    assert cli.main(["models", "check", str(folder)]) == 1
    err = capsys.readouterr().err
    assert f"{folder / UNET_WEIGHTS} is damaged" in err and "download the model again" in err


# --------------------------------------------------------------------------------------------
# The hub cache: damaged copies are cleared so that the next download fetches them again


def _cached_unet(cache: Path) -> Path:
    return snapshot_of(cache, "stabilityai/sd-turbo") / UNET_WEIGHTS


def test_pull_clears_a_damaged_cached_file_and_downloads_it_again(tiny, offline, monkeypatch, capsys):
    """The hub counts a file cut short as present; pull deletes the damaged copy first, so the
    download (here: the hub at its network seam, serving the tiny files) fetches it again."""
    import huggingface_hub

    repos = sd_turbo_repos(tiny)
    fill_cache_with_tiny_sd_turbo(offline, tiny, blobs=True)
    cached = _cached_unet(offline)
    tokenizer = cached.parent.parent / "tokenizer" / "tokenizer.json"
    for path in (cached, tokenizer):
        cut(path.resolve(), 2000)
    with pytest.raises(BundleError) as e:
        load_bundle("sd-turbo")
    assert set(e.value.damaged) == {cached, tokenizer}
    # Offline, pull can only say so.
    assert cli.main(["models", "pull", "sd-turbo"]) == 1
    assert f"its cached copy is damaged ({cached}" in capsys.readouterr().err
    assert cli.main(["models", "list"]) == 0
    assert "damaged in the cache, 2 file(s) (`stylecam models pull sd-turbo` downloads them again)" \
        in capsys.readouterr().out

    fetched = []

    def hub(repo, allow_patterns=None, local_files_only=False, **kwargs):
        base = snapshot_of(offline, repo)
        if local_files_only:
            return str(base)
        missing = {n: p for n, p in repos[repo].items() if not (base / n).exists()}
        fetched.extend(missing)
        fake_hub_repo(offline, repo, missing, blobs=True)
        return str(base)

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    monkeypatch.setattr(huggingface_hub, "list_repo_files", lambda repo: None)
    assert cli.main(["models", "pull", "sd-turbo"]) == 0
    out = capsys.readouterr().out
    assert f"{cached} was damaged; downloading it again" in out and "sd-turbo is ready" in out
    assert sorted(fetched) == ["tokenizer/tokenizer.json", str(UNET_WEIGHTS)]  # the damaged files only
    assert cached.read_bytes() == (tiny / UNET_WEIGHTS).read_bytes()
    assert load_bundle("sd-turbo").stack == "sd-turbo"


def test_a_damaged_file_outside_the_hub_cache_is_never_deleted(tiny, tmp_path, offline):
    folder = copy_of(tiny, tmp_path)
    cut(folder / UNET_WEIGHTS, 500)
    with pytest.raises(BundleError) as e:
        load_bundle(folder)
    assert remove_cached_copies(e.value.damaged, offline) == []
    assert (folder / UNET_WEIGHTS).stat().st_size == 500
    # A link inside the cache to a file of the user's outside it: neither is touched.
    link = snapshot_of(offline, "someone/linked") / UNET_WEIGHTS
    link.parent.mkdir(parents=True)
    link.symlink_to(folder / UNET_WEIGHTS)
    assert remove_cached_copies([link], offline) == []
    assert link.is_symlink() and (folder / UNET_WEIGHTS).is_file()


def test_the_diffusion_backend_names_the_pull_command_for_a_damaged_stack(tiny, offline):
    from stylecam.core.stylize.base import BackendError
    from stylecam.core.stylize.diffusion import DiffusionBackend

    fill_cache_with_tiny_sd_turbo(offline, tiny, blobs=True)
    cut(_cached_unet(offline).resolve(), 3000)
    with pytest.raises(BackendError) as e:
        DiffusionBackend("sd-turbo", device="cpu", dtype=torch.float32)
    msg = str(e.value)
    assert "is damaged" in msg and "`stylecam models pull sd-turbo` downloads the damaged files again" in msg
