"""ControlNet-LLLite: the folded form against the hooked reference, compile, weights, hook sets."""

from __future__ import annotations

import json
import re

import pytest
import torch
from diffusers import UNet2DConditionModel
from safetensors.torch import load_file, save_file

from stylecam.core.stylize.lllite import (
    FoldedLLLiteUNet,
    HookTarget,
    LLLiteAdapter,
    LLLiteAdapters,
    LLLiteConfig,
    LLLiteError,
    LLLiteLinear,
    attach_reference,
    build_adapters,
    count_hooks,
    hook_targets,
    load_adapters,
    load_kohya,
    randomize_,
    save_adapters,
    save_kohya,
    select_hooks,
    to_control_image,
)

LATENT = (16, 16)
CONFIG = LLLiteConfig(cond_emb_dim=8, mlp_dim=16)


def tiny_unet(seed: int = 0) -> UNet2DConditionModel:
    """Two levels with cross-attention everywhere: hooks at latent size and at /2."""
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32, attention_head_dim=8).eval()


def trained_adapters(unet, config=CONFIG, seed=1) -> LLLiteAdapters:
    # A fresh adapter is a no-op (zero ``up``), which any implementation would "match": give
    # every adapter a real effect.
    torch.manual_seed(seed)
    return randomize_(build_adapters(unet, config), std=0.2, seed=seed)


def inputs(batch=2, width_concat=1, seed=2):
    gen = torch.Generator().manual_seed(seed)
    h, w = LATENT
    latent = torch.randn(batch, 4, h, w * width_concat, generator=gen)
    timestep = torch.full((batch,), 500.0)
    states = torch.randn(batch, 7, 32, generator=gen)
    return latent, timestep, states


def control(batch=2, seed=3):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, LATENT[0] * 8, LATENT[1] * 8, generator=gen) * 2 - 1


def plain(unet, latent, timestep, states):
    with torch.no_grad():
        return unet(latent, timestep, states, return_dict=False)[0]


def snapshot(unet):
    return {k: v.clone() for k, v in unet.state_dict().items()}


def same_state(unet, snap) -> bool:
    state = unet.state_dict()
    return state.keys() == snap.keys() and all(torch.equal(state[k], snap[k]) for k in snap)


def folded_count(unet) -> int:
    return sum(isinstance(m, LLLiteLinear) for m in unet.modules())


# --------------------------------------------------------------------------------------------
# Hook enumeration and selection


def test_tiny_unet_hooks_levels_and_selection():
    targets = hook_targets(tiny_unet())
    # Per transformer block: attn1 q/k/v + attn2 q. Blocks: down 2x1, mid 1, up 2x2.
    assert len(targets) == 28
    by_block = {}
    for t in targets:
        block = ".".join(t.name.split(".")[:1 if t.name.startswith("mid") else 2])
        by_block.setdefault(block, set()).add(t.level)
    assert by_block == {"down_blocks.0": {0}, "down_blocks.1": {1}, "mid_block": {1},
                        "up_blocks.0": {1}, "up_blocks.1": {0}}
    assert {t.name.rsplit(".", 2)[-2] + "." + t.name.rsplit(".", 1)[-1] for t in targets} == {
        "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn2.to_q"}
    assert targets[0].grid(LATENT) == (16, 16) and targets[4].grid(LATENT, width_concat=2) == (8, 16)

    assert len(select_hooks(targets, "down_blocks")) == 8
    assert len(select_hooks(targets, "mid_block")) == 4
    assert len(select_hooks(targets, "up_blocks")) == 16
    assert len(select_hooks(targets, "down_blocks, mid_block")) == 12
    assert len(select_hooks(targets, ["up_blocks.1"])) == 8
    assert len(select_hooks(targets, "all")) == 28
    two = [targets[3].name, targets[20].name]
    assert [t.name for t in select_hooks(targets, two)] == two
    # A prefix matches at dot boundaries only: "down_blocks.1" must not pick "down_blocks.10".
    assert all(t.name.startswith("down_blocks.1.") for t in select_hooks(targets, "down_blocks.1"))
    with pytest.raises(LLLiteError, match=r"'middle'.*down_blocks, mid_block, up_blocks"):
        select_hooks(targets, "middle")


SD21 = dict(sample_size=96, block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
            cross_attention_dim=1024, use_linear_projection=True, layers_per_block=2)
# The 0.39 B-class edit U-Net: BK-SDM-v2-tiny layout (no mid block), 8 input channels, 2048-d
# cross-attention.
BK_SDM_TINY = dict(sample_size=64, in_channels=8, block_out_channels=(320, 640, 1280),
                   down_block_types=("CrossAttnDownBlock2D",) * 3, up_block_types=("CrossAttnUpBlock2D",) * 3,
                   mid_block_type=None, layers_per_block=1, cross_attention_dim=2048,
                   attention_head_dim=(5, 10, 20))
SDXL = dict(sample_size=128, block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, attention_head_dim=(5, 10, 20),
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816, layers_per_block=2)


def test_full_size_hook_counts_on_meta_device():
    assert count_hooks(SD21, "down_blocks") == {"down_blocks": 24, "mid_block": 4, "up_blocks": 36,
                                                "total": 64, "selected": 24}
    assert count_hooks(BK_SDM_TINY, "down_blocks") == {"down_blocks": 12, "mid_block": 0, "up_blocks": 24,
                                                       "total": 36, "selected": 12}
    # kohya's default training set for SDXL is input + middle blocks: 136 modules.
    sdxl = count_hooks(SDXL, "down_blocks,mid_block")
    assert (sdxl["total"], sdxl["down_blocks"], sdxl["selected"]) == (280, 96, 136)
    # The paper's U-Net (DreamLite-mobile) reports 108 hooks, 38 of them in down_blocks (its best
    # subset). diffusers' DreamLiteUNetModel — whose first two down blocks have no
    # self-attention, hence attn2.to_q only — gives exactly that with 1/2/4 transformer layers.
    from diffusers.models.unets.unet_dreamlite import DreamLiteUNetModel

    dreamlite = count_hooks({"transformer_layers_per_block": (1, 2, 4)}, "down_blocks", DreamLiteUNetModel)
    assert (dreamlite["total"], dreamlite["selected"]) == (108, 38)


def _kohya_depth(kohya_name: str) -> int:
    """kohya's own block-index → conditioning depth rule (control_net_lllite.py, SDXL)."""
    match = re.match(r"lllite_unet_(input_blocks|middle_block|output_blocks)_(\d+)_", kohya_name)
    block, index = match.group(1), int(match.group(2))
    if block == "input_blocks":
        return 1 if index <= 2 else (2 if index <= 5 else 3)
    if block == "middle_block":
        return 3
    return 3 if index <= 2 else (2 if index <= 5 else 1)


def test_kohya_names_and_depths_for_sdxl():
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(SDXL)
    targets = {t.name: t for t in hook_targets(unet)}
    assert targets["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"].kohya_name == \
        "lllite_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    assert targets["down_blocks.2.attentions.1.transformer_blocks.9.attn1.to_v"].kohya_name == \
        "lllite_unet_input_blocks_8_1_transformer_blocks_9_attn1_to_v"
    assert targets["mid_block.attentions.0.transformer_blocks.9.attn2.to_q"].kohya_name == \
        "lllite_unet_middle_block_1_transformer_blocks_9_attn2_to_q"
    assert targets["up_blocks.0.attentions.2.transformer_blocks.3.attn1.to_k"].kohya_name == \
        "lllite_unet_output_blocks_2_1_transformer_blocks_3_attn1_to_k"
    assert targets["up_blocks.1.attentions.0.transformer_blocks.1.attn2.to_q"].kohya_name == \
        "lllite_unet_output_blocks_3_1_transformer_blocks_1_attn2_to_q"
    # Our level (from the U-Net's own down/up samplers) agrees with kohya's index rule everywhere.
    for t in targets.values():
        assert t.level + 1 == _kohya_depth(t.kohya_name), t.name


@pytest.mark.parametrize("level, layers", [
    (0, [(3, 4, 4), (4, 8, 2)]),
    (1, [(3, 4, 4), (4, 8, 4)]),
    (2, [(3, 4, 4), (4, 4, 4), (4, 8, 2)]),
])
def test_conditioning_cnn_has_kohyas_shape(level, layers):
    adapter = LLLiteAdapter(in_features=32, cond_emb_dim=8, mlp_dim=16, level=level)
    convs = [m for m in adapter.conditioning1 if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0]) for c in convs] == layers
    assert [k for k in adapter.state_dict() if k.startswith("conditioning1")] == [
        f"conditioning1.{2 * i}.{p}" for i in range(len(layers)) for p in ("weight", "bias")]
    emb = adapter.embed(torch.zeros(2, 3, 128, 128))
    assert emb.shape == (2, (16 >> level) ** 2, 8)
    assert torch.count_nonzero(adapter.up[0].weight) == 0 and torch.count_nonzero(adapter.up[0].bias) == 0


# --------------------------------------------------------------------------------------------
# Folded form == reference form


@pytest.mark.parametrize("hooks, count", [(None, 28), ("down_blocks", 8)])
def test_folded_equals_reference(hooks, count):
    unet = tiny_unet()
    adapters = trained_adapters(unet)
    args = inputs()
    image = control()
    base = plain(unet, *args)
    snap = snapshot(unet)

    ref = attach_reference(unet, adapters, hooks)
    ref.set_cond_image(image)
    expected = plain(unet, *args)
    ref.detach()
    assert (expected - base).abs().max() > 1e-2, "the adapters must change the output"
    assert torch.equal(plain(unet, *args), base), "detach must restore the plain U-Net"

    folded = FoldedLLLiteUNet(unet, adapters, hooks, latent_size=LATENT, batch_size=2)
    assert folded_count(unet) == count and len(folded.hook_names) == count
    with torch.no_grad():
        assert torch.equal(folded(*args), base), "no conditioning written yet: plain output"
        folded.refresh_conditioning(image)
        got = folded(*args)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)

    assert folded.unfold() is unet and folded_count(unet) == 0
    assert same_state(unet, snap)
    assert torch.equal(plain(unet, *args), base)


def test_subset_differs_from_all_hooks():
    unet = tiny_unet()
    adapters = trained_adapters(unet)
    args, image = inputs(), control()
    outs = {}
    for hooks in (None, "down_blocks"):
        folded = FoldedLLLiteUNet(unet, adapters, hooks, latent_size=LATENT, batch_size=2)
        folded.refresh_conditioning(image)
        with torch.no_grad():
            outs[hooks] = folded(*args)
        folded.unfold()
    assert (outs[None] - outs["down_blocks"]).abs().max() > 1e-3


def test_shared_control_image_and_cfg_batch():
    """One control image for a batch of 4 (kohya repeats the embedding over the U-Net batch)."""
    unet = tiny_unet()
    adapters = trained_adapters(unet)
    args, image = inputs(batch=4), control(batch=1)
    ref = attach_reference(unet, adapters, "down_blocks,mid_block", multiplier=0.7)
    ref.set_cond_image(image)
    expected = plain(unet, *args)
    ref.detach()
    folded = FoldedLLLiteUNet(unet, adapters, "down_blocks,mid_block", latent_size=LATENT, batch_size=1,
                              multiplier=0.7)
    folded.refresh_conditioning(image)
    with torch.no_grad():
        torch.testing.assert_close(folded(*args), expected, atol=1e-5, rtol=0)


def test_width_concat_conditions_the_left_latent_only():
    unet = tiny_unet()
    adapters = trained_adapters(unet, LLLiteConfig(8, 16, width_concat=2))
    args, image = inputs(width_concat=2), control()
    emb = adapters[adapters.names()[0]].embed(image, width_concat=2).reshape(2, 16, 32, 8)
    assert torch.count_nonzero(emb[:, :, 16:]) == 0 and torch.count_nonzero(emb[:, :, :16]) > 0

    ref = attach_reference(unet, adapters)
    ref.set_cond_image(image)
    expected = plain(unet, *args)
    ref.detach()
    folded = FoldedLLLiteUNet(unet, adapters, latent_size=LATENT, batch_size=2)
    folded.refresh_conditioning(image)
    with torch.no_grad():
        torch.testing.assert_close(folded(*args), expected, atol=1e-5, rtol=0)


def test_control_image_checked():
    unet = tiny_unet()
    folded = FoldedLLLiteUNet(unet, trained_adapters(unet), latent_size=LATENT, batch_size=2)
    with pytest.raises(LLLiteError, match=r"\(B, 3, 128, 128\).*got \(2, 3, 64, 64\)"):
        folded.refresh_conditioning(torch.zeros(2, 3, 64, 64))
    with pytest.raises(LLLiteError, match="divisible by 2"):
        FoldedLLLiteUNet(tiny_unet(), trained_adapters(unet), latent_size=(15, 16))
    frames = torch.tensor([[[[0, 255, 128]]]], dtype=torch.uint8)
    torch.testing.assert_close(to_control_image(frames).flatten(), torch.tensor([-1.0, 1.0, 128 / 127.5 - 1]))


# --------------------------------------------------------------------------------------------
# torch.compile


def _compile_and_check(backend: str, device: str = "cpu", mode: str | None = None):
    from torch._dynamo.utils import counters

    unet = tiny_unet().to(device)
    adapters = trained_adapters(unet).to(device)
    args = [a.to(device) for a in inputs()]
    image1, image2 = control(seed=3).to(device), control(seed=4).to(device)

    expected = []
    for image in (image1, image2):
        ref = attach_reference(unet, adapters)
        ref.set_cond_image(image)
        expected.append(plain(unet, *args))
        ref.detach()

    folded = FoldedLLLiteUNet(unet, adapters, latent_size=LATENT, batch_size=2)
    buffers = [b.data_ptr() for b in folded.conditioning_buffers()]
    torch.compiler.reset()
    counters.clear()
    try:
        step = torch.compile(folded, fullgraph=True, backend=backend, mode=mode)
        with torch._dynamo.config.patch(error_on_recompile=True), torch.no_grad():
            outs = []
            # With CUDA graphs the calls are warm-up, record, then replays: the third call
            # replays with conditioning written after the recording.
            for image in (image1, image2, image1):
                folded.refresh_conditioning(image)
                outs.append(step(*args).clone())
            folded.set_multiplier(0.0)  # strength is a buffer too: no recompile
            outs.append(step(*args).clone())
        graphs = counters["stats"]["unique_graphs"]
        cudagraph_skips = counters["inductor"]["cudagraph_skips"]
    finally:
        torch.compiler.reset()
    assert graphs == 1, "one graph, compiled once"
    if mode == "reduce-overhead":
        assert cudagraph_skips == 0, "the step must run as a CUDA graph"
    assert [b.data_ptr() for b in folded.conditioning_buffers()] == buffers
    assert (outs[0] - outs[1]).abs().max() > 1e-3, "new conditioning must change the output"
    tol = 1e-5 if device == "cpu" else 1e-3
    for out, want in zip(outs, (expected[0], expected[1], expected[0], plain(folded.unfold(), *args))):
        torch.testing.assert_close(out, want, atol=tol, rtol=0)


def test_compile_fullgraph_no_recompile_on_new_conditioning():
    _compile_and_check("aot_eager")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compile_inductor():
    """Inductor itself, on the GPU (on the CPU it takes 45-100 s on two cores, so CI traces the
    same graph with aot_eager above)."""
    _compile_and_check("inductor", "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compile_cuda_graphs():
    """reduce-overhead = CUDA graphs: the buffers written in place are read by the replay."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    _compile_and_check("inductor", device="cuda", mode="reduce-overhead")


# --------------------------------------------------------------------------------------------
# Weights


def test_kohya_round_trip(tmp_path):
    unet = tiny_unet()
    adapters = trained_adapters(unet)
    path = save_kohya(adapters, tmp_path / "lllite.safetensors")
    state = load_file(str(path))
    assert "lllite_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q.down.0.weight" in state
    assert "lllite_unet_middle_block_1_transformer_blocks_0_attn2_to_q.conditioning1.2.weight" in state
    assert "lllite_unet_output_blocks_3_1_transformer_blocks_0_attn1_to_v.up.0.bias" in state
    assert len(state) == 28 * 10  # conditioning1 (2 convs) + down + mid + up, weight and bias each

    loaded = load_adapters(path, tiny_unet())
    assert loaded.names() == adapters.names() and (loaded.config.cond_emb_dim, loaded.config.mlp_dim) == (8, 16)
    args, image = inputs(), control()
    outs = []
    for a in (adapters, loaded):
        folded = FoldedLLLiteUNet(unet, a, latent_size=LATENT, batch_size=2)
        folded.refresh_conditioning(image)
        with torch.no_grad():
            outs.append(folded(*args))
        folded.unfold()
    assert torch.equal(outs[0], outs[1])

    # kohya trains input + middle blocks by default: such a file loads as that subset.
    subset = {k: v for k, v in state.items() if "output_blocks" not in k}
    save_file(subset, str(tmp_path / "inputs_only.safetensors"))
    assert len(load_kohya(tmp_path / "inputs_only.safetensors", unet)) == 12


def test_own_layout_round_trip(tmp_path):
    unet = tiny_unet()
    adapters = trained_adapters(unet, LLLiteConfig(8, 16, hooks="down_blocks", width_concat=2))
    folder = save_adapters(adapters, tmp_path / "lllite")
    config = json.loads((folder / "lllite_config.json").read_text())
    assert config["hooks"] == adapters.names() and len(config["hooks"]) == 8
    assert (config["cond_emb_dim"], config["mlp_dim"], config["width_concat"]) == (8, 16, 2)
    assert "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_q.mid.0.weight" in load_file(
        str(folder / "lllite.safetensors"))

    loaded = load_adapters(folder, unet)
    assert loaded.config.width_concat == 2 and loaded.names() == adapters.names()
    for name in adapters.names():
        for (k, v), (k2, v2) in zip(adapters[name].state_dict().items(), loaded[name].state_dict().items()):
            assert k == k2 and torch.equal(v, v2)


def test_misshaped_kohya_file_is_refused_and_unet_untouched(tmp_path):
    unet = tiny_unet()
    state = dict(trained_adapters(unet).kohya_state_dict())
    key = "lllite_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_k.down.0.weight"
    state[key] = torch.zeros(16, 48)  # in_features 48; the U-Net layer has 64
    bad = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(bad))
    snap = snapshot(unet)
    with pytest.raises(LLLiteError) as err:
        load_adapters(bad, unet)
    message = str(err.value)
    assert str(bad) in message and key in message and "(16, 48)" in message and "(16, 64)" in message
    assert same_state(unet, snap) and folded_count(unet) == 0


def test_bad_files_give_one_clear_error(tmp_path):
    unet = tiny_unet()
    state = trained_adapters(unet).kohya_state_dict()

    pickle = tmp_path / "lllite.pt"
    pickle.write_bytes(b"not loaded")
    with pytest.raises(LLLiteError, match=r"lllite\.pt: only \.safetensors"):
        load_adapters(pickle, unet)

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(LLLiteError, match="garbage.safetensors: not a readable safetensors file"):
        load_adapters(garbage, unet)

    # A file for a deeper U-Net (SDXL's input_blocks.7) names a layer this one lacks.
    foreign = {k.replace("input_blocks_1_1", "input_blocks_7_1"): v for k, v in state.items()}
    save_file(foreign, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(LLLiteError, match=r"foreign.safetensors: key prefix 'lllite_unet_input_blocks_7_1"):
        load_adapters(tmp_path / "foreign.safetensors", unet)

    missing = {k: v for k, v in state.items() if not k.endswith("attn2_to_q.mid.0.bias")}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(LLLiteError, match=r"missing.safetensors: missing key '.*attn2_to_q\.mid\.0\.bias'"):
        load_adapters(tmp_path / "missing.safetensors", unet)

    folder = save_adapters(trained_adapters(unet), tmp_path / "ours")
    config = json.loads((folder / "lllite_config.json").read_text())
    config["hooks"].append("up_blocks.5.attentions.0.transformer_blocks.0.attn1.to_q")
    (folder / "lllite_config.json").write_text(json.dumps(config))
    with pytest.raises(LLLiteError, match=r"lllite_config.json: hook 'up_blocks.5.*' is not a hookable layer"):
        load_adapters(folder, unet)
    with pytest.raises(LLLiteError, match="no lllite_config.json"):
        load_adapters(tmp_path, unet)


def test_adapters_that_do_not_fit_attach_nothing():
    """A set whose last adapter has no layer in this U-Net: refused before any layer changes."""
    unet = tiny_unet()
    good = trained_adapters(unet)
    targets = list(good.targets.values()) + [HookTarget(
        "up_blocks.1.attentions.5.transformer_blocks.0.attn1.to_q", 32, 0, "lllite_unet_x")]
    misfit = LLLiteAdapters(CONFIG, targets)
    snap = snapshot(unet)
    with pytest.raises(LLLiteError, match=r"no hookable layer 'up_blocks\.1\.attentions\.5"):
        FoldedLLLiteUNet(unet, misfit, latent_size=LATENT)
    with pytest.raises(LLLiteError, match=r"no hookable layer 'up_blocks\.1\.attentions\.5"):
        attach_reference(unet, misfit)
    assert same_state(unet, snap) and folded_count(unet) == 0
    assert all(not m._forward_pre_hooks for m in unet.modules())

    # Adapters sized for a wider U-Net do not fit either.
    torch.manual_seed(0)
    wide = UNet2DConditionModel(
        sample_size=16, block_out_channels=(64, 128), layers_per_block=1, cross_attention_dim=32,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=32)
    with pytest.raises(LLLiteError, match="expects in_features=64 .* has in_features=32"):
        FoldedLLLiteUNet(unet, build_adapters(wide, CONFIG), latent_size=LATENT)
    assert same_state(unet, snap) and folded_count(unet) == 0
