"""Model bundles: tiny presets, save/load round trips, bad-input errors, full-size configs, the
``stylecam models`` command. CPU only, tiny sizes, no network (the hub cache is a temp folder)."""

from __future__ import annotations

import dataclasses

import json
import shutil
from pathlib import Path

import pytest
import torch

from hub_cache import fake_hub_repo, fill_cache_with_tiny_sd_turbo

from stylecam.core import cli
from stylecam.core.stylize import bundle as B
from stylecam.core.stylize.bundle import BundleError, load_bundle

STACK_CASES = [("sd-turbo", False), ("pix2pix", False), ("mllm-edit", False), ("mllm-edit", True)]


def case_id(case):
    stack, lllite = case
    return stack + ("+lllite" if lllite else "")


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory) -> dict[str, Path]:
    """Each stack's tiny bundle written once per session: name -> folder."""
    root = tmp_path_factory.mktemp("tiny-bundles")
    return {case_id(c): B.write_tiny_bundle(c[0], root / case_id(c), lllite=c[1]) for c in STACK_CASES}


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if any component starts loading: bad bundles must be refused before that."""
    import diffusers
    import transformers

    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        raise AssertionError(f"from_pretrained called for {args}")

    for cls in (diffusers.UNet2DConditionModel, diffusers.AutoencoderTiny, transformers.CLIPTextModel,
                transformers.CLIPTokenizer, diffusers.EulerDiscreteScheduler):
        monkeypatch.setattr(cls, "from_pretrained", spy)
    return calls


def broken_copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------------------------------------
# Tiny presets and round trips


@pytest.mark.parametrize("case", STACK_CASES, ids=case_id)
def test_tiny_bundle_saves_small_and_loads_back_offline(case, tiny_bundles, offline):
    stack, lllite = case
    folder = tiny_bundles[case_id(case)]
    assert B.bundle_nbytes(folder) < 5_000_000
    manifest = json.loads((folder / "stylecam.json").read_text())
    assert manifest["stack"] == stack and manifest["size"] == [64, 64]

    loaded = load_bundle(folder)
    built = B.build_tiny_bundle(stack, lllite=lllite)  # same seed: the same weights
    assert loaded.manifest == built.manifest
    for (name, a), (_, b) in zip(built.unet.state_dict().items(), loaded.unet.state_dict().items()):
        assert torch.equal(a, b), name
    for (name, a), (_, b) in zip(built.vae.state_dict().items(), loaded.vae.state_dict().items()):
        assert torch.equal(a, b), name
    assert type(loaded.vae).__name__ == "AutoencoderTiny"
    assert (loaded.lllite is not None) == lllite
    if stack == "mllm-edit":
        assert loaded.qwen.hidden_size == loaded.unet.config.cross_attention_dim
        assert loaded.qwen.text_length == manifest["text_length"]
    else:
        text = "an oil painting of a swan"
        assert loaded.tokenizer(text).input_ids == built.tokenizer(text).input_ids
        assert loaded.unet.config.in_channels == (8 if stack == "pix2pix" else 4)


def test_tiny_weights_follow_the_seed():
    a, b, c = (B.build_tiny_bundle("sd-turbo", seed=s).unet.conv_in.weight for s in (0, 0, 1))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_tiny_edit_unet_has_the_full_layout_shape():
    unet = B.build_tiny_bundle("mllm-edit").unet
    assert unet.mid_block is None
    assert all(type(blk).__name__.startswith("CrossAttn") for blk in unet.down_blocks)


def test_tiny_clip_tokenizer_encodes_any_text_without_unknowns():
    tok = B.tiny_clip_tokenizer(32)
    ids = tok("Ünïcödé — 東京 🎨 oil!", padding="max_length", max_length=32, truncation=True).input_ids
    assert len(ids) == 32
    assert ids[0] == tok.bos_token_id
    inner = tok("Ünïcödé — 東京 🎨 oil!").input_ids[1:-1]
    assert tok.unk_token_id not in inner and len(inner) > 5
    assert tok.convert_ids_to_tokens(tok("oil painting").input_ids)[1:-1] == ["oil</w>", "painting</w>"]


def test_tiny_vae_gives_pictures_not_a_flat_grey():
    vae = B.build_tiny_bundle("sd-turbo").vae
    with torch.no_grad():
        y = vae.decode(torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))).sample
        lat = vae.encode(torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1).latents
    assert 0.3 < y.std() < 0.7 and abs(y.mean()) < 0.3
    assert 0.5 < lat.std() < 2.0


# --------------------------------------------------------------------------------------------
# Bad input: one clear error naming the file, nothing loaded


def test_missing_component_is_named(tiny_bundles, tmp_path, offline, no_loading):
    folder = broken_copy(tiny_bundles["sd-turbo"], tmp_path)
    shutil.rmtree(folder / "vae")
    with pytest.raises(BundleError) as e:
        load_bundle(folder)
    assert f"{folder / 'vae'} is missing" in str(e.value)
    assert not no_loading


def test_pickle_weights_are_refused_by_name(tiny_bundles, tmp_path, offline, no_loading):
    folder = broken_copy(tiny_bundles["pix2pix"], tmp_path)
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(BundleError) as e:
        load_bundle(folder)
    msg = str(e.value)
    assert str(folder / "unet" / "diffusion_pytorch_model.bin") in msg
    assert "safetensors" in msg and "pickle" in msg
    assert not no_loading


def test_unknown_stack_in_manifest(tiny_bundles, tmp_path, offline, no_loading):
    folder = broken_copy(tiny_bundles["sd-turbo"], tmp_path)
    manifest = json.loads((folder / "stylecam.json").read_text())
    manifest["stack"] = "sdxl-lightning"
    (folder / "stylecam.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as e:
        load_bundle(folder)
    assert str(folder / "stylecam.json") in str(e.value)
    assert "unknown stack 'sdxl-lightning'" in str(e.value) and "mllm-edit" in str(e.value)
    assert not no_loading


def test_corrupt_manifest(tiny_bundles, tmp_path, offline, no_loading):
    folder = broken_copy(tiny_bundles["sd-turbo"], tmp_path)
    text = (folder / "stylecam.json").read_text()
    (folder / "stylecam.json").write_text(text[: len(text) // 2])
    with pytest.raises(BundleError) as e:
        load_bundle(folder)
    assert str(folder / "stylecam.json") in str(e.value) and "corrupt" in str(e.value)
    assert not no_loading


def test_toml_manifest_is_read_and_unknown_keys_are_named(tiny_bundles, tmp_path, offline):
    folder = broken_copy(tiny_bundles["sd-turbo"], tmp_path)
    (folder / "stylecam.json").unlink()
    (folder / "stylecam.toml").write_text('stack = "sd-turbo"\nsize = [64, 64]\nsteps = 2\nstrenght = 0.4\n')
    with pytest.raises(BundleError, match=r"stylecam\.toml: unknown key\(s\) 'strenght'"):
        load_bundle(folder)
    (folder / "stylecam.toml").write_text('stack = "sd-turbo"\nsize = [64, 64]\nsteps = 2\n')
    assert load_bundle(folder).manifest.steps == 2


def test_corrupt_component_config_is_named(tiny_bundles, tmp_path, offline, no_loading):
    folder = broken_copy(tiny_bundles["sd-turbo"], tmp_path)
    (folder / "unet" / "config.json").write_text("{ not json")
    with pytest.raises(BundleError) as e:
        load_bundle(folder)
    assert str(folder / "unet" / "config.json") in str(e.value)
    assert not no_loading


def test_components_that_do_not_fit_each_other(tiny_bundles, tmp_path, offline, no_loading):
    folder = broken_copy(tiny_bundles["sd-turbo"], tmp_path)
    shutil.rmtree(folder / "unet")
    shutil.copytree(tiny_bundles["pix2pix"] / "unet", folder / "unet")  # 8 input channels
    with pytest.raises(BundleError) as e:
        load_bundle(folder)
    msg = str(e.value)
    assert str(folder / "unet" / "config.json") in msg and "in_channels is 8" in msg
    assert not no_loading


def test_every_problem_is_listed_at_once(tiny_bundles, tmp_path, offline, no_loading):
    folder = broken_copy(tiny_bundles["sd-turbo"], tmp_path)
    shutil.rmtree(folder / "tokenizer")
    (folder / "text_encoder" / "model.safetensors").unlink()
    with pytest.raises(BundleError) as e:
        load_bundle(folder)
    msg = str(e.value)
    assert str(folder / "tokenizer") in msg and str(folder / "text_encoder") in msg


def test_lllite_adapter_that_does_not_fit_is_named(tiny_bundles, tmp_path, offline):
    from safetensors.torch import load_file, save_file

    folder = broken_copy(tiny_bundles["mllm-edit+lllite"], tmp_path)
    weights = folder / "lllite" / "lllite.safetensors"
    state = load_file(str(weights))
    key = next(k for k in state if k.endswith("down.0.weight"))
    state[key] = torch.zeros(state[key].shape[0], state[key].shape[1] + 3)
    save_file(state, str(weights))
    with pytest.raises(BundleError) as e:
        load_bundle(folder)
    assert str(weights) in str(e.value) and "shape" in str(e.value)


def test_folder_without_manifest_or_unet_is_not_a_bundle(tmp_path, offline):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no manifest .* and no unet/config.json"):
        load_bundle(tmp_path / "empty")
    with pytest.raises(BundleError, match=f"the model folder {tmp_path / 'nope'} does not exist"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(BundleError, match="no such folder, and not a hub id"):
        load_bundle("not a model")


@pytest.mark.parametrize("change, message", [
    ({"size": [60, 64]}, "multiples of 8"),
    ({"steps": 0}, "'steps' must be"),
    ({"strength": 1.5}, "'strength' must be"),
    ({"concat": "width"}, "stack sd-turbo needs concat none"),
    ({"components": {"qwen": "qwen"}}, "component 'qwen' is not part of the sd-turbo stack"),
    ({"format": 7}, "manifest format 7"),
    ({"text_bucket": -1}, "'text_bucket' must be a whole number from 0"),
    ({"text_bucket": 8.5}, "'text_bucket' must be"),
])
def test_manifest_validation_messages(change, message):
    with pytest.raises(BundleError, match=message):
        B.manifest_from_dict({"stack": "sd-turbo", **change}, "test.json")


def test_text_bucket_defaults_to_64_for_the_edit_stack_and_reaches_the_conditioner(tmp_path, offline):
    edit = B.default_manifest("mllm-edit")
    assert edit.text_bucket == 64 and edit.to_dict()["text_bucket"] == 64
    assert B.default_manifest("sd-turbo").text_bucket == 0
    # A saved bundle's manifest setting is what the loaded conditioner runs with; 0 is "off".
    bundle = B.build_tiny_bundle("mllm-edit")
    assert bundle.qwen.pad_to_multiple_of == 64
    bundle.manifest = dataclasses.replace(bundle.manifest, text_bucket=8)
    bundle.save(tmp_path / "b8")
    assert load_bundle(tmp_path / "b8").qwen.pad_to_multiple_of == 8
    bundle.manifest = dataclasses.replace(bundle.manifest, text_bucket=0)
    bundle.save(tmp_path / "b0")
    assert load_bundle(tmp_path / "b0").qwen.pad_to_multiple_of is None


def test_save_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(BundleError, match="not an empty folder"):
        B.build_tiny_bundle("sd-turbo").save(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no half-written temp folder left


# --------------------------------------------------------------------------------------------
# The hub cache: aliases resolve offline from a cache, fail clearly without one


def test_stack_alias_resolves_from_the_hub_cache_offline(tiny_bundles, offline):
    fill_cache_with_tiny_sd_turbo(offline, tiny_bundles["sd-turbo"])
    bundle = load_bundle("sd-turbo")
    assert bundle.stack == "sd-turbo"
    assert bundle.origin == "sd-turbo"
    # The alias's default manifest, not the tiny one: 512x512, 1 step, strength 0.5.
    assert bundle.manifest.size == (512, 512) and bundle.manifest.strength == 0.5


def test_hub_id_of_a_bundle_repository_loads_from_the_cache(tiny_bundles, offline):
    tiny = tiny_bundles["mllm-edit+lllite"]
    fake_hub_repo(offline, "someone/tiny-edit", {str(p.relative_to(tiny)): p for p in tiny.rglob("*") if p.is_file()})
    bundle = load_bundle("someone/tiny-edit")
    assert bundle.stack == "mllm-edit" and bundle.origin == "someone/tiny-edit"
    assert bundle.manifest.size == (64, 64) and bundle.lllite is not None and bundle.qwen is not None
    with pytest.raises(BundleError, match="someone/other is not in the local hub cache"):
        load_bundle("someone/other")


def test_stack_alias_without_cache_names_the_repo(offline):
    with pytest.raises(BundleError) as e:
        load_bundle("sd-turbo")
    msg = str(e.value)
    assert "stabilityai/sd-turbo" in msg and "HF_HUB_OFFLINE is set" in msg and "stylecam models pull" in msg


# --------------------------------------------------------------------------------------------
# Full-size reference configs (meta device: shapes only, nothing allocated)


def test_full_size_parameter_counts_match_the_published_models():
    turbo = B.full_parameter_counts("sd-turbo")
    assert turbo["unet"] == 865_910_724  # SD 2.1-base U-Net, what SD-Turbo ships
    assert turbo["text_encoder"] == 340_387_840  # OpenCLIP ViT-H/14 text, 23 layers
    assert 1_150_000 < turbo["vae_encoder"] < 1_300_000 and 1_150_000 < turbo["vae_decoder"] < 1_300_000
    pix = B.full_parameter_counts("pix2pix")
    assert pix["text_encoder"] == 123_060_480  # CLIP ViT-L/14 text
    assert 855e6 < pix["unet"] < 865e6  # SD 1.5 U-Net with 8 input channels
    edit = B.full_parameter_counts("mllm-edit")
    assert 0.35e9 <= edit["unet"] <= 0.45e9
    assert edit["qwen"] == 2_127_532_032  # Qwen3-VL-2B


def test_full_bundle_builds_directly_in_the_target_dtype():
    bundle = B.build_full_bundle("mllm-edit", device="meta", dtype=torch.bfloat16)
    params = [p for m in (bundle.unet, bundle.vae, bundle.qwen) for p in m.parameters()]
    assert {p.dtype for p in params} == {torch.bfloat16}
    assert {p.device.type for p in params} == {"meta"}
    assert bundle.unet.config.cross_attention_dim == bundle.qwen.hidden_size == 2048
    assert bundle.unet.mid_block is None
    assert torch.get_default_dtype() == torch.float32  # the build context restored it


def test_full_edit_unet_runs_on_width_concat_latents_at_toy_resolution():
    # The real layout, random weights, a 64x128 (noisy | source) latent: shapes flow through.
    from diffusers import UNet2DConditionModel

    with B._seeded(0):
        unet = UNet2DConditionModel(**{**B.EDIT_UNET, "block_out_channels": [32, 64, 128],
                                       "attention_head_dim": [2, 4, 8], "cross_attention_dim": 64})
    with torch.no_grad():
        out = unet(torch.randn(1, 4, 8, 16), 999.0, encoder_hidden_states=torch.randn(1, 5, 64)).sample
    assert out.shape == (1, 4, 8, 16)


# --------------------------------------------------------------------------------------------
# `stylecam models`


def test_models_tiny_writes_a_loadable_bundle(tmp_path, capsys, offline):
    out = tmp_path / "b"
    assert cli.main(["models", "tiny", "--stack", "pix2pix", "--out", str(out), "--seed", "3",
                     "--size", "48x32"]) == 0
    assert "wrote a tiny pix2pix bundle" in capsys.readouterr().out
    bundle = load_bundle(out)
    assert bundle.stack == "pix2pix" and bundle.manifest.size == (48, 32)
    assert not torch.equal(bundle.unet.conv_in.weight, B.build_tiny_bundle("pix2pix").unet.conv_in.weight)
    assert cli.main(["models", "check", str(out)]) == 0
    assert "ok: pix2pix bundle" in capsys.readouterr().out
    assert cli.main(["models", "tiny", "--stack", "pix2pix", "--out", str(out)]) == 1
    assert "not an empty folder" in capsys.readouterr().err


def test_models_pull_offline_says_what_to_do(offline, capsys):
    assert cli.main(["models", "pull", "sd-turbo"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "cannot download sd-turbo" in err and "HF_HUB_OFFLINE is set" in err
    assert "stabilityai/sd-turbo" in err and "madebyollin/taesd" in err


def test_models_pull_offline_with_the_cache_filled_is_a_no_op(offline, tiny_bundles, capsys):
    fill_cache_with_tiny_sd_turbo(offline, tiny_bundles["sd-turbo"])
    assert cli.main(["models", "pull", "sd-turbo"]) == 0
    assert "already in the cache" in capsys.readouterr().out
    assert cli.main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "in the cache" in out.split("pix2pix")[0] and "not downloaded (`stylecam models pull pix2pix`)" in out


def test_models_pull_refuses_stacks_without_public_weights(capsys):
    assert cli.main(["models", "pull", "mllm-edit"]) == 2
    assert "no public weights" in capsys.readouterr().err
    assert cli.main(["models", "pull", "sdxl"]) == 2
    assert "unknown stack 'sdxl'" in capsys.readouterr().err


def test_models_check_names_the_broken_file(tiny_bundles, tmp_path, offline, capsys):
    folder = broken_copy(tiny_bundles["mllm-edit"], tmp_path)
    (folder / "qwen" / "model.safetensors").unlink()
    assert cli.main(["models", "check", str(folder)]) == 1
    assert str(folder / "qwen") in capsys.readouterr().err
