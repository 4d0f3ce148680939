"""The diffusion backend against the reference stylizer, the denoiser maths, conditioning, and
``stylecam run --backend diffusion`` end to end. CPU, tiny random-weight bundles, real clips."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from clips import clip_path, read_clip
from stylecam.core import cli
from stylecam.core.styles import Style, StyleError, builtin_styles, make_style
from stylecam.core.stylize import bundle as B
from stylecam.core.stylize.base import BackendError
from stylecam.core.stylize.conditioning import ClipTextConditioner
from stylecam.core.stylize.denoiser import Denoiser, decode_latents, encode_frames, make_schedule
from stylecam.core.stylize.diffusion import DiffusionBackend
from stylecam.core.stylize.reference import reference_latent, stylize_frames

CASES = ["sd-turbo", "pix2pix", "mllm-edit", "mllm-edit+lllite"]


@pytest.fixture(scope="session")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("diffusion-bundles")
    return {c: B.write_tiny_bundle(c.split("+")[0], root / c, lllite=c.endswith("+lllite")) for c in CASES}


@pytest.fixture(scope="session")
def clip_frames():
    return read_clip(clip_path("carphone_pristine.mp4"), 3)  # 176x144: the backend resizes to 64x64


pytestmark = pytest.mark.usefixtures("offline")  # (conftest.py) every test here: no network


def style(name: str = "ai-oil", **params) -> Style:
    base = {s.name: s for s in builtin_styles()}[name]
    if not params:
        return base
    return make_style({"name": name, "backend": "diffusion", "params": {**base.params, **params}})


def backend(folder, **kw) -> DiffusionBackend:
    b = DiffusionBackend(bundle=folder, device="cpu", **kw)
    return b


# --------------------------------------------------------------------------------------------
# End to end: stylecam run on a real clip, for every stack


@pytest.mark.parametrize("case", CASES)
def test_run_writes_eight_frames(case, bundles, tmp_path, capsys):
    out = tmp_path / "out"
    clip = clip_path("carphone_pristine.mp4")
    rc = cli.main(["run", "--backend", "diffusion", "--bundle", str(bundles[case]), "--source", f"file:{clip}",
                   "--sink", f"file:{out}/", "--frames", "8"])
    assert rc == 0, capsys.readouterr().err
    files = sorted(out.glob("*.png"))
    assert len(files) == 8
    import cv2

    first = cv2.imread(str(files[0]))
    assert first.shape == (144, 176, 3)  # back at the clip's size
    assert first.std() > 5  # a picture, not a flat fill
    assert "8 frames, style ai-oil" in capsys.readouterr().out


def test_run_compile_flag_compiles_and_paints_the_same_frames(bundles, tmp_path, capsys, monkeypatch):
    """``--compile``: the engine in compile mode (on the CPU it runs eagerly, so the very same
    pictures as without it); refused, in one line, where it cannot apply."""
    from stylecam.core.stylize import devices

    modes = []
    real_open = devices.open_engine

    def open_engine(bundle, settings, *args, **kw):  # the real one, noting what it was asked for
        modes.append(settings.mode)
        return real_open(bundle, settings, *args, **kw)

    monkeypatch.setattr(devices, "open_engine", open_engine)
    clip = clip_path("carphone_pristine.mp4")
    outs = {}
    for flag in ([], ["--compile"]):
        out = tmp_path / f"out{len(flag)}"
        rc = cli.main(["run", "--backend", "diffusion", "--bundle", str(bundles["sd-turbo"]), "--source",
                       f"file:{clip}", "--sink", f"file:{out}/", "--frames", "3", *flag])
        assert rc == 0, capsys.readouterr().err
        outs[bool(flag)] = [open(f, "rb").read() for f in sorted(out.glob("*.png"))]
    assert modes == ["graphs", "compile"]
    assert len(outs[True]) == 3 and outs[True] == outs[False]
    for args, message in ((["--style", "oil"], "--compile compiles diffusion styles; style 'oil' uses the classic"),
                          (["--server", "http://127.0.0.1:9"], "with --server the server paints")):
        assert cli.main(["run", "--frames", "1", "--compile", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_run_bundle_alone_paints_its_default_ai_style_and_is_refused_where_unused(bundles, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["run", "--bundle", str(bundles["sd-turbo"]), "--source", "pattern", "--size", "64x64",
                     "--sink", f"file:{out}/", "--frames", "2"]) == 0
    assert "ai-" in capsys.readouterr().out and len(list(out.glob("*.png"))) == 2
    for args, message in ((["--style", "oil"], "--bundle gives a diffusion model; style 'oil' uses the classic"),
                          (["--server", "http://127.0.0.1:9"], "with --server the server paints")):
        assert cli.main(["run", "--frames", "1", "--bundle", "/no/such/bundle", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_run_compile_that_fails_runs_uncompiled_and_says_so(bundles, tmp_path, capsys, monkeypatch):
    from stylecam.core.stylize.engine import StreamEngine

    real_submit = StreamEngine.submit

    def submit(self, images, *args, **kw):
        # As on a machine without a C compiler for Triton: compiling fails at the first batch.
        if self.settings.mode == "compile":
            raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable.")
        return real_submit(self, images, *args, **kw)

    monkeypatch.setattr(StreamEngine, "submit", submit)
    out = tmp_path / "out"
    rc = cli.main(["run", "--backend", "diffusion", "--bundle", str(bundles["sd-turbo"]), "--source",
                   f"file:{clip_path('carphone_pristine.mp4')}", "--sink", f"file:{out}/", "--frames", "2",
                   "--compile"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert len(list(out.glob("*.png"))) == 2
    warning = [line for line in err.splitlines() if "--compile failed" in line]
    assert len(warning) == 1 and "Failed to find C compiler" in warning[0] and "running without it" in warning[0]
    # The helper the CLI and `stylecam serve` share keeps the other engine settings.
    from stylecam.core.runner import start_backend_compiled

    told = []
    be = start_backend_compiled(style("ai-oil"), 2, bundle=str(bundles["sd-turbo"]), on_uncompiled=told.append,
                                engine={"mode": "compile", "lllite_refresh": 3})
    try:
        assert be._engine.settings.mode == "graphs" and be._engine.settings.lllite_refresh == 3
        assert len(told) == 1 and "Failed to find C compiler" in str(told[0])
    finally:
        be.close()


# --------------------------------------------------------------------------------------------
# Backend == reference


@pytest.mark.parametrize("case", CASES)
def test_backend_equals_the_reference(case, bundles, clip_frames):
    st = style("ai-neon")  # strength 0.65: for sd-turbo a noised source, not pure noise
    # Qwen3-VL looking at every batch, as the frame-by-frame reference does (the app's default
    # looks every 64 frames: the engine's tests compare that with the reference's cached form).
    be = backend(bundles[case], batch_size=2, engine={"refresh": 1})
    be.set_style(st)
    got = be.process(clip_frames)  # 3 frames: with batch 2 the last batch is padded
    be.close()
    if case.startswith("mllm-edit"):  # what the app runs: frame 3 keeps frame 1's conditioning
        default = backend(bundles[case], batch_size=2)
        default.set_style(st)
        kept = default.process(clip_frames)
        assert default._engine.settings.refresh_batches == 32
        default.close()
        # frames 0 and 1 both on frame 1's (the batch's newest, broadcast), frame 2 on it again:
        # frame 1 is the same picture, up to a rounding step on a few pixels (Qwen3-VL saw it in a
        # batch of one there and of two here, and the CPU's GEMMs may round the two apart: max 1
        # level on 0.01 % of pixels with LLLite on an AVX2-only CPU, 2026-12-07); the others differ.
        diffs = [np.abs(a.astype(int) - b.astype(int)) for a, b in zip(kept, got)]
        assert diffs[1].max() <= 1 and diffs[1].mean() < 1e-3
        assert min(diffs[0].mean(), diffs[2].mean()) > 0.01  # seen: 0.04-0.09
    want = stylize_frames(clip_frames, st, B.load_bundle(bundles[case]))
    assert [g.shape for g in got] == [f.shape for f in clip_frames]
    for g, w in zip(got, want):
        diff = np.abs(g.astype(int) - w.astype(int))
        assert diff.max() <= 1 and diff.mean() < 0.01  # at most a rounding step on a few pixels


@pytest.mark.parametrize("case, params", [
    ("sd-turbo", {"steps": 2, "strength": 0.6}),
    ("sd-turbo", {"steps": 3, "strength": 1.0}),
    ("pix2pix", {"steps": 2}),
    ("pix2pix", {"steps": 1, "strength": 0.5}),
    ("mllm-edit", {"steps": 2}),
    ("mllm-edit", {"steps": 2, "strength": 0.7}),
    ("mllm-edit+lllite", {"steps": 1}),
])
def test_denoised_latents_equal_the_reference(case, params, bundles, clip_frames):
    """Tighter than pictures: the batched, precomputed denoiser against diffusers' schedulers."""
    from stylecam.core.frames import fit

    st = style("ai-oil", **params)
    be = backend(bundles[case], batch_size=2, engine={"refresh": 1})  # each frame's own conditioning
    be.set_style(st)
    images = [fit(f, be.size, "stretch") for f in clip_frames[:2]]
    got = be.denoise(images)
    be.close()
    ref_bundle = B.load_bundle(bundles[case])
    want = torch.cat([reference_latent(img, st.params, ref_bundle) for img in images])
    assert got.shape == want.shape == (2, 4, 8, 8)
    torch.testing.assert_close(got.float(), want.float(), rtol=1e-4, atol=1e-4)
    if case == "sd-turbo" and st.params.get("strength") == 1.0:
        # Pure noise in, text only: sd-turbo at full strength does not see the frame.
        torch.testing.assert_close(got[0], got[1])
    else:
        assert not torch.allclose(got[0], got[1], atol=1e-3)  # two different frames, two results


def test_schedule_is_what_diffusers_computes_for_img2img(bundles):
    bundle = B.load_bundle(bundles["sd-turbo"])
    one = make_schedule(bundle, steps=1, strength=0.5)
    assert one.timesteps == (499.0,) and one.sigmas[-1] == 0.0 and not one.from_noise
    two = make_schedule(bundle, steps=2, strength=0.6)
    assert len(two.timesteps) == 2 and two.timesteps[0] < 999 and two.sigmas[0] > two.sigmas[1] > 0
    full = make_schedule(bundle, steps=1, strength=1.0)
    assert full.timesteps == (999.0,) and full.from_noise
    flow = make_schedule(B.load_bundle(bundles["mllm-edit"]), steps=1, strength=1.0)
    assert flow.kind == "flow" and flow.timesteps == (1000.0,) and flow.sigmas == (1.0, 0.0)


# --------------------------------------------------------------------------------------------
# Determinism, styles, LLLite


def test_seed_determines_the_output(bundles, clip_frames):
    frames = clip_frames[:1]
    a = stylize_frames(frames, style("ai-oil"), B.load_bundle(bundles["sd-turbo"]))[0]
    b = stylize_frames(frames, style("ai-oil"), B.load_bundle(bundles["sd-turbo"]))[0]
    c = stylize_frames(frames, style("ai-oil", seed=99), B.load_bundle(bundles["sd-turbo"]))[0]
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1


def test_style_switch_mid_stream_and_back(bundles, clip_frames):
    be = backend(bundles["sd-turbo"])
    be.set_style(style("ai-oil"))
    first = be.process(clip_frames[:1])[0]
    be.set_style(style("ai-sketch"))
    other = be.process(clip_frames[:1])[0]
    be.set_style(style("ai-oil"))
    again = be.process(clip_frames[:1])[0]
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert be._engine.cond.clip.encodes == 2  # two prompts, each encoded once (the third set_style hit the cache)
    be.close()


def test_lllite_adapter_changes_the_output(bundles, clip_frames):
    with_adapter = stylize_frames(clip_frames[:1], style(), B.load_bundle(bundles["mllm-edit+lllite"]))[0]
    without = stylize_frames(clip_frames[:1], style(), B.load_bundle(bundles["mllm-edit"]))[0]
    assert np.abs(with_adapter.astype(int) - without.astype(int)).max() > 0


def test_backend_unfolds_lllite_on_close(bundles):
    from stylecam.core.stylize.lllite import LLLiteLinear

    bundle = B.load_bundle(bundles["mllm-edit+lllite"])
    be = DiffusionBackend(bundle=bundle, device="cpu")
    be.set_style(style("ai-oil"))  # the engine folds LLLite into the U-Net when it is made
    assert any(isinstance(m, LLLiteLinear) for m in bundle.unet.modules())
    be.close()
    be.close()  # safe twice
    assert not any(isinstance(m, LLLiteLinear) for m in bundle.unet.modules())


# --------------------------------------------------------------------------------------------
# Denoiser pieces


def test_bf16_output_stays_finite_even_when_the_unet_overflows(bundles):
    bundle = B.load_bundle(bundles["sd-turbo"], dtype=torch.bfloat16)
    with torch.no_grad():
        bundle.unet.conv_out.weight.fill_(1e38)  # a runaway random init
    pixels = torch.randint(0, 256, (1, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    source = encode_frames(bundle.vae, pixels)
    cond = ClipTextConditioner(bundle.tokenizer, bundle.text_encoder, 32).encode("oil")
    with torch.no_grad():
        raw = bundle.unet(source, 499.0, encoder_hidden_states=cond).sample
    assert not torch.isfinite(raw).all()  # the model itself overflows ...
    schedule = make_schedule(bundle, steps=1, strength=0.5)
    latent = Denoiser(bundle.unet, bundle.manifest, schedule)(source, torch.randn(1, 4, 8, 8), cond)
    assert latent.dtype == torch.bfloat16 and torch.isfinite(latent).all()  # ... the step does not
    assert torch.isfinite(decode_latents(bundle.vae, latent).float()).all()


def test_tiny_bf16_one_step_is_finite_and_close_to_float32(bundles, clip_frames):
    from stylecam.core.frames import fit

    images = [fit(clip_frames[0], (64, 64), "stretch")]
    outs = {}
    for dtype in (torch.float32, torch.bfloat16):
        be = DiffusionBackend(bundle=B.load_bundle(bundles["pix2pix"]), device="cpu", dtype=dtype)
        be.set_style(style("ai-oil", steps=1))
        outs[dtype] = be.denoise(images).float()
        be.close()
    assert torch.isfinite(outs[torch.bfloat16]).all()
    assert (outs[torch.bfloat16] - outs[torch.float32]).abs().mean() < 0.1 * outs[torch.float32].abs().mean()


def test_denoiser_traces_as_one_graph(bundles):
    """No graph breaks: the unrolled steps are straight-line tensor code (fullgraph=True)."""
    bundle = B.load_bundle(bundles["mllm-edit"])
    den = Denoiser(bundle.unet, bundle.manifest, make_schedule(bundle, steps=2, strength=0.7))
    compiled = torch.compile(den, fullgraph=True, backend="eager")
    gen = torch.Generator().manual_seed(0)
    source, noise = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(1, 4, 8, 8, generator=gen)
    cond = torch.randn(1, bundle.manifest.text_length, bundle.unet.config.cross_attention_dim, generator=gen)
    with torch.no_grad():
        torch.testing.assert_close(compiled(source, noise, cond), den(source, noise, cond))


def test_taesd_helpers_follow_the_autoencoder_tiny_conventions(bundles):
    vae = B.load_bundle(bundles["sd-turbo"]).vae
    pixels = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    latents = encode_frames(vae, pixels)
    assert latents.shape == (2, 4, 8, 8)
    with torch.no_grad():
        # TAESD latents are already SD's scaled latents: the encoder output as is.
        direct = vae.encoder(pixels.permute(0, 3, 1, 2).float() / 127.5 - 1)
    torch.testing.assert_close(latents, direct)
    images = decode_latents(vae, latents)
    assert images.dtype == torch.uint8 and images.shape == (2, 64, 64, 3)
    with torch.no_grad():
        y = vae.decode(latents).sample
    want = ((y.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert torch.equal(images, want)


def test_clip_cache_encodes_each_prompt_once(bundles):
    bundle = B.load_bundle(bundles["sd-turbo"])
    calls = []
    bundle.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    enc = ClipTextConditioner(bundle.tokenizer, bundle.text_encoder, 32, cache_size=2)
    a = enc.encode("oil painting")
    assert enc.encode("oil painting") is a and len(calls) == 1
    b = enc.encode("watercolor")
    assert b.shape == a.shape == (1, 32, 32) and not torch.equal(a, b)
    enc.encode("sketch")  # evicts "oil painting" (cache of 2)
    enc.encode("oil painting")
    assert len(calls) == 4
    ids = bundle.tokenizer("oil painting", padding="max_length", max_length=32, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(enc.encode("oil painting"), bundle.text_encoder(ids)[0])


# --------------------------------------------------------------------------------------------
# Errors and options


def test_no_bundle_and_nothing_cached_says_what_to_do():
    with pytest.raises(BackendError) as e:
        DiffusionBackend(device="cpu")
    assert str(e.value) == ("no bundle given and sd-turbo not in the cache; run `stylecam models pull sd-turbo` "
                            "or pass --bundle DIR")


def test_cli_run_without_weights_prints_one_line(capsys):
    clip = clip_path("carphone_pristine.mp4")
    assert cli.main(["run", "--backend", "diffusion", "--source", f"file:{clip}", "--frames", "1"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stylecam models pull sd-turbo" in err


def test_bad_bundle_becomes_a_backend_error_naming_the_file(bundles, tmp_path):
    import shutil

    folder = tmp_path / "b"
    shutil.copytree(bundles["sd-turbo"], folder)
    (folder / "vae" / "diffusion_pytorch_model.safetensors").rename(folder / "vae" / "diffusion_pytorch_model.bin")
    with pytest.raises(BackendError, match=str(folder / "vae" / "diffusion_pytorch_model.bin")):
        DiffusionBackend(bundle=folder, device="cpu")


def test_style_for_another_stack_is_refused(bundles):
    be = backend(bundles["sd-turbo"])
    with pytest.raises(BackendError, match="written for the mllm-edit stack, but the bundle .* is sd-turbo"):
        be.set_style(style("ai-edit-oil"))
    with pytest.raises(BackendError, match="for the 'classic' backend"):
        be.set_style(Style(name="oil", backend="classic", params={"effect": "oil"}))
    with pytest.raises(BackendError, match="no option"):
        DiffusionBackend(bundle=bundles["sd-turbo"], device="cpu", turbo_boost=True)


def test_frames_of_any_size_come_back_at_their_size(bundles):
    be = backend(bundles["mllm-edit"])
    be.set_style(style())
    frame = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    out = be.process([frame, frame])
    assert [o.shape for o in out] == [(48, 80, 3)] * 2 and np.array_equal(out[0], out[1])
    with pytest.raises(BackendError, match="RGB uint8"):
        be.process([frame.astype(np.float32)])


@pytest.mark.parametrize("params, message", [
    ({}, "needs a 'prompt'"),
    ({"prompt": "  "}, "non-empty"),
    ({"prompt": "x", "strength": 0}, "'strength' must be"),
    ({"prompt": "x", "steps": 9}, "'steps' must be"),
    ({"prompt": "x", "seed": -1}, "'seed' must be"),
    ({"prompt": "x", "stack": "sdxl"}, "unknown stack 'sdxl'"),
    ({"prompt": "x", "cfg": 7}, "no parameter"),
])
def test_diffusion_style_params_are_validated(params, message):
    with pytest.raises(StyleError, match=message):
        make_style({"name": "t", "backend": "diffusion", "params": params})


def test_params_module_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; import stylecam.core.styles as s; s.builtin_styles(); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": ""})


def test_builtin_diffusion_presets_load_and_the_first_runs_on_any_stack():
    presets = [s for s in builtin_styles() if s.backend == "diffusion"]
    assert len(presets) >= 5
    assert "stack" not in presets[0].params  # the default diffusion style suits every bundle
    assert all(s.params.get("prompt") or s.params.get("instruction") for s in presets)


def test_runner_with_two_batches_in_flight_equals_process(bundles):
    """The runner's submit/collect path (two batches in flight, as on CUDA) gives the frames that
    ``process`` gives, in order, none lost: the overlap changes when work runs, not what it makes."""
    from stylecam.core.runner import Runner
    from stylecam.core.sinks import Sink
    from stylecam.core.sources import FileSource

    class Keep(Sink):
        def __init__(self):
            self.frames = []

        def write(self, frame):
            self.frames.append(frame)

    clip = clip_path("carphone_pristine.mp4")
    # Qwen3-VL at every batch: the runner hands over what has come, so its batches need not be
    # process()'s, and a conditioning kept across batches would then differ (the default keeps it).
    expected_be = backend(bundles["mllm-edit+lllite"], batch_size=2, engine={"refresh": 1})
    expected_be.set_style(style("ai-oil"))
    frames = read_clip(clip, 7)
    expected = expected_be.process([f[:144, :176] for f in frames])
    expected_be.close()

    be = backend(bundles["mllm-edit+lllite"], batch_size=2, engine={"refresh": 1})
    be.max_inflight = 2  # what a CUDA device gets; the CPU engine runs the same code in turn
    be.set_style(style("ai-oil"))
    sink = Keep()
    summary = Runner(FileSource(str(clip)), be, [sink], max_frames=7).run()
    be.close()
    assert summary["frames_out"] == 7
    assert [f.index for f in sink.frames] == list(range(7))
    for got, want in zip(sink.frames, expected):
        assert np.abs(got.image.astype(int) - want.astype(int)).max() <= 1
