"""Conditioning encoders: CLIP text with a per-prompt cache, and the Qwen3-VL vision-aware encoder.

A static prompt is encoded once and reused for every frame (the static-prompt cache); the cache
keys on the exact prompt string and keeps the most recent few, so switching back and forth
between styles costs nothing after the first use. The Qwen3-VL conditioner (frame +
instruction -> fixed-length hidden states) lives in :mod:`.qwen_vl` and is re-exported here.
"""

from __future__ import annotations

from collections import OrderedDict

import torch


class ClipTextConditioner:
    """Prompt -> CLIP last hidden states ``(1, text_length, hidden)``, cached per prompt.

    Text is padded (or truncated) to ``text_length`` tokens, so every prompt gives the same
    shape. The cached tensor lives on the encoder's device in its dtype; callers must not write
    into it (expand it to the batch instead).
    """

    def __init__(self, tokenizer, text_encoder, text_length: int | None = None, cache_size: int = 16):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.text_length = int(text_length or tokenizer.model_max_length)
        max_positions = text_encoder.config.max_position_embeddings
        if self.text_length > max_positions:
            raise ValueError(f"text_length {self.text_length} exceeds the text encoder's "
                             f"{max_positions} positions")
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.encodes = 0  # how many times the encoder actually ran (the cache's misses)

    def token_ids(self, prompt: str) -> torch.Tensor:
        ids = self.tokenizer(prompt, padding="max_length", max_length=self.text_length, truncation=True,
                             return_tensors="pt").input_ids
        return ids

    @torch.no_grad()
    def encode(self, prompt: str) -> torch.Tensor:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        hit = self._cache.get(prompt)
        if hit is not None:
            self._cache.move_to_end(prompt)
            return hit
        device = next(self.text_encoder.parameters()).device
        hidden = self.text_encoder(self.token_ids(prompt).to(device), return_dict=False)[0]
        self.encodes += 1
        self._cache[prompt] = hidden
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return hidden

    def clear(self) -> None:
        self._cache.clear()


def __getattr__(name: str):
    # Imported lazily: the Qwen3-VL module pulls in transformers' Qwen classes.
    if name == "QwenVLConditioner":  # its builders: bundle/build_qwen.py
        from . import qwen_vl

        return getattr(qwen_vl, name)
    raise AttributeError(name)


__all__ = ["ClipTextConditioner"]


# --------------------------------------------------------------------------------------------
# How a stream is conditioned: chosen once per engine (a strategy, not a string tested per call)


class TextChange:
    """What a new text asks of the engine: ``static`` (1, L, D) conditioning to copy in once, or
    None when the side stream encodes per batch; ``recapture`` when the side step's input shape
    changed (a new Qwen3-VL length bucket)."""

    def __init__(self, static: torch.Tensor | None = None, recapture: bool = False):
        self.static = static
        self.recapture = recapture


class StreamConditioning:
    """The conditioning policy of one stream. ``on_side``: encoded on the side stream per batch
    (``step``) rather than once per text. ``length``/``dim``: the U-Net's conditioning shape.

    ``set_text`` runs on the host between batches (buffer copies go on ``stream``); ``step`` is
    the side stream's capturable step over the batch's frames (model-size uint8 on the side
    device). ``close`` undoes what the policy changed on the bundle's models.
    """

    on_side = False
    length = dim = 0

    def set_text(self, text: str, stream) -> TextChange:
        raise NotImplementedError

    def step(self, frames: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def close(self) -> None:
        """Undo what the policy changed on the bundle's models."""


class StaticClip(StreamConditioning):
    """CLIP text encoded once per prompt (the static-prompt cache): sd-turbo, pix2pix."""

    def __init__(self, bundle, dtype):
        self.clip = ClipTextConditioner(bundle.tokenizer, bundle.text_encoder, bundle.manifest.text_length)
        self.dtype = dtype
        self.length, self.dim = bundle.manifest.text_length, bundle.text_encoder.config.hidden_size

    @torch.no_grad()
    def set_text(self, text: str, stream) -> TextChange:
        return TextChange(static=self.clip.encode(text).to(self.dtype))


class SideClip(StaticClip):
    """CLIP run on the side stream for every batch (``cache_text=False``: the naive baseline)."""

    on_side = True

    def __init__(self, bundle, dtype, side_device):
        super().__init__(bundle, dtype)
        self.text_encoder = bundle.text_encoder
        self.side_device = side_device
        self.ids: torch.Tensor | None = None

    def set_text(self, text: str, stream) -> TextChange:
        ids = self.clip.token_ids(text).to(self.side_device)
        if self.ids is None:
            self.ids = ids.clone()
        else:
            with stream:
                self.ids.copy_(ids)
        return TextChange()

    def step(self, frames: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(self.ids, return_dict=False)[0].to(self.dtype)


class _Qwen(StreamConditioning):
    def __init__(self, qwen, dtype, fast: bool):
        self.qwen = qwen
        self.dtype = dtype
        self._fast_was = qwen.fast
        qwen.fast = fast
        self.length, self.dim = qwen.text_length, qwen.hidden_size

    def close(self) -> None:
        self.qwen.fast = self._fast_was


class QwenText(_Qwen):
    """mllm-edit with ``vision=False``: Qwen3-VL reads the instruction alone, once per text."""

    def __init__(self, qwen, dtype, fast: bool):
        super().__init__(qwen, dtype, fast)
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def set_text(self, text: str, stream) -> TextChange:
        hit = self._cache.get(text)
        if hit is None:
            hit = self._cache[text] = self.qwen.encode_text(text, 1).to(self.dtype)
        return TextChange(static=hit)


class QwenVision(_Qwen):
    """mllm-edit as the paper runs it: Qwen3-VL looks at the frames on the side stream.

    The prompt's token ids and pad mask live in fixed buffers; a prompt of another padded length
    (``pad_to_multiple_of`` buckets) gets new buffers and a re-capture of the step, once per
    bucket. The fast forward's constants (rotary tables, M-RoPE positions) are built here, per
    bucket, eagerly: never traced into the captured or compiled step.
    """

    on_side = True

    def __init__(self, qwen, dtype, fast: bool, side_device, frame_hw: tuple[int, int]):
        super().__init__(qwen, dtype, fast)
        self.side_device = side_device
        self.frame_hw = frame_hw
        self.ids: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None
        self.tables = None
        self.text: str | None = None

    def set_text(self, text: str, stream) -> TextChange:
        h, w = self.frame_hw
        on = self.qwen.prompt(text, self.qwen.num_image_tokens(h, w)).to(self.side_device)
        self.text = text
        if self.ids is None or self.ids.shape != on["input_ids"].shape:
            self.ids = on["input_ids"].clone()
            self.mask = on["mask"].clone()
            self.tables = self.qwen.fast_tables(h, w, self.ids.shape[1])
            return TextChange(recapture=True)
        with stream:
            self.ids.copy_(on["input_ids"])
            self.mask.copy_(on["mask"])
        return TextChange()

    def step(self, frames: torch.Tensor) -> torch.Tensor:
        if self.qwen.fast:
            hidden = self.qwen.encode_tensors(frames, self.ids, self.tables)
            hidden = hidden * self.mask.unsqueeze(-1).to(hidden.dtype)
        else:
            hidden = self.qwen.encode(frames, self.text)
        return hidden.to(self.dtype)


def stream_conditioning(bundle, *, dtype, vision: bool, cache_text: bool, fast: bool, side_device,
                        frame_hw: tuple[int, int]) -> StreamConditioning:
    """The policy a bundle and the engine settings call for (see the classes above)."""
    if bundle.qwen is not None:
        if vision:
            return QwenVision(bundle.qwen, dtype, fast, side_device, frame_hw)
        return QwenText(bundle.qwen, dtype, fast)
    return StaticClip(bundle, dtype) if cache_text else SideClip(bundle, dtype, side_device)
