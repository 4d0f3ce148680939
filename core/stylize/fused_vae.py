"""TAESD's residual blocks as cuDNN convolutions with their bias, skip add and ReLU fused in.

Contract: :func:`fuse_tiny_blocks` swaps, in place, every eligible ``AutoencoderTinyBlock`` of a
TAESD (diffusers' ``AutoencoderTiny``: encoder and decoder) for a :class:`FusedTinyBlock` over
the *same* convolution modules, and returns a :class:`BlockSwap` whose
:meth:`~BlockSwap.restore` puts the originals back (the engine calls it in ``close``). It never
raises for a device or a model it cannot help: the swap is then empty and its ``note`` says why.
No Qt, no I/O.

Why (issue #17): in the kernel profile of a compiled mllm-edit batch of 16 on an H100
(2026-12-07) TAESD took 16.5 ms of 80, at a third of the card's peak. Each block is
``relu(conv3(relu(conv2(relu(conv1(x))))) + x)`` over 64 channels, and Inductor cannot fuse a
bias, an add or a ReLU into a cuDNN convolution: every one of them is a Triton kernel of its own
that reads the convolution's whole output back from memory (at 512x512, 32 MiB a frame) and
writes it again. cuDNN's runtime fusion runs ``relu(conv(x) + alpha * z + bias)`` as one kernel
(``torch.cudnn_convolution_add_relu``), the epilogue applied while the tile is still on chip.

Predicted from the compiled profile: up to ~4 ms less per batch of 16 under Inductor. Measured
(H100, 2026-12-07, mllm-edit, e2e 1280x720, same process): with CUDA graphs, where every bias,
ReLU and add was a kernel of its own, B=16 went 170.6 -> 202.0 fps (+18 %); compiled, 241.9 ->
257.4 fps at B=16 (+6 %, 4.0 ms less per batch of 16, as predicted) and 158.3 -> 164.6 fps at
B=1. So the engine's ``fused_vae="auto"`` turns it on wherever CUDA is.

The block's numbers are the same as the unfused block's up to rounding: the sum is taken in
float32 before one rounding to the activation dtype, where the unfused path rounds the
convolution's output first. Elsewhere than CUDA with cuDNN (the CPU, for tests) the ops run as
``relu(conv2d(x, w, b) + alpha * z)``, the unfused block's own operations in its own order.

The ops are ``torch.library`` custom ops with a shape function, so ``torch.compile`` traces a
fused block as one opaque call (Inductor has no lowering for cuDNN's fused op).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

_CL = torch.channels_last


def _out_format(x: torch.Tensor, weight: torch.Tensor) -> torch.memory_format:
    """The layout cuDNN writes (channels-last when either operand is), made explicit so the
    shape function and the kernel agree on strides."""
    def nhwc(t):
        return t.is_contiguous(memory_format=_CL) and not t.is_contiguous()

    return _CL if nhwc(x) or nhwc(weight) else torch.contiguous_format


@torch.library.custom_op("stylecam::conv3x3_add_relu", mutates_args=())
def conv3x3_add_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, z: torch.Tensor,
                     alpha: float) -> torch.Tensor:
    """``relu(conv2d(x, weight, bias, padding=1) + alpha * z)``, one cuDNN kernel on CUDA."""
    fmt = _out_format(x, weight)
    if x.is_cuda and torch.backends.cudnn.is_available() and torch.backends.cudnn.enabled:
        out = torch.cudnn_convolution_add_relu(x, weight, z, alpha, bias, (1, 1), (1, 1), (1, 1), 1)
    else:
        out = F.relu(F.conv2d(x, weight, bias, padding=1) + alpha * z)  # alpha 0 or 1: exact
    return out.contiguous(memory_format=fmt)


@conv3x3_add_relu.register_fake
def _(x, weight, bias, z, alpha):
    n, _, h, w = x.shape
    return torch.empty((n, weight.shape[0], h, w), dtype=x.dtype, device=x.device,
                       memory_format=_out_format(x, weight))


def _plain_3x3(conv) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.bias is not None and conv.padding_mode == "zeros"
            and conv.in_channels == conv.out_channels)


def eligible(block: nn.Module) -> bool:
    """A TAESD block the fused path computes exactly: three same-width 3x3 convolutions with a
    bias, ReLU between them and after the add, and an identity skip."""
    if type(block).__name__ != "AutoencoderTinyBlock":
        return False
    seq = list(getattr(block, "conv", []))
    return (len(seq) == 5 and all(_plain_3x3(seq[i]) for i in (0, 2, 4))
            and all(isinstance(seq[i], nn.ReLU) for i in (1, 3))
            and isinstance(block.skip, nn.Identity) and isinstance(block.fuse, nn.ReLU))


class FusedTinyBlock(nn.Module):
    """``relu(conv3(relu(conv2(relu(conv1(x))))) + x)`` as three fused convolutions. Holds the
    original block's convolution modules, so it reads whatever parameters they have at call time
    (a memory-format change swaps them)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.c1, self.c2, self.c3 = block.conv[0], block.conv[2], block.conv[4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The first two have nothing to add: z is x with alpha 0 (finite, and the output's shape;
        # an uninitialised z could hold NaN bit patterns, and 0 * NaN is NaN).
        h = torch.ops.stylecam.conv3x3_add_relu(x, self.c1.weight, self.c1.bias, x, 0.0)
        h = torch.ops.stylecam.conv3x3_add_relu(h, self.c2.weight, self.c2.bias, h, 0.0)
        return torch.ops.stylecam.conv3x3_add_relu(h, self.c3.weight, self.c3.bias, x, 1.0)


@dataclass
class BlockSwap:
    """What :func:`fuse_tiny_blocks` did: ``swapped`` (container, index, original block) and
    ``note`` (why nothing was swapped, else None)."""

    swapped: list = field(default_factory=list)
    note: str | None = None

    def restore(self) -> None:
        for seq, i, block in reversed(self.swapped):
            seq[i] = block
        self.swapped.clear()

    def describe(self) -> dict:
        return {"fused_vae_blocks": len(self.swapped), **({"fused_vae_note": self.note} if self.note else {})}


def _probe(device: torch.device, dtype: torch.dtype) -> str | None:
    """None when cuDNN runs the fused op on this device and dtype and matches the reference;
    else why not (no engine for this graph, say, on an older cuDNN)."""
    try:
        g = torch.Generator(device="cpu").manual_seed(0)
        x = torch.randn(2, 64, 16, 16, generator=g).to(device, dtype).contiguous(memory_format=_CL)
        w = (torch.randn(64, 64, 3, 3, generator=g) * 0.05).to(device, dtype).contiguous(memory_format=_CL)
        b = torch.randn(64, generator=g).to(device, dtype)
        got = conv3x3_add_relu(x, w, b, x, 1.0)
        ref = F.relu(F.conv2d(x, w, b, padding=1) + x)
        err = (got.float() - ref.float()).abs().max().item()
        tol = 0.05 * ref.float().abs().max().item() + 1e-3
        return None if err <= tol else f"cuDNN's fused convolution differs from the reference by {err:.3g}"
    except RuntimeError as e:  # cuDNN found no engine for the fused graph, or none is built in
        return f"cuDNN cannot run the fused convolution here ({str(e).splitlines()[0][:160]})"


def why_not_fused(param: torch.Tensor) -> str | None:
    """None when the fused blocks can run where ``param`` lives; else why not (probes cuDNN)."""
    if param.device.type != "cuda":
        return "the fused convolutions are cuDNN's: CUDA only"
    if not torch.backends.cudnn.is_available():
        return "no cuDNN in this torch build"
    return _probe(param.device, param.dtype)


def fuse_tiny_blocks(vae: nn.Module, *, check: bool = True) -> BlockSwap:
    """Swap the eligible blocks of ``vae``'s encoder and decoder (see the module docstring).
    ``check`` False swaps on any device without probing cuDNN (the CPU then runs the ops'
    reference path): how tests reach the swap, the shape function and the compiled trace."""
    swap = BlockSwap()
    containers = [getattr(getattr(vae, part, None), "layers", None) for part in ("encoder", "decoder")]
    found = [(seq, i, m) for seq in containers if isinstance(seq, nn.Sequential)
             for i, m in enumerate(seq) if eligible(m)]
    if not found:
        swap.note = "no TAESD block with ReLU and an identity skip in this VAE"
        return swap
    swap.note = why_not_fused(next(vae.parameters())) if check else None
    if swap.note:
        log.warning("fused TAESD blocks off: %s", swap.note)
        return swap
    for seq, i, block in found:
        seq[i] = FusedTinyBlock(block)
        swap.swapped.append((seq, i, block))
    return swap
