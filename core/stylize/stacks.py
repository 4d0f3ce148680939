"""The model stacks: one :class:`Stack` record per stack, every fact about it in one place.

A stack is a kind of diffusion model the engine runs (a denoiser, how it is conditioned, which
scheduler family, how the frame enters it). Everything else reads these records: the manifest's
defaults and checks (``bundle``), where public weights live on the hub (``models pull``,
``doctor``), what ``models list`` says, which stacks a style may name (``params``). Code that
behaves differently per stack tests a record attribute (``stack.flow``, ``stack.vision``,
``stack.prefers``), never a stack's name.

Adding a stack: one record in :data:`STACKS` and its builders (tiny and full size, in
``bundle/build.py``); a new denoising step if none of the existing ones fits.

Contract: plain data, no torch and no other stylecam imports, so ``params`` can validate styles
and the doctor can list the hub repositories without loading any model library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

#: Stable Diffusion's latent scaling: pix2pix U-Nets see the source latent unscaled, while
#: TAESD (and our scaled AutoencoderKL path) hand out latents already multiplied by it.
SD_LATENT_SCALE = 0.18215

#: Components any stack may add (a ControlNet-LLLite adapter).
OPTIONAL = ("lllite",)

#: What each component is, for listings.
COMPONENT_LABELS = {"unet": "U-Net", "vae": "VAE", "text_encoder": "CLIP text encoder", "tokenizer": "tokenizer",
                    "scheduler": "scheduler", "qwen": "Qwen3-VL encoder", "lllite": "LLLite adapter"}


@dataclass(frozen=True)
class Stack:
    """One stack's facts."""

    name: str
    #: One line for ``stylecam models list``.
    summary: str
    #: Whose weights, under which terms.
    licence: str
    #: Required components, in load order.
    components: tuple[str, ...]
    #: True: a multimodal LLM (Qwen3-VL) reads the frame and the instruction (vision-aware,
    #: refreshed every N batches). False: a CLIP text encoder, encoded once per prompt.
    vision: bool
    #: True: flow-matching scheduler (Euler on a straight path); False: DDPM family (Euler/LCM).
    flow: bool
    #: How the frame's latent reaches the U-Net, allowed values of the manifest's ``concat``:
    #: "none" (img2img: noised to a strength), "channel" (4 extra input channels), "width"
    #: (side by side, in-context). The first is the default.
    concat_modes: tuple[str, ...]
    #: Which of a style's texts the stack reads first ("prompt": what the picture should look
    #: like; "instruction": how to change the frame); the other is the fallback.
    prefers: str
    #: Manifest settings this stack starts from (``bundle.manifest`` validates them).
    defaults: Mapping[str, Any]
    #: Public weights: component -> (hub repository, subfolder). Empty: bring your own bundle.
    hub: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    #: Why there are no public weights and what to do instead (stacks without ``hub``).
    no_hub: str = ""

    def __post_init__(self) -> None:
        # Frozen records, frozen tables: nothing can change a stack's facts after import.
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        object.__setattr__(self, "hub", MappingProxyType(dict(self.hub)))

    @property
    def repos(self) -> list[str]:
        """The hub repositories of its public weights, sorted."""
        return sorted({repo for repo, _ in self.hub.values()})


_SD_HUB = dict(unet="unet", text_encoder="text_encoder", tokenizer="tokenizer", scheduler="scheduler")
_TAESD = ("madebyollin/taesd", "")

STACKS: Mapping[str, Stack] = MappingProxyType({s.name: s for s in (
    Stack(
        name="sd-turbo",
        summary="img2img on SD-Turbo (1-4 steps), CLIP text; the GPU default",
        licence="Stability AI Non-Commercial Research Community licence",
        components=("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
        vision=False, flow=False, concat_modes=("none",), prefers="prompt",
        # img2img: noise the frame's latent to `strength`, denoise in `steps` (SD-Turbo is
        # distilled for 1-4 steps); epsilon prediction on the DDPM schedule, trailing spacing.
        defaults=dict(size=(512, 512), steps=1, strength=0.5, text_length=77, concat="none",
                      source_scale=1.0, timestep_spacing="trailing"),
        hub={**{c: ("stabilityai/sd-turbo", sub) for c, sub in _SD_HUB.items()}, "vae": _TAESD},
    ),
    Stack(
        name="pix2pix",
        summary="InstructPix2Pix edit U-Net (8-channel concat), CLIP text",
        licence="MIT licence of its model card (fine-tuned from Stable Diffusion 1.5, CreativeML Open RAIL-M)",
        components=("unet", "vae", "text_encoder", "tokenizer", "scheduler"),
        vision=False, flow=False, concat_modes=("channel",), prefers="instruction",
        # InstructPix2Pix: start from noise, the source latent rides along in 4 extra input
        # channels (unscaled, as the model was trained).
        defaults=dict(size=(512, 512), steps=4, strength=1.0, text_length=77, concat="channel",
                      source_scale=1.0 / SD_LATENT_SCALE, timestep_spacing="trailing"),
        hub={**{c: ("timbrooks/instruct-pix2pix", sub) for c, sub in _SD_HUB.items()}, "vae": _TAESD},
    ),
    Stack(
        name="mllm-edit",
        summary="the paper's regime: width-concat edit U-Net on Qwen3-VL hidden states, 1 step",
        licence="your own weights (e.g. DreamLite-mobile, gated, non-commercial)",
        components=("unet", "vae", "qwen", "scheduler"),
        vision=True, flow=True, concat_modes=("width", "channel"), prefers="instruction",
        # DreamLite-style in-context edit: [noisy | source] side by side along the width,
        # Qwen3-VL hidden states of (frame, instruction) padded to a fixed length, flow matching,
        # 1 step. ``text_bucket``: the language model runs on the real prompt tokens rounded up
        # to a multiple of this, not on all ``text_length`` (same conditioning: it is causal and
        # the rest is zero); 0 runs every prompt at the full length.
        defaults=dict(size=(512, 512), steps=1, strength=1.0, text_length=256, image_size=256,
                      concat="width", source_scale=1.0, timestep_spacing="trailing", text_bucket=64),
        no_hub=("the mllm-edit stack has no public weights (DreamLite-mobile is gated and non-commercial); "
                "build your own bundle folder (see docs/models.md) and pass it with --bundle"),
    ),
)})

#: The stack a diffusion style runs when no bundle is named (the one with public weights that
#: runs at camera rate on one GPU).
DEFAULT_STACK = "sd-turbo"


def hub_stacks() -> list[str]:
    """The stacks whose weights are public on the hub (``stylecam models pull`` fetches them)."""
    return [name for name, s in STACKS.items() if s.hub]


def hub_repos() -> dict[str, str]:
    """Every hub repository some stack pulls -> what it holds, e.g. ``"madebyollin/taesd":
    "VAE of sd-turbo, pix2pix"``. The doctor lists these in its model-cache check."""
    parts: dict[str, dict[str, list[str]]] = {}
    for stack in STACKS.values():
        for component, (repo, _) in stack.hub.items():
            parts.setdefault(repo, {}).setdefault(component, []).append(stack.name)
    out = {}
    for repo, components in parts.items():
        stacks = sorted({s for names in components.values() for s in names}, key=list(STACKS).index)
        labels = ", ".join(COMPONENT_LABELS.get(c, c) for c in components)
        default = " (the GPU default)" if DEFAULT_STACK in stacks and len(stacks) == 1 else ""
        out[repo] = f"{labels} of {', '.join(stacks)}{default}"
    return out
