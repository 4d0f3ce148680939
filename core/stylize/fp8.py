"""FP8 (e4m3) weights and activations for the U-Net's and Qwen3-VL language model's GEMMs.

Contract: :func:`enable_fp8` swaps, in place, the eligible layers of a bundle for FP8 twins and
returns an :class:`FP8Swap` whose :meth:`~FP8Swap.restore` puts every original layer back (the
engine calls it in ``close``, before it unfolds LLLite). It never raises for an unsupported
device: the swap is then empty and its ``note`` says why (the clear fallback). No Qt, no I/O.

Numerics, the same on every device:

* weights: per-output-channel scales ``amax(|W[n, :]|) / 448``, ``W / scale`` rounded to
  ``torch.float8_e4m3fn`` once, when the layer is swapped;
* activations: dynamic per-row scales ``amax(|x[m, :]|) / 448``, quantized the same way at every
  call (rows are tokens, or pixels of a 1x1 convolution);
* the product accumulates in float32 and is rescaled by ``scale_x[m] * scale_w[n]``, then the
  bias is added, in the input's dtype.

On a GPU of compute capability 8.9 or newer (Ada, Hopper, Blackwell) the product is
``torch._scaled_mm`` with row-wise scales (FP8 tensor cores, twice bf16's peak on Hopper); it
needs both GEMM dimensions of the weight (in and out features) to be multiples of 16, so other
layers stay in their own dtype. Elsewhere (the CPU, for tests) the same numbers are *emulated*:
quantize to e4m3 and back, then a float32 matmul. Older GPUs get no swap (emulation there would
be slower than bf16).

Which layers (``unet_filter``, ``language_filter``): every ``nn.Linear`` and 1x1 stride-1
``nn.Conv2d`` of the U-Net except the timestep embedding (a handful of rows per batch: nothing to
gain, and the most sensitive input), and not inside LLLite adapters (their own component); every
``nn.Linear`` of Qwen3-VL's language-model decoder layers (attention and MLP projections) —
never the token embedding, the LM head, the norms or the vision tower.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

#: The largest finite float8_e4m3fn value.
E4M3_MAX = 448.0
#: Scales never go below this (an all-zero row quantizes to zeros, not NaN).
MIN_SCALE = 1e-12
#: ``torch._scaled_mm`` wants in- and out-features that are multiples of this.
ALIGN = 16
#: Compute capability of the first GPUs with FP8 tensor cores (Ada Lovelace, 8.9; Hopper 9.0).
MIN_CAPABILITY = (8, 9)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) -> (e4m3 (M, K), float32 scales (M, 1)) with ``x ≈ q.float() * scale``."""
    amax = x.abs().amax(dim=1, keepdim=True).float()
    scale = amax.clamp(min=MIN_SCALE) / E4M3_MAX
    q = (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    return q, scale


def fp8_support(device: torch.device) -> tuple[str, str]:
    """How FP8 runs on ``device``: ``("scaled_mm" | "emulated" | "off", why)``."""
    device = torch.device(device)
    if device.type == "cpu":
        return "emulated", "CPU: e4m3 quantize/dequantize and a float32 matmul (same numerics, no speed-up)"
    if device.type != "cuda":
        return "off", f"FP8 is not available on {device.type} devices"
    if not hasattr(torch, "_scaled_mm"):
        return "off", f"this torch ({torch.__version__}) has no torch._scaled_mm"
    cap = torch.cuda.get_device_capability(device)
    if tuple(cap) < MIN_CAPABILITY:
        return "off", (f"FP8 tensor cores need compute capability 8.9 or newer (Ada, Hopper); "
                       f"{torch.cuda.get_device_name(device)} is {cap[0]}.{cap[1]}: running in "
                       "bf16 instead")
    return "scaled_mm", f"torch._scaled_mm, row-wise scales, compute capability {cap[0]}.{cap[1]}"


class FP8Linear(nn.Module):
    """An ``nn.Linear`` with e4m3 weights (per-output-channel scales) and dynamic per-row
    activation scales; see the module docstring. ``emulate``: the CPU's float32 twin."""

    def __init__(self, linear: nn.Linear, *, emulate: bool):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.emulate = bool(emulate)
        with torch.no_grad():
            q, scale = quantize_rows(linear.weight.detach())
        self.register_buffer("weight_fp8", q, persistent=False)
        self.register_buffer("weight_scale", scale.reshape(1, -1).contiguous(), persistent=False)  # (1, N)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach(), persistent=False)
        self.out_dtype = linear.weight.dtype

    def matmul(self, x2: torch.Tensor) -> torch.Tensor:
        """(M, K) in the layer's dtype -> (M, N) in the layer's dtype, bias added."""
        q, scale = quantize_rows(x2)
        if self.emulate:
            w = self.weight_fp8.float() * self.weight_scale.reshape(-1, 1)
            out = (q.float() * scale) @ w.t()
            out = out.to(self.out_dtype)
        else:
            # b must be column-major: the (N, K) row-major weight, transposed (a view).
            out = torch._scaled_mm(q.contiguous(), self.weight_fp8.t(), scale_a=scale, scale_b=self.weight_scale,
                                   out_dtype=self.out_dtype)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        return self.matmul(x.reshape(-1, self.in_features)).reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"{'emulated' if self.emulate else 'scaled_mm'}")


class FP8Conv1x1(nn.Module):
    """A 1x1, stride-1, ungrouped ``nn.Conv2d`` as an FP8 GEMM over pixels (rows = B*H*W)."""

    def __init__(self, conv: nn.Conv2d, *, emulate: bool):
        super().__init__()
        linear = nn.Linear(conv.in_channels, conv.out_channels, bias=conv.bias is not None,
                           device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(conv.weight.reshape(conv.out_channels, conv.in_channels))
            if conv.bias is not None:
                linear.bias.copy_(conv.bias)
        self.gemm = FP8Linear(linear, emulate=emulate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(-1, c)  # free when x is channels-last
        out = self.gemm.matmul(rows).reshape(b, h, w, -1).permute(0, 3, 1, 2)
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and c > 1 \
            else torch.contiguous_format
        return out.contiguous(memory_format=fmt)


def eligible(module: nn.Module) -> bool:
    """A Linear, or a 1x1 stride-1 ungrouped unpadded Conv2d."""
    if isinstance(module, nn.Linear):
        return True
    return (isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1) and tuple(module.stride) == (1, 1)
            and module.groups == 1 and tuple(module.padding) in ((0, 0),) and tuple(module.dilation) == (1, 1))


def _features(module: nn.Module) -> tuple[int, int]:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    return module.in_channels, module.out_channels


def unet_filter(name: str) -> bool:
    """U-Net layers that go FP8: not the timestep embedding, not an LLLite adapter."""
    parts = name.split(".")
    return not ({"time_embedding", "time_emb_proj", "add_embedding", "adapter"} & set(parts))


def language_filter(name: str) -> bool:
    """Qwen3-VL language model layers that go FP8: the decoder layers' projections only."""
    return name.startswith("layers.")


@dataclass
class FP8Swap:
    """The layers swapped by :func:`enable_fp8`; :meth:`restore` undoes it. ``how``: scaled_mm,
    emulated or off; ``note``: why (the fallback reason when off)."""

    how: str = "off"
    note: str = ""
    swapped: list = field(default_factory=list)  # (parent, attr, original, component)
    unaligned: int = 0

    def restore(self) -> None:
        for parent, attr, original, _ in reversed(self.swapped):
            setattr(parent, attr, original)
        self.swapped.clear()

    def describe(self) -> dict:
        per = {}
        for *_, component in self.swapped:
            per[component] = per.get(component, 0) + 1
        return {"fp8": self.how, "fp8_layers": per, "fp8_unaligned_kept": self.unaligned, "fp8_note": self.note}


def swap_layers(root: nn.Module, keep, *, emulate: bool, component: str, swap: FP8Swap) -> None:
    """Every eligible layer of ``root`` whose qualified name passes ``keep`` becomes its FP8
    twin (on a GPU only where in/out features are multiples of 16); recorded in ``swap``."""
    targets = [(name, m) for name, m in root.named_modules() if name and eligible(m) and keep(name)]
    for name, module in targets:
        k, n = _features(module)
        if not emulate and (k % ALIGN or n % ALIGN):
            swap.unaligned += 1
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = root.get_submodule(parent_name) if parent_name else root
        if getattr(parent, attr) is not module:
            continue  # reached through a wrapper that shares it; swap it once, where it lives
        kind = FP8Linear if isinstance(module, nn.Linear) else FP8Conv1x1
        twin = kind(module, emulate=emulate)
        setattr(parent, attr, twin)
        swap.swapped.append((parent, attr, module, component))


def enable_fp8(bundle, device=None) -> FP8Swap:
    """Swap the bundle's U-Net (folded LLLite included: its base layers) and Qwen3-VL language
    model layers for FP8 twins; see the module docstring. Never raises for a device that cannot:
    the returned swap is empty and says why."""
    device = torch.device(device if device is not None else bundle.device)
    how, note = fp8_support(device)
    swap = FP8Swap(how=how, note=note)
    if how == "off":
        log.warning("fp8 requested but off: %s", note)
        return swap
    emulate = how == "emulated"
    swap_layers(bundle.unet, unet_filter, emulate=emulate, component="unet", swap=swap)
    qwen = getattr(bundle, "qwen", None)
    if qwen is not None:
        lm = qwen.core.language_model
        lm_how, lm_note = fp8_support(lm.embed_tokens.weight.device)
        if lm_how == "off":
            swap.note += f"; Qwen3-VL language model kept: {lm_note}"
        else:
            swap_layers(lm, language_filter, emulate=lm_how == "emulated", component="qwen_lm", swap=swap)
    log.info("fp8 (%s): %s", how, swap.describe()["fp8_layers"])
    return swap


def reference_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The float32 oracle of :class:`FP8Linear`: both operands quantized as above, written
    independently of the module (for tests and the bench's error report)."""
    xs = x.reshape(-1, x.shape[-1]).float()
    sx = xs.abs().amax(1, keepdim=True).clamp(min=MIN_SCALE) / E4M3_MAX
    sw = weight.float().abs().amax(1, keepdim=True).clamp(min=MIN_SCALE) / E4M3_MAX
    xq = (xs / sx).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).float() * sx
    wq = (weight.float() / sw).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).float() * sw
    out = F.linear(xq, wq, None if bias is None else bias.float())
    return out.reshape(*x.shape[:-1], weight.shape[0])


__all__ = ["E4M3_MAX", "FP8Conv1x1", "FP8Linear", "FP8Swap", "enable_fp8", "fp8_support", "language_filter",
           "quantize_rows", "reference_linear", "unet_filter"]
