"""The StreamDiffusion peer rows (``STYLECAM_BENCH_PEER=1``) on the CPU: the real
``streamdiffusion`` package (installed with ``--no-deps``; CI installs it, see .ci/run) wraps a
tiny sd-turbo bundle's own modules in its img2img 1-step setup at frame buffer sizes 1 and 8,
its U-Net traced by ``torch.compile`` (Dynamo, no Inductor, as on the CPU), and the rows carry
its frame rate beside ours from the same run and the ratio.
"""

from __future__ import annotations

import threading

import pytest
import torch

pytest.importorskip("streamdiffusion", reason="pip install --no-deps streamdiffusion==0.1.1 (CI does)")

from stylecam.core.bench import sample_frames  # noqa: E402
from stylecam.core.bench_peer import PEER, build_stream, ours, peer_rows, run_once, summarize_peer  # noqa: E402
from stylecam.core.stylize.bundle import build_tiny_bundle  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


def _our_row(batch, fps, mode="stream+mode=compile+compile_mode=default", **kw):
    return {"stack": "sd-turbo", "batch": batch, "path": "engine", "fps": fps, "mode": mode, **kw}


def test_streamdiffusion_runs_our_components_img2img():
    bundle = build_tiny_bundle("sd-turbo")
    stream = build_stream(bundle, 8, compile_backend=None)
    assert stream.unet is bundle.unet and stream.vae is bundle.vae and stream.text_encoder is bundle.text_encoder
    assert stream.batch_size == 8 and stream.denoising_steps_num == 1
    frames = sample_frames(bundle.manifest.size, 8)
    x = torch.from_numpy(__import__("numpy").stack(frames)).permute(0, 3, 1, 2).float() / 255.0
    out = run_once(stream, x)
    assert out.shape == (8, 3, *bundle.manifest.size[::-1]) and torch.isfinite(out).all()
    # img2img: the input shows through one step at strength ~0.5 (a different picture per frame).
    assert float((out[0] - out[1]).abs().mean()) > 0


def test_peer_rows_time_both_buffer_sizes_beside_ours():
    torch._dynamo.reset()
    bundle = build_tiny_bundle("sd-turbo")
    frames = sample_frames(bundle.manifest.size, 8)
    mine = [_our_row(8, 120.0), _our_row(1, 60.0, mode="latency+mode=compile+compile_mode=default"),
            _our_row(8, 999.0, mode="stream"),  # not compiled: never the comparison
            _our_row(8, 50.0, path="e2e")]
    stop = threading.Event()
    other = threading.Thread(target=stop.wait, name="still-running", daemon=True)
    other.start()
    try:
        rows = peer_rows(bundle, frames, mine, compile_backend="eager", calls=2)
    finally:
        stop.set()
        other.join()
    assert [r["frame_buffer_size"] for r in rows] == [1, 8]
    assert all("still-running" in r["other_threads"] for r in rows)  # what ran beside their timing
    for r in rows:
        assert r["peer"] == PEER and "error" not in r, r
        assert r["fps"] > 0 and r["frames"] == 2 * r["frame_buffer_size"] and r["out_finite"]
        assert r["out_shape"] == [r["frame_buffer_size"], 3, 64, 64]
        assert r["ratio_engine"] == round(r["ours_engine_fps"] / r["fps"], 3)
    assert rows[1]["ours_engine_fps"] == 120.0 and rows[0]["ours_engine_fps"] == 60.0
    assert rows[1]["ours_e2e_fps"] == 50.0 and "ours_e2e_fps" not in rows[0]
    lines = summarize_peer(rows)
    assert len(lines) == 2 and "fb=8" in lines[1] and "x" in lines[1]


def test_our_row_is_the_compiled_one_at_the_same_batch():
    rows = [_our_row(8, 300.0, mode="stream"), _our_row(8, 315.0, ab="baseline"), _our_row(8, 310.0),
            _our_row(8, 1.0, mode="stream+mode=compile+devices=split:0,1")]
    assert ours(rows, 8)["fps"] == 310.0
    assert ours(rows, 1) is None
