"""``stylecam bench --backend diffusion``: the streaming engine against the naive pipelines, on a GPU.

Full-size bundles with random weights (speed does not depend on weight values), built directly
on the GPU in bfloat16: ``mllm-edit`` (the 0.39 B-class width-concat edit U-Net + LLLite folded
on its down_blocks + Qwen3-VL-2B looking at the frame at 256² + TAESD, 512², 1 step) and
``sd-turbo`` (SD 2.1 U-Net img2img + CLIP ViT-H text + TAESD, 512², 1 step). The frames are real
footage (the bundled clip), cycled.

Modes, each sustained over at least 480 frames after warm-up:

* ``naive`` — what a plain diffusers pipeline gives: one frame at a time, eager, the encoder run
  for every frame (stock transformers forward), one stream, wait for each frame;
* ``naive-graphs`` — the same work per frame, each stage captured in a CUDA graph;
* ``stream`` — the engine: batches of B, encoder/VAE-encode on the side stream, graphs, the
  conditioning refreshed every N batches (the static-prompt cache for sd-turbo);
* ``latency`` — the engine at B = 1-2.

Each configuration is one JSON row: fps (mean, and per-batch p5/p95/std), capture→output latency
p50/p95 (closed loop: a frame is "captured" when the engine takes it), compile/capture time apart,
peak GPU memory, per-stage CUDA-event medians, the encoder/U-Net overlap, and the card, driver,
versions and every setting. The plan comes from environment variables (defaults in brackets):
``STYLECAM_BENCH_STACKS`` [mllm-edit,sd-turbo], ``STYLECAM_BENCH_MODES``
[naive,naive-graphs,stream,latency], ``STYLECAM_BENCH_BATCHES`` [8,16],
``STYLECAM_BENCH_LATENCY_BATCHES`` [1,2], ``STYLECAM_BENCH_REFRESH`` [1,4,8: the stream sweep's N;
the headline and latency rows run the app's own N for their B, every 64 frames, unless it is set],
``STYLECAM_BENCH_FRAMES`` [max(--frames, 480)], ``STYLECAM_BENCH_CHECK`` [1: finiteness and
engine-vs-reference equivalence rows], ``STYLECAM_BENCH_COMPILE`` [0: also time ``mode=compile``;
``only``: the compiled rows without their CUDA-graph twins],
``STYLECAM_BENCH_COMPILE_MODE`` [default], ``STYLECAM_BENCH_PACE_AB`` [0; 1: the latency rows
again without just-in-time submits], ``STYLECAM_BENCH_LATENCY_AB`` [[]: a JSON list of engine
settings, each a twin of the compiled latency row], ``STYLECAM_BENCH_AB`` [[]: a JSON list of variants of
the B=16 headline row, each a mapping of engine settings, plus ``batch``/``refresh`` for the row,
``text_bucket`` for the conditioner and ``cudnn_benchmark``; side-by-side A/B in one process],
``STYLECAM_BENCH_DEVICES`` [with two GPUs or more: ``split:0,1;replicate:0,1``, plus
``replicate:0,1,2,3;split:0,1,2,3`` with four and ``replicate:all`` with eight; ``;``-separated
device lists of :mod:`.stylize.devices`, e.g. ``split:0,0;replicate:0,0`` for the one-GPU
degenerate case]: the headline stream row and the first latency row again on each device list
(compiled too under ``STYLECAM_BENCH_COMPILE=1``), and, with the checks, a ``check-devices`` row
comparing each list's outputs with one GPU's. Every row says its ``devices``.

Issue #17 (closer to the hardware): ``--profile`` or ``STYLECAM_BENCH_PROFILE=1`` first profiles
one batch per stack kernel by kernel (:mod:`.bench_profile`; ``STYLECAM_BENCH_PROFILE_BATCH``
[16], ``_PROFILE_MODE`` [compile], ``_PROFILE_SETTINGS`` [{}: engine settings, e.g.
``{"fp8": true}``], ``_PROFILE_AT`` [first; ``last``: after the timed and peer rows, so a run
cut short keeps those]) and prints its markdown table; ``STYLECAM_BENCH_MODES=`` (empty) then
runs nothing else. Every row carries ``elapsed_s``, the seconds since the bench began (where
a device call's time went). ``STYLECAM_BENCH_AB_BASE`` (a JSON mapping, e.g. ``{"mode": "compile"}``)
makes the A/B plan a baseline row with those settings plus one row per ``STYLECAM_BENCH_AB``
variant over the same base, each row marked ``ab`` (``baseline`` or the variant), in one
process on the same frames (``STYLECAM_BENCH_AB_PATH``: ``both`` [default], ``e2e`` or ``engine``:
which rows each variant gets). The equivalence check adds ``fp8_vs_bf16`` (latents' relative L2,
pixel levels) where FP8 can run, and ``fused_vae_vs_plain`` the same way for TAESD's fused
blocks. ``STYLECAM_BENCH_PEER=1`` adds, after the sd-turbo rows, the
StreamDiffusion rows of :mod:`.bench_peer` (same process, same components) and their ratios.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import logging
import os
import subprocess
import sys
import time

import numpy as np

from .bench import BENCHMARKS, RowLog, machine_info, sample_frames

log = logging.getLogger(__name__)

MIN_FRAMES = 480
#: Seconds a row on several devices may take (a bundle copy and a capture per engine first).
DEVICES_WATCHDOG_S = 300
#: Seconds a configuration may take before the watchdog dumps the stacks and ends the process.
WATCHDOG_S = {"naive": 240, "naive-graphs": 120, "stream": 120, "latency": 120}
#: Seconds a compiled configuration may take: a first start compiles (~90 s for mllm-edit at B=16
#: on an H100), and max-autotune's search over kernel templates takes many minutes more.
COMPILE_WATCHDOG_S = {"max-autotune": 1800, "max-autotune-no-cudagraphs": 1800}
DEFAULT_STYLES = {"mllm-edit": "ai-edit-oil", "sd-turbo": "ai-oil", "pix2pix": "ai-oil"}
FALLBACK_PARAMS = {"prompt": "an oil painting, thick impasto brush strokes, rich colours",
                   "instruction": "transfer this to oil painting style, vibrant colors", "seed": 1}


def compile_watchdog_s(extra: dict | None) -> int:
    """The watchdog of a compiled configuration with engine settings ``extra``."""
    return COMPILE_WATCHDOG_S.get((extra or {}).get("compile_mode"), 600)


def _env_list(name: str, default: str, cast=str) -> list:
    return [cast(x.strip()) for x in os.environ.get(name, default).split(",") if x.strip()]


def gpu_info() -> dict:
    import torch

    info = {"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda,
            "gpu_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
            "gpu_count": torch.cuda.device_count()}
    try:
        info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                        capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        info["driver"] = None
    import diffusers
    import transformers

    info["diffusers"], info["transformers"] = diffusers.__version__, transformers.__version__
    return info


def build_bench_bundle(stack: str, *, seed: int = 0):
    """The full-size random bundle on the GPU (bf16); mllm-edit gets LLLite on its down_blocks."""
    import torch

    from .stylize.bundle import build_full_bundle

    bundle = build_full_bundle(stack, device="cuda", dtype=torch.bfloat16, seed=seed)
    if stack == "mllm-edit":
        from .stylize.lllite import LLLiteConfig, build_adapters, randomize_

        adapters = build_adapters(bundle.unet, LLLiteConfig(hooks="down_blocks", width_concat=2))
        randomize_(adapters, std=0.02, seed=seed)
        bundle.lllite = adapters.to(device="cuda", dtype=torch.bfloat16).eval().requires_grad_(False)
    return bundle


def _style_params(stack: str, style_name: str | None) -> tuple[str, dict]:
    try:
        from .styles import load_styles

        styles, _ = load_styles()
        name = style_name or DEFAULT_STYLES[stack]
        style = styles[name]
        wanted = style.params.get("stack")
        if wanted and wanted != stack:
            name = DEFAULT_STYLES[stack]
            style = styles[name]
        return name, dict(style.params)
    except Exception as e:  # a bench must run without the user's style folder (no platformdirs, ...)
        log.warning("styles unavailable (%s); using built-in bench params", e)
        return "bench-oil", dict(FALLBACK_PARAMS)


def mode_settings(bench_mode: str, batch: int, refresh: int, **extra):
    from .stylize.engine_settings import EngineSettings

    if bench_mode == "naive":
        return EngineSettings(batch_size=1, refresh=1, lllite_refresh=1, mode="eager", streams=False,
                              fast_encoder=False, channels_last_vae=False, fused_vae=False, cache_text=False,
                              profile=True, **extra)
    if bench_mode == "naive-graphs":
        return EngineSettings(batch_size=1, refresh=1, lllite_refresh=1, mode="graphs", streams=False,
                              fast_encoder=True, channels_last_vae=False, fused_vae=False, cache_text=False,
                              profile=True, **extra)
    return EngineSettings(batch_size=batch, refresh=refresh, lllite_refresh=extra.pop("lllite_refresh", 8),
                          mode=extra.pop("mode", "graphs"), streams=True, profile=True, **extra)


def run_config(bundle, frames: list[np.ndarray], params: dict, *, mode: str, batch: int, refresh: int,
               frames_total: int, inflight: int, extra: dict | None = None) -> dict:
    """Warm up, then time ``frames_total`` frames through a fresh engine; one result dict."""
    import torch

    from .stylize.devices import DevicePlan, open_engine, parse_devices

    extra = dict(extra or {})
    # ``text_bucket`` is the bundle's (its Qwen3-VL conditioner's), not the engine's: set for
    # this row, restored after it. The naive modes run the stock forward, which ignores it.
    bucket = extra.pop("text_bucket", None)
    # cuDNN's autotuner is process-wide too: on for this row only when asked.
    cudnn_benchmark = extra.pop("cudnn_benchmark", None)
    old_cudnn = torch.backends.cudnn.benchmark
    if cudnn_benchmark is not None:
        torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
    qwen = bundle.qwen
    old_bucket = qwen.pad_to_multiple_of if qwen is not None else None
    if qwen is not None and bucket is not None:
        qwen.pad_to_multiple_of = bucket or None
    settings = mode_settings(mode, batch, refresh, **extra)
    B = settings.batch_size
    devices = parse_devices(settings.devices) or DevicePlan("single", (str(bundle.device),))
    # Two batches queued per engine: a pool of n engines keeps 2n in flight.
    inflight *= devices.engines
    gpus = sorted({torch.device(d) for d in devices.devices}, key=str)
    for d in gpus:
        torch.cuda.synchronize(d)
        torch.cuda.reset_peak_memory_stats(d)
    t0 = time.perf_counter()
    engine = None
    try:
        engine = open_engine(bundle, settings, style=params)
        source = _cycle(frames)
        # Warm-up: the first submit captures/compiles (reported apart), then a few batches.
        warm = max(2 * inflight + 1, -(-32 // B))
        for _ in _drive(engine, source, B, warm, inflight):
            pass
        setup_s = time.perf_counter() - t0
        n_batches = -(-frames_total // B)
        engine.start_profile()
        tickets = []
        t_start = time.perf_counter()
        for ticket in _drive(engine, source, B, n_batches, inflight):
            tickets.append(ticket)
        t_end = time.perf_counter()
        stages = engine.stage_times(tickets)
        report = engine.report.as_dict()
        pacer = getattr(engine, "pacer", None)
        report["pace_ms"] = pacer.as_dict() if pacer is not None else None
    finally:
        if engine is not None:
            engine.close()
        if qwen is not None:
            qwen.pad_to_multiple_of = old_bucket
        torch.backends.cudnn.benchmark = old_cudnn
    done = sum(t.count for t in tickets)
    lat = np.array([t.t_ready - c for t in tickets for c in t.capture_times]) * 1000.0
    ready = np.array([t.t_ready for t in tickets])
    gaps = np.diff(np.concatenate([[t_start], ready]))
    per_batch_fps = B / np.maximum(gaps, 1e-9)
    return {
        "frames": done, "seconds": round(t_end - t_start, 3),
        "fps": round(done / (t_end - t_start), 2),
        "fps_p5": round(float(np.percentile(per_batch_fps, 5)), 2),
        "fps_p95": round(float(np.percentile(per_batch_fps, 95)), 2),
        "fps_std": round(float(per_batch_fps.std()), 2),
        "latency_p50_ms": round(float(np.percentile(lat, 50)), 2),
        "latency_p95_ms": round(float(np.percentile(lat, 95)), 2),
        "setup_s": round(setup_s, 2), **report,
        "mem_peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "mem_peak_gb_per_device": {str(d): round(torch.cuda.max_memory_allocated(d) / 2**30, 2) for d in gpus},
        "devices": devices.describe(), "inflight_total": inflight,
        **stages,
        "settings": {k: v for k, v in settings.__dict__.items()},
        "text_bucket": (bucket if bucket is not None else old_bucket) if qwen is not None else None,
        "cudnn_benchmark": bool(cudnn_benchmark),
    }


def _cycle(frames):
    while True:
        yield from frames


def _drive(engine, source, batch: int, batches: int, inflight: int):
    """Closed loop: submit ``batches`` batches keeping ``inflight`` queued; yield collected tickets.

    A frame's capture time is when the engine takes it (the source always has one ready), so
    the latency is what the engine adds: waiting for its batch to be submitted, then the GPU.
    At the latency operating point the engine paces (``EngineSettings.pace``): the loop holds
    the next batch back as the runner does, and its frames are taken after the hold.
    """
    pending = []
    pace = getattr(engine, "pace", None)  # the runner's just-in-time submit (a device pool has none)
    for _ in range(batches):
        if len(pending) >= inflight:
            t = pending.pop(0)
            engine.collect(t)
            yield t
        hold = pace() if pace is not None and pending else 0.0
        if hold > 0:
            time.sleep(hold)
        imgs = [next(source) for _ in range(batch)]
        now = time.perf_counter()
        pending.append(engine.submit(imgs, capture_times=[now] * batch))
    for t in pending:
        engine.collect(t)
        yield t


# ------------------------------------------------------------------------------------ checks


def finiteness(bundle, frames, params) -> dict:
    """One eager pass of each component on real frames: finite, non-constant outputs?"""
    import torch

    from .stylize.denoiser import encode_frames
    from .stylize.params import style_settings

    s = style_settings(params, bundle)
    pixels = torch.from_numpy(np.stack(frames[:2])).cuda()
    out = {}
    with torch.no_grad():
        lat = encode_frames(bundle.vae, pixels)
        out["vae_latent_std"] = float(lat.float().std())
        if bundle.qwen is not None:
            cond = bundle.qwen.encode(pixels, s["text"])
        else:
            ids = bundle.tokenizer(s["text"], padding="max_length", max_length=bundle.manifest.text_length,
                                   truncation=True, return_tensors="pt").input_ids.cuda()
            cond = bundle.text_encoder(ids)[0]
        out["cond_finite"] = bool(torch.isfinite(cond).all())
        out["cond_std"] = float(cond.float().std())
        x = lat if bundle.manifest.concat != "width" else torch.cat([lat, lat], dim=3)
        t = torch.tensor(999.0, device="cuda")
        y = bundle.unet(x.to(bundle.dtype), t, encoder_hidden_states=cond.expand(x.shape[0], -1, -1).to(bundle.dtype)).sample
        out["unet_finite"] = bool(torch.isfinite(y).all())
        out["unet_out_std"] = float(y.float().std())
        out["unet_out_absmax"] = float(y.float().abs().max())
    return out


def equivalence(bundle, frames, params, *, batch: int = 4) -> dict:
    """The engine (graphs + side stream, refresh every batch) against the frame-by-frame
    reference, full size, bf16: decoded pixels and, for the last batch, the denoised latents."""
    import torch

    from .stylize.engine import StreamEngine
    from .stylize.engine_settings import EngineSettings
    from .stylize.reference import reference_latent, stylize_frames

    frames = frames[: 2 * batch]
    ref = stylize_frames(frames, params, bundle)  # stock forwards, hooked LLLite, diffusers scheduler
    ref_lat = torch.cat([reference_latent(f, params, bundle) for f in frames[batch:]]).float()
    result = {}
    for label, settings in (("graphs_streams", EngineSettings(batch_size=batch, refresh=1, lllite_refresh=1)),
                            ("eager", EngineSettings(batch_size=batch, refresh=1, lllite_refresh=1, mode="eager",
                                                     streams=False))):
        engine = StreamEngine(bundle, settings, style=params)
        try:
            out = engine.process(frames)
            lat = engine._latent_out.float().clone()
        finally:
            engine.close()
        d = np.stack([np.abs(a.astype(np.int16) - r.astype(np.int16)) for a, r in zip(out, ref)])
        rel = float((lat - ref_lat).norm() / ref_lat.norm())
        result[label] = {"pixel_mean_abs": round(float(d.mean()), 3), "pixel_p99": float(np.percentile(d, 99)),
                         "pixel_max": int(d.max()), "latent_rel_l2": round(rel, 5)}
    result["ref_pixel_std"] = round(float(np.std(np.stack(ref))), 2)
    result |= fp8_equivalence(bundle, frames, params, batch=batch)
    result |= fused_vae_equivalence(bundle, frames, params, batch=batch)
    return result


def knob_difference(bundle, frames, params, knob: dict, *, batch: int = 4, base: dict | None = None) -> tuple[dict, dict]:
    """The engine with the engine settings ``knob`` against the same engine without them (with
    ``base`` instead, for a knob whose default is on), same frames, refresh every batch: (the
    last batch's latents' relative L2 and the pixels' 8-bit differences, the knob engine's report)."""
    from .stylize.engine import StreamEngine
    from .stylize.engine_settings import EngineSettings

    outs = {}
    for on in (False, True):
        engine = StreamEngine(bundle, EngineSettings(batch_size=batch, refresh=1, lllite_refresh=1,
                                                     **(knob if on else base or {})), style=params)
        try:
            out = engine.process(frames)
            outs[on] = (out, engine.latents().float().clone(), engine.report.as_dict())
        finally:
            engine.close()
    d = np.stack([np.abs(a.astype(np.int16) - r.astype(np.int16)) for a, r in zip(outs[True][0], outs[False][0])])
    base_lat, lat = outs[False][1], outs[True][1]
    return ({"latent_rel_l2": round(float((lat - base_lat).norm() / base_lat.norm()), 5),
             "pixel_mean_abs": round(float(d.mean()), 3), "pixel_p99": float(np.percentile(d, 99)),
             "pixel_max": int(d.max())}, outs[True][2])


def fp8_equivalence(bundle, frames, params, *, batch: int = 4) -> dict:
    """FP8 (:mod:`.stylize.fp8`) against the same engine in the bundle's dtype
    (:func:`knob_difference`). Empty where FP8 cannot run (the reason in ``fp8_note``)."""
    from .stylize.fp8 import fp8_support

    how, note = fp8_support(bundle.device)
    if how == "off":
        return {"fp8": "off", "fp8_note": note}
    diff, report = knob_difference(bundle, frames, params, {"fp8": True}, batch=batch)
    return {"fp8": how, "fp8_layers": report.get("fp8_layers"), "fp8_vs_bf16": diff}


def fused_vae_equivalence(bundle, frames, params, *, batch: int = 4) -> dict:
    """TAESD's fused blocks (:mod:`.stylize.fused_vae`) against the plain ones
    (:func:`knob_difference`); where they cannot run, only the reason (``fused_vae_note``)."""
    from .stylize.fused_vae import why_not_fused

    note = why_not_fused(next(bundle.vae.parameters()))
    if note:
        return {"fused_vae_blocks": 0, "fused_vae_note": note}
    diff, report = knob_difference(bundle, frames, params, {"fused_vae": True}, batch=batch,
                                   base={"fused_vae": False})
    return {"fused_vae_blocks": report.get("fused_vae_blocks"), "fused_vae_vs_plain": diff}


def device_equivalence(bundle, frames, params, spec: str, *, batch: int = 4) -> dict:
    """The engine on the device list ``spec`` against the same engine on one GPU (graphs, side
    stream, refresh every batch), full size, bf16: decoded pixels of four batches, so every
    engine of a pool runs at least one."""
    from .stylize.devices import open_engine
    from .stylize.engine_settings import EngineSettings

    frames = frames[: 4 * batch]
    outs = {}
    for label, devices in (("one", None), ("devices", spec)):
        engine = open_engine(bundle, EngineSettings(batch_size=batch, refresh=1, lllite_refresh=1, devices=devices),
                             style=params)
        try:
            outs[label] = engine.process(frames)
        finally:
            engine.close()
    d = np.stack([np.abs(a.astype(np.int16) - r.astype(np.int16)) for a, r in zip(outs["devices"], outs["one"])])
    return {"devices_spec": spec, "frames": len(outs["devices"]), "pixel_mean_abs": round(float(d.mean()), 3),
            "pixel_p99": float(np.percentile(d, 99)), "pixel_max": int(d.max())}


def device_specs() -> list[str]:
    """The device lists the benchmark adds rows for (``STYLECAM_BENCH_DEVICES``, else by GPU count)."""
    import torch

    env = os.environ.get("STYLECAM_BENCH_DEVICES")
    if env is not None:
        return [x.strip() for x in env.split(";") if x.strip()]
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    specs = ["split:0,1", "replicate:0,1"] if n >= 2 else []
    if n >= 4:
        specs += ["replicate:0,1,2,3", "split:0,1,2,3"]
    if n >= 8:
        specs.append("replicate:all")
    return specs


# ------------------------------------------------------------------------------------ plan


def plan(stack: str) -> list[dict]:
    """The configurations of one stack, the headline ones first (a run cut short keeps them)."""
    from .stylize.engine_settings import EngineSettings

    modes = _env_list("STYLECAM_BENCH_MODES", "naive,naive-graphs,stream,latency")
    batches = _env_list("STYLECAM_BENCH_BATCHES", "8,16", int)
    lat_batches = _env_list("STYLECAM_BENCH_LATENCY_BATCHES", "1,2", int)
    refreshes = _env_list("STYLECAM_BENCH_REFRESH", "1,4,8", int)
    vision = stack == "mllm-edit"
    big = max(batches) if batches else None
    explicit = os.environ.get("STYLECAM_BENCH_REFRESH") is not None
    fixed = 4 if 4 in refreshes or not refreshes else refreshes[0]

    def head(b: int) -> int:
        """The headline rows' N: STYLECAM_BENCH_REFRESH's when set, else what the app runs at B
        (the engine's default, every VISION_REFRESH_FRAMES frames); 1 without vision."""
        if not vision:
            return 1
        return fixed if explicit else EngineSettings(batch_size=b).refresh_batches

    first, rest = [], []
    if "stream" in modes and big:
        first.append(dict(mode="stream", batch=big, refresh=head(big), inflight=2))
    if "naive" in modes:
        first.append(dict(mode="naive", batch=1, refresh=1, inflight=1))
    compile_env = os.environ.get("STYLECAM_BENCH_COMPILE", "0")
    pace_ab = os.environ.get("STYLECAM_BENCH_PACE_AB", "0") == "1"
    if "latency" in modes and lat_batches:
        first.append(dict(mode="latency", batch=lat_batches[0], refresh=head(lat_batches[0]), inflight=2))
        if pace_ab and compile_env == "0":  # the pacing A/B on the CUDA-graph row (no compile to wait for)
            first.append(dict(mode="latency", batch=lat_batches[0], refresh=head(lat_batches[0]), inflight=2,
                              extra={"pace": "off"}))
    if "naive-graphs" in modes:
        first.append(dict(mode="naive-graphs", batch=1, refresh=1, inflight=1))
    # The same headline rows on several devices (one GPU's are the rows above).
    compiled_too = compile_env in ("1", "only")
    for spec in device_specs():
        for compiled in ((False, True) if compiled_too else (False,)):
            extra = {"devices": spec}
            if compiled:
                extra |= {"mode": "compile", "compile_mode": os.environ.get("STYLECAM_BENCH_COMPILE_MODE", "default")}
            if "stream" in modes and big:
                first.append(dict(mode="stream", batch=big, refresh=head(big), inflight=2, extra=extra))
            if "latency" in modes and lat_batches:
                first.append(dict(mode="latency", batch=lat_batches[0], refresh=head(lat_batches[0]), inflight=2,
                                  extra=dict(extra)))
    if "stream" in modes:
        for b in sorted(batches, reverse=True):
            for n in (refreshes if vision else [1]):
                rest.append(dict(mode="stream", batch=b, refresh=n, inflight=2))
    if compiled_too:
        # Inductor's default mode: max-autotune's search takes many minutes per model and B.
        compiled = {"mode": "compile", "compile_mode": os.environ.get("STYLECAM_BENCH_COMPILE_MODE", "default")}
        if "stream" in modes and big:
            rest.append(dict(mode="stream", batch=big, refresh=head(big), inflight=2, extra=compiled))
        if "latency" in modes and lat_batches:
            rest.append(dict(mode="latency", batch=lat_batches[0], refresh=head(lat_batches[0]), inflight=2,
                             extra=dict(compiled)))
            twins = [{"pace": "off"}] if pace_ab else []
            # e.g. pace off (what just-in-time submits buy), STYLECAM_BENCH_LATENCY_AB's
            # variants ('[{"deferred_refresh": false}]'): same process, same frames.
            twins += [v for v in json.loads(os.environ.get("STYLECAM_BENCH_LATENCY_AB", "[]")) if v]
            for twin in twins:
                twin = dict(twin)  # "refresh" in a twin sets its N (e.g. the old every-4-batches row)
                rest.append(dict(mode="latency", batch=lat_batches[0],
                                 refresh=twin.pop("refresh", head(lat_batches[0])), inflight=2,
                                 extra=dict(compiled, **twin)))
    # STYLECAM_BENCH_EXTRA=0: only the rows above (a short device call keeps its headline rows).
    extras = os.environ.get("STYLECAM_BENCH_EXTRA", "1") == "1"
    if "stream" in modes and vision and big and extras:
        rest.append(dict(mode="stream", batch=big, refresh=1, inflight=2, extra={"broadcast": True}))
    # Side-by-side variants of the headline row, e.g. STYLECAM_BENCH_AB='[{"channels_last_unet":
    # false}, {"text_bucket": 0}]' (engine settings, or the conditioner's text_bucket).
    # "batch"/"refresh" in a variant set the row's B and N instead of the headline's.
    ab_base = os.environ.get("STYLECAM_BENCH_AB_BASE")
    variants = json.loads(os.environ.get("STYLECAM_BENCH_AB", "[]"))
    if ab_base is not None and "stream" in modes and big:
        # One baseline row, then each variant over the same base: same process, same frames.
        variants = [{}] + [v for v in variants if v]
    for variant in variants:
        if "stream" in modes and big:
            variant = dict(variant)
            label = ",".join(f"{k}={v}" for k, v in variant.items()) or "baseline"
            extra = (json.loads(ab_base) if ab_base is not None else {}) | variant
            b = extra.pop("batch", big)
            cfg = dict(mode="stream", batch=b, refresh=extra.pop("refresh", head(b)), inflight=2, extra=extra)
            if ab_base is not None:
                cfg["ab"] = label
            rest.append(cfg)
    if "latency" in modes and extras:
        for b in lat_batches:
            for n in ((1, 4) if vision else (1,)):
                rest.append(dict(mode="latency", batch=b, refresh=n, inflight=2))
    configs = first + [c for c in rest if c not in first or "ab" in c]
    if compile_env == "only":  # e.g. the rows a same-run peer is compared with, first
        configs = [c for c in configs if (c.get("extra") or {}).get("mode") == "compile" or "ab" in c]
    return configs


def bench_diffusion(args) -> list[dict]:
    import torch

    from .cli_args import UsageError

    if not torch.cuda.is_available():
        raise UsageError("the diffusion benchmark needs a CUDA GPU (full-size models); on the CPU use "
                         "`stylecam bench --backend classic`")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    machine = machine_info() | gpu_info()
    frames_total = int(os.environ.get("STYLECAM_BENCH_FRAMES", max(args.frames, MIN_FRAMES)))
    check = os.environ.get("STYLECAM_BENCH_CHECK", "1") == "1"
    e2e = bool(getattr(args, "e2e", False)) or os.environ.get("STYLECAM_BENCH_E2E", "0") == "1"
    profile = bool(getattr(args, "profile", False)) or os.environ.get("STYLECAM_BENCH_PROFILE", "0") == "1"
    peer = os.environ.get("STYLECAM_BENCH_PEER", "0") == "1"
    jsonl = getattr(args, "json", None)
    profile_last = os.environ.get("STYLECAM_BENCH_PROFILE_AT", "first") == "last"
    emit = RowLog(machine, jsonl)  # rows also land as they come: a run cut short keeps them
    rows = emit.rows

    for stack in _env_list("STYLECAM_BENCH_STACKS", "mllm-edit,sd-turbo"):
        t0 = time.perf_counter()
        bundle = build_bench_bundle(stack)
        torch.cuda.synchronize()
        build_s = time.perf_counter() - t0
        size = bundle.manifest.size
        frames = sample_frames(size, 64)
        style_name, params = _style_params(stack, args.style)
        base = {"bench": "diffusion", "backend": "diffusion", "stack": stack, "style": style_name,
                "width": size[0], "height": size[1], "dtype": "bfloat16", "steps": bundle.manifest.steps}
        if check:
            faulthandler.dump_traceback_later(180, exit=True)
            emit(base | {"mode": "check-finite", "build_s": round(build_s, 1),
                         **finiteness(bundle, frames, params)})
            try:
                emit(base | {"mode": "check-equivalence", **equivalence(bundle, frames, params)})
            except Exception as e:
                log.exception("equivalence check failed")
                emit(base | {"mode": "check-equivalence", "error": f"{type(e).__name__}: {e}"})
            for spec in device_specs():
                faulthandler.dump_traceback_later(DEVICES_WATCHDOG_S, exit=True)
                try:
                    emit(base | {"mode": "check-devices", **device_equivalence(bundle, frames, params, spec)})
                except Exception as e:
                    log.exception("device equivalence check failed")
                    emit(base | {"mode": "check-devices", "devices_spec": spec, "error": f"{type(e).__name__}: {e}"})
            faulthandler.cancel_dump_traceback_later()
        if profile and not profile_last:
            _profile_rows(bundle, frames, params, base, emit)
        for cfg in plan(stack):
            label = cfg["mode"] + ("" if not cfg.get("extra") else "+" + "+".join(
                f"{k}={v}" for k, v in cfg["extra"].items()))
            log.info("%s %s B=%d N=%d", stack, label, cfg["batch"], cfg["refresh"])
            # A hung configuration dumps every thread's stack and ends the process: the rows so
            # far are already written, and the next stack runs in its own process.
            # STYLECAM_BENCH_AB_PATH=e2e: A/B rows only on the path a user runs (one compile each, not two).
            ab_path = os.environ.get("STYLECAM_BENCH_AB_PATH", "both") if "ab" in cfg else "both"
            ab = {"ab": cfg["ab"]} if "ab" in cfg else {}
            if ab_path == "e2e":
                if e2e and cfg["mode"] in ("stream", "latency"):
                    emit(base | ab | {"mode": label, "batch": cfg["batch"], "refresh": cfg["refresh"],
                                      **_e2e_row(bundle, style_name, params, cfg, frames_total)})
                    gc.collect()
                    torch.cuda.empty_cache()
                continue
            compiling = (cfg.get("extra") or {}).get("mode") == "compile"
            several = "devices" in (cfg.get("extra") or {})
            faulthandler.dump_traceback_later(compile_watchdog_s(cfg.get("extra")) if compiling
                                              else DEVICES_WATCHDOG_S if several else WATCHDOG_S.get(cfg["mode"], 90),
                                              exit=True)
            try:
                result = run_config(bundle, frames, params, mode=cfg["mode"], batch=cfg["batch"],
                                    refresh=cfg["refresh"], frames_total=frames_total, inflight=cfg["inflight"],
                                    extra=cfg.get("extra"))
            except Exception as e:  # one failing configuration must not lose the others' rows
                log.exception("configuration failed")
                result = {"error": f"{type(e).__name__}: {e}"}
            faulthandler.cancel_dump_traceback_later()
            emit(base | ab | {"mode": label, "batch": cfg["batch"], "refresh": cfg["refresh"],
                              "inflight": cfg["inflight"], "path": "engine", **result})
            gc.collect()
            torch.cuda.empty_cache()
            if e2e and cfg["mode"] in ("stream", "latency") and "error" not in result and ab_path != "engine":
                emit(base | ab | {"mode": label, "batch": cfg["batch"], "refresh": cfg["refresh"],
                                  **_e2e_row(bundle, style_name, params, cfg, frames_total)})
                gc.collect()
                torch.cuda.empty_cache()
        if peer and stack == "sd-turbo":
            from .bench_peer import peer_rows

            for row in peer_rows(bundle, frames, rows, frames_total=frames_total):
                emit(base | row)
        if profile and profile_last:
            _profile_rows(bundle, frames, params, base, emit)
        del bundle
        gc.collect()
        torch.cuda.empty_cache()
    if profile:
        from .bench_profile import markdown

        print(markdown(rows), flush=True)
    if peer:
        from .bench_peer import summarize_peer

        for line in summarize_peer(rows):
            print(f"stylecam bench: {line}", file=sys.stderr, flush=True)
    if e2e:
        from .bench_e2e import summarize

        for line in summarize(rows):
            print(f"stylecam bench: {line}", file=sys.stderr, flush=True)
    return rows


def _profile_rows(bundle, frames, params, base: dict, emit) -> None:
    """The kernel profile of one batch of this stack (:mod:`.bench_profile`), as rows."""
    from .bench_profile import profile_stack

    faulthandler.dump_traceback_later(600, exit=True)
    try:
        for row in profile_stack(bundle, frames, params, batch=int(os.environ.get("STYLECAM_BENCH_PROFILE_BATCH", 16)),
                                 mode=os.environ.get("STYLECAM_BENCH_PROFILE_MODE") or None,
                                 settings=json.loads(os.environ.get("STYLECAM_BENCH_PROFILE_SETTINGS", "{}"))):
            emit(base | row)
    except Exception as e:  # the profile must not cost the timed rows
        log.exception("profile failed")
        emit(base | {"bench": "profile", "group_by": "total", "error": f"{type(e).__name__}: {e}"})
    finally:
        faulthandler.cancel_dump_traceback_later()
    gc.collect()


def _e2e_row(bundle, style_name: str, params: dict, cfg: dict, frames_total: int) -> dict:
    """The end-to-end twin of an engine row (:mod:`.bench_e2e`), the same engine settings."""
    from .bench_e2e import run_e2e
    from .styles import Style

    extra = dict(cfg.get("extra") or {})
    extra.pop("text_bucket", None)
    extra.pop("cudnn_benchmark", None)
    mode = extra.pop("mode", "graphs")
    devices = extra.pop("devices", None)
    faulthandler.dump_traceback_later(compile_watchdog_s(extra) if mode == "compile" else DEVICES_WATCHDOG_S if devices
                                      else 180, exit=True)
    try:
        return run_e2e(bundle, Style(style_name, "diffusion", params=params), batch=cfg["batch"],
                       refresh=cfg["refresh"], frames_total=max(frames_total, 4 * cfg["batch"] * 8), mode=mode,
                       live=cfg["mode"] == "latency", engine=extra, devices=devices)
    except Exception as e:  # one failing row must not lose the others
        log.exception("end-to-end row failed")
        return {"path": "e2e", "error": f"{type(e).__name__}: {e}"}
    finally:
        faulthandler.cancel_dump_traceback_later()


BENCHMARKS["diffusion"] = bench_diffusion
