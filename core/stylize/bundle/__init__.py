"""Model bundles: a folder (or hub id) of standard diffusers/transformers components + a manifest.

A bundle is what the diffusion backend runs. On disk it is::

    BUNDLE/
      stylecam.json        the manifest: stack and settings (size, steps, strength, ...)
      unet/                UNet2DConditionModel (config.json + diffusion_pytorch_model.safetensors)
      vae/                 AutoencoderTiny (TAESD) or AutoencoderKL
      text_encoder/        CLIPTextModel              (sd-turbo, pix2pix)
      tokenizer/           CLIP tokenizer files       (sd-turbo, pix2pix)
      qwen/                Qwen3-VL model + tokenizer (mllm-edit)
      scheduler/           scheduler_config.json
      lllite/              optional ControlNet-LLLite adapter: lllite_config.json + lllite.safetensors,
                           or one kohya-style .safetensors file

A manifest may point a component somewhere else (``"components": {"vae": {"repo":
"madebyollin/taesd"}}``), which is how the ``sd-turbo`` and ``pix2pix`` hub bundles are assembled
from two hub repositories that carry no manifest of their own.

The parts, each with its contract in its docstring:

``manifest``    the manifest: stack (the records of ``stacks.py``), settings, component places
``hub``         a folder, hub id or stack name -> local component folders (downloads if allowed)
``checks``      every file checked before anything loads: safetensors only (index files too),
                components inside the bundle folder, configs and shapes that agree
``load``        :class:`Bundle` and :func:`load_bundle` (``from_pretrained``, no remote code)
``build``       tiny random-weight bundles (tests, ``stylecam models tiny``)
``build_full``  full-size random-weight bundles (benchmarks)
``build_qwen``  Qwen3-VL configs, builders and offline tokenizers

Everything that was importable from ``stylecam.core.stylize.bundle`` before it became a package
still is (below).
"""

from .. import stacks as _stacks
from ..stacks import OPTIONAL, SD_LATENT_SCALE
from .build import (TINY_QWEN_IMAGE_SIZE, TINY_QWEN_TEXT_LENGTH, TINY_SIZE, TINY_TEXT_LENGTH, build_tiny_bundle,
                    new_flow_scheduler, new_sd_scheduler, seeded, tiny_clip_tokenizer, write_tiny_bundle)
from .build_full import (EDIT_UNET, FULL_TEXT_ENCODERS, FULL_UNETS, PIX2PIX_UNET, SD1_TEXT_ENCODER,
                         SD2_TEXT_ENCODER, SD_TURBO_UNET, build_context, build_full_bundle, full_parameter_counts)
from .build_qwen import full_vocab_qwen_tokenizer
from .checks import check_bundle
from .hub import (ResolvedBundle, fetch_component, fetch_repo, hub_error_message, offline_requested,
                  resolve_bundle)
from .load import Bundle, bundle_nbytes, count_parameters, describe, load_bundle, quiet_libraries
from .manifest import (MANIFEST_FORMAT, MANIFEST_NAMES, BundleError, ComponentRef, Manifest, default_manifest,
                       manifest_from_dict, read_manifest)

#: Views of the stack records (``stacks.STACKS``) under the names older code imports: the stack
#: names, the components each needs (in load order), its manifest defaults, its public weights.
STACKS = tuple(_stacks.STACKS)
REQUIRED = {name: st.components for name, st in _stacks.STACKS.items()}
STACK_DEFAULTS = {name: st.defaults for name, st in _stacks.STACKS.items()}
HUB_BUNDLES = {name: st.hub for name, st in _stacks.STACKS.items() if st.hub}

_seeded = seeded  # the name tests used before the split

__all__ = [
    "EDIT_UNET", "FULL_TEXT_ENCODERS", "FULL_UNETS", "HUB_BUNDLES", "MANIFEST_FORMAT", "MANIFEST_NAMES",
    "OPTIONAL", "PIX2PIX_UNET", "REQUIRED", "SD1_TEXT_ENCODER", "SD2_TEXT_ENCODER", "SD_LATENT_SCALE",
    "SD_TURBO_UNET", "STACKS", "STACK_DEFAULTS", "TINY_QWEN_IMAGE_SIZE", "TINY_QWEN_TEXT_LENGTH", "TINY_SIZE",
    "TINY_TEXT_LENGTH", "Bundle", "BundleError", "ComponentRef", "Manifest", "ResolvedBundle", "build_context",
    "build_full_bundle", "build_tiny_bundle", "bundle_nbytes", "check_bundle", "count_parameters",
    "default_manifest", "describe", "fetch_component", "fetch_repo", "full_parameter_counts",
    "full_vocab_qwen_tokenizer", "hub_error_message", "load_bundle", "manifest_from_dict", "new_flow_scheduler",
    "new_sd_scheduler", "offline_requested", "quiet_libraries", "read_manifest", "resolve_bundle", "seeded",
    "tiny_clip_tokenizer", "write_tiny_bundle",
]
