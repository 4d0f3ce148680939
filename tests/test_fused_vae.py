"""TAESD's blocks as fused convolutions (``fused_vae``, issue #17) on the CPU: the swap of the real
diffusers blocks of a tiny bundle and its undo, the fused blocks equal to the plain ones (the
CPU runs the custom op's reference path), the op's shape function against the real op's strides,
a compiled trace through it, and the engine's fall-back where cuDNN is not there. On CUDA the
same op is ``torch.cudnn_convolution_add_relu``: its CUDA test below runs in
``TEST_FILES=tests/test_fused_vae.py TEST_K=cuda scripts/gpu_app_path.sh tests`` (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import copy

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from stylecam.core.bench import sample_frames
from stylecam.core.bench_diffusion import fused_vae_equivalence, knob_difference
from stylecam.core.stylize.denoiser import decode_latents, encode_frames
from stylecam.core.stylize.engine import EngineSettings, StreamEngine
from stylecam.core.stylize.fused_vae import FusedTinyBlock, conv3x3_add_relu, eligible, fuse_tiny_blocks
from tiny import tiny_bundle

STYLE = {"prompt": "an oil painting, thick brush strokes", "instruction": "turn it into an oil painting", "seed": 3}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def frames():
    return sample_frames((64, 64), 4)


@contextlib.contextmanager
def fused(vae, check: bool = False):
    """``vae`` with its blocks fused for the ``with`` body, plain again after (even on a failure)."""
    swap = fuse_tiny_blocks(vae, check=check)
    try:
        yield swap
    finally:
        swap.restore()


def _blocks(vae):
    return [m for part in (vae.encoder, vae.decoder) for m in part.layers]


def test_swap_takes_every_taesd_block_gives_the_same_pictures_and_undoes(frames):
    bundle = tiny_bundle("sd-turbo")
    vae = bundle.vae
    before = _blocks(vae)
    plain = [m for m in before if type(m).__name__ == "AutoencoderTinyBlock"]
    assert plain and all(eligible(m) for m in plain)
    x = torch.from_numpy(np.stack(frames))
    with torch.no_grad():
        latents = encode_frames(vae, x)
        pixels = decode_latents(vae, latents)
        with fused(vae) as swap:
            assert swap.describe() == {"fused_vae_blocks": len(plain)}
            assert sum(isinstance(m, FusedTinyBlock) for m in _blocks(vae)) == len(plain)
            fused_latents = encode_frames(vae, x)
            fused_pixels = decode_latents(vae, fused_latents)
    # The same operations in the same order on the CPU: equal to float rounding.
    torch.testing.assert_close(fused_latents, latents, rtol=1e-5, atol=1e-5)
    assert int((fused_pixels.int() - pixels.int()).abs().max()) <= 1
    assert _blocks(vae) == before and not any(isinstance(m, FusedTinyBlock) for m in vae.modules())


def test_the_profile_counts_the_fused_blocks_flops_as_the_plain_ones(frames):
    # The kernel profile's TFLOP/s for TAESD divides by these counts: a custom op is opaque to
    # torch's counter, so without our formula the fused blocks' convolutions counted as zero.
    from stylecam.core.bench_profile import count_flops

    vae = tiny_bundle("sd-turbo").vae
    x = torch.from_numpy(np.stack(frames))
    with torch.no_grad():
        latents = encode_frames(vae, x)
    steps = {"encode": lambda: encode_frames(vae, x), "decode": lambda: decode_latents(vae, latents)}
    plain = count_flops(steps)
    with fused(vae):
        fused_counts = count_flops(steps)
    assert plain[2] == fused_counts[2] == {}
    assert fused_counts[0] == plain[0] and plain[0]["encode"] > 0 and plain[0]["decode"] > 0
    assert fused_counts[1]["conv"] == plain[1]["conv"] > 0


def test_a_block_with_another_shape_is_left_alone():
    from diffusers.models.unets.unet_2d_blocks import AutoencoderTinyBlock

    assert eligible(AutoencoderTinyBlock(8, 8, "relu"))
    assert not eligible(AutoencoderTinyBlock(8, 16, "relu"))  # a 1x1 skip convolution
    assert not eligible(AutoencoderTinyBlock(8, 8, "silu"))  # not a ReLU: cuDNN's op fuses ReLU only
    assert not eligible(torch.nn.Conv2d(8, 8, 3, padding=1))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_the_shape_function_gives_the_ops_own_strides(layout):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 9, 7, generator=gen).contiguous(memory_format=layout)
    w = (torch.randn(16, 16, 3, 3, generator=gen) * 0.1).contiguous(memory_format=layout)
    b = torch.randn(16, generator=gen)
    got = conv3x3_add_relu(x, w, b, x, 1.0)
    want = torch.relu(torch.nn.functional.conv2d(x, w, b, padding=1) + x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(conv3x3_add_relu(x, w, b, x, 0.0),
                               torch.relu(torch.nn.functional.conv2d(x, w, b, padding=1)))
    with FakeTensorMode() as mode:
        fake = conv3x3_add_relu(mode.from_tensor(x), mode.from_tensor(w), mode.from_tensor(b), mode.from_tensor(x), 1.0)
    assert fake.shape == got.shape and fake.stride() == got.stride()
    assert got.is_contiguous(memory_format=layout)


def test_a_fused_decode_traces_as_one_graph(frames):
    """``torch.compile`` sees the custom op as one call with a shape function (fullgraph, the
    AOT path that runs the shape functions, no Inductor: CI has no GPU to run cuDNN's op)."""
    torch._dynamo.reset()
    vae = tiny_bundle("sd-turbo").vae
    x = torch.from_numpy(np.stack(frames))
    with torch.no_grad():
        latents = encode_frames(vae, x)
        want = decode_latents(vae, latents)
        with fused(vae):
            got = torch.compile(lambda z: decode_latents(vae, z), fullgraph=True, backend="aot_eager")(latents)
    assert int((got.int() - want.int()).abs().max()) <= 1


def test_engine_without_cudnn_says_why_and_runs_plain(frames):
    bundle = tiny_bundle("sd-turbo")
    kw = dict(batch_size=2, refresh=1, mode="eager")
    outs = {}
    for fused in (False, True):
        engine = StreamEngine(bundle, EngineSettings(fused_vae=fused, **kw), STYLE)
        try:
            outs[fused] = np.stack(engine.process(frames))
            notes = engine.report.as_dict()
        finally:
            engine.close()
    assert notes["fused_vae_blocks"] == 0 and "CUDA only" in notes["fused_vae_note"]
    assert np.array_equal(outs[True], outs[False])
    assert not any(isinstance(m, FusedTinyBlock) for m in bundle.vae.modules())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="cuDNN's fused convolution needs a CUDA GPU")
@pytest.mark.parametrize("compiled", [False, True])
def test_cuda_fused_blocks_are_as_close_to_float32_as_the_plain_ones(compiled, frames):
    """On the GPU: cuDNN's fused op in bf16, channels-last as the engine runs TAESD, eager and
    under Inductor (which must take the op's strides from its shape function). The oracle is the
    plain TAESD in float32: the fused bf16 path must be no further from it than the plain bf16
    path is. (Fused against plain bf16 directly, on an H100 on 2026-12-07: latents within 2 %,
    pixels mostly 0-1 level apart but up to 8 — two roundings of the same sums, the fused one
    summing in float32 before it rounds, so neither is the reference.)"""
    torch._dynamo.reset()
    oracle = tiny_bundle("sd-turbo").vae.to("cuda")
    vae = copy.deepcopy(oracle).to(torch.bfloat16).to(memory_format=torch.channels_last)
    x = torch.from_numpy(np.stack(frames)).cuda()

    def run(model, compile_it):
        def enc(f):
            return encode_frames(model, f)

        def dec(z):
            return decode_latents(model, z)

        if compile_it:
            enc, dec = torch.compile(enc, fullgraph=True), torch.compile(dec, fullgraph=True)
        latents = enc(x)
        return latents.float(), dec(latents).int()

    def error(got, want):
        d = (got[1] - want[1]).abs().float()
        return float((got[0] - want[0]).norm() / want[0].norm()), float(d.mean()), float(d.max())

    with torch.no_grad():
        want = run(oracle, False)
        plain = error(run(vae, compiled), want)
        torch._dynamo.reset()
        with fused(vae, check=True) as swap:
            assert swap.note is None and swap.describe()["fused_vae_blocks"] > 0, swap.note
            got = error(run(vae, compiled), want)
    assert got[0] <= 1.5 * plain[0] + 1e-3, (got, plain)  # latents
    assert got[1] <= 1.5 * plain[1] + 0.05, (got, plain)  # mean pixel levels
    assert got[2] <= 2 * plain[2] + 2, (got, plain)  # worst pixel


def test_bench_check_says_why_the_fused_blocks_did_not_run_on_the_cpu(frames):
    result = fused_vae_equivalence(tiny_bundle("sd-turbo"), frames, STYLE, batch=2)
    assert result == {"fused_vae_blocks": 0, "fused_vae_note": "the fused convolutions are cuDNN's: CUDA only"}


def test_knob_difference_is_zero_for_a_knob_that_changes_nothing_and_not_for_one_that_does(frames):
    bundle = tiny_bundle("sd-turbo")
    same, _ = knob_difference(bundle, frames, STYLE, {"lend_frames": False}, batch=2)  # a host-side knob
    assert same == {"latent_rel_l2": 0.0, "pixel_mean_abs": 0.0, "pixel_p99": 0.0, "pixel_max": 0}
    other, _ = knob_difference(bundle, frames, STYLE, {"feedback": 0.5}, batch=2)
    assert other["pixel_max"] > 0


def test_auto_asks_for_the_fused_blocks_and_off_does_not():
    """``auto`` asks in every mode (measured faster with CUDA graphs and compiled, H100
    2026-12-07); the engine then swaps them in only where CUDA is (the CPU tests below)."""
    assert EngineSettings().fused_vae == "auto" and EngineSettings().fuses_vae
    assert EngineSettings(fused_vae=True).fuses_vae and EngineSettings(fused_vae="on").fuses_vae
    assert not EngineSettings(fused_vae=False).fuses_vae
    assert not EngineSettings(fused_vae="off").fuses_vae
    with pytest.raises(ValueError, match="auto, on, off"):
        EngineSettings(fused_vae="sometimes")


def test_auto_on_the_cpu_leaves_the_vae_alone_and_says_nothing(frames):
    bundle = tiny_bundle("sd-turbo")
    engine = StreamEngine(bundle, EngineSettings(batch_size=2, refresh=1, mode="eager"), STYLE)
    try:
        assert not any(isinstance(m, FusedTinyBlock) for m in bundle.vae.modules())
        assert "fused_vae_note" not in engine.report.as_dict()
    finally:
        engine.close()


@pytest.mark.parametrize("value, want", [("0", False), ("off", False), ("1", True), ("on", True), ("", "auto"),
                                         ("maybe", "auto")])
def test_the_users_switch_reaches_the_apps_engine(value, want, monkeypatch):
    """``STYLECAM_FUSED_VAE`` (troubleshooting.md): the diffusion backend's engine gets it."""
    from stylecam.core.stylize.diffusion import DiffusionBackend
    from stylecam.core.styles import Style

    monkeypatch.setenv("STYLECAM_FUSED_VAE", value)
    backend = DiffusionBackend(tiny_bundle("sd-turbo"), "cpu", batch_size=2)
    try:
        backend.set_style(Style("ai-test", "diffusion", params=STYLE))
        assert backend._engine.settings.fused_vae == want
    finally:
        backend.close()
