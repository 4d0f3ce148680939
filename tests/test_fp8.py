"""FP8 (e4m3) GEMMs and the other issue-17 engine knobs (attention backend, compile mode, graphs
off), on the CPU: the FP8 modules against an independent float32 oracle, the swap of the right
layers of a real tiny bundle and its undo, the engine with FP8 traced as one graph (Dynamo,
``compile_backend="eager"``) and equal to the eager FP8 engine, the bench's fp8-vs-bf16 check.
On a GPU of compute capability 8.9+ the same modules run ``torch._scaled_mm`` (scripts/gpu_hw.sh).
"""

from __future__ import annotations


import numpy as np
import pytest
import torch

from stylecam.core.bench import sample_frames
from stylecam.core.bench_diffusion import fp8_equivalence
from tiny import tiny_bundle
from stylecam.core.stylize.compile import attention_context, compile_step, inductor_mode
from stylecam.core.stylize.engine import EngineSettings, StreamEngine
from stylecam.core.stylize.fp8 import (FP8Conv1x1, FP8Linear, enable_fp8, fp8_support, quantize_rows,
                                       reference_linear)

STYLE = {"prompt": "an oil painting, thick brush strokes", "instruction": "turn it into an oil painting", "seed": 3}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def frames():
    return sample_frames((64, 64), 4)


def test_fp8_linear_matches_its_oracle_and_stays_near_float():
    gen = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(64, 48)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(48, 64, generator=gen) * 0.05)
    x = torch.randn(2, 7, 64, generator=gen) * 3.0
    fp8 = FP8Linear(linear, emulate=True)
    with torch.no_grad():
        got, exact = fp8(x), linear(x)
    assert got.shape == (2, 7, 48) and fp8.weight_fp8.dtype == torch.float8_e4m3fn
    torch.testing.assert_close(got, reference_linear(x, linear.weight, linear.bias), rtol=1e-5, atol=1e-5)
    rel = float((got - exact).norm() / exact.norm())
    assert 1e-4 < rel < 0.05, rel  # quantized (not a pass-through), and e4m3's few-percent error


def test_quantize_rows_keeps_zero_rows_finite():
    x = torch.zeros(3, 32)
    x[1] = torch.linspace(-5, 5, 32)
    q, scale = quantize_rows(x)
    back = q.float() * scale
    assert torch.isfinite(back).all() and back[0].abs().max() == 0 and back[2].abs().max() == 0
    assert float((back[1] - x[1]).abs().max()) < 0.2  # 5/448 grid with 3 mantissa bits


@pytest.mark.parametrize("channels_last", [False, True])
def test_fp8_conv1x1_is_the_same_gemm_over_pixels(channels_last):
    gen = torch.Generator().manual_seed(1)
    conv = torch.nn.Conv2d(32, 16, 1)
    x = torch.randn(2, 32, 5, 6, generator=gen)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    got = FP8Conv1x1(conv, emulate=True)(x)
    rows = x.permute(0, 2, 3, 1).reshape(-1, 32)
    want = reference_linear(rows, conv.weight.reshape(16, 32), conv.bias).reshape(2, 5, 6, 16).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert got.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def test_enable_fp8_swaps_only_the_gemms_it_should_and_restores_them():
    bundle = tiny_bundle()
    before = {n: m for n, m in bundle.unet.named_modules()}
    lm_before = {n: m for n, m in bundle.qwen.core.language_model.named_modules()}
    swap = enable_fp8(bundle)
    assert swap.how == "emulated"
    names = {f"{type(p).__name__}.{a}": c for p, a, _, c in swap.swapped}
    assert {c for c in names.values()} == {"unet", "qwen_lm"}
    unet_fp8 = [n for n, m in bundle.unet.named_modules() if isinstance(m, (FP8Linear, FP8Conv1x1))]
    assert any(n.endswith("attn1.to_q") for n in unet_fp8) and any(n.endswith("ff.net.2") for n in unet_fp8)
    assert not any("time_embedding" in n or "time_emb_proj" in n for n in unet_fp8)
    lm = bundle.qwen.core.language_model
    lm_fp8 = [n for n, m in lm.named_modules() if isinstance(m, FP8Linear)]
    assert lm_fp8 and all(n.startswith("layers.") for n in lm_fp8)
    assert any(n.endswith("mlp.down_proj") for n in lm_fp8) and any(n.endswith("self_attn.q_proj") for n in lm_fp8)
    assert not any(isinstance(m, FP8Linear) for m in bundle.qwen.core.visual.modules())
    assert isinstance(lm.embed_tokens, torch.nn.Embedding)
    swap.restore()
    assert {n: m for n, m in bundle.unet.named_modules()} == before
    assert {n: m for n, m in lm.named_modules()} == lm_before


def test_fp8_off_where_the_device_cannot_says_why():
    how, why = fp8_support(torch.device("meta"))
    assert how == "off" and "not available" in why
    assert fp8_support(torch.device("cpu"))[0] == "emulated"


def test_engine_with_fp8_traces_as_one_graph_and_matches_eager_fp8(frames):
    """FP8 on under ``mode="compile"`` (Dynamo fullgraph, no Inductor): every step still one
    graph, the same frames as the eager FP8 engine; the bundle is plain again after close."""
    torch._dynamo.reset()
    bundle = tiny_bundle()
    kw = dict(batch_size=2, refresh=1, lllite_refresh=1, fast_encoder=True, fp8=True)
    eager = StreamEngine(bundle, EngineSettings(mode="eager", **kw), STYLE)
    try:
        want = eager.process(frames)
        assert eager.report.as_dict()["fp8"] == "emulated"
        layers = eager.report.as_dict()["fp8_layers"]
        assert layers["unet"] > 10 and layers["qwen_lm"] > 5
    finally:
        eager.close()
    engine = StreamEngine(bundle, EngineSettings(mode="compile", compile_backend="eager", **kw), STYLE)
    try:
        got = engine.process(frames)
        assert engine.report.compile_s > 0
    finally:
        engine.close()
    d = np.stack([np.abs(g.astype(np.int16) - w.astype(np.int16)) for g, w in zip(got, want)])
    assert d.mean() < 0.6 and d.max() <= 12, (d.mean(), d.max())
    assert not any(isinstance(m, (FP8Linear, FP8Conv1x1)) for m in bundle.unet.modules())
    assert not any(isinstance(m, FP8Linear) for m in bundle.qwen.modules())


def test_bench_equivalence_reports_fp8_against_the_plain_engine(frames):
    result = fp8_equivalence(tiny_bundle(), frames * 2, STYLE, batch=2)
    assert result["fp8"] == "emulated"
    err = result["fp8_vs_bf16"]
    # Measured on this tiny random fp32 bundle: about 2 % latents, ~1 level mean; a wiring
    # mistake (FP8 off, stale buffers) gives 0 or tens of levels.
    assert 0 < err["latent_rel_l2"] < 0.1 and 0 < err["pixel_mean_abs"] < 5, err


def test_knob_values_are_checked_with_the_choices_named():
    with pytest.raises(ValueError, match="cudnn, flash, efficient, math"):
        EngineSettings(sdpa_backend="fa3")
    with pytest.raises(ValueError, match="max-autotune"):
        EngineSettings(compile_mode="fastest")
    assert inductor_mode("max-autotune") == "max-autotune-no-cudagraphs"  # the engine captures its own
    assert inductor_mode(None) == "default"
    assert attention_context("auto") is None


def test_coordinate_descent_mode_asks_inductor_for_that_tuning_alone(monkeypatch):
    """``compile_mode="coordinate-descent"`` reaches torch.compile as Inductor's own option (a mode
    and options cannot both be given), the other modes as the mode itself. The kwargs are read at
    torch.compile's door: what Inductor then does with them is torch's (measured on the GPU)."""
    EngineSettings(compile_mode="coordinate-descent")  # a valid choice
    seen = []
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: seen.append(kw) or fn)
    for mode in ("coordinate-descent", "max-autotune", "default"):
        compile_step(abs, mode)
    assert seen[0]["options"] == {"coordinate_descent_tuning": True} and "mode" not in seen[0]
    assert seen[1]["mode"] == "max-autotune-no-cudagraphs" and seen[2]["mode"] == "default"
    assert all(kw["fullgraph"] and kw["dynamic"] is False for kw in seen)


def test_bench_gives_max_autotune_its_search_time_before_the_watchdog():
    """A compiled row's watchdog ends a hung process; max-autotune's first start searches kernel
    templates for minutes, which must not be taken for a hang."""
    from stylecam.core.bench_diffusion import compile_watchdog_s

    assert compile_watchdog_s({"compile_mode": "max-autotune"}) >= 3 * compile_watchdog_s({"compile_mode": "default"})
    assert compile_watchdog_s(None) == compile_watchdog_s({}) == 600


@pytest.mark.parametrize("backend", ["math", "cudnn"])
def test_sdpa_backend_is_the_same_picture_and_traces(backend, frames):
    """``math`` forces the reference kernel; ``cudnn`` does not exist on the CPU and falls back
    to the next backend in torch's order. Both give the auto backend's frames (within float
    rounding) and trace as one graph."""
    torch._dynamo.reset()
    bundle = tiny_bundle("sd-turbo")
    kw = dict(batch_size=2, refresh=1)
    outs = {}
    for label, settings in (("auto", EngineSettings(mode="eager", **kw)),
                            ("chosen", EngineSettings(mode="eager", sdpa_backend=backend, **kw)),
                            ("compiled", EngineSettings(mode="compile", compile_backend="eager",
                                                        sdpa_backend=backend, **kw))):
        engine = StreamEngine(bundle, settings, STYLE)
        try:
            outs[label] = np.stack(engine.process(frames))
            if label != "auto":
                assert engine.report.as_dict()["sdpa_backend"] == backend
        finally:
            engine.close()
    for label in ("chosen", "compiled"):
        d = np.abs(outs[label].astype(np.int16) - outs["auto"].astype(np.int16))
        assert d.max() <= 2, (label, d.max())
