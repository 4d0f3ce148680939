"""Vision-aware Qwen3-VL conditioner: frames + instruction -> fixed-length last hidden states.

The paper's regime (DESIGN.md, ``mllm-edit``) conditions the edit U-Net on the last hidden
states of Qwen3-VL-2B that has seen the frame. This module builds that encoder from the real
transformers classes and feeds it without the library's processors:

* frames (uint8 ``(B, H, W, 3)`` RGB, on the model's device) are resized, rescaled, normalised
  and patchified **on the device, for the whole batch at once**, into exactly the
  ``(num_patches, C*T*P*P)`` layout + ``image_grid_thw`` that ``Qwen2VLImageProcessor`` makes;
  ``AutoProcessor`` would need torchvision (its video processor imports it), which we do not have;
* the prompt is the Qwen3-VL chat template of one user turn ``[image, instruction]``; the
  instruction's tokens are cached per string, so per frame only the image part is recomputed;
* the output is always ``(B, text_length, hidden)``. The token sequence is right-padded with
  ``<|endoftext|>`` **before** the model, to ``text_length`` (default: one static shape for every
  instruction, so one CUDA graph serves them all) or, with ``pad_to_multiple_of=m``, only to the
  next multiple of m (less work when prompts are much shorter than L; one shape per bucket);
  the remaining rows up to ``text_length`` are appended as zeros. The language model is causal,
  so pad tokens never change the hidden states of the real tokens. Hidden states at all pad
  positions are zero; ``return_mask=True`` also gives the (B, L) mask of real tokens.
  Instructions too long for ``text_length`` lose their tail text tokens; the template's closing
  tokens are always kept.

Two forwards give the same numbers: the stock transformers forward (``fast=False``, the
reference) and a sync-free one at a fixed frame size (``fast=True``): rotary tables, position
embedding interpolation and M-RoPE positions are precomputed per frame size, the vision tower
runs batched SDPA over the fixed-length images (no ``cu_seqlens``/``.tolist()``), the image
embeddings and deepstack features go in by slicing instead of boolean-mask scatters, and the
decoder layers run with ``is_causal`` SDPA rather than an explicit causal mask. The fast path
does no host synchronisation, so it can be captured in a CUDA graph.
"""

from __future__ import annotations

import functools
import json
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

# Special tokens of the Qwen2/Qwen3 vocabulary in their published order; in the real
# tokenizer <|endoftext|> is id 151643 and the rest follow it one by one.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>",
    "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)

# Qwen3-VL's preprocessor_config.json normalises to [-1, 1] (not the CLIP mean/std that
# Qwen2VLImageProcessor defaults to).
QWEN3VL_IMAGE_MEAN = (0.5, 0.5, 0.5)
QWEN3VL_IMAGE_STD = (0.5, 0.5, 0.5)

CONDITIONER_CONFIG_NAME = "stylecam_qwen_vl.json"

# The chat template of one user turn with an image then text, as Qwen3-VL's template renders
# it (no default system turn), ending with the generation prompt.
_PROMPT_HEAD = "<|im_start|>user\n"
_PROMPT_TAIL = "<|im_end|>\n<|im_start|>assistant\n"


# --------------------------------------------------------------------------- the library's processor, resize

def make_image_processor(image_size: int = 256, *, patch_size: int = 16, merge_size: int = 2,
                         temporal_patch_size: int = 2, image_mean=QWEN3VL_IMAGE_MEAN,
                         image_std=QWEN3VL_IMAGE_STD):
    """The library's image processor (PIL backend: it needs no torchvision) set up as this
    conditioner's ``resize="keep_aspect"`` mode: about ``image_size**2`` pixels per frame."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    pixels = image_size * image_size
    # An explicit size dict: the class mutates its shared default dict when given min/max_pixels.
    return Qwen2VLImageProcessorPil(
        size={"shortest_edge": pixels, "longest_edge": pixels}, patch_size=patch_size,
        merge_size=merge_size, temporal_patch_size=temporal_patch_size,
        image_mean=list(image_mean), image_std=list(image_std))


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int):
    """Qwen2-VL's aspect-keeping target size: sides multiples of ``factor``, area in range."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"frame aspect ratio {width}x{height} is too extreme (over 200:1)")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


# --------------------------------------------------------------------------- prompt records

@dataclass
class _Prompt:
    """One instruction laid out at the fixed length; host tensors, device copies on demand."""

    input_ids: torch.Tensor          # (1, S) long, S <= L: the sequence the model computes
    token_types: torch.Tensor        # (1, S) int: 1 at image placeholders (mm_token_type_ids)
    mask: torch.Tensor               # (1, S) bool: real tokens
    image_span: tuple[int, int] | None
    real_length: int
    truncated: int                   # instruction tokens dropped to fit L
    _on_device: dict = field(default_factory=dict)

    def to(self, device) -> dict:
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = {
                "input_ids": self.input_ids.to(device),
                "token_types": self.token_types.to(device),
                "mask": self.mask.to(device),
            }
        return self._on_device[key]


# --------------------------------------------------------------------------- the conditioner

class QwenVLConditioner(torch.nn.Module):
    """Frames + instruction -> Qwen3-VL last hidden states of a fixed shape ``(B, L, hidden)``.

    ``model`` is a ``Qwen3VLForConditionalGeneration`` (or its inner ``Qwen3VLModel``);
    ``tokenizer`` a Qwen2 tokenizer whose special-token ids match the model config.

    ``resize="square"`` (the paper: every frame becomes ``image_size``x``image_size``, a fixed
    number of image tokens) or ``"keep_aspect"`` (the library processor's smart resize to about
    ``image_size**2`` pixels). ``resample`` is ``"bicubic"`` (the processor's PIL default) or
    ``"bilinear"``; both antialias on downscaling as PIL does; with ``round_to_uint8`` (default)
    the resize runs as PIL's two 8-bit passes, rounded to whole levels after each.
    ``broadcast=True`` encodes only the newest frame of a batch and broadcasts it to all B.
    ``fast=True`` uses the sync-free forward (see the module docstring); with
    ``fold_temporal_patch`` (its default) the patch embedding sums the Conv3d's two temporal taps
    into one linear layer (a still frame repeats over them): half the work and no repeated copy,
    equal to the stock forward up to float rounding; without it the fast path runs the model's own
    Conv3d and is bit-identical to the stock forward in float32 on CPU.
    """

    def __init__(self, model, tokenizer, image_size: int = 256, text_length: int = 256, *,
                 resize: str = "square", resample: str = "bicubic", round_to_uint8: bool = True,
                 image_mean=QWEN3VL_IMAGE_MEAN, image_std=QWEN3VL_IMAGE_STD,
                 pad_to_multiple_of: int | None = None, broadcast: bool = False,
                 fast: bool = False, fold_temporal_patch: bool = True,
                 prompt_cache_size: int = 256):
        super().__init__()
        from transformers import Qwen3VLModel

        core = getattr(model, "model", model)
        if not isinstance(core, Qwen3VLModel):
            raise TypeError("QwenVLConditioner needs a Qwen3-VL model (Qwen3VLForConditional"
                            f"Generation or Qwen3VLModel), got {type(model).__name__}")
        if resize not in ("square", "keep_aspect"):
            raise ValueError(f"resize must be 'square' or 'keep_aspect', got {resize!r}")
        if resample not in ("bicubic", "bilinear"):
            raise ValueError(f"resample must be 'bicubic' or 'bilinear', got {resample!r}")
        self.model = model
        self.tokenizer = tokenizer
        config = core.config
        vision = config.vision_config
        self.patch_size = int(vision.patch_size)
        self.merge_size = int(vision.spatial_merge_size)
        self.temporal_patch_size = int(vision.temporal_patch_size)
        self.hidden_size = int(config.text_config.hidden_size)
        factor = self.patch_size * self.merge_size
        if image_size < factor or image_size % factor:
            raise ValueError(f"image_size must be a positive multiple of patch*merge = {factor} "
                             f"for this model, got {image_size}")
        self.image_size = int(image_size)
        self.text_length = int(text_length)
        self._prompts = OrderedDict()
        self.pad_to_multiple_of = pad_to_multiple_of
        self.resize = resize
        self.resample = resample
        self.round_to_uint8 = bool(round_to_uint8)
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        self.broadcast = bool(broadcast)
        self.fast = bool(fast)
        self.fold_temporal_patch = bool(fold_temporal_patch)

        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in
               ("<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|endoftext|>")}
        expected = {"<|image_pad|>": config.image_token_id,
                    "<|vision_start|>": config.vision_start_token_id,
                    "<|vision_end|>": config.vision_end_token_id}
        wrong = [f"{t} is {ids[t]} in the tokenizer but {want} in the model config"
                 for t, want in expected.items() if ids[t] != want]
        if wrong:
            raise ValueError("tokenizer and Qwen3-VL model do not match: " + "; ".join(wrong)
                             + ". Load the tokenizer that was saved with this model.")
        self.image_token_id = ids["<|image_pad|>"]
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
            else ids["<|endoftext|>"]
        self._head_ids = self._encode_fixed(_PROMPT_HEAD)
        self._vision_start = [ids["<|vision_start|>"]]
        self._vision_end = [ids["<|vision_end|>"]]
        self._tail_ids = self._encode_fixed(_PROMPT_TAIL)
        # Per-string tokenisation cache (static prompts: re-tokenising only when text changes).
        self._tokenize_instruction = functools.lru_cache(maxsize=prompt_cache_size)(
            self._tokenize_instruction_uncached)
        self._prompts: OrderedDict = OrderedDict()
        self._prompt_cache_size = prompt_cache_size
        self._static: dict = {}  # fast path: tables per (frame grid, device, dtype)
        if resize == "square":
            self._check_fits(self.num_image_tokens(image_size, image_size))

    # ------------------------------------------------------------------ properties & helpers

    @property
    def core(self):
        """The ``Qwen3VLModel`` (vision tower + language model, no LM head)."""
        return getattr(self.model, "model", self.model)

    @property
    def device(self) -> torch.device:
        return self.core.language_model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.core.language_model.embed_tokens.weight.dtype

    def target_size(self, height: int, width: int) -> tuple[int, int]:
        """The size (h, w) a ``height`` x ``width`` frame is resized to before patchifying."""
        if self.resize == "square":
            return self.image_size, self.image_size
        pixels = self.image_size * self.image_size
        return smart_resize(height, width, self.patch_size * self.merge_size, pixels, pixels)

    def num_image_tokens(self, height: int, width: int) -> int:
        h, w = self.target_size(height, width)
        return (h // self.patch_size) * (w // self.patch_size) // self.merge_size ** 2

    def _encode_fixed(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _tokenize_instruction_uncached(self, instruction: str) -> tuple[int, ...]:
        # split_special_tokens: text that spells "<|image_pad|>" must not become a placeholder.
        return tuple(self.tokenizer(instruction, add_special_tokens=False,
                                    split_special_tokens=True)["input_ids"])

    def instruction_cache_info(self):
        """``functools`` cache statistics of the per-instruction tokenisation."""
        return self._tokenize_instruction.cache_info()

    def _fixed_tokens(self, num_image_tokens: int | None) -> int:
        image = 0 if num_image_tokens is None else num_image_tokens + 2
        return len(self._head_ids) + image + len(self._tail_ids)

    def _check_fits(self, num_image_tokens: int | None) -> None:
        need = self._fixed_tokens(num_image_tokens)
        if need > self.text_length:
            what = "the template" if num_image_tokens is None else \
                f"{num_image_tokens} image tokens and the template"
            raise ValueError(f"text_length={self.text_length} is too short: {what} alone take "
                             f"{need} tokens. Raise text_length or lower image_size.")

    def prompt(self, instruction: str, num_image_tokens: int | None) -> _Prompt:
        """The cached fixed-length token layout of ``instruction`` (``None``: text only)."""
        if not isinstance(instruction, str):
            raise TypeError(f"instruction must be a str, got {type(instruction).__name__}")
        key = (instruction, num_image_tokens)
        hit = self._prompts.get(key)
        if hit is not None:
            self._prompts.move_to_end(key)
            return hit
        self._check_fits(num_image_tokens)
        text = self._tokenize_instruction(instruction)
        room = self.text_length - self._fixed_tokens(num_image_tokens)
        kept = list(text[:room])
        ids = list(self._head_ids)
        span = None
        if num_image_tokens is not None:
            ids += self._vision_start
            span = (len(ids), len(ids) + num_image_tokens)
            ids += [self.image_token_id] * num_image_tokens + self._vision_end
        ids += kept + list(self._tail_ids)
        real = len(ids)
        length = self.text_length
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            length = min(length, -(-real // m) * m)
        ids += [self.pad_token_id] * (length - real)
        types = torch.zeros(1, length, dtype=torch.int32)
        if span is not None:
            types[0, span[0]:span[1]] = 1
        mask = torch.zeros(1, length, dtype=torch.bool)
        mask[0, :real] = True
        record = _Prompt(torch.tensor([ids], dtype=torch.long), types, mask, span, real,
                         len(text) - len(kept))
        self._prompts[key] = record
        if len(self._prompts) > self._prompt_cache_size:
            self._prompts.popitem(last=False)
        return record

    @property
    def pad_to_multiple_of(self) -> int | None:
        """Run the language model on the real tokens rounded up to a multiple of this (None:
        all ``text_length``). The output is the same either way; only the cost differs."""
        return self._pad_to_multiple_of

    @pad_to_multiple_of.setter
    def pad_to_multiple_of(self, value: int | None) -> None:
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ValueError(f"pad_to_multiple_of must be a positive int or None, got {value!r}")
        self._pad_to_multiple_of = value
        self._prompts.clear()  # cached prompts were padded for the old setting

    # ------------------------------------------------------------------ preprocessing

    def _as_frames(self, frames) -> torch.Tensor:
        if isinstance(frames, (list, tuple)) and frames and \
                all(isinstance(f, np.ndarray) for f in frames):
            if len({f.shape for f in frames}) > 1:
                raise ValueError("frames of one batch must share one size; got "
                                 + ", ".join(sorted({str(f.shape) for f in frames})))
            frames = np.stack(frames)
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(np.ascontiguousarray(frames))
        if not isinstance(frames, torch.Tensor):
            raise TypeError(f"frames must be a uint8 tensor (B, H, W, 3), got "
                            f"{type(frames).__name__}")
        if frames.ndim == 3:
            frames = frames.unsqueeze(0)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
            raise ValueError(f"frames must be RGB uint8 of shape (B, H, W, 3); got "
                             f"{tuple(frames.shape)} {frames.dtype}")
        if frames.shape[0] == 0:
            raise ValueError("frames is an empty batch")
        return frames.to(self.device, non_blocking=True)

    def _normalized(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 -> (B, 3, h, w) float32 resized, rescaled and normalised."""
        height, width = frames.shape[1:3]
        size = self.target_size(height, width)
        x = frames.permute(0, 3, 1, 2).float()
        if self.round_to_uint8:
            # PIL's 8-bit resampling: a horizontal pass, then a vertical pass, each rounded to
            # whole levels and clipped. Two passes keep us within one level of the library's
            # PIL resize; one 2-D pass in float differs by up to ~6 levels where the bicubic
            # overshoot is clipped in between.
            if width != size[1]:
                x = self._resample(x, (height, size[1])).round().clamp_(0, 255)
            if height != size[0]:
                x = self._resample(x, size).round().clamp_(0, 255)
        elif (height, width) != size:
            x = self._resample(x, size)
        mean, std = self._normalization(x.device)
        return (x / 255.0 - mean) / std

    def _normalization(self, device):
        # Per device, made once: the model may move after the conditioner is built, and a
        # host-to-device copy inside a CUDA graph capture is not allowed.
        key = ("normalization", str(device))
        if key not in self._static:
            self._static[key] = tuple(torch.tensor(v, device=device).view(1, 3, 1, 1)
                                      for v in (self.image_mean, self.image_std))
        return self._static[key]

    def _resample(self, x: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(x, size=size, mode=self.resample, align_corners=False, antialias=True)

    def _patch_grid(self, x: torch.Tensor):
        b, c, h, w = x.shape
        p, m = self.patch_size, self.merge_size
        gh, gw = h // p, w // p
        # (B, C, gh/m, m, p, gw/m, m, p) -> (B, gh/m, gw/m, m, m, C, p, p): merge-block order,
        # the order the vision tower's patch merger expects.
        x = x.reshape(b, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)
        return x, gh, gw

    def preprocess(self, frames) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames -> (pixel_values, image_grid_thw) exactly as ``Qwen2VLImageProcessor`` lays
        them out: (B*gh*gw, C*T*P*P) float32 (a still frame repeated over the T=2 temporal
        patch) and (B, 3) long rows ``[1, gh, gw]``, all on the model's device."""
        frames = self._as_frames(frames)
        x, gh, gw = self._patch_grid(self._normalized(frames))
        b, c, p, t = x.shape[0], x.shape[5], self.patch_size, self.temporal_patch_size
        x = x.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, t, -1, -1)
        pixel_values = x.reshape(b * gh * gw, c * t * p * p)
        grid = torch.tensor([[1, gh, gw]], dtype=torch.long, device=frames.device).expand(b, 3)
        return pixel_values, grid.contiguous()

    # ------------------------------------------------------------------ encoding

    @torch.no_grad()
    def encode(self, frames, instruction: str, *, return_mask: bool = False):
        """``(B, L, hidden)`` last hidden states for B frames (one forward for the batch) and one
        instruction; pad positions are zero. ``return_mask=True`` also returns the (B, L) mask.
        With ``broadcast`` the B rows are an expanded view of one (copy before writing)."""
        frames = self._as_frames(frames)
        batch = frames.shape[0]
        if self.broadcast:
            frames = frames[-1:]
        prompt = self.prompt(instruction, self.num_image_tokens(*frames.shape[1:3]))
        if self.fast:
            hidden = self.encode_tensors(frames, prompt.to(self.device)["input_ids"])
        else:
            pixel_values, grid = self.preprocess(frames)
            hidden = self._stock_hidden(pixel_values, grid, prompt)
        return self._finish(hidden, prompt, batch, return_mask)

    @torch.no_grad()
    def encode_pixels(self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor,
                      instruction: str, *, return_mask: bool = False):
        """Like ``encode`` for pixels already preprocessed (e.g. by the library's processor);
        all images must share one grid. Always the stock forward."""
        grid = image_grid_thw.tolist()
        if any(g != grid[0] for g in grid):
            raise ValueError("encode_pixels needs images of one size (equal image_grid_thw rows)")
        t, gh, gw = grid[0]
        prompt = self.prompt(instruction, t * gh * gw // self.merge_size ** 2)
        hidden = self._stock_hidden(pixel_values.to(self.device), image_grid_thw.to(self.device),
                                    prompt)
        return self._finish(hidden, prompt, len(grid), return_mask)

    @torch.no_grad()
    def encode_text(self, instruction: str, batch_size: int = 1, *, return_mask: bool = False):
        """Static-prompt conditioning with no image: ``(batch_size, L, hidden)``."""
        prompt = self.prompt(instruction, None)
        ids = prompt.to(self.device)["input_ids"]
        if self.fast:
            hidden = self._fast_text_hidden(ids, prompt)
        else:
            hidden = self.core(input_ids=ids, use_cache=False).last_hidden_state
        return self._finish(hidden, prompt, batch_size, return_mask)

    def forward(self, frames, instruction: str):
        return self.encode(frames, instruction)

    def _finish(self, hidden, prompt: _Prompt, batch: int, return_mask: bool):
        mask = prompt.to(hidden.device)["mask"]
        hidden = hidden * mask.unsqueeze(-1).to(hidden.dtype)
        extra = self.text_length - hidden.shape[1]
        if extra:
            hidden = F.pad(hidden, (0, 0, 0, extra))
            mask = F.pad(mask, (0, extra))
        if hidden.shape[0] != batch:
            hidden = hidden.expand(batch, -1, -1)
        if return_mask:
            return hidden, mask.expand(batch, -1)
        return hidden

    def _stock_hidden(self, pixel_values, grid, prompt: _Prompt) -> torch.Tensor:
        on = prompt.to(self.device)
        b = grid.shape[0]
        out = self.core(input_ids=on["input_ids"].expand(b, -1), pixel_values=pixel_values,
                        image_grid_thw=grid, mm_token_type_ids=on["token_types"].expand(b, -1),
                        use_cache=False)
        return out.last_hidden_state

    # ------------------------------------------------------------------ the sync-free forward

    def _tables(self, gh: int, gw: int, length: int):
        """Per frame-size and sequence-length constants of the fast path, built eagerly (the
        first call; outside any capture) with the library's own helpers."""
        from transformers.vision_utils import (get_vision_interpolation_indices_and_weights,
                                               get_vision_position_ids)

        device, dtype = self.device, self.dtype
        key = (gh, gw, length, str(device), dtype)
        tables = self._static.get(key)
        if tables is not None:
            return tables
        visual = self.core.visual
        grid = torch.tensor([[1, gh, gw]], device=device)
        idx, weights = get_vision_interpolation_indices_and_weights(
            grid, num_grid_per_side=visual.num_grid_per_side, mode=visual.interpolation_mode,
            align_corners=visual.interpolation_align_corners, spatial_merge_size=self.merge_size)
        probe = torch.empty(0, device=device, dtype=dtype)
        cos, sin = visual.rotary_pos_emb(probe, get_vision_position_ids(grid, self.merge_size))
        # M-RoPE positions depend only on where the image sits, the same for every instruction:
        # the image follows the fixed head and the pad tokens continue the text positions.
        start = len(self._head_ids) + 1
        span = (start, start + gh * gw // self.merge_size ** 2)
        types = torch.zeros(1, length, dtype=torch.int32, device=device)
        types[0, span[0]:span[1]] = 1
        position_ids, _ = self.core.get_rope_index(
            torch.zeros(1, length, dtype=torch.long, device=device), mm_token_type_ids=types,
            image_grid_thw=grid)
        tables = {"interp_idx": idx, "interp_w": weights, "cos": cos, "sin": sin, "span": span,
                  "text_rope": self.core.language_model.rotary_emb(probe, position_ids)}
        self._static[key] = tables
        return tables

    def _text_rope(self, length: int, device, dtype):
        key = ("text", length, str(device), dtype)
        rope = self._static.get(key)
        if rope is None:
            positions = torch.arange(length, device=device).view(1, 1, -1).expand(3, 1, -1)
            probe = torch.empty(0, device=device, dtype=dtype)
            rope = self.core.language_model.rotary_emb(probe, positions)
            self._static[key] = rope
        return rope

    def fast_tables(self, height: int, width: int, length: int) -> dict:
        """The constants :meth:`encode_tensors` needs for frames of ``height`` x ``width`` and a
        prompt of ``length`` tokens (rotary tables, M-RoPE positions, interpolation indices).
        Built eagerly, once per size and length bucket, *outside* any CUDA graph capture or
        ``torch.compile`` region: the library's ``get_rope_index`` iterates over token types in
        Python (``itertools.groupby``), which a compiled graph cannot contain."""
        h, w = self.target_size(height, width)
        self._normalization(self.device)
        return self._tables(h // self.patch_size, w // self.patch_size, length)

    def encode_tensors(self, frames: torch.Tensor, input_ids: torch.Tensor, tables: dict | None = None) -> torch.Tensor:
        """The capturable core of ``fast=True``: uint8 frames (B, H, W, 3) on the device and the
        (1 or B, S) token ids of a prompt laid out by ``prompt()`` -> (B, S, hidden) hidden
        states, before pad zeroing and padding to ``text_length``. Pure tensor work with no
        host sync, given ``tables`` from :meth:`fast_tables` (None: looked up or built here,
        which is fine eagerly but not inside a capture or a compiled region)."""
        x, gh, gw = self._patch_grid(self._normalized(frames))
        b = x.shape[0]
        if tables is None:
            tables = self._tables(gh, gw, input_ids.shape[1])
        image_embeds, deepstack = self._fast_vision(x.reshape(b, gh * gw, -1), tables)
        return self._fast_language(input_ids, image_embeds, deepstack, tables["span"],
                                   tables["text_rope"])

    def _fast_vision(self, patches: torch.Tensor, tables):
        """patches (B, N, C*P*P) in merge-block order -> merged (B, N/4, out) + deepstack list."""
        visual = self.core.visual
        b, n, _ = patches.shape
        proj = visual.patch_embed.proj
        if self.fold_temporal_patch:
            # A still frame repeats over the temporal patch, so the Conv3d collapses to one
            # linear layer with the temporal taps summed: half the work, no repeated copy.
            weight = proj.weight.float().sum(2).reshape(proj.out_channels, -1).to(proj.weight.dtype)
            x = F.linear(patches.to(weight.dtype), weight, proj.bias)
        else:
            c, p, t = proj.in_channels, self.patch_size, self.temporal_patch_size
            x = patches.reshape(b * n, c, 1, p, p).expand(-1, -1, t, -1, -1)
            x = visual.patch_embed(x.reshape(b * n, -1)).view(b, n, -1)
        pos = (visual.pos_embed(tables["interp_idx"]) * tables["interp_w"][:, :, None]).sum(1)
        x = x + pos.to(x.dtype)
        cos, sin = tables["cos"], tables["sin"]
        features = []
        merged = n // self.merge_size ** 2
        for layer, block in enumerate(visual.blocks):
            attn = block.attn
            qkv = attn.qkv(block.norm1(x)).view(b, n, 3, attn.num_heads, attn.head_dim)
            q, k, v = qkv.unbind(2)
            q, k = _rotate_vision(q, k, cos, sin)
            o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                               v.transpose(1, 2), scale=attn.scaling)
            x = x + attn.proj(o.transpose(1, 2).reshape(b, n, -1))
            x = x + block.mlp(block.norm2(x))
            if layer in visual.deepstack_visual_indexes:
                merger = visual.deepstack_merger_list[visual.deepstack_visual_indexes.index(layer)]
                features.append(merger(x.reshape(b * n, -1)).view(b, merged, -1))
        return visual.merger(x.reshape(b * n, -1)).view(b, merged, -1), features

    def _fast_language(self, input_ids, image_embeds, deepstack, span, rope):
        lm = self.core.language_model
        b = image_embeds.shape[0]
        embeds = lm.embed_tokens(input_ids)
        if embeds.shape[0] != b:
            embeds = embeds.expand(b, -1, -1)
        s, e = span
        x = torch.cat([embeds[:, :s], image_embeds.to(embeds.dtype), embeds[:, e:]], dim=1)
        for index, layer in enumerate(lm.layers):
            x = layer(x, position_embeddings=rope, attention_mask=None)
            if index < len(deepstack):
                x = torch.cat([x[:, :s], x[:, s:e] + deepstack[index].to(x.dtype), x[:, e:]], 1)
        return lm.norm(x)

    def _fast_text_hidden(self, input_ids, prompt: _Prompt):
        lm = self.core.language_model
        x = lm.embed_tokens(input_ids)
        rope = self._text_rope(x.shape[1], x.device, x.dtype)
        for layer in lm.layers:
            x = layer(x, position_embeddings=rope, attention_mask=None)
        return lm.norm(x)

    # ------------------------------------------------------------------ save / load

    def settings(self) -> dict:
        return {"image_size": self.image_size, "text_length": self.text_length,
                "resize": self.resize, "resample": self.resample,
                "round_to_uint8": self.round_to_uint8, "image_mean": list(self.image_mean),
                "image_std": list(self.image_std), "pad_to_multiple_of": self.pad_to_multiple_of,
                "broadcast": self.broadcast}

    def save_pretrained(self, directory) -> Path:
        """Model (safetensors), tokenizer, the library image processor's config (so the folder
        also loads with transformers' own classes) and this conditioner's settings, in one
        folder laid out like a Qwen3-VL hub repository."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)
        make_image_processor(self.image_size, patch_size=self.patch_size,
                             merge_size=self.merge_size,
                             temporal_patch_size=self.temporal_patch_size,
                             image_mean=self.image_mean, image_std=self.image_std
                             ).save_pretrained(directory)
        (directory / CONDITIONER_CONFIG_NAME).write_text(json.dumps(self.settings(), indent=2))
        return directory

    @classmethod
    def from_pretrained(cls, model_dir, tokenizer_dir=None, *, device=None, dtype=None,
                        local_files_only: bool = False, **settings):
        """Load from a folder (or hub id) of safetensors weights. ``tokenizer_dir`` defaults to
        ``model_dir``. Settings come from the folder's conditioner config, then the
        preprocessor config's mean/std, then ``settings`` (which win)."""
        from transformers import AutoTokenizer, Qwen3VLForConditionalGeneration

        model_path = Path(model_dir)
        folder = model_path if model_path.is_dir() else None
        if folder is not None:
            _require_safetensors(folder)
        saved = {}
        if folder is not None and (folder / CONDITIONER_CONFIG_NAME).is_file():
            saved = json.loads((folder / CONDITIONER_CONFIG_NAME).read_text())
        elif folder is not None and (folder / "preprocessor_config.json").is_file():
            pre = json.loads((folder / "preprocessor_config.json").read_text())
            saved = {k: pre[k] for k in ("image_mean", "image_std") if k in pre}
        saved.update(settings)
        kwargs = {"use_safetensors": True, "local_files_only": local_files_only}
        if dtype is not None:
            kwargs["dtype"] = dtype
        model = Qwen3VLForConditionalGeneration.from_pretrained(str(model_dir), **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir or model_dir),
                                                  local_files_only=local_files_only)
        if device is not None:
            model = model.to(device)
        return cls(model.eval(), tokenizer, **saved)


def _require_safetensors(folder: Path) -> None:
    if any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.iterdir()
                     if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl"))
    if pickled:
        raise ValueError(f"{folder / pickled[0]}: only safetensors weights are loaded (pickle "
                         f"files can run code). Convert it to model.safetensors first.")
    raise FileNotFoundError(f"{folder}: no *.safetensors weights found; expected a Qwen3-VL "
                            f"folder saved with save_pretrained")


def _rotate_vision(q, k, cos, sin):
    # apply_rotary_pos_emb_vision of transformers, for (B, N, H, D) q/k and (N, D) tables.
    dtype = q.dtype
    q, k = q.float(), k.float()
    cos, sin = cos.unsqueeze(-2).float(), sin.unsqueeze(-2).float()
    q = q * cos + _rotate_half(q) * sin
    k = k * cos + _rotate_half(k) * sin
    return q.to(dtype), k.to(dtype)


def _rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)
