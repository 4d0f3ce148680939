"""Qwen3-VL builders: the published 2B configuration, a toy one of the same classes, random-weight
models built in place, and the offline tokenizers that go with them (tests, ``stylecam models
tiny``, benchmarks). Moved out of ``qwen_vl.py``, which holds only what a real bundle runs.

Contract: deterministic for a seed; no network (the tokenizers are trained here on a fixed
corpus with the ``tokenizers`` library).
"""

from __future__ import annotations

import json
import math

import torch

from ..qwen_vl import QWEN_SPECIAL_TOKENS

# A few lines of text to train the tiny tokenizer on; its merges only need to be plausible.
_TINY_CORPUS = """\
Turn this frame into an oil painting with thick brush strokes and warm colours.
Make it look like a watercolour sketch on rough paper, soft edges, pale washes.
Render the scene as a comic book panel with bold black outlines and flat colour.
Convert the picture to a pencil drawing, cross hatching, white background.
Paint it in the style of an impressionist landscape, dappled light, visible strokes.
Keep the person and the pose, change the style only; do not add or remove objects.
A cyberpunk city at night, neon signs, rain on the street, reflections everywhere.
Anime style portrait, large eyes, clean line art, cel shading and a simple background.
Mosaic of small coloured tiles; stained glass window; woodcut print; ink wash painting.
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!
0 1 2 3 4 5 6 7 8 9 10 100 2025 3.14 #stylecam @user (video) [frame] {style} "quoted" 'text'
user assistant system image video describe edit style frame camera stream live fast slow
"""


def full_qwen3vl_config():
    """The published Qwen3-VL-2B(-Instruct) configuration: 2,127,532,032 parameters."""
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(
        text_config=dict(
            vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
            num_attention_heads=16, num_key_value_heads=8, head_dim=128, hidden_act="silu",
            max_position_embeddings=262144, rms_norm_eps=1e-6, tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0,
                             "mrope_section": [24, 20, 20], "mrope_interleaved": True},
        ),
        vision_config=dict(
            depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, in_channels=3,
            hidden_act="gelu_pytorch_tanh", patch_size=16, spatial_merge_size=2,
            temporal_patch_size=2, out_hidden_size=2048, num_position_embeddings=2304,
            deepstack_visual_indexes=[5, 11, 17],
        ),
        image_token_id=151655, video_token_id=151656,
        vision_start_token_id=151652, vision_end_token_id=151653,
        tie_word_embeddings=True,
    )


def tiny_qwen3vl_config(vocab_size: int, special_ids: dict[str, int]):
    """A toy Qwen3-VL of the real classes (well under 1 M parameters).

    The shapes keep the model's invariants: ``mrope_section`` sums to head_dim/2, the vision
    output width equals the text width, the learned position grid is square (8x8, so frames
    of other grid sizes exercise the interpolation), patch 16 and merge 2 as in the real model,
    and fewer deepstack layers than decoder layers.
    """
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=16, hidden_act="silu",
            max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=True,
            initializer_range=0.1,
            rope_parameters={"rope_type": "default", "rope_theta": 10_000.0,
                             "mrope_section": [4, 2, 2], "mrope_interleaved": True},
        ),
        vision_config=dict(
            depth=3, hidden_size=32, intermediate_size=64, num_heads=2, in_channels=3,
            hidden_act="gelu_pytorch_tanh", patch_size=16, spatial_merge_size=2,
            temporal_patch_size=2, out_hidden_size=64, num_position_embeddings=64,
            deepstack_visual_indexes=[1, 2], initializer_range=0.1,
        ),
        image_token_id=special_ids["<|image_pad|>"], video_token_id=special_ids["<|video_pad|>"],
        vision_start_token_id=special_ids["<|vision_start|>"],
        vision_end_token_id=special_ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def build_tiny_tokenizer(vocab_size: int = 512):
    """A byte-level BPE trained offline on a few lines, with the Qwen special tokens appended
    after the learned vocabulary (as in the real one), wrapped as transformers' Qwen2Tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    raw = Tokenizer(models.BPE())
    raw.normalizer = normalizers.NFC()
    raw.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    raw.train_from_iterator(_TINY_CORPUS.splitlines(), trainer)
    state = json.loads(raw.to_str())["model"]
    vocab = dict(state["vocab"])
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    for token in QWEN_SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    return Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>",
                          pad_token="<|endoftext|>", unk_token="<|endoftext|>",
                          extra_special_tokens=[t for t in QWEN_SPECIAL_TOKENS
                                                if t not in ("<|endoftext|>", "<|im_end|>")])


def build_qwen3vl(config, *, device="cpu", dtype=torch.float32, seed: int | None = 0):
    """A random-weight ``Qwen3VLForConditionalGeneration`` built directly on ``device`` in
    ``dtype`` (no second copy: the full 2B model never exists in float32 on the host first).
    ``device="meta"`` gives shapes only."""
    from transformers import Qwen3VLForConditionalGeneration

    previous = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            torch.set_default_dtype(dtype)
            with torch.device(device):
                model = Qwen3VLForConditionalGeneration(config)
        finally:
            torch.set_default_dtype(previous)
    return model.eval()


def build_tiny_qwen3vl(seed: int = 0):
    """(model, tokenizer): a tiny seeded random Qwen3-VL (fp32, CPU) and its tokenizer."""
    tokenizer = build_tiny_tokenizer()
    special_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    vocab_size = 64 * math.ceil(len(tokenizer) / 64)
    model = build_qwen3vl(tiny_qwen3vl_config(vocab_size, special_ids), seed=seed)
    return model, tokenizer


def full_vocab_qwen_tokenizer():
    """The tiny offline Qwen tokenizer with its special tokens moved to the real ids (151643+).

    Full-size random Qwen3-VL models expect ``<|image_pad|>`` and friends at the published ids;
    the ordinary tokens keep their small ids, which are valid rows of the full embedding.
    """
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    state = json.loads(build_tiny_tokenizer().backend_tokenizer.to_str())["model"]
    vocab = {t: i for t, i in state["vocab"].items() if t not in QWEN_SPECIAL_TOKENS}
    first = 151643  # <|endoftext|> in the real vocabulary; the others follow one by one
    vocab.update({t: first + i for i, t in enumerate(QWEN_SPECIAL_TOKENS)})
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    return Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                          unk_token="<|endoftext|>",
                          extra_special_tokens=[t for t in QWEN_SPECIAL_TOKENS
                                                if t not in ("<|endoftext|>", "<|im_end|>")])
