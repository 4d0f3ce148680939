"""ControlNet-LLLite for diffusers U-Nets, in a hooked reference form and a folded form.

An LLLite adapter sits in front of one Linear layer of a transformer block: attn1 ``to_q``,
``to_k``, ``to_v`` (self-attention) and attn2 ``to_q`` (the cross-attention query; its key and
value read the text/MLLM states, whose length differs from the image tokens). Each adapter has

* ``conditioning1``: a strided-conv CNN that turns the control image ``(B, 3, 8h, 8w)`` into an
  embedding at the token grid of its layer, ``(B, tokens, cond_emb_dim)``. It runs once per
  control image, not per denoising step, and its output is cached;
* ``down`` (Linear in→mlp, ReLU), ``mid`` (Linear cond_emb+mlp→mlp, ReLU; the cached embedding is
  concatenated *before* ``down(x)`` along channels) and ``up`` (Linear mlp→in, zero-initialised).
  ``up(...) * multiplier`` is added to the layer's *input*.

This is the architecture and the state-dict layout of kohya-ss sd-scripts
``networks/control_net_lllite.py`` (the reference implementation), re-targeted to diffusers
module names; DreamLite-stream (the paper's code) uses the same adapter on its width-concat
U-Net, where the embedding covers the left (noisy-latent) part of each token row and the right
(source-latent) part gets zeros.

Two ways to run the same adapters on a U-Net:

* :func:`attach_reference` — the usual way: forward pre-hooks on the hooked Linears and the
  cached embeddings in a Python dict, set by ``set_cond_image``. Simple, and what the folded form
  is checked against, but ``torch.compile`` has to guard on (and break at) that Python state.
* :class:`FoldedLLLiteUNet` — each hooked Linear is *replaced* by an :class:`LLLiteLinear`
  module holding the base Linear, the adapter and a fixed-address buffer for the embedding.
  ``forward`` reads only tensors, so U-Net + adapters trace as one graph
  (``fullgraph=True``, CUDA graphs); ``refresh_conditioning`` writes new embeddings into the
  buffers in place, for the active hooks only (the paper's best subset is ``down_blocks``).

Weights: kohya-style files (``lllite_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.
down.0.weight``; ldm ``input_blocks``/``middle_block``/``output_blocks`` numbering) through
:func:`load_kohya` / :func:`save_kohya`, and our own layout — a folder with ``lllite.safetensors``
keyed by diffusers module names and ``lllite_config.json`` — through :func:`load_adapters` /
:func:`save_adapters`. safetensors only; every shape is checked before anything is returned.

Typical use::

    adapters = load_adapters(bundle / "lllite", unet)          # or load_kohya(file, unet)
    folded = FoldedLLLiteUNet(unet, adapters, hooks="down_blocks", latent_size=(64, 64))
    folded.refresh_conditioning(control)                       # (B, 3, 512, 512) in [-1, 1]
    step = torch.compile(folded, fullgraph=True)
    noise_pred = step(latent, timestep, encoder_hidden_states)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

#: The control image is this many times the (frame) latent size, as with an SD VAE or TAESD.
IMAGE_SCALE = 8
KOHYA_PREFIX = "lllite_unet_"
CONFIG_NAME = "lllite_config.json"
WEIGHTS_NAME = "lllite.safetensors"
FORMAT_NAME = "stylecam.lllite"
BLOCK_KINDS = ("down_blocks", "mid_block", "up_blocks")


class LLLiteError(ValueError):
    """An LLLite file, config or hook selection does not fit; the message says what and where."""


# --------------------------------------------------------------------------------------------
# Configuration and hook enumeration


@dataclass(frozen=True)
class LLLiteConfig:
    """Adapter sizes and which hooked layers carry one.

    ``hooks``: ``"all"``, or block-name prefixes and/or exact diffusers module names, as a
    comma-separated string or a sequence — e.g. ``"down_blocks"``, ``("down_blocks",
    "mid_block")``, ``"up_blocks.1"``, or a list of full names. The defaults 32/64 are the
    paper's; kohya's script defaults to 16/16.

    ``width_concat``: the U-Net sees this many latents side by side along the width (the
    ``mllm-edit`` stack: 2, noisy | source); the embedding covers the leftmost part only.
    """

    cond_emb_dim: int = 32
    mlp_dim: int = 64
    hooks: str | tuple[str, ...] = "all"
    width_concat: int = 1

    def __post_init__(self):
        if self.cond_emb_dim < 2 or self.cond_emb_dim % 2:
            raise LLLiteError(f"cond_emb_dim must be an even number >= 2, got {self.cond_emb_dim}")
        if self.mlp_dim < 1:
            raise LLLiteError(f"mlp_dim must be >= 1, got {self.mlp_dim}")
        if self.width_concat < 1:
            raise LLLiteError(f"width_concat must be >= 1, got {self.width_concat}")
        if not isinstance(self.hooks, str):
            object.__setattr__(self, "hooks", tuple(self.hooks))


@dataclass(frozen=True)
class HookTarget:
    """One hookable Linear of a U-Net.

    ``level``: how many times the latent has been halved where this layer runs (0 = latent
    resolution); it fixes the depth of the conditioning CNN. ``kohya_name``: the same layer in
    kohya's file naming (ldm block numbering, dots as underscores, ``lllite_unet_`` prefix).
    """

    name: str
    in_features: int
    level: int
    kohya_name: str

    def grid(self, latent_size: tuple[int, int], width_concat: int = 1) -> tuple[int, int]:
        """Token grid ``(rows, cols)`` at this layer for a frame latent of ``latent_size``."""
        h, w = latent_size
        return h >> self.level, (w >> self.level) * width_concat


def _sub(module: nn.Module, name: str):
    return getattr(module, name, None)


def hook_targets(unet: nn.Module) -> list[HookTarget]:
    """Every Linear of ``unet`` an LLLite adapter can hook, in module order.

    Works on the diffusers layout (``UNet2DConditionModel`` and subclasses such as
    ``DreamLiteUNetModel``): transformer blocks inside ``down_blocks.i.attentions.j``,
    ``mid_block.attentions.j`` and ``up_blocks.i.attentions.j``. attn1 ``to_k``/``to_v`` are
    skipped where attn1 is itself a cross-attention (``only_cross_attention``), for the same
    reason attn2 ``to_k``/``to_v`` are.
    """
    down_blocks = list(_sub(unet, "down_blocks") or [])
    up_blocks = list(_sub(unet, "up_blocks") or [])
    if not down_blocks and not up_blocks:
        raise LLLiteError(f"{type(unet).__name__} has no down_blocks/up_blocks: not a diffusers U-Net")

    # Containers: (diffusers prefix, ldm prefix, level).
    containers: list[tuple[str, str, int, nn.Module]] = []
    level, ldm_index = 0, 1  # ldm input_blocks.0 is conv_in
    for i, block in enumerate(down_blocks):
        for j, attn in enumerate(_sub(block, "attentions") or []):
            containers.append((f"down_blocks.{i}.attentions.{j}", f"input_blocks.{ldm_index + j}.1",
                               level, attn))
        has_down = bool(_sub(block, "downsamplers"))
        # ldm keeps each resnet(+attention) pair and each downsampler as its own input block.
        ldm_index += len(_sub(block, "resnets") or []) + int(has_down)
        level += int(has_down)
    mid = _sub(unet, "mid_block")
    if mid is not None:
        for j, attn in enumerate(_sub(mid, "attentions") or []):
            # ldm middle_block is [res, attn, res, attn, ..., res].
            containers.append((f"mid_block.attentions.{j}", f"middle_block.{2 * j + 1}", level, attn))
    ldm_index = 0
    for i, block in enumerate(up_blocks):
        for j, attn in enumerate(_sub(block, "attentions") or []):
            containers.append((f"up_blocks.{i}.attentions.{j}", f"output_blocks.{ldm_index + j}.1",
                               level, attn))
        # ldm folds the upsampler into the last output block of a level.
        ldm_index += len(_sub(block, "resnets") or [])
        level -= int(bool(_sub(block, "upsamplers")))

    targets = []
    for prefix, ldm_prefix, lvl, container in containers:
        for k, tblock in enumerate(_sub(container, "transformer_blocks") or []):
            for attn_name in ("attn1", "attn2"):
                attn = _sub(tblock, attn_name)
                if attn is None:
                    continue
                projections = ["to_q"]
                if attn_name == "attn1" and not getattr(attn, "is_cross_attention", False):
                    projections += ["to_k", "to_v"]
                for proj in projections:
                    linear = _sub(attn, proj)
                    if isinstance(linear, LLLiteLinear):
                        linear = linear.base
                    if not isinstance(linear, nn.Linear):
                        continue
                    tail = f"transformer_blocks.{k}.{attn_name}.{proj}"
                    targets.append(HookTarget(
                        name=f"{prefix}.{tail}", in_features=linear.in_features, level=lvl,
                        kohya_name=KOHYA_PREFIX + f"{ldm_prefix}.{tail}".replace(".", "_")))
    return targets


def select_hooks(targets: Sequence[HookTarget], hooks: str | Iterable[str] | None) -> list[HookTarget]:
    """The targets a hook selection names, in module order (see :class:`LLLiteConfig`)."""
    if hooks is None:
        return list(targets)
    items = [s.strip() for s in hooks.split(",")] if isinstance(hooks, str) else [str(s).strip() for s in hooks]
    items = [s for s in items if s]
    if not items:
        raise LLLiteError("empty hook selection: name 'all', block prefixes such as 'down_blocks', "
                          "or module names")
    if items == ["all"]:
        return list(targets)
    chosen: set[str] = set()
    for item in items:
        hits = [t.name for t in targets if t.name == item or t.name.startswith(item + ".")]
        if not hits:
            if not targets:
                raise LLLiteError(f"hook selection {item!r}: there are no hookable layers to select")
            blocks = sorted({".".join(t.name.split(".")[:1 if t.name.startswith("mid") else 2])
                             for t in targets})
            raise LLLiteError(f"hook selection {item!r} matches no hookable layer; choose 'all', "
                              f"{', '.join(BLOCK_KINDS)}, one of {', '.join(blocks)}, or full module "
                              f"names such as {targets[0].name!r}")
        chosen.update(hits)
    return [t for t in targets if t.name in chosen]


def count_hooks(unet_config: dict, hooks: str | Iterable[str] | None = None,
                unet_class: type | None = None) -> dict[str, int]:
    """Hook counts of a U-Net layout, built on the meta device (no memory, no weights).

    Returns the totals per block kind plus ``selected`` for ``hooks``. For reference:
    SD 1.x/2.x (SD-Turbo) 64 hooks, 24 in down_blocks; SDXL 280, 96 in down_blocks (136 in
    input + middle blocks, kohya's default training set); the paper's DreamLite-mobile U-Net
    108 hooks, 38 in down_blocks (its best subset) — ``DreamLiteUNetModel`` with
    ``transformer_layers_per_block=(1, 2, 4)`` reproduces both numbers.
    """
    if unet_class is None:
        from diffusers import UNet2DConditionModel

        unet_class = UNet2DConditionModel
    with torch.device("meta"):
        unet = unet_class.from_config(unet_config)
    targets = hook_targets(unet)
    counts = {kind: sum(t.name.startswith(kind + ".") for t in targets) for kind in BLOCK_KINDS}
    counts["total"] = len(targets)
    counts["selected"] = len(select_hooks(targets, hooks))
    return counts


# --------------------------------------------------------------------------------------------
# The adapter


def conditioning_strides(level: int) -> list[int]:
    """Strides of the conditioning CNN that takes the control image to ``level``'s grid.

    kohya's three depths are levels 0–2 here: 4·2 (latent size), 4·4 (/2), 4·4·2 (/4). Deeper
    levels (SD's fourth stage) continue the pattern with more 4s.
    """
    strides, rest = [4], 2 ** (level + 1)
    while rest >= 4:
        strides.append(4)
        rest //= 4
    if rest == 2:
        strides.append(2)
    return strides


class LLLiteAdapter(nn.Module):
    """One LLLite adapter; submodule names match kohya's so its state dict maps 1:1."""

    def __init__(self, in_features: int, cond_emb_dim: int, mlp_dim: int, level: int):
        super().__init__()
        self.level = level
        strides = conditioning_strides(level)
        half = cond_emb_dim // 2
        layers: list[nn.Module] = []
        for i, s in enumerate(strides):
            last = i == len(strides) - 1
            layers.append(nn.Conv2d(3 if i == 0 else half, cond_emb_dim if last else half,
                                    kernel_size=s, stride=s))
            if not last:
                layers.append(nn.ReLU())
        self.conditioning1 = nn.Sequential(*layers)
        self.down = nn.Sequential(nn.Linear(in_features, mlp_dim), nn.ReLU())
        self.mid = nn.Sequential(nn.Linear(mlp_dim + cond_emb_dim, mlp_dim), nn.ReLU())
        self.up = nn.Sequential(nn.Linear(mlp_dim, in_features))
        # kohya zeroes only the weight, which leaves a constant bias on an untrained adapter;
        # zeroing both makes a fresh adapter an exact no-op, the point of a zero-conv.
        nn.init.zeros_(self.up[0].weight)
        nn.init.zeros_(self.up[0].bias)

    def embed(self, control_image: torch.Tensor, width_concat: int = 1) -> torch.Tensor:
        """Control image ``(B, 3, H, W)`` in [-1, 1] → ``(B, tokens, cond_emb_dim)``."""
        cx = self.conditioning1(control_image)
        if width_concat > 1:
            # The tokens of the source latent(s) to the right get no conditioning.
            pad = cx.new_zeros(*cx.shape[:3], cx.shape[3] * (width_concat - 1))
            cx = torch.cat([cx, pad], dim=3)
        return cx.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor, cond_emb: torch.Tensor) -> torch.Tensor:
        """The residual to add to ``x`` (before any multiplier)."""
        return self.up(self.mid(torch.cat([cond_emb, self.down(x)], dim=-1)))


def _expand_batch(cond_emb: torch.Tensor, batch: int) -> torch.Tensor:
    if cond_emb.shape[0] == batch:
        return cond_emb
    if batch % cond_emb.shape[0]:
        raise LLLiteError(f"LLLite conditioning has batch {cond_emb.shape[0]}, which does not "
                          f"divide the U-Net batch {batch}")
    # kohya's layout for classifier-free guidance: [uncond batch; cond batch], both conditioned.
    return cond_emb.repeat(batch // cond_emb.shape[0], 1, 1)


class LLLiteAdapters(nn.Module):
    """The adapters of one LLLite model, keyed by the diffusers name of the Linear they hook."""

    def __init__(self, config: LLLiteConfig, targets: Sequence[HookTarget]):
        super().__init__()
        self.config = config
        self.targets = {t.name: t for t in targets}
        self.adapters = nn.ModuleDict({
            _module_key(t.name): LLLiteAdapter(t.in_features, config.cond_emb_dim, config.mlp_dim, t.level)
            for t in targets})

    def names(self) -> list[str]:
        return list(self.targets)

    def __getitem__(self, name: str) -> LLLiteAdapter:
        return self.adapters[_module_key(name)]

    def __len__(self) -> int:
        return len(self.targets)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Parameters keyed ``<diffusers module name>.<param>`` (our file layout)."""
        return {f"{name}.{k}": v for name in self.targets for k, v in self[name].state_dict().items()}

    def kohya_state_dict(self) -> dict[str, torch.Tensor]:
        """Parameters keyed the way kohya's ``ControlNetLLLite.save_weights`` names them."""
        return {f"{t.kohya_name}.{k}": v for name, t in self.targets.items()
                for k, v in self[name].state_dict().items()}


def _module_key(name: str) -> str:
    # ModuleDict keys cannot contain dots; diffusers names never contain "__".
    return name.replace(".", "__")


def build_adapters(unet: nn.Module, config: LLLiteConfig = LLLiteConfig()) -> LLLiteAdapters:
    """Fresh adapters (zero ``up``: an exact no-op until trained) for ``config.hooks`` of ``unet``."""
    return LLLiteAdapters(config, select_hooks(hook_targets(unet), config.hooks))


# --------------------------------------------------------------------------------------------
# Reference form: hooks and Python state


class ReferenceLLLite:
    """Adapters attached with forward pre-hooks, kohya-style; see :func:`attach_reference`."""

    def __init__(self, unet: nn.Module, adapters: LLLiteAdapters, targets: list[HookTarget],
                 multiplier: float, width_concat: int):
        self.adapters = adapters
        self.multiplier = multiplier
        self.width_concat = width_concat
        self.names = [t.name for t in targets]
        self.cond_embs: dict[str, torch.Tensor | None] = dict.fromkeys(self.names)
        self._handles = []
        for name in self.names:
            adapter = adapters[name]
            self._handles.append(unet.get_submodule(name).register_forward_pre_hook(
                self._make_hook(name, adapter)))

    def _make_hook(self, name: str, adapter: LLLiteAdapter):
        def hook(module, args):
            cx = self.cond_embs[name]
            if cx is None or self.multiplier == 0.0:
                return None
            x = args[0]
            delta = adapter(x, _expand_batch(cx, x.shape[0])) * self.multiplier
            return (x + delta, *args[1:])

        return hook

    @torch.no_grad()
    def set_cond_image(self, control_image: torch.Tensor | None) -> None:
        """Embed ``control_image`` ``(B, 3, 8h, 8w)`` in [-1, 1] for every hook; None disables."""
        for name in self.names:
            self.cond_embs[name] = (None if control_image is None
                                    else self.adapters[name].embed(control_image, self.width_concat))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.cond_embs = dict.fromkeys(self.names)


def attach_reference(unet: nn.Module, adapters: LLLiteAdapters, hooks: str | Iterable[str] | None = None,
                     multiplier: float = 1.0, width_concat: int | None = None) -> ReferenceLLLite:
    """Attach ``adapters`` (all, or the ``hooks`` subset) to ``unet`` with forward pre-hooks.

    The U-Net's modules and state dict stay as they are; ``detach()`` removes the hooks.
    """
    targets = _check_fit(unet, adapters, hooks)
    return ReferenceLLLite(unet, adapters, targets, multiplier,
                           adapters.config.width_concat if width_concat is None else width_concat)


def _check_fit(unet: nn.Module, adapters: LLLiteAdapters, hooks) -> list[HookTarget]:
    """The selected targets, after checking they exist in ``unet`` exactly as the adapters expect."""
    unet_targets = {t.name: t for t in hook_targets(unet)}
    selected = select_hooks(list(adapters.targets.values()), hooks)
    for t in selected:
        got = unet_targets.get(t.name)
        if got is None:
            raise LLLiteError(f"this U-Net has no hookable layer {t.name!r} for its LLLite adapter")
        if (got.in_features, got.level) != (t.in_features, t.level):
            raise LLLiteError(f"LLLite adapter for {t.name} expects in_features={t.in_features} at "
                              f"level {t.level}; the U-Net has in_features={got.in_features} at "
                              f"level {got.level}")
    return selected


# --------------------------------------------------------------------------------------------
# Folded form: ordinary submodules, buffers written in place


class LLLiteLinear(nn.Module):
    """``base(x + adapter(x, cond_emb) * scale)``, with ``cond_emb`` and ``scale`` as buffers.

    ``scale`` is 0 until conditioning is written, so an unconditioned folded U-Net is exactly the
    plain one (as kohya's hook passes through while it has no embedding) — without a branch.
    """

    def __init__(self, base: nn.Linear, adapter: LLLiteAdapter, cond_shape: tuple[int, int, int]):
        super().__init__()
        self.base = base
        self.adapter = adapter
        like = adapter.up[0].weight
        self.register_buffer("cond_emb", like.new_zeros(cond_shape), persistent=False)
        self.register_buffer("scale", like.new_zeros(()), persistent=False)

    # Code that peeks at ``attn.to_q.weight`` (dtype checks in attention processors) still works.
    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cond = _expand_batch(self.cond_emb, x.shape[0])
        return self.base(x + self.adapter(x, cond) * self.scale)


class FoldedLLLiteUNet(nn.Module):
    """A U-Net with LLLite adapters folded in as submodules; compiles as one graph.

    ``hooks``: the active subset (default: every adapter present). ``latent_size``: the latent
    of one frame, ``(h, w)``; the control image is ``(B, 3, 8h, 8w)``. ``batch_size``: the batch
    of the conditioning buffers — the U-Net batch, or 1 to share one control image across the
    batch (a U-Net batch that is a multiple is served by repeating, as with CFG).

    Folding replaces the hooked Linears of ``unet`` in place; :meth:`unfold` puts them back.
    """

    def __init__(self, unet: nn.Module, adapters: LLLiteAdapters, hooks: str | Iterable[str] | None = None,
                 *, latent_size: tuple[int, int], batch_size: int = 1, multiplier: float = 1.0,
                 width_concat: int | None = None):
        super().__init__()
        targets = _check_fit(unet, adapters, hooks)
        if not targets:
            raise LLLiteError("no LLLite hooks selected")
        width_concat = adapters.config.width_concat if width_concat is None else width_concat
        h, w = (int(v) for v in latent_size)
        deepest = max(t.level for t in targets)
        if h % (1 << deepest) or w % (1 << deepest) or h <= 0 or w <= 0:
            raise LLLiteError(f"latent size {h}x{w} must be positive and divisible by {1 << deepest} "
                              f"(the U-Net halves it {deepest} times at the deepest hooked layer)")
        for t in targets:
            if not isinstance(unet.get_submodule(t.name), nn.Linear):
                raise LLLiteError(f"{t.name} is already folded; unfold the U-Net first")

        self.unet = unet
        self.hook_names = tuple(t.name for t in targets)
        self.latent_size = (h, w)
        self.batch_size = batch_size
        self.width_concat = width_concat
        self.multiplier = float(multiplier)
        self._conditioned = False  # read by set_multiplier only, never by forward
        for t in targets:
            rows, cols = t.grid((h, w), width_concat)
            parent_name, _, attr = t.name.rpartition(".")
            parent = unet.get_submodule(parent_name)
            setattr(parent, attr, LLLiteLinear(getattr(parent, attr), adapters[t.name],
                                               (batch_size, rows * cols, adapters.config.cond_emb_dim)))

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                **unet_kwargs) -> torch.Tensor:
        return self.unet(latent, timestep, encoder_hidden_states, return_dict=False, **unet_kwargs)[0]

    def folded_layers(self) -> list[LLLiteLinear]:
        return [self.unet.get_submodule(name) for name in self.hook_names]

    def conditioning_buffers(self) -> list[torch.Tensor]:
        """The embedding buffers, in ``hook_names`` order; their addresses never change."""
        return [layer.cond_emb for layer in self.folded_layers()]

    @torch.no_grad()
    def embed_conditioning(self, control_image: torch.Tensor) -> list[torch.Tensor]:
        """The active hooks' embeddings of ``control_image``, without writing them."""
        layers = self.folded_layers()
        control_image = self._check_control(control_image, layers[0].cond_emb)
        return [layer.adapter.embed(control_image, self.width_concat) for layer in layers]

    @torch.no_grad()
    def refresh_conditioning(self, control_image: torch.Tensor) -> None:
        """Run the active hooks' conditioning CNNs and copy the results into their buffers."""
        for layer, emb in zip(self.folded_layers(), self.embed_conditioning(control_image)):
            layer.cond_emb.copy_(emb)
            layer.scale.fill_(self.multiplier)
        self._conditioned = True

    @torch.no_grad()
    def set_multiplier(self, multiplier: float) -> None:
        """Adapter strength; takes effect at once if conditioning has been written."""
        self.multiplier = float(multiplier)
        if self._conditioned:
            for layer in self.folded_layers():
                layer.scale.fill_(self.multiplier)

    @torch.no_grad()
    def clear_conditioning(self) -> None:
        """Back to the plain U-Net's output until the next refresh."""
        for layer in self.folded_layers():
            layer.cond_emb.zero_()
            layer.scale.zero_()
        self._conditioned = False

    def unfold(self) -> nn.Module:
        """Put the original Linears back and return the U-Net."""
        for name in self.hook_names:
            parent_name, _, attr = name.rpartition(".")
            parent = self.unet.get_submodule(parent_name)
            layer = getattr(parent, attr)
            if isinstance(layer, LLLiteLinear):
                setattr(parent, attr, layer.base)
        return self.unet

    def _check_control(self, control_image: torch.Tensor, buffer: torch.Tensor) -> torch.Tensor:
        h, w = self.latent_size
        expected = (3, h * IMAGE_SCALE, w * IMAGE_SCALE)
        if (not isinstance(control_image, torch.Tensor) or control_image.dim() != 4
                or tuple(control_image.shape[1:]) != expected
                or control_image.shape[0] not in (1, self.batch_size)):
            got = tuple(control_image.shape) if isinstance(control_image, torch.Tensor) else type(control_image)
            raise LLLiteError(f"control image must be a float tensor (B, {expected[0]}, {expected[1]}, "
                              f"{expected[2]}) in [-1, 1] with B = {self.batch_size} or 1 for latent "
                              f"{h}x{w}; got {got}")
        return control_image.to(device=buffer.device, dtype=buffer.dtype)


def to_control_image(frames: torch.Tensor) -> torch.Tensor:
    """RGB uint8 frames ``(B, H, W, 3)`` → the float ``(B, 3, H, W)`` in [-1, 1] LLLite expects."""
    return frames.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


# --------------------------------------------------------------------------------------------
# Weights


def _require_safetensors(path: Path) -> None:
    if path.suffix != ".safetensors":
        raise LLLiteError(f"{path}: only .safetensors LLLite weights are loaded (pickle-based "
                          f"formats can run code); convert the file to safetensors")
    if not path.is_file():
        raise LLLiteError(f"{path}: no such LLLite weights file")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # a truncated or non-safetensors file behind the right suffix
        raise LLLiteError(f"{path}: not a readable safetensors file ({e})") from e


def _load_checked(path: Path, adapters: LLLiteAdapters, state: dict[str, torch.Tensor],
                  key_of: dict[str, str]) -> LLLiteAdapters:
    """Check every key and shape of ``state`` against ``adapters``, then load; else raise."""
    expected: dict[str, torch.Size] = {}
    for name in adapters.names():
        for k, v in adapters[name].state_dict().items():
            expected[key_of[name] + "." + k] = v.shape
    for key in sorted(set(expected) | set(state)):
        if key not in state:
            raise LLLiteError(f"{path}: missing key {key!r} (expected shape {tuple(expected[key])})")
        if key not in expected:
            raise LLLiteError(f"{path}: unexpected key {key!r} (shape {tuple(state[key].shape)}); "
                              f"the file does not fit this U-Net's LLLite layout")
        if state[key].shape != expected[key]:
            raise LLLiteError(f"{path}: key {key!r} has shape {tuple(state[key].shape)}, expected "
                              f"{tuple(expected[key])} for this U-Net")
    with torch.no_grad():
        for name in adapters.names():
            adapter = adapters[name]
            prefix = key_of[name] + "."
            adapter.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
    return adapters


def _sizes_from(path: Path, state: dict[str, torch.Tensor], module: str) -> tuple[int, int]:
    try:
        mlp_dim = state[f"{module}.down.0.weight"].shape[0]
        cond_emb_dim = state[f"{module}.mid.0.weight"].shape[1] - mlp_dim
    except (KeyError, IndexError) as e:
        raise LLLiteError(f"{path}: {module} lacks down.0.weight/mid.0.weight; not an LLLite file") from e
    return cond_emb_dim, mlp_dim


def load_kohya(path: str | Path, unet: nn.Module, width_concat: int = 1) -> LLLiteAdapters:
    """Adapters from a kohya-style LLLite safetensors file, mapped to ``unet``'s module names.

    The file decides which layers carry adapters (kohya trains input and middle blocks by
    default) and the sizes (read from the shapes). Nothing touches ``unet``.
    """
    path = Path(path)
    _require_safetensors(path)
    state = _read_safetensors(path)
    by_kohya = {t.kohya_name: t for t in hook_targets(unet)}
    modules = sorted({k.split(".", 1)[0] for k in state})
    if not modules:
        raise LLLiteError(f"{path}: empty LLLite file")
    for module in modules:
        if module not in by_kohya:
            example = next(iter(by_kohya), "none")
            raise LLLiteError(f"{path}: key prefix {module!r} names no hookable layer of this U-Net "
                              f"(its layers are named like {example!r})")
    cond_emb_dim, mlp_dim = _sizes_from(path, state, modules[0])
    if cond_emb_dim < 2 or cond_emb_dim % 2:
        raise LLLiteError(f"{path}: {modules[0]} implies cond_emb_dim={cond_emb_dim}; expected an even size")
    targets = [t for t in by_kohya.values() if t.kohya_name in set(modules)]
    config = LLLiteConfig(cond_emb_dim, mlp_dim, tuple(t.name for t in targets), width_concat)
    adapters = LLLiteAdapters(config, targets)
    return _load_checked(path, adapters, state, {t.name: t.kohya_name for t in targets})


def save_kohya(adapters: LLLiteAdapters, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write ``adapters`` in kohya's naming (readable by sd-scripts for an ldm-numbered U-Net)."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: (v if dtype is None else v.to(dtype)).detach().cpu().contiguous()
             for k, v in adapters.kohya_state_dict().items()}
    save_file(state, str(path), metadata={"format": "kohya-lllite", "cond_emb_dim":
                                          str(adapters.config.cond_emb_dim),
                                          "mlp_dim": str(adapters.config.mlp_dim)})
    return path


def save_adapters(adapters: LLLiteAdapters, directory: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Our layout: ``directory/lllite.safetensors`` (diffusers names) + ``lllite_config.json``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: (v if dtype is None else v.to(dtype)).detach().cpu().contiguous()
             for k, v in adapters.adapter_state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": FORMAT_NAME})
    config = asdict(adapters.config) | {"hooks": adapters.names()}
    (directory / CONFIG_NAME).write_text(json.dumps({"format": FORMAT_NAME, "version": 1, **config},
                                                    indent=2) + "\n")
    return directory


def load_adapters(path: str | Path, unet: nn.Module) -> LLLiteAdapters:
    """Adapters from our folder layout, or from a kohya-style ``.safetensors`` file."""
    path = Path(path)
    if not path.is_dir():
        return load_kohya(path, unet)
    config_path = path / CONFIG_NAME
    if not config_path.is_file():
        raise LLLiteError(f"{path}: no {CONFIG_NAME} (a stylecam LLLite folder has {CONFIG_NAME} and "
                          f"{WEIGHTS_NAME}; a kohya file is loaded by its own path)")
    try:
        raw = json.loads(config_path.read_text())
        if raw.get("format") != FORMAT_NAME:
            raise LLLiteError(f"{config_path}: format is {raw.get('format')!r}, expected {FORMAT_NAME!r}")
        config = LLLiteConfig(cond_emb_dim=int(raw["cond_emb_dim"]), mlp_dim=int(raw["mlp_dim"]),
                              hooks=tuple(raw["hooks"]), width_concat=int(raw.get("width_concat", 1)))
    except (ValueError, KeyError, TypeError) as e:
        if isinstance(e, LLLiteError):
            raise
        raise LLLiteError(f"{config_path}: malformed LLLite config ({e!r})") from e
    weights = path / WEIGHTS_NAME
    _require_safetensors(weights)
    by_name = {t.name: t for t in hook_targets(unet)}
    for name in config.hooks:
        if name not in by_name:
            raise LLLiteError(f"{config_path}: hook {name!r} is not a hookable layer of this U-Net")
    targets = [by_name[n] for n in by_name if n in set(config.hooks)]
    adapters = LLLiteAdapters(config, targets)
    return _load_checked(weights, adapters, _read_safetensors(weights), {t.name: t.name for t in targets})


def randomize_(adapters: LLLiteAdapters, std: float = 0.02, seed: int = 0) -> LLLiteAdapters:
    """Give every ``up`` layer small random weights (a fresh adapter is a no-op; tiny test
    bundles and equivalence tests need one that changes the output)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in adapters.names():
            up = adapters[name].up[0]
            up.weight.copy_(torch.randn(up.weight.shape, generator=gen) * std)
            up.bias.copy_(torch.randn(up.bias.shape, generator=gen) * std)
    return adapters


__all__ = [
    "FoldedLLLiteUNet", "HookTarget", "LLLiteAdapter", "LLLiteAdapters", "LLLiteConfig", "LLLiteError",
    "LLLiteLinear", "ReferenceLLLite", "attach_reference", "build_adapters", "conditioning_strides",
    "count_hooks", "hook_targets", "load_adapters", "load_kohya", "randomize_", "save_adapters",
    "save_kohya", "select_hooks", "to_control_image",
]
