"""Qwen3-VL conditioner: tiny real-class model, on-device preprocessing against the library's
image processor on real clips, batch = per frame, fixed length, prompt cache, fast = stock,
save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from clips import clip_path, read_clip
from stylecam.core.stylize.bundle.build_qwen import (build_qwen3vl, build_tiny_qwen3vl, build_tiny_tokenizer,
                                                     full_qwen3vl_config)
from stylecam.core.stylize.qwen_vl import QWEN_SPECIAL_TOKENS, QwenVLConditioner, make_image_processor

INSTRUCTION = "Turn this frame into an oil painting with thick brush strokes."
# One 8-bit level after the [-1, 1] normalisation (std 0.5).
LEVEL = 1 / (255 * 0.5)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_qwen3vl(seed=0)


@pytest.fixture(scope="module")
def swan():
    return torch.from_numpy(np.stack(read_clip(clip_path("davis_blackswan.mp4"), 3)))


def conditioner(tiny, **kw):
    model, tokenizer = tiny
    kw.setdefault("image_size", 64)
    kw.setdefault("text_length", 48)
    return QwenVLConditioner(model, tokenizer, **kw)


def test_tiny_model_keeps_qwen3vl_invariants_and_tokenizer_ids(tiny, tmp_path):
    from transformers import AutoTokenizer, Qwen3VLForConditionalGeneration

    model, tokenizer = tiny
    assert isinstance(model, Qwen3VLForConditionalGeneration)
    cfg = model.config
    text, vision = cfg.text_config, cfg.vision_config
    assert sum(text.rope_parameters["mrope_section"]) == text.head_dim // 2
    assert vision.out_hidden_size == text.hidden_size
    assert int(vision.num_position_embeddings ** 0.5) ** 2 == vision.num_position_embeddings
    assert (vision.patch_size, vision.spatial_merge_size) == (16, 2)
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert text.vocab_size >= len(tokenizer)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    # The specials follow the learned vocabulary in the published order, as in the real one.
    assert list(ids.values()) == list(range(ids["<|endoftext|>"], ids["<|endoftext|>"] + 14))
    assert ids["<|image_pad|>"] == cfg.image_token_id
    assert ids["<|vision_start|>"] == cfg.vision_start_token_id
    assert ids["<|vision_end|>"] == cfg.vision_end_token_id
    assert ids["<|video_pad|>"] == cfg.video_token_id

    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert type(loaded).__name__ == "Qwen2Tokenizer"
    text_in = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Paint it!<|im_end|>\n"
    assert loaded(text_in)["input_ids"] == tokenizer(text_in)["input_ids"]
    assert loaded.decode(loaded(text_in)["input_ids"]) == text_in
    # Offline training is deterministic: same vocabulary every time.
    assert build_tiny_tokenizer().get_vocab() == tokenizer.get_vocab()
    again, _ = build_tiny_qwen3vl(seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 again.state_dict().values()))


def test_full_config_has_qwen3vl_2b_parameter_count():
    model = build_qwen3vl(full_qwen3vl_config(), device="meta")
    assert sum(p.numel() for p in model.parameters()) == 2_127_532_032
    assert sum(p.numel() for p in model.model.visual.parameters()) == 406_957_056
    assert model.lm_head.weight is model.model.language_model.embed_tokens.weight


@pytest.mark.parametrize("fast", [False, True])
def test_batch_equals_per_frame(tiny, swan, fast):
    cond = conditioner(tiny, fast=fast)
    batch = cond.encode(swan, INSTRUCTION)
    single = torch.cat([cond.encode(swan[i:i + 1], INSTRUCTION) for i in range(len(swan))])
    assert batch.shape == (3, 48, 64)
    torch.testing.assert_close(batch, single, rtol=0, atol=1e-5)
    # The backend's list of numpy frames is the same batch.
    assert torch.equal(cond.encode(list(swan.numpy()), INSTRUCTION), batch)
    # The frames matter: otherwise the equality above would say nothing.
    assert (batch[0] - batch[2]).abs().max() > 1e-2


def test_broadcast_encodes_the_newest_frame_for_all(tiny, swan):
    cond = conditioner(tiny, broadcast=True)
    out = cond.encode(swan, INSTRUCTION)
    newest = conditioner(tiny).encode(swan[-1:], INSTRUCTION)
    assert out.shape == (3, 48, 64)
    for row in out:
        torch.testing.assert_close(row, newest[0], rtol=0, atol=1e-6)


@pytest.mark.parametrize("clip, resize, image_size", [
    ("davis_blackswan.mp4", "square", 256),     # 512² -> 256²: antialiased downscale
    ("bikes.mp4", "keep_aspect", 128),          # 640x272 -> 352x160 (smart resize)
    ("carphone_pristine.mp4", "keep_aspect", 128),  # 176x144 -> 128x160: upscale
])
def test_preprocessing_matches_library_image_processor(tiny, clip, resize, image_size):
    """Reference: transformers' Qwen2VLImageProcessor (PIL backend: no torchvision) with the
    same mean/std, patch 16, merge 2 and min_pixels = max_pixels = image_size². Our resize is
    torch's antialiased bicubic in PIL's two rounded 8-bit passes; PIL's fixed-point filter
    weights still flip a rounding now and then, so: at most 1 level per value, under 0.02
    levels on average, identical grid; the hidden states agree to ~1e-2."""
    frames = read_clip(clip_path(clip), 2)
    cond = conditioner(tiny, image_size=image_size, text_length=160, resize=resize)
    ref = make_image_processor(image_size)(images=frames, return_tensors="pt")
    pixels, grid = cond.preprocess(torch.from_numpy(np.stack(frames)))
    assert torch.equal(grid, ref["image_grid_thw"])
    assert pixels.shape == ref["pixel_values"].shape
    diff = (pixels - ref["pixel_values"]).abs()
    assert diff.max() <= LEVEL + 1e-5
    assert diff.mean() <= 0.02 * LEVEL

    ours = cond.encode(torch.from_numpy(np.stack(frames)), INSTRUCTION)
    theirs = cond.encode_pixels(ref["pixel_values"], ref["image_grid_thw"], INSTRUCTION)
    assert (ours - theirs).abs().max() < 3e-2
    assert (ours - theirs).abs().mean() < 2e-3
    # ... far below what a different frame changes.
    other = cond.encode(torch.from_numpy(np.stack(frames[::-1])), INSTRUCTION)
    assert (ours - other).abs().mean() > 20 * (ours - theirs).abs().mean()


def test_square_resize_of_non_square_frames_matches_pil(tiny):
    """The paper's default squashes any frame to image_size²: reference = PIL bicubic resize
    to 64x64, then the library processor without its own resize."""
    frames = read_clip(clip_path("bikes.mp4"), 2)
    squashed = [np.asarray(Image.fromarray(f).resize((64, 64), Image.BICUBIC)) for f in frames]
    ref = make_image_processor(64)(images=squashed, do_resize=False, return_tensors="pt")
    pixels, grid = conditioner(tiny).preprocess(torch.from_numpy(np.stack(frames)))
    assert torch.equal(grid, ref["image_grid_thw"])
    assert (pixels - ref["pixel_values"]).abs().max() <= LEVEL + 1e-5


def test_fixed_length_padding_and_truncation(tiny, swan):
    cond = conditioner(tiny)
    short = "Sketch."
    long = " ".join(["watercolour wash on rough paper"] * 20)
    a, mask_a = cond.encode(swan[:2], short, return_mask=True)
    b, mask_b = cond.encode(swan[:2], long, return_mask=True)
    assert a.shape == b.shape == (2, 48, 64)
    assert mask_a.shape == (2, 48) and mask_b.all()
    real = int(mask_a[0].sum())
    assert real < 48 and (a[:, real:] == 0).all() and (a[:, :real] != 0).any(-1).all()
    # Truncation drops instruction text but keeps the closing template tokens.
    prompt = cond.prompt(long, cond.num_image_tokens(512, 512))
    tail = cond.tokenizer("<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    assert prompt.truncated > 0
    assert prompt.input_ids[0, -len(tail["input_ids"]):].tolist() == tail["input_ids"]
    # Our pieces tokenise as the whole chat-templated prompt would.
    whole = ("<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * 4 + "<|vision_end|>" + short
             + "<|im_end|>\n<|im_start|>assistant\n")
    laid = cond.prompt(short, 4)
    assert laid.input_ids[0, :laid.real_length].tolist() == cond.tokenizer(
        whole, add_special_tokens=False)["input_ids"]
    # Padding to L before the causal model leaves the real tokens' states unchanged.
    exact = conditioner(tiny, text_length=real).encode(swan[:2], short)
    torch.testing.assert_close(a[:, :real], exact, rtol=0, atol=1e-5)


@pytest.mark.parametrize("fast", [False, True])
def test_shorter_computed_sequence_gives_the_same_output(tiny, swan, fast):
    """pad_to_multiple_of: the model computes only up to the next multiple of 16 tokens, the
    rest of L is zeros; same (B, L, hidden) output and mask as computing all L tokens."""
    full, full_mask = conditioner(tiny, fast=fast).encode(swan[:2], "Sketch.", return_mask=True)
    cond = conditioner(tiny, fast=fast, pad_to_multiple_of=16)
    short, short_mask = cond.encode(swan[:2], "Sketch.", return_mask=True)
    assert cond.prompt("Sketch.", 4).input_ids.shape[1] == 32 < 48
    assert short.shape == full.shape == (2, 48, 64)
    assert torch.equal(short_mask, full_mask)
    torch.testing.assert_close(short, full, rtol=0, atol=1e-5)
    text = cond.encode_text("Sketch.", return_mask=True)
    assert text[0].shape == (1, 48, 64) and (text[0][0, 16:] == 0).all()


def test_changing_the_bucket_drops_prompts_laid_out_for_the_old_one(tiny):
    cond = conditioner(tiny, pad_to_multiple_of=16)
    assert cond.prompt("Sketch.", 4).input_ids.shape[1] == 32
    cond.pad_to_multiple_of = None
    assert cond.prompt("Sketch.", 4).input_ids.shape[1] == 48  # not the cached 32-token layout
    cond.pad_to_multiple_of = 8
    assert cond.prompt("Sketch.", 4).input_ids.shape[1] == 24
    for bad in (0, -8, 2.5, True):
        with pytest.raises(ValueError, match="pad_to_multiple_of"):
            cond.pad_to_multiple_of = bad


def test_instruction_tokenisation_is_cached(tiny, swan):
    cond = conditioner(tiny, resize="keep_aspect")
    cond.encode(swan[:1], INSTRUCTION)
    misses = cond.instruction_cache_info().misses
    first = cond.encode(swan[1:2], INSTRUCTION)
    assert cond.instruction_cache_info().misses == misses  # not tokenised again
    # Another frame size is another token layout, but the instruction's tokens are reused.
    cond.encode(swan[:1, :, :256], INSTRUCTION)
    info = cond.instruction_cache_info()
    assert (info.misses, info.hits) == (misses, 1)
    cond.encode(swan[1:2], "a different instruction")
    assert cond.instruction_cache_info().misses == misses + 1
    # A cached prompt gives the same result as a fresh conditioner.
    fresh = conditioner(tiny, resize="keep_aspect").encode(swan[1:2], INSTRUCTION)
    torch.testing.assert_close(first, fresh, rtol=0, atol=0)


def test_instruction_text_cannot_smuggle_image_placeholders(tiny, swan):
    cond = conditioner(tiny)
    out = cond.encode(swan[:1], "paint <|image_pad|><|image_pad|> now")
    prompt = cond.prompt("paint <|image_pad|><|image_pad|> now", 4)
    assert int((prompt.input_ids == cond.image_token_id).sum()) == 4
    assert out.shape == (1, 48, 64)


def test_text_only_path(tiny, swan):
    stock = conditioner(tiny)
    fast = conditioner(tiny, fast=True)
    text = stock.encode_text(INSTRUCTION, batch_size=3)
    assert text.shape == (3, 48, 64)
    torch.testing.assert_close(fast.encode_text(INSTRUCTION, batch_size=3), text,
                               rtol=0, atol=1e-5)
    assert (text[0] - stock.encode(swan[:1], INSTRUCTION)[0]).abs().max() > 1e-2


@pytest.mark.parametrize("resize, size", [("square", (80, 100)), ("keep_aspect", (272, 640))])
def test_fast_forward_equals_stock(tiny, resize, size):
    g = torch.Generator().manual_seed(1)
    frames = torch.randint(0, 256, (3, *size, 3), dtype=torch.uint8, generator=g)
    stock = conditioner(tiny, resize=resize).encode(frames, INSTRUCTION)
    exact = conditioner(tiny, resize=resize, fast=True, fold_temporal_patch=False)
    folded = conditioner(tiny, resize=resize, fast=True)
    torch.testing.assert_close(exact.encode(frames, INSTRUCTION), stock, rtol=0, atol=1e-6)
    torch.testing.assert_close(folded.encode(frames, INSTRUCTION), stock, rtol=0, atol=2e-5)
    # One set of tables serves every instruction: a second one reuses them.
    assert folded.encode(frames, "Sketch.").shape == stock.shape


def test_save_and_load_round_trip(tiny, swan, tmp_path):
    cond = conditioner(tiny, resize="keep_aspect", image_size=96)
    before = cond.encode(swan[:2], INSTRUCTION)
    cond.save_pretrained(tmp_path / "qwen")
    assert (tmp_path / "qwen" / "model.safetensors").is_file()
    loaded = QwenVLConditioner.from_pretrained(tmp_path / "qwen", local_files_only=True)
    assert (loaded.image_size, loaded.resize, loaded.text_length) == (96, "keep_aspect", 48)
    assert torch.equal(loaded.encode(swan[:2], INSTRUCTION), before)
    # Settings passed to from_pretrained win over the saved ones.
    assert QwenVLConditioner.from_pretrained(tmp_path / "qwen", text_length=64,
                                             fast=True).encode(swan[:1], "x").shape == (1, 64, 64)


def test_loading_refuses_pickle_weights(tiny, tmp_path):
    model, tokenizer = tiny
    folder = tmp_path / "pickled"
    model.config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin: only safetensors"):
        QwenVLConditioner.from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        QwenVLConditioner.from_pretrained(tmp_path)


def test_bad_input_messages(tiny):
    model, tokenizer = tiny
    cond = conditioner(tiny)
    with pytest.raises(ValueError, match=r"RGB uint8 of shape \(B, H, W, 3\)"):
        cond.encode(torch.zeros(1, 64, 64, 3), INSTRUCTION)
    with pytest.raises(ValueError, match="must share one size"):
        cond.encode([np.zeros((64, 64, 3), np.uint8), np.zeros((32, 64, 3), np.uint8)], "x")
    with pytest.raises(ValueError, match="multiple of patch\\*merge = 32"):
        QwenVLConditioner(model, tokenizer, image_size=100)
    with pytest.raises(ValueError, match="text_length=16 is too short"):
        QwenVLConditioner(model, tokenizer, image_size=64, text_length=16)
    other = build_tiny_tokenizer(vocab_size=300)
    with pytest.raises(ValueError, match="tokenizer and Qwen3-VL model do not match"):
        QwenVLConditioner(model, other, image_size=64)


def test_model_moved_after_building_the_conditioner(tiny, swan):
    model, tokenizer = build_tiny_qwen3vl(seed=0)
    cond = QwenVLConditioner(model, tokenizer, image_size=64, text_length=48)
    model.to(torch.float64)
    out = cond.encode(swan[:1], INSTRUCTION)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out.float(), conditioner(tiny).encode(swan[:1], INSTRUCTION),
                               rtol=0, atol=1e-4)


@pytest.mark.gpu
def test_fast_forward_captures_in_a_cuda_graph(tiny):
    """The fast path replays from a CUDA graph; a new instruction or new frames are new
    contents of the same input buffers, not a new graph."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    g = torch.Generator().manual_seed(2)
    frames_cpu = torch.randint(0, 256, (3, 120, 200, 3), dtype=torch.uint8, generator=g)
    model, tokenizer = build_tiny_qwen3vl(seed=0)
    cond = QwenVLConditioner(model, tokenizer, image_size=64, text_length=48, fast=True)
    model.cuda()  # moved after building, as a caller may do
    # The stock forward on the same device: CPU and GPU resampling may round a level apart.
    reference = QwenVLConditioner(model, tokenizer, image_size=64, text_length=48)
    frames = frames_cpu.cuda()
    ids = cond.prompt(INSTRUCTION, 4).to("cuda")["input_ids"].clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.no_grad():
        for _ in range(2):  # warm-up builds the tables outside the capture
            cond.encode_tensors(frames, ids)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph), torch.no_grad():
        out = cond.encode_tensors(frames, ids)
    # cuDNN would run the stock Conv3d patch embedding in TF32: compare in full float32.
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        for text, batch in ((INSTRUCTION, frames_cpu), ("Sketch.", frames_cpu.flip(0))):
            ids.copy_(cond.prompt(text, 4).to("cuda")["input_ids"])
            frames.copy_(batch)
            out.fill_(float("nan"))
            graph.replay()
            mask = cond.prompt(text, 4).to("cuda")["mask"].unsqueeze(-1)
            expected = reference.encode(batch.cuda(), text)
            torch.testing.assert_close(out * mask, expected, rtol=0, atol=1e-4)
