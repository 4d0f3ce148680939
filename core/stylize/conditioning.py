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
