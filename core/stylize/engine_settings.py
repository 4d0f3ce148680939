"""How the streaming engine runs: :class:`EngineSettings`, its operating points and the values
its fields take. A leaf (the engine, the device pool, the backend and the benchmark read it); the
engine itself is :mod:`.engine`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

from .compile import ATTENTION_BACKENDS, inductor_mode

#: Style-preset parameters the engine reads (validated in :mod:`.params`).
STYLE_KEYS = ("refresh", "broadcast", "lllite_refresh", "feedback", "feedback_warp", "skip_threshold")
#: How the host waits for the GPU (EngineSettings.host_wait).
HOST_WAITS = ("sleep", "spin")
#: When the engine paces submits (EngineSettings.pace): ``auto`` = at the latency operating point.
PACES = ("auto", "on", "off")
#: The largest batch ``pace="auto"`` paces: one or two frames per batch is the calls setting.
PACE_AUTO_MAX_BATCH = 2
#: How often, in frames, the vision-aware conditioning looks at the picture again when neither
#: the style nor the caller sets ``refresh``: every 64 frames (about two seconds of a 30 fps
#: camera) at any batch size. Counted in batches, the same setting meant every 64 frames at B=16
#: (the paper's regime, every benchmark row) but every 4 frames at B=1, where Qwen3-VL then took
#: about a third of the GPU (7.2 ms per refresh against 6.0 ms of U-Net and decode per frame,
#: H100, 2026-12-06); and the app, which set none, looked at every batch.
VISION_REFRESH_FRAMES = 64

@dataclass(frozen=True)
class EngineSettings:
    """How the engine runs. Operating points: :meth:`throughput` and :meth:`latency`.

    ``refresh``: vision-aware conditioning every N batches (1 = every batch); None (the default)
    every :data:`VISION_REFRESH_FRAMES` frames whatever the batch size (:attr:`refresh_batches`).
    ``vision``: mllm-edit only — the encoder looks at the frames (False: text-only static prompt).
    ``broadcast``: encode one representative frame (the batch's newest) and broadcast it, for
    Qwen3-VL and LLLite's control; None (the default) does so whenever the conditioning is kept
    across batches (``refresh_batches`` > 1), see :attr:`broadcasts`.
    ``cache_text``: CLIP text encoded once per prompt (False re-encodes every batch: the naive
    baseline). ``lllite_refresh``/``lllite_hooks``: LLLite conditioning every M batches over this
    hook subset (None: the bundle manifest's ``lllite_subset``, else every adapter).
    ``feedback``: weight of the previous output in [0, 1); ``feedback_warp``: warp it along the
    optical flow first. ``skip_threshold``: mean absolute
    difference in 8-bit levels on a 1/16 thumbnail under which a batch reuses the last output
    (0 disables). ``mode``: ``eager``/``graphs``/``compile`` (CUDA; the CPU is always eager).
    ``streams``: the side stream (CUDA). ``fast_encoder``: Qwen3-VL's sync-free forward (None:
    on for CUDA; graphs need it). ``channels_last_vae``/``channels_last_unet``: NHWC convolutions
    (CUDA; cuDNN's fastest bf16 kernels). ``compile_vae``: under ``mode="compile"`` TAESD's
    encode/decode steps are compiled too (not only the U-Net). ``profile``: CUDA events around
    every stage. ``compile_backend``: ``torch.compile``'s backend under ``mode="compile"``;
    ``"eager"`` traces every step as one graph (``fullgraph``) but runs it without Inductor, and
    does so on the CPU too: how CI proves that no step has a graph break. ``devices``: several
    devices (``"0,1"``, ``"all"``, ``("cuda:0", "cuda:1")``...; None: the bundle's device), opened
    by :func:`.devices.open_engine`, which splits the streams over two devices or runs one engine
    per device (:mod:`.devices` has the grammar).

    Closer to the hardware (issue #17; each off by default): ``fp8``: the U-Net's and Qwen3-VL
    language model's GEMMs in FP8 e4m3 (:mod:`.fp8`: ``torch._scaled_mm`` on compute capability
    8.9+, emulated on the CPU, off with a note elsewhere). ``sdpa_backend``: ``auto`` | ``cudnn``
    | ``flash`` | ``efficient`` | ``math``, the preferred attention kernel
    (:func:`.compile.attention_context`). ``compile_mode``: ``default`` | ``coordinate-descent`` |
    ``max-autotune`` | ``max-autotune-no-cudagraphs`` (:func:`.compile.inductor_mode`,
    :data:`.compile.COMPILE_OPTIONS`). ``cuda_graphs``: False runs
    the (compiled) steps without capturing them, so a profiler sees every kernel.
    ``fused_vae``: ``auto`` (on where CUDA is), ``on``/True or ``off``/False: TAESD's residual
    blocks run as cuDNN convolutions with the bias, skip add and ReLU in the kernel
    (:mod:`.fused_vae`, which has its measurements; CUDA only, off with a note where cuDNN cannot).

    ``host_wait``: how the host thread waits for a batch it collects (CUDA): ``sleep`` (blocking
    events: the thread sleeps until the GPU is done) or ``spin`` (CUDA's default, a busy loop).
    On an H100 (2026-12-06) spinning made the runner's thread read 4.5-11 ms of CPU per frame,
    a whole core, mostly waiting: a core that OBS's encoder or the call app needs. With two
    batches in flight the GPU never waits for that wake-up, so ``sleep`` is the default.

    ``pace``: ``auto`` (on for batches of up to two frames, the calls setting), ``on`` or
    ``off``: :meth:`StreamEngine.pace` tells a caller that has the next frame waiting how long
    to hold it back so it does not queue on the GPU behind the batch in flight
    (:mod:`.pacing`; CUDA with the side stream, one device).

    ``deferred_refresh``: ``auto`` (on for batches of up to two frames on CUDA with the side
    stream), ``on``/True or ``off``/False. The periodic vision-conditioning refresh (every ``refresh`` batches) runs on
    a stream of its own and its result is taken up by the *next* batch, so the batch that
    refreshes no longer waits for the encoder. On an H100 (2026-12-06, mllm-edit compiled)
    Qwen3-VL took 60 ms per refresh at B=16 against 62.5 ms of U-Net + decode per batch, and
    7.2 ms at B=1 against 6.0: with the TAESD encode before it on the side stream, the
    refreshing batch's main stream stood waiting. Measured at B=1 on the H100 (2026-12-07, e2e,
    same process): 145.1 -> 148.7 fps, p50 10.5 -> 10.1 ms, p95 17.6 -> 13.7 ms; at B=16 it
    gained nothing (232.7 -> 232.3 fps e2e, same process), so ``auto`` leaves it off there.
    The price: conditioning one batch older (between 1 and ``refresh`` batches old instead of 0
    to ``refresh - 1``: one frame at B=1). A forced refresh (a new style, a new stream) still
    applies at once. One device only (not when split).

    ``lend_frames`` (CUDA): the output frames are views of pinned buffers lent to the caller
    (:mod:`.lent_frames`), not copies; False copies each batch out (the path before, for the
    benchmark's A/B: a fresh 44 MB allocation and memcpy per batch at B=16 and 720p). On an H100
    (2026-12-07, e2e, same process) lending took the runner thread's CPU from 0.97 to 0.50-0.56
    ms per frame at B=16, and from 1.77 to 1.23 ms at B=1, where p50 fell from 9.8 to 9.4 ms.
    """

    batch_size: int = 8
    refresh: int | None = None
    vision: bool = True
    broadcast: bool | None = None
    cache_text: bool = True
    lllite_refresh: int = 8
    lllite_hooks: str | None = None
    lllite_multiplier: float = 1.0
    feedback: float = 0.0
    feedback_warp: bool = False
    skip_threshold: float = 0.0
    mode: str = "graphs"
    compile_mode: str | None = None
    streams: bool = True
    fast_encoder: bool | None = None
    channels_last_vae: bool = True
    channels_last_unet: bool = False
    compile_vae: bool = True
    main_priority: bool = False
    compile_encoder: bool = True
    compile_backend: str = "inductor"
    profile: bool = False
    devices: str | tuple | None = None
    fp8: bool = False
    sdpa_backend: str = "auto"
    cuda_graphs: bool = True
    fused_vae: bool | str = "auto"
    host_wait: str = "sleep"
    pace: str = "auto"
    deferred_refresh: bool | str = "auto"
    lend_frames: bool = True

    def __post_init__(self):
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {self.batch_size!r}")
        for key in ("refresh", "lllite_refresh"):
            v = getattr(self, key)
            if key == "refresh" and v is None:
                continue  # every VISION_REFRESH_FRAMES frames
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{key} must be a whole number >= 1 (batches), got {v!r}")
        if not 0.0 <= self.feedback < 1.0:
            raise ValueError(f"feedback must be in [0, 1), got {self.feedback!r}")
        if self.skip_threshold < 0:
            raise ValueError(f"skip_threshold must be >= 0, got {self.skip_threshold!r}")
        if self.sdpa_backend not in ATTENTION_BACKENDS:
            raise ValueError(f"sdpa_backend must be one of {', '.join(ATTENTION_BACKENDS)}, got {self.sdpa_backend!r}")
        inductor_mode(self.compile_mode)  # a ValueError naming the choices
        if self.host_wait not in HOST_WAITS:
            raise ValueError(f"host_wait must be one of {', '.join(HOST_WAITS)}, got {self.host_wait!r}")
        if self.pace not in PACES:
            raise ValueError(f"pace must be one of {', '.join(PACES)}, got {self.pace!r}")
        if self.fused_vae not in (True, False, *PACES):
            raise ValueError(f"fused_vae must be one of {', '.join(PACES)} (or true/false), got {self.fused_vae!r}")
        if self.deferred_refresh not in (True, False, *PACES):
            raise ValueError(f"deferred_refresh must be one of {', '.join(PACES)} (or true/false), "
                             f"got {self.deferred_refresh!r}")

    @property
    def refresh_batches(self) -> int:
        """The vision-aware conditioning's period in batches: ``refresh``, or when that is None
        :data:`VISION_REFRESH_FRAMES` frames rounded down to whole batches (at least one)."""
        if self.refresh is not None:
            return self.refresh
        return max(1, VISION_REFRESH_FRAMES // self.batch_size)

    @property
    def fuses_vae(self) -> bool:
        """Whether the engine asks for TAESD's fused blocks (``auto``: the engine asks where CUDA
        is, and says nothing elsewhere; ``on``: it asks everywhere, with a note where it cannot)."""
        return self.fused_vae in (True, "on", "auto")

    @property
    def broadcasts(self) -> bool:
        """Whether one frame per batch, its newest, conditions the whole batch: ``broadcast``, or
        when that is None, whenever the conditioning is kept across batches. Kept position by
        position instead, frame j of each following batch would take frame j's conditioning of
        the refreshing batch, so the conditioning would replay the same B frames over and over
        (a jump back of B - 1 frames at every batch boundary); and a short refreshing batch (a
        live source hands over what has come) would leave its padding's conditioning in the
        slots it did not fill for the whole period. Broadcast, one conditioning holds until the
        next refresh. It also costs less: on an H100 (2026-12-07, mllm-edit compiled, B=16,
        e2e, same process) 228.3 -> 241.7 fps."""
        if self.broadcast is not None:
            return bool(self.broadcast)
        return self.refresh_batches > 1

    @classmethod
    def throughput(cls, batch_size: int = 16, **kw) -> "EngineSettings":
        """Video rate: big batches, the side stream, graphs (vision refresh every 4 batches of 16)."""
        return cls(batch_size=batch_size, **kw)

    @classmethod
    def latency(cls, batch_size: int = 1, **kw) -> "EngineSettings":
        """Calls: one or two frames per batch, so a frame waits for no others."""
        return cls(batch_size=batch_size, **kw)

    def with_style(self, params: Mapping) -> "EngineSettings":
        """These settings overridden by a style's engine parameters (:data:`STYLE_KEYS`)."""
        return replace(self, **{k: params[k] for k in STYLE_KEYS if k in params})
