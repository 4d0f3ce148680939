"""Full-size bundles with random weights, for benchmarks: the published shapes of each stack's
models, built directly in the target dtype on the target device (speed does not depend on
weight values).

Contract: ``full_parameter_counts`` allocates nothing (meta device); ``build_full_bundle``
allocates each model once, where it will run. The tokenizers are the tiny offline ones with
their ids valid for the full vocabularies.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from .. import stacks as _stacks
from .build import new_flow_scheduler, new_sd_scheduler, seeded, tiny_clip_tokenizer
from .build_qwen import full_vocab_qwen_tokenizer
from .load import Bundle, count_parameters
from .manifest import BundleError, default_manifest, unknown_stack

#: SD 2.1-base U-Net, which SD-Turbo uses unchanged: 865,910,724 parameters.
SD_TURBO_UNET = dict(
    act_fn="silu", attention_head_dim=[5, 10, 20, 20], block_out_channels=[320, 640, 1280, 1280],
    center_input_sample=False, cross_attention_dim=1024,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2,
    mid_block_scale_factor=1, norm_eps=1e-5, norm_num_groups=32, out_channels=4, sample_size=64,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    use_linear_projection=True)

#: SD 1.5-shaped InstructPix2Pix U-Net: 8 input channels, CLIP ViT-L text (768).
PIX2PIX_UNET = dict(
    act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280], cross_attention_dim=768,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, in_channels=8, layers_per_block=2,
    norm_eps=1e-5, norm_num_groups=32, out_channels=4, sample_size=64,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])

#: The 0.39 B-class in-context edit U-Net: BK-SDM-v2-tiny's layout (three stages 320/640/1280,
#: one resnet+attention pair per down stage, two per up stage, no mid block) with 2048-d
#: cross-attention for Qwen3-VL-2B hidden states. That alone is 0.341 B; the deepest down stage
#: gets a second transformer layer to land in the published size class (0.375 B). The true
#: DreamLite-mobile layout is not public; speed depends on these shapes, not on weight values.
EDIT_UNET = dict(
    act_fn="silu", attention_head_dim=[5, 10, 20], block_out_channels=[320, 640, 1280], cross_attention_dim=2048,
    down_block_types=["CrossAttnDownBlock2D"] * 3, up_block_types=["CrossAttnUpBlock2D"] * 3,
    mid_block_type=None, layers_per_block=1, transformer_layers_per_block=[1, 1, 2],
    reverse_transformer_layers_per_block=[[1, 1], [1, 1], [1, 1]], flip_sin_to_cos=True, freq_shift=0,
    in_channels=4, out_channels=4, norm_eps=1e-5, norm_num_groups=32, sample_size=64, use_linear_projection=True)

#: Text encoders: OpenCLIP ViT-H/14 text tower as shipped by SD 2.x (23 of 24 layers) and
#: OpenAI CLIP ViT-L/14 (SD 1.5 / InstructPix2Pix).
SD2_TEXT_ENCODER = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                        num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512)
SD1_TEXT_ENCODER = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)

FULL_UNETS = {"sd-turbo": SD_TURBO_UNET, "pix2pix": PIX2PIX_UNET, "mllm-edit": EDIT_UNET}
FULL_TEXT_ENCODERS = {"sd-turbo": SD2_TEXT_ENCODER, "pix2pix": SD1_TEXT_ENCODER}


@contextlib.contextmanager
def build_context(device: str | torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Modules constructed inside are created on ``device`` in ``dtype`` directly: one allocation.

    ``torch.device("meta")`` gives shapes without memory (parameter counts). The default dtype is
    process-wide, so build in one thread at a time.
    """
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def full_parameter_counts(stack: str) -> dict[str, int]:
    """Parameters of each full-size component, counted on the meta device (nothing allocated)."""
    from diffusers import AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    counts = {}
    with build_context("meta", torch.float32):
        counts["unet"] = count_parameters(UNet2DConditionModel(**FULL_UNETS[stack]))
        vae = AutoencoderTiny()
        counts["vae_encoder"], counts["vae_decoder"] = count_parameters(vae.encoder), count_parameters(vae.decoder)
        if stack in FULL_TEXT_ENCODERS:
            counts["text_encoder"] = count_parameters(CLIPTextModel(CLIPTextConfig(**FULL_TEXT_ENCODERS[stack])))
        else:
            from transformers import Qwen3VLForConditionalGeneration

            from .build_qwen import full_qwen3vl_config

            counts["qwen"] = count_parameters(Qwen3VLForConditionalGeneration(full_qwen3vl_config()))
    return counts


def build_full_bundle(stack: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.bfloat16,
                      seed: int = 0, size: tuple[int, int] = (512, 512)) -> Bundle:
    """A full-size bundle with random weights, built in ``dtype`` on ``device`` (for benchmarks).

    Speed does not depend on weight values. Tokenizers are the tiny ones (their ids are valid
    for the full vocabularies); conditioning then costs the same as with the real tokenizer.
    """
    from diffusers import AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if stack not in _stacks.STACKS:
        raise BundleError(unknown_stack(stack))
    text_encoder = tokenizer = qwen = None
    with seeded(seed), build_context(device, dtype):
        unet = UNet2DConditionModel(**FULL_UNETS[stack])
        vae = AutoencoderTiny()
        if stack in FULL_TEXT_ENCODERS:
            text_encoder = CLIPTextModel(CLIPTextConfig(**FULL_TEXT_ENCODERS[stack]))
        else:
            from transformers import Qwen3VLForConditionalGeneration

            from .build_qwen import full_qwen3vl_config

            model = Qwen3VLForConditionalGeneration(full_qwen3vl_config())
    if stack in FULL_TEXT_ENCODERS:
        manifest = default_manifest(stack, size=list(size))
        tokenizer = tiny_clip_tokenizer(manifest.text_length)
        scheduler = new_sd_scheduler()
    else:
        manifest = default_manifest(stack, size=list(size))
        from ..qwen_vl import QwenVLConditioner

        qwen = QwenVLConditioner(model, full_vocab_qwen_tokenizer(), image_size=manifest.image_size,
                                 text_length=manifest.text_length, pad_to_multiple_of=manifest.text_bucket or None)
        scheduler = new_flow_scheduler()
    return Bundle(manifest=manifest, unet=unet, vae=vae, scheduler=scheduler, text_encoder=text_encoder,
                  tokenizer=tokenizer, qwen=qwen, origin=f"full {stack} (random weights)").eval()
