"""Tiny random-weight bundles: the real classes at toy size, seeded, a few MB, built offline.

Tests and ``stylecam models tiny`` use them; every stack has one. Contract: the same seed gives
the same weights and tokenizers on any machine; float32 on the CPU; nothing downloaded.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator

import torch

from .. import stacks as _stacks
from .load import Bundle
from .manifest import BundleError, default_manifest, unknown_stack

#: Tiny presets: the real classes at toy size. 64x64 frames -> 8x8 latents.
TINY_SIZE = (64, 64)
TINY_TEXT_LENGTH = 32
TINY_QWEN_IMAGE_SIZE = 64
TINY_QWEN_TEXT_LENGTH = 64

_TINY_CORPUS = (
    "an oil painting of a person in a car, thick brush strokes, vivid colours",
    "turn it into a watercolor painting with soft washes of colour",
    "make it look like a pencil sketch, black and white line art",
    "a comic book drawing with bold ink outlines and flat colours",
    "van gogh style, swirling sky, impasto, ukiyo-e woodblock print",
    "transfer this to oil painting style, vibrant colors, cinematic lighting, neon cyberpunk city at night",
    "a photo of a swan on a lake, cyclists on a street, a kite surfer on the sea, 0123456789",
)


def tiny_clip_tokenizer(max_length: int = TINY_TEXT_LENGTH):
    """A CLIP tokenizer with a small BPE vocabulary, trained offline on a fixed corpus.

    Same pre-tokenization and special tokens as CLIP; every byte is in the vocabulary (with and
    without the end-of-word mark), so any text encodes without unknown tokens. Deterministic.
    """
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import CLIPTokenizer

    bos, eos = "<|startoftext|>", "<|endoftext|>"
    trainer_tok = Tokenizer(BPE(unk_token=eos, end_of_word_suffix="</w>", continuing_subword_prefix=""))
    trainer_tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    trainer_tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                             behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    trainer = BpeTrainer(vocab_size=700, special_tokens=[], initial_alphabet=alphabet,
                         end_of_word_suffix="</w>", show_progress=False)
    trainer_tok.train_from_iterator(list(_TINY_CORPUS) * 4, trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    vocab: dict[str, int] = {}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    for ch in alphabet:
        vocab[ch + "</w>"] = len(vocab)
    merges = []
    for a, b in trained["merges"]:
        vocab.setdefault(a + b, len(vocab))
        merges.append((a, b))
    vocab[bos] = len(vocab)
    vocab[eos] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def _tiny_unet(stack: str, cross_dim: int, concat: str):
    from diffusers import UNet2DConditionModel

    common = dict(block_out_channels=(16, 32), layers_per_block=1, sample_size=8, out_channels=4,
                  norm_num_groups=8, cross_attention_dim=cross_dim, attention_head_dim=(2, 4),
                  use_linear_projection=True)
    if _stacks.STACKS[stack].vision:
        # The full edit U-Net's shape at toy size: no mid block, cross-attention at every level.
        return UNet2DConditionModel(**common, in_channels=8 if concat == "channel" else 4,
                                    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                                    mid_block_type=None)
    return UNet2DConditionModel(**common, in_channels=8 if concat == "channel" else 4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))


def _tiny_vae():
    from diffusers import AutoencoderTiny

    # Four stages as in TAESD (8x down/up-sampling), one block each, 16 channels.
    vae = AutoencoderTiny(encoder_block_out_channels=(16, 16, 16, 16), decoder_block_out_channels=(16, 16, 16, 16),
                          num_encoder_blocks=(1, 1, 1, 1), num_decoder_blocks=(1, 1, 1, 1))
    _calibrate_tiny_vae(vae)
    return vae


@torch.no_grad()
def _calibrate_tiny_vae(vae) -> None:
    """Rescale the last layer of each side so a random VAE behaves like a trained one in range.

    At default init the encoder's latents have a std of ~0.04 and the decoder's pictures sit
    within a few levels of black, which would hide differences in tests: scale the encoder to
    centred unit-std latents and the decoder to mid-grey pictures spanning most of [0, 255].
    """
    gen = torch.Generator().manual_seed(1234)
    enc_out = vae.encoder.layers[-1]
    lat = vae.encoder(torch.rand(4, 3, 64, 64, generator=gen) * 2 - 1)
    mean, std = lat.mean(dim=(0, 2, 3)), lat.std(dim=(0, 2, 3)).clamp_min(1e-6)
    enc_out.weight.div_(std.view(-1, 1, 1, 1))
    enc_out.bias.copy_((enc_out.bias - mean) / std)
    dec_out = vae.decoder.layers[-1]
    pre = (vae.decoder(torch.randn(4, 4, 8, 8, generator=gen)) + 1) / 2  # the last conv's output
    mean, std = pre.mean(dim=(0, 2, 3)), pre.std(dim=(0, 2, 3)).clamp_min(1e-6)
    scale = 0.25 / std
    dec_out.weight.mul_(scale.view(-1, 1, 1, 1))
    dec_out.bias.copy_(0.5 + (dec_out.bias - mean) * scale)


def new_sd_scheduler():
    """A fresh Euler scheduler on SD 2.x's training schedule."""
    from diffusers import EulerDiscreteScheduler

    # SD 2.x's training schedule (what sd-turbo and instruct-pix2pix ship).
    return EulerDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                  beta_schedule="scaled_linear", prediction_type="epsilon",
                                  timestep_spacing="trailing", steps_offset=1)


def new_flow_scheduler():
    """A fresh flow-matching Euler scheduler (shift 1)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Torch's CPU generator seeded inside, restored after (the caller's randomness is untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def build_tiny_bundle(stack: str, *, seed: int = 0, size: tuple[int, int] = TINY_SIZE,
                      lllite: bool = False) -> Bundle:
    """A seeded random-weight bundle of the real classes at toy size (a few MB), in float32 on CPU.

    ``lllite=True`` adds a random ControlNet-LLLite adapter (its ``up`` weights non-zero so it
    changes the output) from the lllite module's tiny builder.
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    if stack not in _stacks.STACKS:
        raise BundleError(unknown_stack(stack))
    text_encoder = tokenizer = qwen = None
    if _stacks.STACKS[stack].vision:
        from ..qwen_vl import QwenVLConditioner
        from .build_qwen import build_tiny_qwen3vl

        manifest = default_manifest(stack, size=list(size), image_size=TINY_QWEN_IMAGE_SIZE,
                                    text_length=TINY_QWEN_TEXT_LENGTH)
        model, qtok = build_tiny_qwen3vl(seed=seed)
        qwen = QwenVLConditioner(model, qtok, image_size=manifest.image_size, text_length=manifest.text_length,
                                 pad_to_multiple_of=manifest.text_bucket or None)
        cross_dim = model.config.text_config.hidden_size
        scheduler = new_flow_scheduler()
    else:
        manifest = default_manifest(stack, size=list(size), text_length=TINY_TEXT_LENGTH)
        tokenizer = tiny_clip_tokenizer(manifest.text_length)
        with seeded(seed):
            text_encoder = CLIPTextModel(CLIPTextConfig(
                vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=manifest.text_length,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id))
        cross_dim = 32
        scheduler = new_sd_scheduler()
    with seeded(seed + 1):
        unet = _tiny_unet(stack, cross_dim, manifest.concat)
    with seeded(seed + 2):
        vae = _tiny_vae()
    adapters = None
    if lllite:
        from .. import lllite as lllite_mod

        config = lllite_mod.LLLiteConfig(cond_emb_dim=8, mlp_dim=8, hooks=manifest.lllite_subset or "all",
                                         width_concat=2 if manifest.concat == "width" else 1)
        with seeded(seed + 3):
            adapters = lllite_mod.randomize_(lllite_mod.build_adapters(unet, config), std=0.1, seed=seed + 3)
    bundle = Bundle(manifest=manifest, unet=unet, vae=vae, scheduler=scheduler, text_encoder=text_encoder,
                    tokenizer=tokenizer, qwen=qwen, lllite=adapters, origin=f"tiny {stack}")
    return bundle.eval()


def write_tiny_bundle(stack: str, out_dir: str | os.PathLike, *, seed: int = 0,
                      size: tuple[int, int] = TINY_SIZE, lllite: bool = False) -> Path:
    """:func:`build_tiny_bundle` saved as a bundle folder at ``out_dir``."""
    return build_tiny_bundle(stack, seed=seed, size=size, lllite=lllite).save(out_dir)
