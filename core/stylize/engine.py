"""The asymmetric streaming engine: frames in, frames out, the encoder off the critical path.

Per batch of B frames (a short last batch is padded to B, so every step has one shape):

* **side stream** — the host's pinned copy of the batch goes to the device, TAESD encodes it, and,
  when due, the conditioning encoder runs (Qwen3-VL on the frames every ``refresh`` batches, by
  default every 64 frames whatever B (:data:`.engine_settings.VISION_REFRESH_FRAMES`), or
  CLIP when the text is not cached) and the LLLite conditioning CNNs run (every
  ``lllite_refresh`` batches, over the chosen hook subset). All of it writes into fixed-address
  buffers.
* **main stream** — waits for the side stream's event, copies those buffers into the U-Net's
  inputs (a few MB), records "consumed" (from then on the side stream may start the next
  batch), runs the unrolled denoiser (U-Net + folded LLLite) and TAESD decode, and hands the
  uint8 frames to a **copy stream** that moves them into pinned host memory with
  ``non_blocking`` and records the batch's "done" event. The caller gets views of that pinned
  memory, not a copy (:mod:`.lent_frames`: a buffer is written again once no view of it is left).

So while the U-Net of batch k runs, the side stream already encodes batch k+1. Nothing on this
path calls ``synchronize()`` or reads a device value on the host: :meth:`StreamEngine.collect`
waits on the batch's event only when the caller wants the frames. Two batches may be in flight
(submit k+1 before collecting k); that bound is also what keeps a live stream from building a
backlog of stale frames.

Each step is a zero-argument function over the engine's buffers, run eagerly, captured in a CUDA
graph, or ``torch.compile``d and captured (:mod:`.compile`). On the CPU the same code runs with
no streams and no graphs, one step after the other, so CI checks the engine's logic; the
frame-by-frame oracle is :func:`~.reference.stylize_frames`.

Conditioning policies (settings, see :class:`EngineSettings`): a static prompt (CLIP text, or
Qwen3-VL text only) is encoded once per text and cached; vision-aware Qwen3-VL conditioning is
refreshed every ``refresh`` batches, per frame or from one representative frame (the batch's
newest) broadcast to all B (the default whenever it is kept across batches:
:attr:`.engine_settings.EngineSettings.broadcasts`); between refreshes the last conditioning is
reused position by position. Temporal stability: the noise is fixed per stream (the style's seed); ``feedback``
blends each output with the previous one (an exponential moving average in frame order, the same
for any B), with ``feedback_warp`` after moving the previous output along the optical flow of the
input frames (:mod:`.flow`: host-side DIS flow on thumbnails, a ``grid_sample`` in the decode
step), so that motion does not leave a ghost; ``skip_threshold`` reuses the last output for a
batch whose frames all match the last processed frame (see :meth:`StreamEngine.submit` for the trade-off).

A style or prompt switch applies from the next submitted batch: a new text is a copy into the
encoder's token buffer (no recapture, no recompile); a new seed is a copy into the noise buffer; a
new steps/strength changes the schedule constants baked into the U-Net step, which recaptures
(or, under ``compile``, recompiles) that one step.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Mapping

import numpy as np
import torch

from .bundle import Bundle
from .compile import (DEFAULT_COMPILE_MODE, CompileReport, attention_context, compile_step,
                      configure_runtime, make_step, prepare_compile, resolve_mode, to_memory_format)
from .denoiser import Denoiser, decode_latents, encode_frames, latent_size, make_schedule, stream_noise
from .engine_settings import PACE_AUTO_MAX_BATCH, STYLE_KEYS, EngineSettings
from .lent_frames import LentFrames
from .pacing import SubmitPacer, cycle_position

log = logging.getLogger(__name__)

#: Side of the thumbnail the similarity skip compares, as a fraction of the frame side.
SKIP_THUMB_DIVISOR = 16
#: Profiled stages of the side stream, and of the main device's compute (split: their devices).
SIDE_STAGES = ("vae_encode", "encoder", "lllite")
MAIN_STAGES = ("unet", "vae_decode")


class EngineError(RuntimeError):
    """The engine was used the wrong way; the message says what to do instead."""


@dataclass(eq=False)  # a ticket is one batch: equal only to itself (``in`` a queue of them)
class Ticket:
    """One submitted batch. ``frames`` are filled by :meth:`StreamEngine.collect`."""

    index: int
    count: int
    slot: int
    capture_times: list[float]
    t_submit: float
    skipped: bool = False
    event: object = None
    frames: list[np.ndarray] | None = None
    t_ready: float | None = None
    stages: list = field(default_factory=list)  # (stage, start event, end event) when profiling
    #: Pacing: (cycle key, side done, main begins, main done) timing events (:meth:`StreamEngine.pace`).
    marks: tuple | None = None
    replica: int = 0  # which engine of a device pool (:mod:`.devices`) ran it
    #: CUDA: the pinned buffer its frames are copied into: one of the engine's
    #: :class:`~.lent_frames.LentFrames` (the frames are views of it), else copied out at collect.
    host: object = None


def take_in_order(pending: deque, ticket: Ticket, last_output: np.ndarray | None) -> bool:
    """The collect order the engine and a device pool both keep: ``ticket`` must be the oldest
    of ``pending``, and is taken off it. A skipped batch (its frames repeated the last batch's)
    gets copies of ``last_output`` and False is returned; True: its frames are still to fetch."""
    if not pending or pending[0] is not ticket:
        raise EngineError("collect tickets in the order they were submitted")
    pending.popleft()
    if not ticket.skipped:
        return True
    if last_output is None:
        raise EngineError("internal: a skipped batch before any output")
    ticket.frames = [last_output.copy() for _ in range(ticket.count)]
    return False


class StreamEngine:
    """Stylizes frames of one size with a :class:`~.bundle.Bundle`; see the module docstring.

    Usage::

        engine = StreamEngine(bundle, EngineSettings.throughput(16))
        engine.set_style(style)                       # a Style or its params
        t = engine.submit(frames)                     # up to B RGB uint8 (H, W, 3) frames
        ...                                           # submit one more before collecting
        outputs = engine.collect(t)                   # same count, same order
        engine.close()

    The engine folds the bundle's LLLite adapters into its U-Net (undone by :meth:`close`) and,
    on CUDA with ``channels_last_vae``/``channels_last_unet``, puts TAESD / the U-Net in
    channels-last memory format (also undone by :meth:`close`).
    """

    SLOTS = 2

    def __init__(self, bundle: Bundle, settings: EngineSettings | None = None, style=None, *, folded=None,
                 side_device=None):
        self.bundle = bundle
        self.settings = settings = settings or EngineSettings()
        # What a style's engine keys (STYLE_KEYS) override: a style that leaves a key out gets
        # this value back, not the previous style's (ai-oil after ai-oil-steady must not blend).
        self._base_settings = settings
        if settings.devices is not None and side_device is None:
            raise EngineError("a device list is opened by stylecam.core.stylize.devices.open_engine(bundle, "
                              "settings), which places the bundle; StreamEngine runs on the bundle's device")
        m = bundle.manifest
        self.device = bundle.device
        # Split (:mod:`.devices`): the side stream's work (frames in, VAE encode, conditioning
        # encoder, LLLite conditioning CNNs) on ``side_device``, whose components are already
        # there; its outputs cross to the main device on copy streams (:meth:`_cross`).
        self.split = side_device is not None
        self.side_device = torch.device(side_device) if self.split else self.device
        self.dtype = bundle.dtype
        self.cuda = self.device.type == "cuda"
        if self.cuda:
            configure_runtime()
        self.mode = resolve_mode(settings.mode, self.device)
        if settings.mode == "compile" and settings.compile_backend == "eager":
            self.mode = "compile"  # Dynamo's tracing without Inductor runs anywhere
        self.report = CompileReport(notes={})
        # Graphs off (``cuda_graphs=False``): steps run as they are, each call a fresh allocation.
        self._graphs = self.cuda and settings.cuda_graphs
        self._around = attention_context(settings.sdpa_backend)
        if self.mode == "compile":
            prepare_compile(settings.sdpa_backend)  # a new backend: trace again (Dynamo does not guard it)
        if settings.sdpa_backend != "auto":
            self.report.notes["sdpa_backend"] = settings.sdpa_backend
        B = self.batch_size = settings.batch_size
        self.size = tuple(m.size)  # (W, H)
        W, H = self.size
        self.latent_hw = latent_size(m, bundle.vae)
        h, w = self.latent_hw
        channels = bundle.vae.config.latent_channels
        vae = bundle.vae

        # How the stream is conditioned, chosen once (:mod:`.conditioning`): CLIP once per prompt
        # or per batch, Qwen3-VL on the text alone or looking at the frames on the side stream.
        from .conditioning import stream_conditioning

        fast = self.cuda if settings.fast_encoder is None else bool(settings.fast_encoder)
        vision = bundle.qwen is not None and settings.vision
        if self.mode != "eager" and vision and not fast:
            raise EngineError("CUDA graphs need the Qwen3-VL sync-free forward: set fast_encoder=True "
                              "or mode='eager'")
        self.cond = stream_conditioning(bundle, dtype=self.dtype, vision=settings.vision,
                                        cache_text=settings.cache_text, fast=fast,
                                        side_device=self.side_device, frame_hw=(H, W))
        self.broadcast = bundle.qwen is not None and (settings.broadcasts or bundle.qwen.broadcast)
        # Conditioning computed on the side stream per batch (vs. once per text, on the host).
        self.cond_on_side = self.cond.on_side
        cond_len, cond_dim = self.cond.length, self.cond.dim

        # LLLite, folded so that U-Net + adapters are one graph. ``folded``: a FoldedLLLiteUNet
        # of this bundle at this batch size made by the caller (who then also unfolds it).
        self.folded = folded
        self._owns_folded = folded is None
        unet = bundle.unet if folded is None else folded
        if folded is not None and folded.batch_size != B:
            raise EngineError(f"the folded U-Net's conditioning batch is {folded.batch_size}, the engine's is {B}")
        if bundle.lllite is not None and folded is None:
            from .lllite import FoldedLLLiteUNet

            hooks = settings.lllite_hooks if settings.lllite_hooks is not None else m.lllite_subset
            self.folded = FoldedLLLiteUNet(unet, bundle.lllite, hooks=hooks, latent_size=self.latent_hw,
                                           batch_size=B, multiplier=settings.lllite_multiplier,
                                           width_concat=2 if m.concat == "width" else 1)
            unet = self.folded
        self._unet = unet
        # FP8 after folding (the folded layers' base Linears swap too); undone before unfolding.
        self._fp8 = None
        if settings.fp8:
            from .fp8 import enable_fp8

            self._fp8 = enable_fp8(bundle)
            self.report.notes |= self._fp8.describe()

        # TAESD's blocks as fused cuDNN convolutions (a swap undone by close; a note where not).
        self._vae_blocks = None
        # ``auto`` on the CPU: nothing to fuse and nothing to say; asked for outright: the note why not.
        if settings.fuses_vae and (self.cuda or settings.fused_vae in (True, "on")):
            from .fused_vae import fuse_tiny_blocks

            self._vae_blocks = fuse_tiny_blocks(vae)
            self.report.notes |= self._vae_blocks.describe()
        self._vae_format = None
        if self.cuda and settings.channels_last_vae:
            self._vae_format = torch.channels_last
            to_memory_format(vae, torch.channels_last)  # new tensors: compiled steps' guards see it
        # The U-Net's convolutions in NHWC (off by default: on the H200 in bf16 with graphs it
        # made the mllm-edit U-Net slower, 67.6 -> 78.4 ms at B=16; see docs/benchmarks.md).
        self._unet_format = None
        if self.cuda and settings.channels_last_unet:
            self._unet_format = torch.channels_last
            to_memory_format(bundle.unet, torch.channels_last)

        # Streams and events (CPU: stand-ins).
        if self.cuda:
            # ``main_priority``: the critical path (U-Net + decode) first to free SMs, the side
            # stream's encoders in the gaps. Measured on the H200: the same frame rate either way.
            self._main = torch.cuda.Stream(self.device, priority=-1 if settings.main_priority else 0)
            self._side = torch.cuda.Stream(self.side_device) if settings.streams or self.split else self._main
            self._copy = torch.cuda.Stream(self.device) if settings.streams else self._main
            if self.split:  # the peer copy: out of the side device, into the main device
                self._xfer_side = torch.cuda.Stream(self.side_device)
                self._xfer_main = torch.cuda.Stream(self.device)
        # Fixed-address buffers. Host: pinned, two input slots (one being filled while one is in
        # flight); the output frames go to pinned buffers lent to the caller (``_host_out``).
        # Frames arrive and leave at the stream's sizes (a 1280x720 camera, a 1280x720 virtual
        # camera): :meth:`set_io_size` sizes the host and raw-input buffers; the model-size ones
        # below never change.
        pin = self.cuda
        dev = dict(device=self.device)
        side_dev = dict(device=self.side_device)
        self.in_size = self.out_size = self.size
        self._box = None  # the input crop (x0, y0, w, h), None while frames come at the model size
        self._host_in = [torch.empty((B, H, W, 3), dtype=torch.uint8, pin_memory=pin) for _ in range(self.SLOTS)]
        self._host_out = self._lent_frames((W, H))
        self._side_raw = None  # (B, Hin, Win, 3) uint8 on the device when the input is resized
        self._side_in = torch.empty((B, H, W, 3), dtype=torch.uint8, **side_dev)
        # Deferred refresh: the encoder reads its own copy of the refreshing batch's frames (the
        # side stream goes on to the next batch's) on a stream of its own, and its output waits
        # in the step's buffer until the next batch's main stream takes it.
        d = settings.deferred_refresh
        # auto: where it was measured to pay, the latency operating point on CUDA with the side
        # stream (on the CPU every step runs in turn: a deferred refresh would only be older).
        auto = d == "auto" and B <= PACE_AUTO_MAX_BATCH and self.cuda and settings.streams
        self.deferred = (d is True or d == "on" or auto) and self.cond_on_side and not self.split
        self._cond_in = torch.empty_like(self._side_in) if self.deferred else self._side_in
        self._enc = (torch.cuda.Stream(self.device) if self.cuda and self.deferred and settings.streams
                     else self._side_stream())
        self._cond_inflight = None  # (conditioning, its "ready" event) for the next batch to take
        self._cond_frames = None  # side-stream event: the frames are in _cond_in
        self._enc_ready = None  # the encoder stream's last "ready" event
        self._main_latent = torch.empty((B, channels, h, w), dtype=self.dtype, **dev)
        self._main_cond = torch.zeros((B, cond_len, cond_dim), dtype=self.dtype, **dev)
        self._noise = torch.empty((1, channels, h, w), dtype=torch.float32, **dev)
        # Feedback state (a style may switch feedback on later): the previous output in float, and
        # the first frame's blend weight, 0 until an output exists.
        self._prev = torch.zeros((H, W, 3), dtype=torch.float32, **dev)
        self._weight = torch.zeros((), dtype=torch.float32, **dev)
        # Optical flow of each frame to the one before it (feedback_warp), host -> side -> main
        # like the frames; small (B x 128 x 128 x 2 floats), so always there.
        from .flow import flow_size

        fw, fh = flow_size(self.size)
        self._host_flow = [torch.zeros((B, fh, fw, 2), dtype=torch.float32, pin_memory=pin)
                           for _ in range(self.SLOTS)]
        self._side_flow = torch.zeros((B, fh, fw, 2), dtype=torch.float32, **side_dev)
        self._main_flow = torch.zeros((B, fh, fw, 2), dtype=torch.float32, **dev)
        self._flow = None  # FlowEstimator, made when warping is first on

        self._steps: dict = {}
        self._latent_out: torch.Tensor | None = None
        self._style_params: dict = {}
        self._text: str | None = None
        self._seed: int | None = None
        self._schedule_key = None
        self._denoiser: Denoiser | None = None
        self._cond_pending: torch.Tensor | None = None  # static conditioning to copy in on main
        self._cond_due = True
        self._lllite_due = self.folded is not None
        self._since_cond = 0
        self._since_lllite = 0
        self._count = 0
        self._pending: deque[Ticket] = deque()
        self._h2d_done = [None] * self.SLOTS
        self._consumed = None
        self._last_d2h = None
        self._last_output: np.ndarray | None = None
        self._skip_ref: np.ndarray | None = None
        self._profile_t0 = None
        self._profile_t0_side = None
        self._staging: dict[str, torch.Tensor] = {}  # split: the side outputs, on the main device
        self._decoded = None  # the last batch's "decoded" event (a pool hands the feedback on)
        #: A device pool's hook, called on the main stream just before the decode step: it writes
        #: the previous batch's blend (made by another replica) into this engine's feedback state.
        self.feedback_source = None
        self.skipped_batches = 0
        # Just-in-time submits (:mod:`.pacing`): the GPU's own timings say how long the next
        # batch may wait on the host, so it does not wait on the GPU instead.
        paced = settings.pace == "on" or (settings.pace == "auto" and B <= PACE_AUTO_MAX_BATCH)
        self.pacer = SubmitPacer() if paced and self.cuda and settings.streams and not self.split else None
        self._marks = None
        self._last_main_end = None
        self.closed = False
        if style is not None:
            self.set_style(style)

    # ------------------------------------------------------------------ style

    def set_style(self, style) -> None:
        """A :class:`~stylecam.core.styles.Style` or params mapping; applies from the next batch."""
        from .params import style_settings

        self._check_open()
        params = dict(getattr(style, "params", style))
        s = style_settings(params, self.bundle)
        self._apply_engine_params({k: params[k] for k in STYLE_KEYS if k in params})
        key = (s["steps"], s["strength"])
        if key != self._schedule_key:
            self._denoiser = Denoiser(self._unet, self.bundle.manifest,
                                      make_schedule(self.bundle, s["steps"], s["strength"]))
            self._steps.pop("unet", None)  # the schedule's constants live in the captured step
            self._schedule_key = key
            if self.pacer is not None:  # another number of steps: another U-Net time
                self.pacer.reset()
        if s["seed"] != self._seed:
            with self._on(self._main_stream()):
                self._noise.copy_(stream_noise(s["seed"], tuple(self._noise.shape)).to(self.device, non_blocking=False))
            self._seed = s["seed"]
        if s["text"] != self._text:
            self._set_text(s["text"])
            self._text = s["text"]
        self._style_params = params

    def latents(self) -> torch.Tensor:
        """The last batch's denoised latents (B, C, h, w), waiting for them: a check's view,
        not the frame path."""
        self._sync()
        return self._latent_out

    def reset_temporal(self) -> None:
        """The next frame does not follow the last one: no feedback from the last output, no flow
        from the last frame, no similarity skip against it (applies from the next batch)."""
        with self._on(self._main_stream()):
            self._weight.zero_()
        if self._flow is not None:
            self._flow.reset()
        self._skip_ref = None

    def set_io_size(self, in_size: tuple[int, int] | None = None, out_size: tuple[int, int] | None = None) -> None:
        """Frames of ``in_size`` = (W, H) come in and frames of ``out_size`` go out (each None:
        the model size). The map between them is :mod:`.geometry`'s: the centre of the input
        with the output's aspect ratio, stretched to the model size, and the model's output
        stretched to ``out_size`` — on the device, inside the captured steps, so the host copies
        each frame once each way. Changing sizes costs a re-capture of the resize steps; call it
        between streams, with no batch in flight."""
        from .geometry import crop_box

        self._check_open()
        in_size = tuple(int(v) for v in (in_size or self.size))
        out_size = tuple(int(v) for v in (out_size or self.size))
        if (in_size, out_size) == (self.in_size, self.out_size):
            return
        if self._pending:
            raise EngineError("frame sizes change between streams: collect every batch before set_io_size")
        for w, h in (in_size, out_size):
            if w < 1 or h < 1:
                raise EngineError(f"frame sizes must be positive, got {in_size} -> {out_size}")
        self._sync()
        B = self.batch_size
        if in_size != self.in_size:
            self._host_in = [torch.empty((B, in_size[1], in_size[0], 3), dtype=torch.uint8, pin_memory=self.cuda)
                             for _ in range(self.SLOTS)]
            self._h2d_done = [None] * self.SLOTS
            self._side_raw = (None if in_size == self.size else
                              torch.empty((B, in_size[1], in_size[0], 3), dtype=torch.uint8,
                                          device=self.side_device))
            self._flow = None  # the flow thumbnails follow the input frames
            self._skip_ref = None
        if out_size != self.out_size and self.cuda:
            self._host_out = self._lent_frames(out_size)
            self._last_d2h = None
        if out_size != self.out_size:
            self._steps.pop("decode", None)  # the output resize is part of the decode step
        self.in_size, self.out_size = in_size, out_size
        box = crop_box(in_size, out_size)
        self._box = None if box == (0, 0, *in_size) else box
        self._steps.pop("prep", None)
        if self.pacer is not None:  # other sizes: other upload, resize and copy times
            self.pacer.reset()

    def _apply_engine_params(self, params: Mapping) -> None:
        new = self._base_settings.with_style(params)
        if new == self.settings:
            return
        broadcast = self.bundle.qwen is not None and (new.broadcasts or self.bundle.qwen.broadcast)
        if broadcast != self.broadcast:
            # The captured encoder/LLLite steps read one frame or all B: capture them again.
            self._steps.pop("cond", None)
            self._steps.pop("lllite", None)
            self._cond_due = True
            self._lllite_due = self.folded is not None
        if new.feedback != self.settings.feedback or new.feedback_warp != self.settings.feedback_warp:
            self._steps.pop("decode", None)  # the weight and the warp are baked into the decode step
        self.settings = new
        self.broadcast = broadcast

    def _set_text(self, text: str) -> None:
        """New text: a buffer copy for the side-stream encoder, or a (cached) static encode."""
        change = self.cond.set_text(text, self._on(self._side_stream()))
        if change.recapture:
            self._steps.pop("cond", None)  # a new input shape (a Qwen3-VL length bucket)
        if self.cond.on_side:
            self._cond_due = True
        else:
            self._cond_pending = change.static.to(self.device)

    # ------------------------------------------------------------------ steps

    def _prep_step(self):
        # The camera-size frames to the model size (crop to the output's aspect, then resize).
        from .geometry import resize, to_uint8

        return to_uint8(resize(self._side_raw, self.size, self._box))

    def _encode_step(self):
        return encode_frames(self.bundle.vae, self._side_in)

    def _cond_step(self):
        frames = self._cond_in[-1:] if self.broadcast else self._cond_in
        return self.cond.step(frames)

    def _lllite_step(self):
        from .lllite import to_control_image

        frames = self._side_in[-1:] if self.broadcast else self._side_in
        if self.split:
            # The conditioning CNNs live on the side device (:func:`.devices.place_split`), while
            # embed_conditioning would move the image to the buffers (the U-Net's device).
            layers = self.folded.folded_layers()
            control = to_control_image(frames).to(layers[0].cond_emb.dtype)
            return [layer.adapter.embed(control, self.folded.width_concat) for layer in layers]
        return self.folded.embed_conditioning(to_control_image(frames))

    def _unet_step(self):
        return self._denoiser(self._main_latent, self._noise, self._main_cond)

    def _decode_step(self):
        out = decode_latents(self.bundle.vae, self._latent_out)
        if self.settings.feedback <= 0:
            return self._to_out_size(out)
        # An exponential moving average in frame order: frame i blends with frame i-1's output
        # (the previous batch's last for i = 0; weight 0 before any output), so the result does
        # not depend on B. ``feedback`` is baked in; the first frame's weight is a buffer.
        grids = None
        if self.settings.feedback_warp:
            from .flow import flow_grids

            grids = flow_grids(self._main_flow, self.size)
        stacked = moving_average(out.float(), self._prev, self._weight, float(self.settings.feedback), grids)
        return self._to_out_size(stacked), stacked

    def _to_out_size(self, frames: torch.Tensor) -> torch.Tensor:
        # Model-size pixels (uint8, or the float blend) to the sink size, as uint8.
        from .geometry import resize, to_uint8

        if self.out_size == self.size:
            return frames if frames.dtype == torch.uint8 else to_uint8(frames)
        return to_uint8(resize(frames, self.out_size))

    def _build_steps(self) -> None:
        """Make (capture / compile) every step that is missing; eager on the CPU.

        Called with the first batch already in the side input buffer, so warm-up and capture
        run on real frames (never zeros), and again after a schedule change (U-Net + decode).
        """
        mode = self.mode
        with self._on(self._side_stream()), torch.no_grad():
            if "prep" in self._wanted_steps() and "prep" not in self._steps:
                # A resize is a handful of kernels: a CUDA graph is all it needs, also under
                # ``compile`` (no compile_fn), and it is captured on real frames.
                self._steps["prep"] = make_step(self._prep_step, mode, name="prep", graphs=self._graphs, around=self._around,
                                                report=self.report)
            if "prep" in self._steps:
                self._side_in.copy_(self._steps["prep"].replay())
            if self._cond_in is not self._side_in:
                self._cond_in.copy_(self._side_in)  # (the encoder's capture on real frames too)
            for name in ("encode", "cond", "lllite"):
                if name in self._wanted_steps() and name not in self._steps:
                    fn = getattr(self, f"_{name}_step")
                    wanted = {"encode": self.settings.compile_vae, "cond": self.settings.compile_encoder}
                    # A deferred encoder replays on its own stream while the side stream's graphs
                    # run: captured there, so it has a cuBLAS workspace of its own (GraphedStep).
                    own = name == "cond" and self.cuda and self._enc is not self._side
                    if own:
                        self._enc.wait_stream(self._side)
                    with self._on(self._enc if own else None):
                        self._steps[name] = make_step(fn, mode, name=name, graphs=self._graphs, around=self._around,
                                                      report=self.report, compile_fn=self._compiled(fn, wanted.get(name, False)))
                    if own:
                        self._side.wait_stream(self._enc)
        if "unet" not in self._steps:
            self._sync()
        if self._latent_out is None:
            # The U-Net step reads the main buffers: give them real values before the first
            # warm-up/capture (a later rebuild finds the previous batch's values there).
            with torch.no_grad():
                self._main_latent.copy_(self._steps["encode"].replay())
                if self.cond_on_side:
                    self._fill_cond(self._steps["cond"].replay())
                elif self._cond_pending is not None:
                    self._fill_cond(self._cond_pending)
                if self.folded is not None and self.split:
                    for layer, emb in zip(self.folded.folded_layers(), self._steps["lllite"].replay()):
                        layer.cond_emb.copy_(emb)
                        layer.scale.fill_(self.folded.multiplier)
                elif self.folded is not None:
                    self.folded.refresh_conditioning(_control(self._side_in, self.broadcast))
            self._sync()
        if "unet" not in self._steps:
            self._steps.pop("decode", None)  # it reads the U-Net step's output
            with self._on(self._main_stream()), torch.no_grad():
                compiled = None
                if mode == "compile":
                    fn = compile_step(self._denoiser, self.settings.compile_mode or DEFAULT_COMPILE_MODE,
                                      self.settings.compile_backend)
                    compiled = lambda: fn(self._main_latent, self._noise, self._main_cond)  # noqa: E731
                self._steps["unet"] = make_step(self._unet_step, mode, name="unet", graphs=self._graphs, around=self._around,
                                                report=self.report, compile_fn=compiled)
                # Graph mode: this is the step's static output, which the decode graph reads.
                self._latent_out = self._steps["unet"].replay()
        if "decode" not in self._steps:
            with self._on(self._main_stream()), torch.no_grad():
                compiled = self._compiled(self._decode_step, self.settings.compile_vae)
                self._steps["decode"] = make_step(self._decode_step, mode, name="decode", graphs=self._graphs, around=self._around,
                                                  report=self.report, compile_fn=compiled)
        self._sync()

    def _compiled(self, fn, wanted: bool):
        # Under ``mode="compile"``, the side and decode steps too (``compile_vae``: TAESD is small
        # 3x3 convs with a ReLU/add after each, whose epilogues and the uint8<->float conversions
        # Inductor fuses; ``compile_encoder``: Qwen3-VL's sync-free forward). A zero-argument
        # closure, so the same make_step path as the U-Net: warm-up timed as compile, then captured.
        if self.mode != "compile" or not wanted:
            return None
        return compile_step(fn, self.settings.compile_mode or DEFAULT_COMPILE_MODE, self.settings.compile_backend)

    def _wanted_steps(self) -> set[str]:
        wanted = {"encode", "unet", "decode"}
        if self._side_raw is not None:
            wanted.add("prep")
        if self.cond_on_side:
            wanted.add("cond")
        if self.folded is not None:
            wanted.add("lllite")
        return wanted

    # ------------------------------------------------------------------ the frame path

    @torch.no_grad()
    def submit(self, frames, capture_times: list[float] | None = None) -> Ticket:
        """Queue up to B frames (RGB uint8 ``(H, W, 3)`` at the engine size, or a uint8 array
        ``(n, H, W, 3)``); returns at once with a :class:`Ticket` for :meth:`collect`.

        At most two batches may be in flight: collect the oldest before submitting a third.

        Similarity skip (``skip_threshold`` > 0): the host compares a 1/16 thumbnail of each
        frame with the last processed frame's (mean absolute difference in 8-bit levels) before
        anything reaches the GPU, so the decision costs no device sync; a batch whose frames all
        stay under the threshold costs no GPU work and repeats the last output. The trade-off:
        a static scene on a call costs almost nothing, but motion slower than the threshold per
        frame is held back until it accumulates past it (the comparison is against the last
        *processed* frame, so a slow drift is caught up, in one step), and flicker or sensor
        noise above the threshold disables the saving.
        """
        self._check_open()
        if self._denoiser is None:
            raise EngineError("set_style must be called before submit")
        if len(self._pending) >= self.SLOTS:
            raise EngineError(f"{len(self._pending)} batches are in flight; collect the oldest before "
                              f"submitting more")
        arr = self._check_frames(frames)
        n = len(arr)
        now = time.perf_counter()
        times = list(capture_times) if capture_times is not None else [now] * n
        index = self._count
        self._count += 1
        slot = index % self.SLOTS
        ticket = Ticket(index=index, count=n, slot=slot, capture_times=times, t_submit=now)

        if self.settings.skip_threshold > 0 and self._should_skip(arr):
            ticket.skipped = True
            self.skipped_batches += 1
            self._pending.append(ticket)
            return ticket

        warping = self._stage_host(arr, slot)
        raw = self._side_raw if self._side_raw is not None else self._side_in
        if not self._steps_ready():
            raw.copy_(self._host_in[slot])
            self._sync()
            self._build_steps()
        prof = self.settings.profile and self.cuda
        key = self._cycle_key()
        side, side_out, defer = self._side_encode(slot, raw, warping, prof, ticket.stages)
        out = self._main_denoise(side, side_out, warping, n, prof, ticket.stages)
        if defer:
            self._deferred_cond(prof, ticket.stages)
        self._copy_out(out, slot, n, ticket)
        if self.pacer is not None:
            ticket.marks = (key, *self._marks)
        self._pending.append(ticket)
        return ticket

    def pace(self) -> float:
        """Seconds a caller that already has the next batch's frames should hold them back
        before :meth:`submit`, so that they do not queue on the GPU behind the batch in flight
        (a fresher frame comes out at the same rate); 0 when nothing is in flight or the engine
        does not pace (``EngineSettings.pace``). See :mod:`.pacing`."""
        if self.pacer is None or not self._pending:
            return 0.0
        return self.pacer.delay(self._cycle_key())

    def _cycle_key(self) -> tuple:
        """The next batch's place in the conditioning and LLLite refresh cycles, as far as what
        runs on its side stream differs (:func:`.pacing.cycle_position`)."""
        st = self.settings
        cond = lllite = 0
        if self.cond_on_side:
            cond = cycle_position(self._cond_due or self._since_cond >= st.refresh_batches, self._since_cond)
        if self.folded is not None:
            lllite = cycle_position(self._lllite_due or self._since_lllite >= st.lllite_refresh, self._since_lllite)
        return cond, lllite

    def _observe_pace(self, marks: tuple) -> None:
        """A collected batch's timings (its events have completed) into the pacer."""
        key, side_done, begin, main_done = marks
        queued = side_done.elapsed_time(begin)
        idle = self._last_main_end.elapsed_time(begin) if self._last_main_end is not None else 0.0
        self._last_main_end = main_done
        self.pacer.observe(key, queued, idle)

    # The four stages of a batch, in the order :meth:`submit` runs them.

    def _stage_host(self, arr, slot: int) -> bool:
        """Host: the frames into the pinned slot (its previous upload finished long ago: two
        batches), a short batch padded; the optical flow when warping. Returns whether it warps."""
        if self._h2d_done[slot] is not None:
            self._h2d_done[slot].synchronize()
        n = len(arr)
        host = self._host_in[slot].numpy()
        if isinstance(arr, np.ndarray):
            host[:n] = arr
        else:
            for i, frame in enumerate(arr):  # straight into pinned memory: one copy per frame
                host[i] = frame
        host[n:] = host[n - 1]  # pad a short batch with its last frame: fixed shapes
        warping = self.settings.feedback > 0 and self.settings.feedback_warp
        if warping:
            if self._flow is None:
                from .flow import FlowEstimator

                self._flow = FlowEstimator(self.size)
            flows = self._host_flow[slot].numpy()
            self._flow.backward(self._cropped(host[:n]), out=flows[:n])
            flows[n:] = 0.0
        return warping

    def _side_encode(self, slot: int, raw, warping: bool, prof: bool, stages: list):
        """Side stream: upload, resize, TAESD encode, and the encoders when due. Returns the side
        stream, (latent, conditioning or None, LLLite embeddings or None, done event), the
        latter already moved to the main device when split, and whether this batch's refresh is
        deferred (:meth:`_deferred_cond` launches it after the batch's main stream)."""
        cond_due = self.cond_on_side and (self._cond_due or self._since_cond >= self.settings.refresh_batches)
        # Deferred refresh: a periodic one runs after this batch's main stream (on its own
        # stream, taken up by the next batch); a forced one (new style, new stream) runs now.
        defer = cond_due and self.deferred and not self._cond_due
        lllite_due = self.folded is not None and (self._lllite_due or self._since_lllite >= self.settings.lllite_refresh)
        side = self._side_stream()
        with self._on(side):
            raw.copy_(self._host_in[slot], non_blocking=True)
            if raw is not self._side_in:
                self._side_in.copy_(self._steps["prep"].replay())
            if cond_due and self.deferred:
                if self._enc_ready is not None and self.cuda:
                    side.wait_event(self._enc_ready)  # the last deferred encoder is done with its buffers
                self._cond_in.copy_(self._side_in)
                if defer:
                    self._cond_frames = self._record(side)
                    cond_due = False
                    self._since_cond = 0
            if self._consumed is not None and self.cuda:
                side.wait_event(self._consumed)
            if warping:
                # After "consumed": the main stream copies the previous batch's flow out of it.
                self._side_flow.copy_(self._host_flow[slot], non_blocking=True)
            self._h2d_done[slot] = self._record(side, host=True)
            with self._stage(prof, stages, "vae_encode", side):
                latent = self._steps["encode"].replay()
            cond = lllite = None
            if cond_due:
                with self._stage(prof, stages, "encoder", side):
                    cond = self._steps["cond"].replay()
            if lllite_due:
                with self._stage(prof, stages, "lllite", side):
                    lllite = self._steps["lllite"].replay()
            side_done = self._record(side, timing=self.pacer is not None)
        if self.split:
            latent, cond, lllite, side_done = self._cross(side_done, latent, cond, lllite, warping, prof, stages)
        return side, (latent, cond, lllite, side_done), defer

    def _main_denoise(self, side, side_out, warping: bool, n: int, prof: bool, stages: list):
        """Main stream: the side stream's results into the U-Net's inputs ("consumed" from then
        on), the U-Net, the decode with feedback and the output resize. Returns the frames."""
        latent, cond, lllite, side_done = side_out
        main = self._main_stream()
        with self._on(main):
            if self.cuda:
                main.wait_event(side_done)
                # Pacing: when the main stream took this batch up (its idle gap since the last
                # batch, or how long the side results waited for it).
                begin = self._record(main, timing=True) if self.pacer is not None else None
                if not self._graphs and side is not main:
                    for t in [latent, cond, *(lllite or [])]:
                        if t is not None:
                            t.record_stream(main)
            self._main_latent.copy_(latent)
            if warping:
                self._main_flow.copy_(self._staging["flow"] if self.split else self._side_flow)
            if cond is not None:
                self._fill_cond(cond)
                self._cond_due = False
                self._since_cond = 0
                self._cond_inflight = None  # a forced refresh supersedes a deferred one
            elif self._cond_inflight is not None:
                self._take_deferred(main)
            elif self._cond_pending is not None:
                self._fill_cond(self._cond_pending)
                self._cond_pending = None
            if lllite is not None:
                for buf, emb in zip(self.folded.conditioning_buffers(), lllite):
                    buf.copy_(emb)
                self._lllite_due = False
                self._since_lllite = 0
            self._consumed = self._record(main)
            with self._stage(prof, stages, "unet", main):
                self._latent_out = self._steps["unet"].replay()
            if self.cuda and self._last_d2h is not None:
                main.wait_event(self._last_d2h)  # the decode output is free once copied out
            if self.feedback_source is not None and self.settings.feedback > 0:
                self.feedback_source(self)
            with self._stage(prof, stages, "vae_decode", main):
                out = self._steps["decode"].replay()
            if self.settings.feedback > 0:
                out, blended = out
                self._prev.copy_(blended[n - 1])
                self._weight.fill_(self.settings.feedback)
            self._decoded = self._record(main, timing=self.pacer is not None)
            if self.pacer is not None:
                self._marks = (side_done, begin, self._decoded)
        self._since_cond += 1
        self._since_lllite += 1
        return out

    def _deferred_cond(self, prof: bool, stages: list) -> None:
        """Encoder stream: the conditioning of the frames the side stream put in ``_cond_in``,
        after this batch's main stream took the last one out of the step's output buffer; the
        next batch's main stream takes it (:meth:`_take_deferred`)."""
        enc = self._enc
        with self._on(enc):
            if self.cuda:
                enc.wait_event(self._cond_frames)
                enc.wait_event(self._consumed)
            with self._stage(prof, stages, "encoder", enc):
                cond = self._steps["cond"].replay()
            self._enc_ready = self._record(enc)
        self._cond_inflight = (cond, self._enc_ready)

    def _take_deferred(self, main) -> None:
        """Main stream: the deferred conditioning into the U-Net's input, once it is ready."""
        cond, ready = self._cond_inflight
        if self.cuda:
            main.wait_event(ready)
            if not self._graphs and main is not self._enc:
                cond.record_stream(main)
        self._fill_cond(cond)
        self._cond_inflight = None

    def _lent_frames(self, size: tuple[int, int]) -> LentFrames | None:
        # One buffer per batch in flight and one for the batch the sinks still show; more only
        # when consumers keep older frames (:mod:`.lent_frames`).
        w, h = size
        return (LentFrames((self.batch_size, h, w, 3), count=self.SLOTS + 1, limit=self.SLOTS + 4)
                if self.cuda else None)

    def _copy_out(self, out, slot: int, n: int, ticket: Ticket) -> None:
        """Copy stream: the output-size uint8 frames into a pinned buffer lent out at collect
        (one of the batch's own when every lent one is still in use); the ticket's event."""
        if self.cuda:
            ticket.host = self._host_out.take(ticket) if self.settings.lend_frames else None
            if ticket.host is None:
                ticket.host = torch.empty(tuple(out.shape), dtype=torch.uint8, pin_memory=True)
            with self._on(self._copy):
                self._copy.wait_event(self._decoded)
                if not self._graphs and self._copy is not self._main:
                    out.record_stream(self._copy)
                ticket.host.copy_(out, non_blocking=True)
                ticket.event = self._last_d2h = self._record(self._copy, host=True)
        else:
            ticket.frames = list(out[:n].numpy().copy())

    def collect(self, ticket: Ticket) -> list[np.ndarray]:
        """The output frames of ``ticket`` (waits for them); tickets are collected in order."""
        if ticket.frames is not None and ticket not in self._pending:
            return ticket.frames
        if take_in_order(self._pending, ticket, self._last_output) and self.cuda:
            ticket.event.synchronize()
            host, ticket.host = ticket.host, None
            ticket.frames = (self._host_out.lend(host, ticket.count)
                             or list(host[:ticket.count].numpy().copy()))
            if ticket.marks is not None:
                self._observe_pace(ticket.marks)
        ticket.t_ready = time.perf_counter()
        self._last_output = ticket.frames[-1]
        return ticket.frames

    def process(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """Any number of frames in, the same number out in order (two batches in flight)."""
        return [f for batch in run_batches(self, frames, 2) for f in batch]

    def run_batches(self, frames: Iterable[np.ndarray], max_inflight: int = 2) -> Iterator[list[np.ndarray]]:
        """Batches of output frames for a stream of frames, keeping ``max_inflight`` batches queued."""
        return run_batches(self, frames, max_inflight)

    # ------------------------------------------------------------------ profiling

    def stage_times(self, tickets: Iterable[Ticket]) -> dict:
        """Per-stage milliseconds (median over batches) and the encoder/U-Net overlap, read
        from the CUDA events of collected tickets (``profile=True``)."""
        per: dict[str, list[float]] = {}
        spans: dict[str, list[tuple[float, float]]] = {}
        for t in tickets:
            for name, a, b in t.stages:
                per.setdefault(name, []).append(a.elapsed_time(b))
                # Events time against a zero on their own device (split: two clocks).
                t0 = self._profile_t0_side if self.split and name in SIDE_STAGES else self._profile_t0
                if t0 is not None:
                    spans.setdefault(name, []).append((t0.elapsed_time(a), t0.elapsed_time(b)))
        out = {f"{k}_ms": round(float(np.median(v)), 3) for k, v in per.items()}
        if self.split:
            # Two devices share no clock to overlap on: how busy each one is instead, and its
            # idle gaps (the split pays when the side device keeps up and the main one never waits).
            for role, names in (("side", SIDE_STAGES), ("main", MAIN_STAGES)):
                out |= {f"{role}_{k}": v for k, v in _busy([s for n in names for s in spans.get(n, [])]).items()}
        elif "unet" in spans and ("encoder" in spans or "vae_encode" in spans):
            side = spans.get("encoder", []) + spans.get("vae_encode", [])
            out["side_overlap_with_unet"] = round(_overlap(side, spans["unet"]), 3)
            if "encoder" in spans:
                out["encoder_overlap_with_unet"] = round(_overlap(spans["encoder"], spans["unet"]), 3)
        return out

    def start_profile(self) -> None:
        """Mark time zero for :meth:`stage_times`' overlap (on the main stream)."""
        if self.cuda:
            self._profile_t0 = torch.cuda.Event(enable_timing=True)
            self._profile_t0.record(self._main)
            if self.split:
                self._profile_t0_side = torch.cuda.Event(enable_timing=True)
                self._profile_t0_side.record(self._side)

    # ------------------------------------------------------------------ helpers

    def _steps_ready(self) -> bool:
        return self._wanted_steps() <= set(self._steps)

    def _fill_cond(self, cond: torch.Tensor) -> None:
        # A shorter (length-bucketed) conditioning fills the front; the rest is zero, exactly
        # what the conditioner's own fixed-length output holds there.
        length = cond.shape[1]
        if length < self._main_cond.shape[1]:
            self._main_cond[:, length:].zero_()
        self._main_cond[:, :length].copy_(cond.expand(self.batch_size, -1, -1))

    def _should_skip(self, arr: np.ndarray) -> bool:
        skip, self._skip_ref = still_batch(arr, self._skip_ref, self.settings.skip_threshold)
        return skip

    def _cross(self, side_done, latent, cond, lllite, warping: bool, prof: bool, stages: list):
        """Split: this batch's side outputs into staging buffers on the main device, by a peer
        copy on a copy stream of each device ordered after the side stream's event; returns them
        and the event the main stream waits on (None on the CPU). The staging buffers are free:
        the side stream made these outputs only after the main stream had consumed the last ones."""
        pairs = [("latent", latent)]
        if cond is not None:
            pairs.append(("cond", cond))
        pairs += [(f"lllite{i}", emb) for i, emb in enumerate(lllite or [])]
        if warping:
            pairs.append(("flow", self._side_flow))
        if not self.cuda:
            staged = [self._staged(name, t).copy_(t) for name, t in pairs]
            done = None
        else:
            xs, xm = self._xfer_side, self._xfer_main
            xs.wait_event(side_done)
            xm.wait_event(side_done)
            # PyTorch copies between devices on the source device's current stream, fenced both
            # ways with the destination's current stream: make those the two copy streams, so
            # neither the side nor the main stream stalls for the copy.
            copier = xs if self.side_device != self.device else xm
            with torch.cuda.stream(xs), torch.cuda.stream(xm), self._stage(prof, stages, "peer_copy", xm):
                staged = []
                for name, t in pairs:
                    if not self._graphs:
                        t.record_stream(copier)  # a fresh side-stream allocation, read here
                    staged.append(self._staged(name, t).copy_(t, non_blocking=True))
                done = self._record(xm)
        out = dict(zip([name for name, _ in pairs], staged))
        embs = [out[f"lllite{i}"] for i in range(len(lllite))] if lllite is not None else None
        return out["latent"], out.get("cond"), embs, done

    def _staged(self, name: str, like: torch.Tensor) -> torch.Tensor:
        # A main-device buffer of ``like``'s shape, kept: the same address every batch.
        buf = self._staging.get(name)
        if buf is None or buf.shape != like.shape or buf.dtype != like.dtype:
            if buf is not None and self.cuda:
                buf.record_stream(self._main)  # the main stream may still read the old one
            buf = self._staging[name] = torch.empty(like.shape, dtype=like.dtype, device=self.device)
        return buf

    def _check_frames(self, frames) -> np.ndarray | list[np.ndarray]:
        # No stacking: the frames are copied once, straight into the pinned host slot.
        W, H = self.in_size
        if isinstance(frames, np.ndarray) and frames.ndim == 4:
            arr = frames
            if arr.dtype != np.uint8 or arr.shape[1:] != (H, W, 3):
                raise ValueError(f"the engine takes RGB uint8 frames (n, {H}, {W}, 3); got {arr.dtype} {arr.shape}")
        else:
            arr = list(frames)
            for f in arr:
                if not isinstance(f, np.ndarray) or f.dtype != np.uint8 or f.shape != (H, W, 3):
                    desc = f"{f.dtype} {f.shape}" if isinstance(f, np.ndarray) else type(f).__name__
                    raise ValueError(f"the engine takes RGB uint8 frames of its input size ({H}, {W}, 3); got "
                                     f"{desc}. Say the frame size with set_io_size first")
        if not 1 <= len(arr) <= self.batch_size:
            raise ValueError(f"submit takes 1 to {self.batch_size} frames (the batch size), got {len(arr)}")
        return arr

    def _cropped(self, frames: np.ndarray) -> np.ndarray:
        # The part of the input frames the model sees (the flow must follow that part).
        if self._box is None:
            return frames
        x0, y0, w, h = self._box
        return frames[:, y0:y0 + h, x0:x0 + w]

    def _main_stream(self):
        return self._main if self.cuda else None

    def _side_stream(self):
        return self._side if self.cuda else None

    def _on(self, stream):
        return torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()

    def _record(self, stream, host: bool = False, timing: bool = False):
        """An event recorded on ``stream``; ``host``: one the host thread will wait on, which
        sleeps rather than spins there unless ``host_wait`` is ``spin``; ``timing``: one whose
        time the pacer reads."""
        if stream is None:
            return None
        ev = torch.cuda.Event(enable_timing=timing, blocking=host and self.settings.host_wait == "sleep")
        ev.record(stream)
        return ev

    @contextlib.contextmanager
    def _stage(self, on: bool, stages: list, name: str, stream):
        if not on:
            yield
            return
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(stream)
        yield
        b.record(stream)
        stages.append((name, a, b))

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            if self.side_device != self.device:
                torch.cuda.synchronize(self.side_device)

    def _check_open(self) -> None:
        if self.closed:
            raise EngineError("the engine is closed")

    def close(self) -> None:
        """Wait for work in flight, unfold LLLite, restore the encoder/VAE settings. Idempotent."""
        if self.closed:
            return
        self._sync()
        self._steps.clear()
        self._pending.clear()
        if self._fp8 is not None:
            self._fp8.restore()  # before unfolding: some swapped layers sit inside folded ones
        if self.folded is not None and self._owns_folded:
            self.folded.unfold()
        self.folded = None
        self.cond.close()
        if self._vae_blocks is not None:
            self._vae_blocks.restore()
        if self._vae_format is not None:
            to_memory_format(self.bundle.vae, torch.contiguous_format)
        if self._unet_format is not None:
            to_memory_format(self.bundle.unet, torch.contiguous_format)
        self.closed = True
        if self.cuda:
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------ streams (a server's callers)
    #
    # What one stream of frames leaves behind for its next batch: the feedback blend and its
    # weight, the flow estimator's last thumbnail, the similarity skip's reference, and a
    # conditioning that is reused between refreshes (Qwen3-VL looking at the frames, LLLite).
    # Sessions are not mixed in a batch where any of it is in use (the decode step's blend chains
    # frame i to frame i - 1 of its batch, baked into its CUDA graph); between batches of two
    # streams the state is copied out of and into the captured steps' fixed buffers, on the main
    # stream, so it follows submit order with batches in flight and costs no synchronization.

    def temporal(self, params: Mapping) -> bool:
        """Whether a style with ``params`` makes an output depend on other frames than its own."""
        s = self._base_settings.with_style(params)
        qwen = self.bundle.qwen
        broadcast = qwen is not None and (s.broadcasts or qwen.broadcast)
        looks = self.cond_on_side and qwen is not None and s.vision  # conditioning made from frames
        return (s.feedback > 0 or s.skip_threshold > 0 or (looks and (s.refresh_batches > 1 or broadcast or self.deferred))
                or (self.folded is not None and (s.lllite_refresh > 1 or broadcast)))

    @torch.no_grad()
    def detach_temporal(self) -> dict:
        """The state the stream painted so far leaves for its next batch (as of every batch
        submitted), for :meth:`attach_temporal`; the engine goes on as a fresh stream."""
        self._check_open()
        with self._on(self._main_stream()):
            if self._cond_inflight is not None:  # what this stream's next batch would have taken
                self._take_deferred(self._main_stream())
            state = {"prev": self._prev.clone(), "weight": self._weight.clone(),
                     "cond": self._main_cond.clone() if self.cond_on_side else None,
                     "lllite": ([b.clone() for b in self.folded.conditioning_buffers()]
                                if self.folded is not None else None)}
        state |= {"flow": self._flow, "cond_due": self._cond_due, "since_cond": self._since_cond,
                  "lllite_due": self._lllite_due, "since_lllite": self._since_lllite}
        self.attach_temporal(None)
        return state

    @torch.no_grad()
    def attach_temporal(self, state: dict | None) -> None:
        """From the next submitted batch, continue the stream ``state`` came from (None: a fresh
        one, as :meth:`reset_temporal` plus a conditioning made from its own first batch)."""
        self._check_open()
        # The first batch after a switch is always painted: a skipped batch repeats the output
        # collected last, which may be another stream's.
        self._skip_ref = None
        self._cond_inflight = None  # another stream's
        if state is None:
            self.reset_temporal()
            self._flow = None
            self._cond_due, self._since_cond = True, 0
            self._lllite_due, self._since_lllite = self.folded is not None, 0
            return
        with self._on(self._main_stream()):
            self._prev.copy_(state["prev"])
            self._weight.copy_(state["weight"])
            if state["cond"] is not None and self.cond_on_side:
                self._main_cond.copy_(state["cond"])
            if state["lllite"] is not None and self.folded is not None:
                for buf, saved in zip(self.folded.conditioning_buffers(), state["lllite"]):
                    buf.copy_(saved)
        self._flow = state["flow"]
        self._cond_due, self._since_cond = state["cond_due"], state["since_cond"]
        self._lllite_due, self._since_lllite = state["lllite_due"], state["since_lllite"]


def run_batches(engine, frames: Iterable[np.ndarray], max_inflight: int) -> Iterator[list[np.ndarray]]:
    """Output batches for a stream of frames through ``engine`` (a :class:`StreamEngine` or a
    pool of them: ``batch_size``, ``SLOTS``, ``submit``, ``collect`` and the ``_pending`` queue),
    ``max_inflight`` batches queued."""
    if not 1 <= max_inflight <= engine.SLOTS:
        raise ValueError(f"max_inflight must be from 1 to {engine.SLOTS}")
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == engine.batch_size:
            if len(engine._pending) >= max_inflight:
                yield engine.collect(engine._pending[0])
            engine.submit(batch)
            batch = []
    if batch:
        if len(engine._pending) >= max_inflight:
            yield engine.collect(engine._pending[0])
        engine.submit(batch)
    while engine._pending:
        yield engine.collect(engine._pending[0])


def moving_average(frames: torch.Tensor, prev: torch.Tensor, first_weight, alpha: float,
                   grids: torch.Tensor | None = None) -> torch.Tensor:
    """The feedback blend: frame i of ``frames`` (B, H, W, C) float mixed with the blend of frame
    i - 1 (``prev`` for i = 0, with weight ``first_weight``; ``alpha`` after), that previous blend
    first warped along ``grids[i]`` (:func:`.flow.flow_grids`) when given. Returns (B, H, W, C)."""
    from .flow import warp

    out = []
    for i in range(frames.shape[0]):
        if grids is not None:
            prev = warp(prev, grids[i])  # the previous blend, moved to where this frame is
        prev = torch.lerp(frames[i], prev, first_weight if i == 0 else alpha)
        out.append(prev)
    return torch.stack(out)


def still_batch(frames, ref: np.ndarray | None, threshold: float) -> tuple[bool, np.ndarray | None]:
    """The similarity skip's test: (True, ``ref``) when every frame's 1/16 thumbnail is within
    ``threshold`` 8-bit levels (mean absolute difference) of ``ref``, the last processed frame's
    thumbnail; else (False, the newest frame's thumbnail, the next reference)."""
    import cv2

    H, W = frames[0].shape[:2]
    size = (max(1, W // SKIP_THUMB_DIVISOR), max(1, H // SKIP_THUMB_DIVISOR))
    thumbs = [cv2.resize(f, size, interpolation=cv2.INTER_AREA).astype(np.int16) for f in frames]
    if ref is not None and all(float(np.abs(t - ref).mean()) < threshold for t in thumbs):
        return True, ref
    return False, thumbs[-1]


def _busy(spans: list[tuple[float, float]]) -> dict:
    """How busy one device was over ``spans`` (ms from its zero): the busy fraction of the time
    from the first start to the last end, and the median idle gap between its stages."""
    if not spans:
        return {}
    merged: list[list[float]] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    wall = merged[-1][1] - merged[0][0]
    busy = sum(e - s for s, e in merged)
    gaps = [b[0] - a[1] for a, b in zip(merged, merged[1:])] or [0.0]
    return {"busy": round(busy / wall, 3) if wall > 0 else 1.0, "idle_gap_p50_ms": round(float(np.median(gaps)), 3)}


def _control(frames: torch.Tensor, broadcast: bool) -> torch.Tensor:
    from .lllite import to_control_image

    return to_control_image(frames[-1:] if broadcast else frames)


def _overlap(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> float:
    """Fraction of the total length of intervals ``a`` that lies inside intervals ``b``."""
    total = sum(e - s for s, e in a)
    if total <= 0:
        return 0.0
    inside = 0.0
    for s, e in a:
        for s2, e2 in b:
            inside += max(0.0, min(e, e2) - max(s, s2))
    return inside / total


__all__ = ["EngineError", "EngineSettings", "STYLE_KEYS", "StreamEngine", "Ticket", "moving_average", "still_batch"]
