"""Several devices for the streaming engine: the encoders on one GPU and the U-Net on another
(*split*), or one engine per GPU (*replicate*).

Contract. :func:`parse_devices` turns a device list into a :class:`DevicePlan` (or None: the
bundle's own device, today's engine); :func:`open_engine` opens the plan over a bundle and
returns an engine with :class:`~.engine.StreamEngine`'s interface (``set_style``,
``set_io_size``, ``submit``, ``collect``, ``process``, ``run_batches``, ``stage_times``,
``start_profile``, ``report``, ``close``). A plan of one device is a plain ``StreamEngine`` on
that device. Errors are :class:`DeviceError` (a ``ValueError``) in the user's terms. This module
imports the engine; the engine never imports it back.

The grammar (``EngineSettings.devices``, ``stylecam run --devices``)::

    SPEC := [ "split:" | "replicate:" ] ( "all" | DEV ("," DEV)* )     DEV := N | cuda:N | cuda | cpu

Without a prefix: one device runs alone, two are split, three or more and ``all`` (every CUDA
GPU) are replicated. ``split`` over 2k devices runs k split pairs side by side. A list may name
one device twice (``split:0,0``, ``replicate:cpu,cpu``): the same code paths on one device, which
is how the tests drive the scheduling on a CPU and how one GPU checks the split's copies.

**Split** (:func:`place_split`): on the first device of a pair the side stream's work, TAESD's
encoder, the conditioning encoder (Qwen3-VL or CLIP) and the LLLite conditioning CNNs; on the
second the U-Net with the rest of LLLite folded in and TAESD's decoder. The engine's side
buffers live on the first device; each batch's latents, conditioning and LLLite embeddings
cross to staging buffers on the second by a peer copy on a copy stream of each device, ordered
by events (``StreamEngine._cross``); each CUDA graph is captured on its own device's stream; the
refresh schedule is the one-device engine's.

**Replicate** (:class:`EnginePool`): one engine per device (or split pair), each with its own
copy of the bundle on its device; batch k goes to engine k mod n and tickets are collected in
submission order, so the outputs keep the stream's order. What makes a stream one stream stays
shared: the similarity skip compares against the last processed frame of the stream (the pool
decides, before any engine), the optical flow of the feedback warp runs over the frames in
stream order (one estimator), and the feedback blend hands the previous batch's output from its
engine to the next on a copy stream (so the decodes run in stream order while the U-Nets run at
once). The conditioning refresh counts each engine's own batches: ``refresh=4`` on two devices
runs each device's encoder as often as on one device, and a cached conditioning serves up to
eight batches of the stream. Per-device metrics: :meth:`EnginePool.stage_times` and
``report.as_dict()["per_device"]``.
"""

from __future__ import annotations

import copy
import logging
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Iterable, Iterator

import numpy as np
import torch

from .bundle import Bundle
from .compile import CompileReport
from .engine import EngineError, StreamEngine, Ticket, still_batch, take_in_order
from .engine_settings import EngineSettings

log = logging.getLogger(__name__)

PLACEMENTS = ("single", "split", "replicate")
#: TAESD / AutoencoderKL children that run on the side device (the rest go with the decoder).
VAE_ENCODER_PARTS = ("encoder", "quant_conv")


class DeviceError(ValueError):
    """A device list that cannot run here; the message says which device and what would work."""


@dataclass(frozen=True)
class DevicePlan:
    """Where the engine runs: ``placement`` over ``devices`` (``"cuda:0"``, ``"cpu"``...)."""

    placement: str
    devices: tuple[str, ...]

    @property
    def groups(self) -> list[tuple[str, ...]]:
        """One tuple per engine: ``(side, main)`` for split, ``(device,)`` otherwise."""
        if self.placement == "split":
            return [self.devices[i:i + 2] for i in range(0, len(self.devices), 2)]
        return [(d,) for d in self.devices]

    @property
    def engines(self) -> int:
        return len(self.groups)

    def describe(self) -> dict:
        """The plan as a JSON-able row field."""
        return {"placement": self.placement, "devices": list(self.devices)}

    def __str__(self) -> str:
        # The grammar's own spelling: parse_devices(str(plan)) == plan.
        listed = ",".join(self.devices)
        return listed if self.placement == "single" else f"{self.placement}:{listed}"


def _device_name(item, spec) -> str:
    text = str(item).strip().lower()
    if text == "cpu":
        return "cpu"
    if text == "cuda":
        return "cuda:0"
    index = text[5:] if text.startswith("cuda:") else text
    if not index.isdigit():
        raise DeviceError(f"devices {spec!r}: {item!r} is not a device; name GPUs by number (0,1), as "
                          "cuda:N, or all, or cpu")
    return f"cuda:{int(index)}"


def parse_devices(spec, gpus: int | None = None) -> DevicePlan | None:
    """The plan of a device list (see the module docstring); None for None (the bundle's device).

    ``spec``: a string, a sequence of device names/numbers/``torch.device``, or a plan.
    ``gpus``: how many CUDA GPUs there are (default: ask torch)."""
    if spec is None or isinstance(spec, DevicePlan):
        return spec
    placement = None
    if isinstance(spec, str):
        text = spec.strip().lower()
        for prefix in ("split:", "replicate:"):
            if text.startswith(prefix):
                placement, text = prefix[:-1], text[len(prefix):]
        items = [t for t in (x.strip() for x in text.split(",")) if t]
    else:
        items = list(spec)
    if not items:
        raise DeviceError(f"devices {spec!r}: name at least one device (0,1 or all)")
    if gpus is None:
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if len(items) == 1 and str(items[0]).strip().lower() == "all":
        if gpus == 0:
            raise DeviceError("devices 'all' means every CUDA GPU, and this machine has none; leave the "
                              "device list out to run on the CPU")
        names = [f"cuda:{i}" for i in range(gpus)]
        placement = placement or "replicate"
    else:
        names = [_device_name(item, spec) for item in items]
        placement = placement or ("single" if len(names) == 1 else "split" if len(names) == 2 else "replicate")
    if len({n == "cpu" for n in names}) > 1:
        raise DeviceError(f"devices {spec!r} mixes the CPU and GPUs; list GPUs only, or cpu only")
    for n in names:
        if n != "cpu" and int(n[5:]) >= gpus:
            have = f"{gpus} CUDA GPU{'s' if gpus != 1 else ''} (0 to {gpus - 1})" if gpus else "no CUDA GPU"
            raise DeviceError(f"devices {spec!r}: there is no {n}; this machine has {have}")
    if placement == "split" and len(names) % 2:
        raise DeviceError(f"devices {spec!r}: a split runs on pairs of devices (encoders on the first, "
                          f"U-Net on the second), got {len(names)}")
    if placement == "replicate" and len(names) == 1:
        placement = "single"
    return DevicePlan(placement, tuple(names))


# ------------------------------------------------------------------------------------ placement


def place_split(bundle: Bundle, side, main) -> Bundle:
    """Move ``bundle``'s components for a split: the side stream's models to ``side``, the
    U-Net, LLLite's folded half and the VAE decoder to ``main``. ``bundle.device`` is then
    ``main``. Undone by ``bundle.to(device)``."""
    side, main = torch.device(side), torch.device(main)
    bundle.unet.to(main)
    for name, child in bundle.vae.named_children():
        child.to(side if name in VAE_ENCODER_PARTS else main)
    for module in (bundle.text_encoder, bundle.qwen):
        if module is not None:
            module.to(side)
    if bundle.lllite is not None:
        bundle.lllite.to(main)  # down/mid/up run inside the U-Net
        for name in bundle.lllite.names():
            bundle.lllite[name].conditioning1.to(side)
    return bundle


def replica_bundle(bundle: Bundle, device) -> Bundle:
    """A copy of ``bundle`` (weights included) on ``device``, for an engine of its own. Made
    before any engine folds LLLite into the original's U-Net."""
    twin = copy.deepcopy(bundle)
    return twin.to(device)


# ------------------------------------------------------------------------------------ engines


def open_engine(bundle: Bundle, settings: EngineSettings | None = None, style=None, *, folded=None):
    """An engine over ``settings.devices`` (see :func:`parse_devices`): a ``StreamEngine`` for
    no list or one device (the bundle moved there), else an :class:`EnginePool`, which puts the
    bundle back on its device when closed."""
    settings = settings or EngineSettings()
    plan = parse_devices(settings.devices)
    if plan is None or plan.placement == "single":
        if plan is not None and torch.device(plan.devices[0]) != bundle.device:
            if folded is not None:
                raise EngineError("a folded U-Net is made on its device; fold after choosing the device")
            bundle.to(plan.devices[0])
        return StreamEngine(bundle, replace(settings, devices=None), style, folded=folded)
    if folded is not None:
        raise EngineError("with several devices each engine folds LLLite into its own U-Net: pass folded=None")
    return EnginePool(bundle, settings, style, plan=plan)


class PoolReport:
    """The pool's compile/capture time (summed over its engines) and per-device counts; what
    they were at close once the pool is closed (its engines are let go then)."""

    def __init__(self, pool: "EnginePool"):
        self._pool = pool
        self._frozen: dict | None = None

    def __getattr__(self, name):  # compile_s, capture_s, graphs: the sums
        if name in ("compile_s", "capture_s", "graphs"):
            if self._frozen is not None:
                return self._frozen[name]
            return sum(getattr(e.report, name) for e in self._pool.engines)
        raise AttributeError(name)

    def freeze(self) -> None:
        self._frozen = self.as_dict()

    def as_dict(self) -> dict:
        if self._frozen is not None:
            return copy.deepcopy(self._frozen)
        total = CompileReport(compile_s=self.compile_s, capture_s=self.capture_s, graphs=self.graphs).as_dict()
        pool = self._pool
        total["per_device"] = [{"devices": list(g), "batches": pool.batches[i], "frames": pool.frames[i],
                                **e.report.as_dict()} for i, (g, e) in enumerate(zip(pool.plan.groups, pool.engines))]
        return total


class EnginePool:
    """Engines on several devices behind one engine's interface (see the module docstring).

    ``SLOTS`` (batches in flight) is two per engine: to keep n devices busy, keep 2n batches
    queued (:meth:`run_batches` and :meth:`process` do)."""

    def __init__(self, bundle: Bundle, settings: EngineSettings, style=None, *, plan: DevicePlan):
        self.plan = plan
        self.settings = self._base_settings = settings
        self.batch_size = settings.batch_size
        # The pool decides the similarity skip for the whole stream (see the module docstring).
        inner = replace(settings, devices=None, skip_threshold=0.0)
        self._home = bundle.device
        self._bundle = bundle
        self.engines: list[StreamEngine] = []
        self._bundles: list[Bundle] = []
        groups = plan.groups
        if settings.mode == "compile":
            # Every engine compiles the same functions over objects of its own; Dynamo keeps one
            # cache entry per guarded variant and past its limit (8) quietly runs the step eagerly.
            import torch._dynamo

            cfg = torch._dynamo.config
            knob = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
            setattr(cfg, knob, max(getattr(cfg, knob), 8 * len(groups)))
        try:
            # Copies first, from the untouched original: an engine folds LLLite into its U-Net.
            self._bundles = [bundle] + [replica_bundle(bundle, g[-1]) for g in groups[1:]]
            for b, g in zip(self._bundles, groups):
                if plan.placement == "split":
                    place_split(b, g[0], g[1])
                else:
                    b.to(g[0])
            for b, g in zip(self._bundles, groups):
                engine = StreamEngine(b, inner, side_device=g[0] if plan.placement == "split" else None)
                if len(groups) > 1:
                    engine.feedback_source = self._feedback_into
                self.engines.append(engine)
        except BaseException:
            self.close()
            raise
        self.cuda = self.engines[0].cuda
        self.device = self.engines[0].device
        self.mode = self.engines[0].mode
        self.SLOTS = StreamEngine.SLOTS * len(self.engines)
        self.report = PoolReport(self)
        self.batches = [0] * len(self.engines)
        self.frames = [0] * len(self.engines)
        self.skipped_batches = 0
        self.closed = False
        self._pending: deque[Ticket] = deque()
        self._count = 0
        self._next = 0  # the engine that takes the next batch that runs
        self._last_decoder: StreamEngine | None = None  # the engine of the last batch that ran
        self._skip_ref: np.ndarray | None = None
        self._last_output: np.ndarray | None = None
        self._flow = None  # one FlowEstimator for the stream (feedback_warp)
        self._fb_streams = [torch.cuda.Stream(e.device) for e in self.engines] if self.cuda else None
        log.info("engine on %s: %d engine(s)", plan, len(self.engines))
        if style is not None:
            self.set_style(style)

    # ------------------------------------------------------------------ the engine interface

    def set_style(self, style) -> None:
        """Every engine gets the style (from its next batch); the skip threshold stays here."""
        self._check_open()
        params = dict(getattr(style, "params", style))
        self.settings = self._base_settings.with_style(params)  # unset keys: back to the base
        inner = {k: v for k, v in params.items() if k != "skip_threshold"}
        for engine in self.engines:
            engine.set_style(inner)

    def set_io_size(self, in_size=None, out_size=None) -> None:
        self._check_open()
        first = self.engines[0]
        wanted = (tuple(in_size or first.size), tuple(out_size or first.size))
        if self._pending and wanted != (first.in_size, first.out_size):
            raise EngineError("frame sizes change between streams: collect every batch before set_io_size")
        before = first.in_size
        for engine in self.engines:
            engine.set_io_size(in_size, out_size)
        if first.in_size != before:
            self._skip_ref = None
            self._flow = None

    def submit(self, frames, capture_times: list[float] | None = None) -> Ticket:
        """Queue up to B frames on the next engine in turn; collect tickets in this order."""
        self._check_open()
        if len(self._pending) >= self.SLOTS:
            raise EngineError(f"{len(self._pending)} batches are in flight; collect the oldest before "
                              f"submitting more")
        first = self.engines[0]
        arr = first._check_frames(frames)  # the engine's own check and message
        n = len(arr)
        now = time.perf_counter()
        times = list(capture_times) if capture_times is not None else [now] * n
        index = self._count
        self._count += 1
        if self.settings.skip_threshold > 0:
            skip, self._skip_ref = still_batch(arr, self._skip_ref, self.settings.skip_threshold)
            if skip:
                ticket = Ticket(index=index, count=n, slot=-1, capture_times=times, t_submit=now, skipped=True)
                self.skipped_batches += 1
                self._pending.append(ticket)
                return ticket
        i = self._next
        engine = self.engines[i]
        if engine.settings.feedback > 0 and engine.settings.feedback_warp and len(self.engines) > 1:
            # Frame 0's flow is to the previous batch's last frame, which another engine had:
            # one estimator follows the stream.
            if self._flow is None:
                from .flow import FlowEstimator

                self._flow = FlowEstimator(engine.size)
            engine._flow = self._flow
        ticket = engine.submit(arr, capture_times=times)
        ticket.index, ticket.replica = index, i
        self._next = (i + 1) % len(self.engines)
        self._last_decoder = engine
        self.batches[i] += 1
        self.frames[i] += n
        self._pending.append(ticket)
        return ticket

    def collect(self, ticket: Ticket) -> list[np.ndarray]:
        """The output frames of ``ticket`` (waits for them); tickets are collected in order."""
        if ticket.frames is not None and ticket.t_ready is not None and ticket not in self._pending:
            return ticket.frames
        if take_in_order(self._pending, ticket, self._last_output):
            self.engines[ticket.replica].collect(ticket)
        else:
            ticket.t_ready = time.perf_counter()
        self._last_output = ticket.frames[-1]
        return ticket.frames

    def process(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        """Any number of frames in, the same number out in order (every engine kept busy)."""
        from .engine import run_batches

        return [f for batch in run_batches(self, frames, self.SLOTS) for f in batch]

    def run_batches(self, frames: Iterable[np.ndarray], max_inflight: int | None = None) -> Iterator[list[np.ndarray]]:
        """Batches of output frames for a stream of frames, ``max_inflight`` (default ``SLOTS``) queued."""
        from .engine import run_batches

        return run_batches(self, frames, self.SLOTS if max_inflight is None else max_inflight)

    # ------------------------------------------------------------------ metrics

    def start_profile(self) -> None:
        for engine in self.engines:
            engine.start_profile()

    def stage_times(self, tickets: Iterable[Ticket]) -> dict:
        """Each engine's :meth:`~.engine.StreamEngine.stage_times` over its own tickets under
        ``per_device``; at the top, the median over engines of each number."""
        tickets = [t for t in tickets if not t.skipped]
        per = []
        for i, (g, engine) in enumerate(zip(self.plan.groups, self.engines)):
            mine = [t for t in tickets if t.replica == i]
            per.append({"devices": list(g), "batches": len(mine), **engine.stage_times(mine)})
        keys = {k for p in per for k, v in p.items() if isinstance(v, (int, float)) and k != "batches"}
        out = {k: round(float(np.median([p[k] for p in per if k in p])), 3) for k in sorted(keys)}
        out["per_device"] = per
        return out

    def reset_temporal(self) -> None:
        """The next frame does not follow the last one (as :meth:`StreamEngine.reset_temporal`):
        every engine forgets its feedback, and the stream its flow and skip reference."""
        self._check_open()
        for engine in self.engines:
            engine.reset_temporal()
        if self._flow is not None:
            self._flow.reset()
        self._skip_ref = None

    # ------------------------------------------------------------------ helpers

    def _feedback_into(self, engine: StreamEngine) -> None:
        """The engines' hook before a decode: the previous batch's blend (``_prev``) and weight,
        made by another engine, copied in. On CUDA a copy stream per engine does it after that
        batch's decode event and the decode waits for it; the U-Net before it does not."""
        src = self._last_decoder
        if src is None or src is engine:
            return
        if not engine.cuda:
            engine._prev.copy_(src._prev)
            engine._weight.copy_(src._weight)
            return
        s_src = self._fb_streams[self.engines.index(src)]
        s_dst = self._fb_streams[self.engines.index(engine)]
        s_src.wait_event(src._decoded)
        s_dst.wait_event(src._decoded)
        # A copy between devices runs on the source's current stream, fenced with the
        # destination's (see StreamEngine._cross); one device: the inner stream, which waited too.
        with torch.cuda.stream(s_src), torch.cuda.stream(s_dst):
            engine._prev.copy_(src._prev, non_blocking=True)
            engine._weight.copy_(src._weight, non_blocking=True)
            done = torch.cuda.Event()
            done.record(s_dst)
        engine._main.wait_event(done)

    def _check_open(self) -> None:
        if self.closed:
            raise EngineError("the engine is closed")

    def close(self) -> None:
        """Close every engine, drop the copies and put the caller's bundle back on its device.
        Idempotent."""
        if getattr(self, "closed", False):
            return
        for engine in self.engines:
            engine.close()
        if hasattr(self, "report"):
            self.report.freeze()
        # Let the engines and the bundle copies go: their device memory is freed with them.
        self.engines = []
        self._last_decoder = None
        self._pending = deque()
        self._bundles = self._bundles[:1]
        self._bundle.to(self._home)
        self.closed = True
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


__all__ = ["DeviceError", "DevicePlan", "EnginePool", "PLACEMENTS", "open_engine", "parse_devices", "place_split",
           "replica_bundle"]
