"""Tiny random-weight bundles shaped as the engine tests use them (tests import this module)."""

from __future__ import annotations

import dataclasses

from stylecam.core.stylize.bundle import build_tiny_bundle


def tiny_bundle(stack: str = "mllm-edit"):
    """``build_tiny_bundle(stack)``; mllm-edit with LLLite over the down blocks only (fewer
    adapters: faster on two cores, and still a hook subset, as the paper's)."""
    b = build_tiny_bundle(stack, lllite=stack == "mllm-edit")
    if stack == "mllm-edit":
        b.manifest = dataclasses.replace(b.manifest, lllite_subset="down_blocks")
    return b
