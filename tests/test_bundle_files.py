"""What a bundle may load from disk (issue #19, "Bundles"): safetensors only, also when an index
file names the shards, and nothing from outside the bundle folder unless the user's own manifest
names an absolute path. Real tiny bundles on disk, real symlinks, a real pickle that would leave a
mark if anything unpickled it. CPU only, no network."""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from hub_cache import fake_hub_repo

from stylecam.core.stylize import bundle as B
from stylecam.core.stylize.bundle import BundleError, load_bundle

UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"


class LeavesAMark:
    """Unpickling this creates the file it names: proof that a pickle was run."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return B.write_tiny_bundle("sd-turbo", tmp_path_factory.mktemp("tiny") / "sd-turbo")


def copy_of(tiny: Path, tmp_path: Path, name: str = "bundle") -> Path:
    dst = tmp_path / name
    shutil.copytree(tiny, dst)
    return dst


def shard_unet(folder: Path) -> dict:
    """Rewrite ``folder/unet`` as real safetensors shards + index (as large models ship)."""
    unet = load_bundle(folder).unet
    (folder / "unet" / UNET_WEIGHTS).unlink()
    unet.save_pretrained(folder / "unet", safe_serialization=True, max_shard_size="200KB")
    return json.loads((folder / "unet" / f"{UNET_WEIGHTS}.index.json").read_text())


# --------------------------------------------------------------------------------------------
# Shards


def test_safetensors_shards_named_by_an_index_load_the_same_weights(tiny, tmp_path, offline):
    folder = copy_of(tiny, tmp_path)
    index = shard_unet(folder)
    assert len(set(index["weight_map"].values())) > 1  # really sharded
    loaded = load_bundle(folder).unet.state_dict()
    for name, want in load_bundle(tiny).unet.state_dict().items():
        assert torch.equal(loaded[name], want), name


def test_a_pickle_shard_named_by_an_index_is_refused_and_never_unpickled(tiny, tmp_path, offline):
    folder = copy_of(tiny, tmp_path)
    index = shard_unet(folder)
    victim = sorted(set(index["weight_map"].values()))[0]
    bad = victim.replace(".safetensors", ".bin")
    mark = tmp_path / "unpickled"
    (folder / "unet" / victim).unlink()
    (folder / "unet" / bad).write_bytes(pickle.dumps({"conv_in.weight": LeavesAMark(mark)}))
    index["weight_map"] = {k: (bad if v == victim else v) for k, v in index["weight_map"].items()}
    (folder / "unet" / f"{UNET_WEIGHTS}.index.json").write_text(json.dumps(index))
    with pytest.raises(BundleError) as e:
        load_bundle(folder)
    assert f"names the shard {bad!r}, which is not a .safetensors file" in str(e.value)
    assert "stylecam loads only safetensors" in str(e.value)
    assert not mark.exists()


@pytest.mark.parametrize("shard, says", [
    ("../text_encoder/model.safetensors", "outside its own folder"),
    ("diffusion_pytorch_model-00009-of-00009.safetensors", "which is missing from"),
])
def test_an_index_may_name_only_shards_beside_it(tiny, tmp_path, offline, shard, says):
    folder = copy_of(tiny, tmp_path)
    index = shard_unet(folder)
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = shard
    (folder / "unet" / f"{UNET_WEIGHTS}.index.json").write_text(json.dumps(index))
    with pytest.raises(BundleError, match=says):
        load_bundle(folder)


def test_a_corrupt_index_names_itself(tiny, tmp_path, offline):
    folder = copy_of(tiny, tmp_path)
    shard_unet(folder)
    (folder / "unet" / f"{UNET_WEIGHTS}.index.json").write_text('{"metadata": {}}')
    with pytest.raises(BundleError, match="has no weight_map"):
        load_bundle(folder)


# --------------------------------------------------------------------------------------------
# Components stay inside the bundle folder


def write_manifest(folder: Path, **components) -> None:
    path = folder / "stylecam.json"
    manifest = json.loads(path.read_text())
    manifest["components"] = components
    path.write_text(json.dumps(manifest))


def test_a_manifest_path_that_climbs_out_is_refused(tiny, tmp_path, offline):
    folder = copy_of(tiny, tmp_path)
    shutil.move(folder / "vae", tmp_path / "outside-vae")
    write_manifest(folder, vae="../outside-vae")
    with pytest.raises(BundleError) as e:
        load_bundle(folder)
    assert "(the vae component) resolves to" in str(e.value)
    assert f"outside the bundle folder {folder.resolve()}" in str(e.value)
    assert "name its absolute path in the manifest" in str(e.value)  # says what to do


def test_a_symlinked_component_folder_pointing_out_is_refused(tiny, tmp_path, offline):
    folder = copy_of(tiny, tmp_path)
    shutil.move(folder / "text_encoder", tmp_path / "elsewhere")
    (folder / "text_encoder").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(BundleError, match=r"\(the text_encoder component\) resolves to .*elsewhere"):
        load_bundle(folder)


def test_a_symlinked_weight_file_pointing_out_is_refused(tiny, tmp_path, offline):
    folder = copy_of(tiny, tmp_path)
    outside = tmp_path / "weights.safetensors"
    shutil.move(folder / "unet" / UNET_WEIGHTS, outside)
    (folder / "unet" / UNET_WEIGHTS).symlink_to(outside)
    with pytest.raises(BundleError, match=r"\(in the unet component\) is a link to .*weights\.safetensors"):
        load_bundle(folder)


def test_links_that_stay_inside_the_bundle_are_fine(tiny, tmp_path, offline):
    folder = copy_of(tiny, tmp_path)
    shutil.move(folder / "vae", folder / "shared-vae")
    (folder / "vae").symlink_to("shared-vae", target_is_directory=True)
    assert type(load_bundle(folder).vae).__name__ == "AutoencoderTiny"


def test_an_absolute_path_in_the_users_manifest_loads_and_says_so(tiny, tmp_path, offline, caplog):
    folder = copy_of(tiny, tmp_path)
    elsewhere = tmp_path / "models" / "my-vae"
    elsewhere.parent.mkdir()
    shutil.move(folder / "vae", elsewhere)
    write_manifest(folder, vae=str(elsewhere))
    with caplog.at_level(logging.WARNING, logger="stylecam.core.stylize.bundle"):
        bundle = load_bundle(folder)
    assert type(bundle.vae).__name__ == "AutoencoderTiny"
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert said == [f"bundle {folder}: the vae component comes from {elsewhere}, outside the bundle folder "
                    "(its manifest names that path)"]


def test_a_plain_bundle_loads_without_a_warning(tiny, offline, caplog):
    with caplog.at_level(logging.WARNING, logger="stylecam.core.stylize.bundle"):
        load_bundle(tiny)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("where", ["../../../../outside", "/etc"])
def test_a_downloaded_manifest_cannot_point_outside_its_repository(tiny, tmp_path, offline, where):
    folder = copy_of(tiny, tmp_path)
    write_manifest(folder, vae=where)
    fake_hub_repo(offline, "someone/sneaky", {str(p.relative_to(folder)): p for p in folder.rglob("*") if p.is_file()})
    with pytest.raises(BundleError, match=f"component 'vae' points to '{where}', outside the repository"):
        load_bundle("someone/sneaky")


def test_a_repo_subfolder_cannot_climb_out():
    with pytest.raises(BundleError, match="subfolder '../../x' must be a folder inside the repository"):
        B.manifest_from_dict({"stack": "sd-turbo", "components": {"vae": {"repo": "a/b", "subfolder": "../../x"}}},
                             "stylecam.json")
