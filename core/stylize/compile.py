"""CUDA graphs and ``torch.compile`` for the stream engine, and their off switches.

Three ways to run a fixed-shape step, picked once per engine (never per frame):

* ``eager``: plain PyTorch. ``STYLECAM_EAGER=1`` forces it everywhere (debugging, a driver that
  misbehaves under graphs).
* ``graphs`` (the CUDA default): the eager step captured once in a ``torch.cuda.CUDAGraph`` over
  fixed-address input/output tensors. Capture costs about one forward pass, so a switch of batch
  size or schedule costs milliseconds, not a compile; replay removes the per-kernel launch cost,
  which is what dominates a 1-step U-Net at B=1.
* ``compile``: ``torch.compile(fullgraph=True)`` of the U-Net, TAESD and the encoder (Inductor's
  fused kernels, mode ``default``), then the same manual capture: the graph's inputs stay our
  buffers. The first start compiles — 38-89 s for mllm-edit at B=16 on an H200 — and its time is
  reported apart; Inductor's on-disk cache (``TORCHINDUCTOR_CACHE_DIR``, default under the user
  cache folder) makes later starts fast. Measured on the H200 at B=16: 178 -> 250 fps (mllm-edit),
  237 -> 344 fps (sd-turbo). ``STYLECAM_COMPILE=1`` makes it the app's mode.
  ``max-autotune-no-cudagraphs`` (``compile_mode``) searches kernel configurations for many
  minutes per model and B (mllm-edit B=16 on an H100: a first start outlasts 18 minutes), and
  cuBLAS/cuDNN keep the U-Net's biggest GEMMs and convolutions (``core/bench_autotune.py`` reads
  that from the log; the measurements are in docs/benchmarks.md). ``max-autotune`` is accepted and runs as
  ``max-autotune-no-cudagraphs`` (:func:`inductor_mode`): the engine captures its own graphs, and
  Inductor's would nest inside them. ``coordinate-descent`` tunes only Inductor's own fused
  kernels (:data:`COMPILE_OPTIONS`), seconds to a few minutes on a first start. Search results
  land in the same on-disk cache (the FX graph cache and the autotune cache, both switched on by
  :func:`configure_runtime`), so a second start skips the search: the bench's ``setup_s`` and
  ``compile_s`` say how long each took.

Attention kernels (``sdpa_backend``, :func:`attention_context`): ``auto`` is torch's own choice;
``cudnn``, ``flash``, ``efficient`` or ``math`` put that backend first, the others after it in
torch's order, so a shape the chosen kernel cannot run still runs. The context is entered around
the step's call, outside the compiled function: the backend is chosen when Dynamo traces (or the
CUDA graph captures) the call, and baked into what it made.

Two things Dynamo's guards miss, so an engine of other settings would run code compiled for
the previous one (both met in the first H100 A/B run, one process, engines one after another):

* **Memory format** (``channels_last_vae``/``channels_last_unet``, undone by ``close``):
  :func:`to_memory_format` swaps in new parameter objects instead of ``Module.to``'s in-place
  change, which torch 2.11's recursive dict-tag guards did not see (the stale channels-last
  TAESD graph then failed Inductor's ``assert_size_stride`` on contiguous weights).
* **Attention backend**: chosen when Dynamo traces and never guarded, so a later engine with
  another ``sdpa_backend`` reused the earlier kernels (the A/B row's ``compile_s`` was 0.13 s).
  :func:`prepare_compile` drops Dynamo's in-memory code cache when it changes.

Nothing here runs at import: :func:`configure_runtime` sets the process-wide knobs explicitly.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable

import torch

log = logging.getLogger(__name__)

MODES = ("eager", "graphs", "compile")
#: Inductor mode for ``compile`` (measured; see the module docstring).
DEFAULT_COMPILE_MODE = "default"
#: ``compile_mode`` values, and the Inductor mode each runs as (the engine captures its own
#: CUDA graphs, so Inductor's are always off).
COMPILE_MODES = {"default": "default", "coordinate-descent": "default", "max-autotune": "max-autotune-no-cudagraphs",
                 "max-autotune-no-cudagraphs": "max-autotune-no-cudagraphs"}
#: Inductor options a ``compile_mode`` adds to its mode's own. ``coordinate-descent`` is the half
#: of max-autotune that tunes Inductor's own Triton kernels (block sizes, warps of the fused
#: pointwise and reduction kernels: GroupNorm+SiLU, the residual adds, ~21 ms of a mllm-edit
#: batch of 16 on an H100) without max-autotune's search over GEMM and convolution templates,
#: which is what takes minutes.
COMPILE_OPTIONS = {"coordinate-descent": {"coordinate_descent_tuning": True}}
#: ``sdpa_backend`` values.
ATTENTION_BACKENDS = ("auto", "cudnn", "flash", "efficient", "math")


def eager_requested() -> bool:
    """``STYLECAM_EAGER=1`` (read at call time): run every step eagerly, no graphs, no compile."""
    return _env_on("STYLECAM_EAGER")


def _env_on(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def fused_vae_override() -> bool | None:
    """``STYLECAM_FUSED_VAE``: ``0``/``off`` turns TAESD's fused blocks off in the app, ``1``/``on``
    asks for them outright (a note says why where they cannot run); unset (or anything else):
    the engine's ``auto``. The way out for a user whose GPU draws wrong pictures with them
    (docs/troubleshooting.md)."""
    value = os.environ.get("STYLECAM_FUSED_VAE", "").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    return True if _env_on("STYLECAM_FUSED_VAE") else None


def default_mode() -> str:
    """The engine mode the app uses: ``graphs``, or ``compile`` with ``STYLECAM_COMPILE=1``
    (``STYLECAM_EAGER=1`` still wins in :func:`resolve_mode`)."""
    return "compile" if _env_on("STYLECAM_COMPILE") else "graphs"


def resolve_mode(mode: str, device: torch.device) -> str:
    """The mode an engine actually uses: graphs/compile need CUDA; the env switch wins."""
    if mode not in MODES:
        raise ValueError(f"compile mode must be one of {', '.join(MODES)}, got {mode!r}")
    if device.type != "cuda" or eager_requested():
        return "eager"
    return mode


def default_cache_dir() -> str:
    from platformdirs import user_cache_dir

    return os.path.join(user_cache_dir("stylecam", appauthor=False), "inductor")


_configured = False


def configure_runtime(cache_dir: str | None = None) -> None:
    """Process-wide settings for fast inference, applied once, on purpose (not at import).

    TF32 matmuls (the float32 parts — scheduler maths, norms — lose nothing visible in a frame)
    and a persistent Inductor cache so the compile cost is paid once per machine, not per start.
    cuDNN's autotuner (``cudnn.benchmark``) stays off: its search can compile kernels at run time
    for every conv shape, minutes on a first start, for a gain the graphs already give.
    """
    global _configured
    if _configured:
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if cache_dir or "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache_dir or default_cache_dir()
    # Both on-disk caches under that folder (compiled graphs; max-autotune's search results),
    # unless the user's environment says otherwise.
    import torch._inductor.config as inductor_config

    if "TORCHINDUCTOR_FX_GRAPH_CACHE" not in os.environ:
        inductor_config.fx_graph_cache = True
    if "TORCHINDUCTOR_AUTOTUNE_LOCAL_CACHE" not in os.environ:
        inductor_config.autotune_local_cache = True
    # Full guard checks: the recursive dict-tag shortcut (on by default up to torch 2.11) misses
    # tensors changed in place (Module.to: memory format, device), see to_memory_format. Our
    # steps replay CUDA graphs, so guard time is not on the hot path.
    import torch._dynamo.config as dynamo_config

    if hasattr(dynamo_config, "use_recursive_dict_tags_for_guards"):
        dynamo_config.use_recursive_dict_tags_for_guards = False
    _configured = True


def inductor_mode(compile_mode: str | None) -> str:
    """The Inductor mode a ``compile_mode`` setting runs as (see :data:`COMPILE_MODES`)."""
    mode = compile_mode or DEFAULT_COMPILE_MODE
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {compile_mode!r}")
    return COMPILE_MODES[mode]


def attention_context(backend: str | None) -> Callable | None:
    """A factory of ``sdpa_kernel`` contexts that prefer ``backend`` (None for ``auto``)."""
    backend = backend or "auto"
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"sdpa_backend must be one of {', '.join(ATTENTION_BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return None
    from torch.nn.attention import SDPBackend, sdpa_kernel

    chosen = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
              "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[backend]
    try:
        order = [SDPBackend(int(v)) for v in torch._C._get_sdp_priority_order()]
    except (AttributeError, ValueError):
        order = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH,
                 SDPBackend.CUDNN_ATTENTION]
    # MATH runs every shape on every device: a fallback is always there.
    backends = [chosen] + [b for b in order if b != chosen and b.name in
                           ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH")]
    import inspect

    if "set_priority" in inspect.signature(sdpa_kernel).parameters:
        return lambda: sdpa_kernel(backends, set_priority=True)
    # An older torch: no priority order, so the chosen backend or the always-there MATH.
    return lambda: sdpa_kernel([chosen, SDPBackend.MATH])


def to_memory_format(module: torch.nn.Module, memory_format: torch.memory_format) -> None:
    """Put ``module``'s 4-D parameters and buffers in ``memory_format`` (what
    ``module.to(memory_format=...)`` does), as **new** tensor objects.

    ``Module.to`` changes each parameter's data in place: the same ``Parameter`` objects in
    unchanged ``_parameters`` dicts. Dynamo's recursive dict-tag guards (on by default up to
    torch 2.11, the GPU image's; turned off later: pytorch/pytorch#163064, #181925) take
    unchanged dicts as proof that nothing under them changed, so a step compiled before the
    change kept running with the old strides baked in. New
    objects change those dicts, and every kind of guard sees it. Tensors already in the format
    are left alone (their strides, which a compiled graph may rely on, stay as they are)."""
    swapped = {}  # a parameter shared by two modules stays one parameter
    with torch.no_grad():
        for m in module.modules():
            for name, p in list(m._parameters.items()):
                if p is not None and p.dim() == 4 and not p.is_contiguous(memory_format=memory_format):
                    if id(p) not in swapped:
                        swapped[id(p)] = torch.nn.Parameter(p.detach().contiguous(memory_format=memory_format),
                                                            requires_grad=p.requires_grad)
                    m._parameters[name] = swapped[id(p)]
            for name, b in list(m._buffers.items()):
                if b is not None and b.dim() == 4 and not b.is_contiguous(memory_format=memory_format):
                    m._buffers[name] = b.contiguous(memory_format=memory_format)


#: The ``sdpa_backend`` this process's compiled steps were traced under (None: none yet).
_traced_attention: str | None = None


def prepare_compile(sdpa_backend: str | None) -> bool:
    """Called by an engine before it compiles its steps. The attention backend is picked when
    Dynamo traces, and Dynamo does not guard on it: code traced under another backend would be
    reused as it is. When ``sdpa_backend`` differs from the one the last compiling engine used,
    Dynamo's in-memory caches are dropped (``torch._dynamo.reset()``), so the steps are traced
    again; Inductor's on-disk caches stay, so graphs that did not change load from there.
    Captured CUDA graphs never call Dynamo and are not affected. True when it reset."""
    global _traced_attention
    backend = sdpa_backend or "auto"
    reset = _traced_attention is not None and backend != _traced_attention
    if reset:
        log.info("attention backend %s after %s: compiled steps are traced again", backend, _traced_attention)
        torch._dynamo.reset()
    _traced_attention = backend
    return reset


@dataclass
class CompileReport:
    """Time spent outside the hot path, reported apart from the frame rate."""

    compile_s: float = 0.0  # torch.compile's first calls (tracing + Inductor codegen + autotune)
    capture_s: float = 0.0  # warm-up + CUDA graph capture
    graphs: int = 0
    notes: dict | None = None  # what the engine's knobs did (fp8 layers, attention backend, ...)

    def as_dict(self) -> dict:
        return {"compile_s": round(self.compile_s, 2), "capture_s": round(self.capture_s, 2),
                "graphs": self.graphs, **(self.notes or {})}


def compile_step(fn: Callable, mode: str = DEFAULT_COMPILE_MODE, backend: str = "inductor") -> Callable:
    """``torch.compile(fn, fullgraph=True)``: a graph break is an error, not a silent slow path.

    ``backend="eager"`` traces with Dynamo exactly as the app does but runs the captured graph
    without Inductor: how the tests check, on a CPU, that every step compiles as one graph.
    ``mode``: a ``compile_mode`` setting (:func:`inductor_mode`)."""
    options = COMPILE_OPTIONS.get(mode or DEFAULT_COMPILE_MODE)
    mode = inductor_mode(mode)
    if backend != "inductor":
        return torch.compile(fn, fullgraph=True, dynamic=False, backend=backend)
    if options:
        # torch.compile takes a mode or options, not both: the mode's own options, then ours.
        from torch._inductor import list_mode_options

        return torch.compile(fn, fullgraph=True, dynamic=False, options={**list_mode_options(mode), **options})
    return torch.compile(fn, fullgraph=True, dynamic=False, mode=mode)


def _within(fn: Callable, around: Callable | None) -> Callable:
    # ``fn`` called inside a fresh ``around()`` context each time (the attention backend).
    if around is None:
        return fn

    def call():
        with around():
            return fn()
    return call


class GraphedStep:
    """A zero-argument step captured in one CUDA graph; its inputs are tensors it closes over.

    ``fn`` reads fixed-address input buffers and returns a tensor (or a list/tuple of tensors)
    allocated inside; after capture those outputs live in the graph's private memory pool and
    every :meth:`replay` overwrites them in place.

    **Capture on the stream it will replay on** (``stream``, default: the current stream; the
    default stream, which cannot capture, gets a stream of this step's own). cuBLAS takes its
    workspace per (handle, current stream), and a captured GEMM keeps the workspace address of
    its capture. Graphs captured on one shared stream (``torch.cuda.graph``'s default) all get
    the same workspace, so two of them replaying at once on different streams (the engine's
    encoder on the side stream, the U-Net on the main one) race on it: split-K partial sums and
    semaphores overwritten, wrong values or kernels that never finish. Measured: the engine hung
    in ``collect`` on an H200 that way (fp32 GEMMs without TF32, and bf16 at full size). Graphs
    captured on their replay stream share a workspace only with graphs that replay after them
    on that same stream.

    Warm-up runs on that stream first (cuBLAS/cuDNN workspaces and heuristics, and the first
    call of a ``torch.compile``d fn, timed as compile time).
    """

    def __init__(self, fn: Callable, *, name: str = "step", warmup: int = 2, report: CompileReport | None = None,
                 compiled: bool = False, stream=None):
        self.name = name
        stream = stream if stream is not None else torch.cuda.current_stream()
        if stream == torch.cuda.default_stream(stream.device):
            own = torch.cuda.Stream(stream.device)
            own.wait_stream(stream)
            stream = own
        self.stream = stream
        t0 = time.perf_counter()
        with torch.cuda.stream(stream), torch.no_grad():
            fn()
            torch.cuda.synchronize()
            t1 = time.perf_counter()
            for _ in range(max(0, warmup - 1)):
                fn()
        torch.cuda.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=stream), torch.no_grad():
            self.output = fn()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        if report is not None:
            first = t1 - t0
            if compiled:
                report.compile_s += first
                report.capture_s += t2 - t1
            else:
                report.capture_s += t2 - t0
            report.graphs += 1
        log.debug("captured %s in %.2f s", name, t2 - t0)

    def replay(self):
        with torch.profiler.record_function(f"stylecam.{self.name}"):
            self.graph.replay()
        return self.output


class EagerStep:
    """The same interface without a graph (CPU, ``STYLECAM_EAGER=1``, the naive baselines)."""

    def __init__(self, fn: Callable, *, name: str = "step", report: CompileReport | None = None,
                 compiled: bool = False):
        self.name = name
        self.fn = fn
        if compiled and report is not None:
            t0 = time.perf_counter()
            with torch.no_grad():
                fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            report.compile_s += time.perf_counter() - t0

    def replay(self):
        # The named range lets the kernel profile (:mod:`..bench_profile`) say which step ran what.
        with torch.no_grad(), torch.profiler.record_function(f"stylecam.{self.name}"):
            return self.fn()


def make_step(fn: Callable, mode: str, *, name: str, report: CompileReport | None = None,
              compile_fn: Callable | None = None, graphs: bool = True, around: Callable | None = None):
    """A step runner for ``mode``: ``compile_fn`` (the part worth compiling) replaces ``fn``
    under ``compile``; both are zero-argument closures over the engine's buffers. ``graphs``
    False (the CPU, or the kernel profile) runs the step as it is, compiled or not, with no CUDA
    graph. ``around``: a context factory every call runs in (:func:`attention_context`)."""
    fn, compile_fn = _within(fn, around), (_within(compile_fn, around) if compile_fn is not None else None)
    compiled = mode == "compile" and compile_fn is not None
    if mode == "eager" or not graphs:
        return EagerStep(compile_fn if compiled else fn, name=name, report=report, compiled=compiled)
    if compiled:
        return GraphedStep(compile_fn, name=name, report=report, compiled=True)
    return GraphedStep(fn, name=name, report=report)


__all__ = ["ATTENTION_BACKENDS", "COMPILE_MODES", "COMPILE_OPTIONS", "CompileReport", "DEFAULT_COMPILE_MODE",
           "EagerStep", "GraphedStep", "MODES", "attention_context", "compile_step", "configure_runtime",
           "default_mode", "eager_requested", "fused_vae_override", "inductor_mode", "make_step", "prepare_compile",
           "resolve_mode", "to_memory_format"]
