"""A same-run peer for the sd-turbo rows: StreamDiffusion on the same components, in the same
process (``STYLECAM_BENCH_PEER=1``; issue #17).

Contract: :func:`peer_rows` takes the sd-turbo bench bundle (full-size random weights: the
SD 2.1 U-Net SD-Turbo uses, TAESD's ``AutoencoderTiny``, the OpenCLIP ViT-H text tower; seeded,
finite — :func:`.bench_diffusion.build_bench_bundle`), wraps *those same modules* in a diffusers
``StableDiffusionPipeline`` and StreamDiffusion's ``StreamDiffusion`` with its ordinary img2img
setup — one denoising step (``t_index_list=[T_INDEX]`` of 50 LCM steps, about our strength
0.5), ``cfg_type="none"``, the denoising batch on, the U-Net under
``torch.compile(mode="reduce-overhead")`` — and times frame buffer sizes 1 and 8 like our rows
(frames per second, ms per frame, per-call latency). Each row says ``peer: "streamdiffusion"``
and, from the rows of the same run passed in, our compiled sd-turbo row at the same B and the
ratio ours / theirs. It never raises for a missing package: the row says what to install.

What each side does per call, so the ratio is read right: StreamDiffusion gets a float tensor
already on the GPU (B, 3, H, W) in [0, 1] and leaves its output there (as its own benchmark
does); our engine rows take uint8 frames in host memory and hand uint8 frames back to host
memory (our e2e rows: 1280x720 files in, a virtual camera out). Theirs is the lighter job.

StreamDiffusion's ``__call__`` times itself with CUDA events; on a CPU (the tests) the same
public stages run without them (:func:`run_once`). The package is installed without its
dependencies (``pip install --no-deps streamdiffusion==0.1.1``): it pins diffusers 0.24, and the
parts used here run on the diffusers we ship.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

log = logging.getLogger(__name__)

PEER = "streamdiffusion"
FRAME_BUFFERS = (1, 8)
#: One LCM step at index 25 of 50 (timestep ~499): noise to about strength 0.5, as our sd-turbo style.
T_INDEX = 25
INFERENCE_STEPS = 50
PROMPT = "an oil painting, thick impasto brush strokes, rich colours"
MIN_CALLS = 60
WARMUP_CALLS = 8


def peer_version() -> str | None:
    """The installed StreamDiffusion's version, None when it is not installed."""
    try:
        from importlib.metadata import version

        import streamdiffusion  # noqa: F401

        return version("streamdiffusion")
    except ImportError:
        return None


def build_stream(bundle, frame_buffer_size: int, *, compile_backend: str = "inductor", seed: int = 2):
    """StreamDiffusion over the bundle's own U-Net, TAESD, CLIP text encoder, tokenizer and
    scheduler config, img2img, one step; its U-Net compiled (``reduce-overhead`` with Inductor;
    ``compile_backend="eager"``: Dynamo's tracing only, for CPU tests; None: not compiled)."""
    import torch
    from diffusers import StableDiffusionPipeline
    from streamdiffusion import StreamDiffusion

    pipe = StableDiffusionPipeline(vae=bundle.vae, text_encoder=bundle.text_encoder, tokenizer=bundle.tokenizer,
                                   unet=bundle.unet, scheduler=bundle.scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    width, height = bundle.manifest.size
    stream = StreamDiffusion(pipe, t_index_list=[T_INDEX], torch_dtype=bundle.dtype, width=width, height=height,
                             do_add_noise=True, use_denoising_batch=True, frame_buffer_size=frame_buffer_size,
                             cfg_type="none")
    stream.prepare(PROMPT, num_inference_steps=INFERENCE_STEPS, guidance_scale=1.0,
                   generator=torch.Generator().manual_seed(seed), seed=seed)
    if compile_backend == "inductor":
        stream.unet = torch.compile(stream.unet, mode="reduce-overhead")
    elif compile_backend is not None:
        stream.unet = torch.compile(stream.unet, backend=compile_backend)
    return stream


def frames_tensor(frames: list[np.ndarray], device, batch: int):
    """``batch`` RGB uint8 frames -> (B, 3, H, W) float32 in [0, 1] on ``device`` (their input)."""
    import torch

    picked = np.stack([frames[i % len(frames)] for i in range(batch)])
    return torch.from_numpy(picked).to(device).permute(0, 3, 1, 2).float().div(255.0)


def run_once(stream, x):
    """One img2img call: StreamDiffusion's own ``__call__`` on CUDA; on the CPU its same public
    stages (preprocess, encode, one denoising batch, decode) without the CUDA-event timing."""
    import torch

    if x.device.type == "cuda":
        return stream(x)
    with torch.no_grad():
        x = stream.image_processor.preprocess(x, stream.height, stream.width).to(device=stream.device,
                                                                                  dtype=stream.dtype)
        return stream.decode_image(stream.predict_x0_batch(stream.encode_image(x)))


def time_peer(bundle, frames: list[np.ndarray], frame_buffer_size: int, *, calls: int | None = None,
              frames_total: int = 480, compile_backend: str = "inductor") -> dict:
    """Build, warm up and time StreamDiffusion at one frame buffer size: a result dict."""
    import torch

    cuda = bundle.device.type == "cuda"
    if compile_backend is not None:
        # Each buffer size compiles as in a process of its own (theirs runs one size per process):
        # without the reset Dynamo would recompile the second size with dynamic shapes.
        torch._dynamo.reset()
    t0 = time.perf_counter()
    stream = build_stream(bundle, frame_buffer_size, compile_backend=compile_backend)
    x = frames_tensor(frames, bundle.device, frame_buffer_size)
    for _ in range(WARMUP_CALLS if cuda else 1):
        out = run_once(stream, x)
    if cuda:
        torch.cuda.synchronize()
    setup_s = time.perf_counter() - t0
    calls = calls or max(MIN_CALLS, -(-frames_total // frame_buffer_size))
    per_call = np.empty(calls)
    # The fairness witness: their fb=1 loop is bound by Python's launches, so a thread of ours
    # still running (a runner, a sink) would slow it through the GIL and flatter our ratio.
    others = sorted(t.name for t in threading.enumerate() if t is not threading.main_thread() and t.is_alive())
    t_start = time.perf_counter()
    for i in range(calls):
        a = time.perf_counter()
        out = run_once(stream, x)  # synchronizes on CUDA (its own event timing)
        per_call[i] = time.perf_counter() - a
    seconds = time.perf_counter() - t_start
    frames_done = calls * frame_buffer_size
    return {"frames": frames_done, "seconds": round(seconds, 3), "fps": round(frames_done / seconds, 2),
            "ms_per_frame": round(1000.0 * seconds / frames_done, 3),
            "latency_p50_ms": round(float(np.percentile(per_call, 50)) * 1000.0, 2),
            "latency_p95_ms": round(float(np.percentile(per_call, 95)) * 1000.0, 2),
            "setup_s": round(setup_s, 2), "out_shape": list(out.shape), "other_threads": others,
            "out_finite": bool(torch.isfinite(out).all())}


def ours(rows: list[dict], batch: int, path: str = "engine") -> dict | None:
    """Our compiled sd-turbo row at ``batch`` on ``path`` (engine or e2e) from this run's rows."""
    for r in rows:
        mode = str(r.get("mode", ""))
        if (r.get("stack") == "sd-turbo" and r.get("batch") == batch and r.get("path") == path and r.get("fps")
                and "mode=compile" in mode and "devices" not in mode and "ab" not in r and "peer" not in r
                and "error" not in r):
            return r
    return None


def peer_rows(bundle, frames: list[np.ndarray], rows: list[dict], *, frame_buffers=FRAME_BUFFERS,
              frames_total: int = 480, compile_backend: str = "inductor", calls: int | None = None) -> list[dict]:
    """One row per frame buffer size, with our same-B compiled rows' fps and the ratios."""
    import torch

    version = peer_version()
    out = []
    for fb in frame_buffers:
        row = {"bench": "diffusion", "mode": f"peer fb={fb}", "peer": PEER, "peer_version": version,
               "frame_buffer_size": fb, "batch": fb, "path": "peer", "t_index_list": [T_INDEX],
               "num_inference_steps": INFERENCE_STEPS, "unet_compile": "reduce-overhead"
               if compile_backend == "inductor" else compile_backend, "dtype": str(bundle.dtype).replace("torch.", ""),
               "input": "float (B, 3, H, W) in [0, 1] on the device; output left on the device"}
        if version is None:
            row["error"] = f"{PEER} is not installed: pip install --no-deps {PEER}==0.1.1"
            out.append(row)
            continue
        try:
            row |= time_peer(bundle, frames, fb, frames_total=frames_total, compile_backend=compile_backend,
                             calls=calls)
        except Exception as e:  # the peer must not cost our rows
            log.exception("StreamDiffusion row failed")
            row["error"] = f"{type(e).__name__}: {e}"
        for path in ("engine", "e2e"):
            mine = ours(rows, fb, path)
            if mine is not None:
                row[f"ours_{path}_fps"] = mine["fps"]
                row[f"ours_{path}_mode"] = mine["mode"]
                if row.get("fps"):
                    row[f"ratio_{path}"] = round(mine["fps"] / row["fps"], 3)
        out.append(row)
        if bundle.device.type == "cuda":
            torch.cuda.empty_cache()
    return out


def summarize_peer(rows: list[dict]) -> list[str]:
    """One line per peer row: theirs, ours at the same B, the ratio (same run)."""
    lines = []
    for r in rows:
        if r.get("peer") != PEER:
            continue
        if "error" in r:
            lines.append(f"StreamDiffusion fb={r['frame_buffer_size']}: {r['error']}")
            continue
        ratio = (f"ours {r['ours_engine_fps']} fps (engine) = {r['ratio_engine']}x" if "ratio_engine" in r
                 else "no compiled sd-turbo row at this B in this run")
        if "ratio_e2e" in r:
            ratio += f", e2e {r['ours_e2e_fps']} fps = {r['ratio_e2e']}x"
        lines.append(f"StreamDiffusion {r['peer_version']} fb={r['frame_buffer_size']}: {r['fps']} fps "
                     f"({r['ms_per_frame']} ms/frame); {ratio}")
    return lines


__all__ = ["FRAME_BUFFERS", "PEER", "T_INDEX", "build_stream", "ours", "peer_rows", "peer_version", "run_once",
           "summarize_peer", "time_peer"]
