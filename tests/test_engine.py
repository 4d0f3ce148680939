"""The streaming engine against the frame-by-frame reference, on tiny real-class bundles.

CPU (CI): equal to :func:`stylize_frames` with conditioning refreshed every batch; with refresh
every N batches (per frame or broadcast) equal to the reference fed the conditioning the engine
cached; order kept and nothing lost or duplicated for B in {1, 3, 8} on 7 frames; a style switch
mid-stream takes effect from the next batch; feedback is an exponential moving average in frame
order; the similarity skip; the errors. GPU (``-m gpu``): the same equivalences with CUDA graphs
and the side stream.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from clips import clip_path, read_clip
from stylecam.core.frames import fit
from stylecam.core.stylize import reference
from stylecam.core.stylize.bundle import build_tiny_bundle
from stylecam.core.stylize.compile import default_mode, resolve_mode
from stylecam.core.stylize.engine import EngineError, EngineSettings, StreamEngine

STYLE_A = {"prompt": "an oil painting, thick brush strokes", "instruction": "turn it into an oil painting",
           "seed": 3}
STYLE_B = {"prompt": "a pencil sketch, black and white line art", "instruction": "make it a pencil sketch",
           "seed": 5, "strength": 0.7}
N_FRAMES = 7  # not a multiple of 3 or 8

CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if CUDA else [])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models: thread start-up costs more than the work, and CI has two cores.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    if CUDA:
        # The engine turns TF32 on for the process (once); float32 references need it off.
        from stylecam.core.stylize.compile import configure_runtime

        configure_runtime()
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def clip():
    # Frames far apart in the clip, so that every frame's output differs from the others'.
    frames = read_clip(clip_path("davis_blackswan.mp4"), 7 * N_FRAMES)[::7]
    return [fit(f, (64, 64), "stretch") for f in frames]


def _bundle(stack: str, device: str = "cpu"):
    b = build_tiny_bundle(stack, lllite=stack == "mllm-edit")
    if stack == "mllm-edit":
        # The paper's subset; the reference attaches the manifest's subset too.
        b.manifest = dataclasses.replace(b.manifest, lllite_subset="down_blocks")
    return b.to(device)


@pytest.fixture(scope="module")
def bundles():
    cache = {}

    def get(stack, device="cpu"):
        if (stack, device) not in cache:
            cache[(stack, device)] = _bundle(stack, device)
        return cache[(stack, device)]

    return get


@pytest.fixture(scope="module")
def refs(bundles, clip):
    cache = {}

    def get(stack, style=STYLE_A, device="cpu"):
        key = (stack, tuple(sorted(style.items())), device)
        if key not in cache:
            cache[key] = reference.stylize_frames(clip, style, bundles(stack, device))
        return cache[key]

    return get


def _diff(a: list[np.ndarray], b: list[np.ndarray]) -> np.ndarray:
    assert len(a) == len(b)
    return np.stack([np.abs(x.astype(np.int16) - y.astype(np.int16)) for x, y in zip(a, b)])


def assert_close(out, ref, what=""):
    d = _diff(out, ref)
    # Batched vs one-by-one float32 kernels round differently: at most one 8-bit level, rarely.
    assert d.max() <= 1 and d.mean() < 0.01, f"{what}: max {d.max()}, mean {d.mean():.4f}"


def _settings(device: str, **kw) -> EngineSettings:
    # The same conditioning schedule on both devices: a deferred refresh only where a test asks.
    kw.setdefault("deferred_refresh", False)
    # The reference runs the plain TAESD blocks; the fused ones (on by default with CUDA graphs)
    # round differently and have their own float32 oracle (test_fused_vae.py).
    kw.setdefault("fused_vae", False)
    return EngineSettings(**kw, mode="graphs" if device == "cuda" else "eager", profile=device == "cuda")


@pytest.mark.parametrize("stack", ["mllm-edit", "sd-turbo"])
def test_equals_reference_with_refresh_every_batch(stack, bundles, refs, clip):
    ref = refs(stack)
    engine = StreamEngine(bundles(stack), _settings("cpu", batch_size=3, refresh=1, lllite_refresh=1), STYLE_A)
    try:
        assert_close(engine.process(clip), ref, stack)
    finally:
        engine.close()


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_order_kept_nothing_lost_or_duplicated(batch, bundles, refs, clip):
    # img2img at strength 0.5: each output follows its own frame, so a swap would show.
    ref = refs("sd-turbo")
    d = _diff(ref[:-1], ref[1:]).reshape(len(ref) - 1, -1).mean(1)
    assert (d > 3.0).all()
    engine = StreamEngine(bundles("sd-turbo"), _settings("cpu", batch_size=batch), STYLE_A)
    try:
        # By hand, with two batches in flight: tickets come back in order with their own count.
        tickets, out = [], []
        for i in range(0, N_FRAMES, batch):
            if len(tickets) == 2:
                out += engine.collect(tickets.pop(0))
            tickets.append(engine.submit(clip[i:i + batch]))
        for t in tickets:
            out += engine.collect(t)
    finally:
        engine.close()
    assert len(out) == N_FRAMES
    assert_close(out, ref, f"B={batch}")
    # Each output is nearest to its own frame's reference: none lost, duplicated or swapped.
    for i, o in enumerate(out):
        dists = [np.abs(o.astype(np.int16) - r.astype(np.int16)).mean() for r in ref]
        assert int(np.argmin(dists)) == i


def _reference_with_cache(monkeypatch, bundle, frames, style, cond_src: list[int], lllite_src: list[int]):
    """The reference, but frame i conditioned on frame cond_src[i] (encoder) and lllite_src[i]
    (LLLite control image): what the engine's caches amount to."""
    from stylecam.core.stylize import lllite

    out = []
    real_cond, real_control = reference._conditioning, lllite.to_control_image
    for i, frame in enumerate(frames):
        cpix = torch.from_numpy(frames[cond_src[i]]).to(bundle.device)[None]
        lpix = torch.from_numpy(frames[lllite_src[i]]).to(bundle.device)[None]
        monkeypatch.setattr(reference, "_conditioning", lambda b, text, pixels, c=cpix: real_cond(b, text, c))
        monkeypatch.setattr(lllite, "to_control_image", lambda pixels, c=lpix: real_control(c))
        out += reference.stylize_frames([frame], style, bundle)
    monkeypatch.setattr(reference, "_conditioning", real_cond)
    monkeypatch.setattr(lllite, "to_control_image", real_control)
    return out


def _sources(n: int, batch: int, every: int, broadcast: bool, deferred: bool = False) -> list[int]:
    """For each frame, the frame whose conditioning the engine uses (refresh every ``every``
    batches; ``deferred``: a periodic refresh is taken up by the batch after it)."""
    src = []
    for i in range(n):
        k = i // batch
        r = ((k - 1) // every) * every if deferred and k > 0 else k - k % every  # the refreshing batch
        start = r * batch  # its first frame
        if broadcast:
            src.append(min(start + batch, n) - 1)  # its newest frame (a short batch: its last)
        else:
            src.append(min(start + i % batch, n - 1))
    return src


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch,refresh,lllite_refresh,broadcast",
                         [(2, 2, 3, False), (3, 2, 1, True), (1, 3, 2, False)])
def test_refresh_every_n_equals_reference_fed_cached_conditioning(batch, refresh, lllite_refresh, broadcast,
                                                                  device, bundles, clip, monkeypatch):
    bundle = bundles("mllm-edit", device)
    expected = _reference_with_cache(monkeypatch, bundle, clip, STYLE_A,
                                     _sources(N_FRAMES, batch, refresh, broadcast),
                                     _sources(N_FRAMES, batch, lllite_refresh, broadcast))
    settings = _settings(device, batch_size=batch, refresh=refresh, lllite_refresh=lllite_refresh,
                         broadcast=broadcast)
    engine = StreamEngine(bundle, settings, STYLE_A)
    try:
        out = engine.process(clip)
    finally:
        engine.close()
    assert_close(out, expected, f"B={batch} N={refresh} M={lllite_refresh} broadcast={broadcast}")
    if refresh > 1:
        # The cache matters: with fresh conditioning per frame the result is different.
        fresh = reference.stylize_frames(clip, STYLE_A, bundle)
        assert _diff(out, fresh).max() > 1


@pytest.mark.parametrize("batch", [1, 2])
def test_default_refresh_counts_frames_not_batches(batch, bundles, clip, monkeypatch):
    # refresh=None (what the app runs: no style sets one) looks at the picture every
    # VISION_REFRESH_FRAMES frames at any B: here 4 frames, so every 4 batches of 1 or 2 of 2;
    # and, the conditioning being kept across batches, at each batch's newest frame (broadcast).
    from stylecam.core.stylize import engine_settings

    monkeypatch.setattr(engine_settings, "VISION_REFRESH_FRAMES", 4)
    bundle = bundles("mllm-edit", "cpu")
    settings = _settings("cpu", batch_size=batch, lllite_refresh=1)
    assert settings.refresh is None and settings.refresh_batches == 4 // batch and settings.broadcasts
    expected = _reference_with_cache(monkeypatch, bundle, clip, STYLE_A, _sources(N_FRAMES, batch, 4 // batch, True),
                                     _sources(N_FRAMES, batch, 1, True))
    engine = StreamEngine(bundle, settings, STYLE_A)
    try:
        assert engine.temporal(STYLE_A)  # a cached conditioning ties a frame to earlier ones
        out = engine.process(clip)
    finally:
        engine.close()
    assert_close(out, expected, f"default refresh B={batch}")
    # At the real default: 64 frames, whole batches, never below one; a style's N still wins.
    monkeypatch.undo()
    assert [EngineSettings(batch_size=b).refresh_batches for b in (1, 2, 4, 16, 48, 64, 100)] == [64, 32, 16, 4, 1, 1, 1]
    assert EngineSettings(batch_size=16).with_style({"refresh": 2}).refresh_batches == 2
    # Broadcast by default only where the conditioning is kept; a style's choice wins.
    assert [EngineSettings(batch_size=b).broadcasts for b in (16, 64)] == [True, False]
    assert EngineSettings(batch_size=16, refresh=1).broadcasts is False
    assert EngineSettings(batch_size=16).with_style({"broadcast": False}).broadcasts is False
    assert EngineSettings(batch_size=16, refresh=1).with_style({"broadcast": True}).broadcasts is True
    with pytest.raises(ValueError, match="refresh"):
        EngineSettings(refresh=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch,refresh,broadcast", [(2, 2, False), (3, 2, True), (1, 3, False), (2, 1, False)])
def test_deferred_refresh_equals_reference_fed_the_conditioning_one_batch_later(batch, refresh, broadcast, device,
                                                                               bundles, clip, monkeypatch):
    # The encoder of a periodic refresh runs after its batch (its own CUDA stream) and the next
    # batch takes it up; the first batch's conditioning is its own (a forced refresh, at once).
    bundle = bundles("mllm-edit", device)
    expected = _reference_with_cache(monkeypatch, bundle, clip, STYLE_A,
                                     _sources(N_FRAMES, batch, refresh, broadcast, deferred=True),
                                     _sources(N_FRAMES, batch, 1, broadcast))
    settings = _settings(device, batch_size=batch, refresh=refresh, lllite_refresh=1, broadcast=broadcast,
                         deferred_refresh=True)
    engine = StreamEngine(bundle, settings, STYLE_A)
    try:
        assert engine.deferred and engine.temporal(STYLE_A)
        out = engine.process(clip)
    finally:
        engine.close()
    assert_close(out, expected, f"deferred B={batch} N={refresh} broadcast={broadcast}")
    # Not the undeferred result: the lag is real.
    undeferred = _reference_with_cache(monkeypatch, bundle, clip, STYLE_A, _sources(N_FRAMES, batch, refresh, broadcast),
                                       _sources(N_FRAMES, batch, 1, broadcast))
    assert _diff(out, undeferred).max() > 1


@pytest.mark.parametrize("device", DEVICES)
def test_deferred_refresh_auto_is_the_latency_point_on_cuda(device, bundles):
    # auto: B <= 2 on CUDA with the side stream (measured there); never on the CPU, where every
    # step runs in turn and deferring would only make the conditioning older; on/off as asked.
    bundle = bundles("mllm-edit", device)
    cases = [("auto", 1, device == "cuda"), ("auto", 2, device == "cuda"), ("auto", 4, False),
             ("on", 4, True), (True, 1, True), ("off", 1, False), (False, 1, False)]
    for value, batch, expected in cases:
        engine = StreamEngine(bundle, EngineSettings(batch_size=batch, refresh=4, deferred_refresh=value,
                                                     mode="graphs" if device == "cuda" else "eager"))
        try:
            assert engine.deferred is expected, (value, batch)
        finally:
            engine.close()
    with pytest.raises(ValueError, match="deferred_refresh must be one of auto, on, off"):
        EngineSettings(deferred_refresh="sometimes")


@pytest.mark.parametrize("device", DEVICES)
def test_deferred_refresh_in_flight_moves_with_its_stream(device, bundles, clip):
    # Detached between batches while a deferred conditioning is in flight, the stream takes it
    # along: painted in two parts with another stream between, it equals the stream painted whole.
    bundle = bundles("mllm-edit", device)
    settings = _settings(device, batch_size=1, refresh=2, lllite_refresh=1, deferred_refresh=True)
    engine = StreamEngine(bundle, settings, STYLE_A)
    try:
        whole = engine.process(clip)
        engine.attach_temporal(None)
        first = engine.process(clip[:3])  # batches 0-2: batch 2's refresh is in flight
        state = engine.detach_temporal()
        engine.process(clip[::-1][:3])  # another stream
        engine.attach_temporal(state)
        rest = engine.process(clip[3:])
    finally:
        engine.close()
    assert_close(first + rest, whole, "detached with a deferred refresh in flight")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("stack", ["mllm-edit", "sd-turbo"])
def test_style_switch_takes_effect_from_the_next_batch(stack, device, bundles, refs, clip, monkeypatch):
    bundle = bundles(stack, device)
    ref_a, ref_b = refs(stack, STYLE_A, device), refs(stack, STYLE_B, device)
    # refresh=8 for the vision encoder: a new instruction forces a refresh anyway (each frame its
    # own conditioning, kept position by position: broadcast off).
    engine = StreamEngine(bundle, _settings(device, batch_size=3, refresh=8, lllite_refresh=1, broadcast=False),
                          STYLE_A)
    try:
        first = engine.submit(clip[:3])
        engine.set_style(STYLE_B)  # between submits: batch 0 stays A, batch 1 on is B
        second = engine.submit(clip[3:6])
        out = engine.collect(first) + engine.collect(second)
        third = engine.submit(clip[6:])
        out += engine.collect(third)
    finally:
        engine.close()
    assert_close(out[:3], ref_a[:3], "before the switch")
    assert_close(out[3:6], ref_b[3:6], "after the switch")
    if stack == "mllm-edit":
        # Frame 6 (batch 2) reuses batch 1's conditioning (refresh=8): the new style, cached.
        ref_b = _reference_with_cache(monkeypatch, bundle, clip, STYLE_B, [0, 1, 2, 3, 4, 5, 3], list(range(7)))
    assert_close(out[6:], ref_b[6:], "the batch after")
    assert _diff(ref_a[3:], ref_b[3:]).mean() > 1.0  # the two styles do differ


@pytest.mark.parametrize("device", DEVICES)
def test_feedback_is_a_moving_average_in_frame_order(device, bundles, refs, clip):
    alpha = 0.6
    ref = refs("sd-turbo", STYLE_A, device)
    outs = {}
    for batch in (1, 3):
        engine = StreamEngine(bundles("sd-turbo", device), _settings(device, batch_size=batch, feedback=alpha),
                              STYLE_A)
        try:
            outs[batch] = engine.process(clip)
        finally:
            engine.close()
    prev, expected = None, []
    for r in ref:
        y = r.astype(np.float32)
        prev = y if prev is None else y + alpha * (prev - y)
        expected.append(np.clip(np.round(prev), 0, 255).astype(np.uint8))
    for batch, out in outs.items():
        assert_close(out, expected, f"feedback B={batch}")
    assert _diff(outs[1], ref).mean() > 1.0


def test_a_style_without_feedback_after_one_with_it_paints_without(bundles, refs, clip):
    """A style's engine keys override the engine's own settings, not the previous style's: after
    ai-oil-steady-like feedback, a style that names no feedback paints plain frames again."""
    ref = refs("sd-turbo", STYLE_A, "cpu")
    engine = StreamEngine(bundles("sd-turbo"), _settings("cpu", batch_size=2), dict(STYLE_A, feedback=0.6))
    try:
        assert engine.settings.feedback == 0.6
        blended = engine.process(clip)
        engine.set_style(STYLE_A)
        assert engine.settings.feedback == 0.0
        plain = engine.process(clip)
    finally:
        engine.close()
    assert _diff(blended, ref).mean() > 1.0  # the first style did blend
    assert_close(plain, ref, "no feedback after a feedback style")


def test_similarity_skip_reuses_the_last_output_for_a_still_scene(bundles, clip):
    bundle = bundles("sd-turbo")
    still = [clip[0]] * 4 + [clip[3]] * 2
    engine = StreamEngine(bundle, EngineSettings(batch_size=2, skip_threshold=2.0), STYLE_A)
    try:
        out = engine.process(still)
        assert engine.skipped_batches == 1  # [0, 0] runs, [0, 0] is skipped, [3, 3] runs
    finally:
        engine.close()
    ref = reference.stylize_frames([clip[0], clip[3]], STYLE_A, bundle)
    assert len(out) == 6
    assert_close(out[:4], [ref[0]] * 4, "still frames")
    assert_close(out[4:], [ref[1]] * 2, "after the scene changed")


def test_errors_say_what_to_do(bundles, clip):
    bundle = bundles("sd-turbo")
    engine = StreamEngine(bundle, EngineSettings(batch_size=2))
    try:
        with pytest.raises(EngineError, match="set_style"):
            engine.submit(clip[:2])
        engine.set_style(STYLE_A)
        with pytest.raises(ValueError, match=r"\(64, 64, 3\).*set_io_size"):
            engine.submit([np.zeros((32, 32, 3), np.uint8)])
        with pytest.raises(ValueError, match="1 to 2 frames"):
            engine.submit(clip[:3])
        a, b = engine.submit(clip[:2]), engine.submit(clip[2:4])
        with pytest.raises(EngineError, match="collect the oldest"):
            engine.submit(clip[4:6])
        with pytest.raises(EngineError, match="in the order"):
            engine.collect(b)
        assert len(engine.collect(a)) == 2 and len(engine.collect(b)) == 2
    finally:
        engine.close()
    engine.close()  # idempotent
    with pytest.raises(EngineError, match="closed"):
        engine.set_style(STYLE_A)
    with pytest.raises(ValueError, match="refresh"):
        EngineSettings(refresh=0)
    with pytest.raises(ValueError, match="host_wait must be one of sleep, spin"):
        EngineSettings(host_wait="nap")


def test_close_unfolds_lllite_and_restores_the_encoder(bundles):
    from stylecam.core.stylize.lllite import LLLiteLinear

    bundle = bundles("mllm-edit")
    fast = bundle.qwen.fast
    engine = StreamEngine(bundle, EngineSettings(batch_size=2, fast_encoder=not fast), STYLE_A)
    assert any(isinstance(m, LLLiteLinear) for m in bundle.unet.modules())
    engine.close()
    assert not any(isinstance(m, LLLiteLinear) for m in bundle.unet.modules())
    assert bundle.qwen.fast == fast


def test_eager_switch_and_modes(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.delenv("STYLECAM_EAGER", raising=False)
    assert resolve_mode("graphs", cuda) == "graphs"
    assert resolve_mode("graphs", torch.device("cpu")) == "eager"
    monkeypatch.setenv("STYLECAM_EAGER", "1")
    assert resolve_mode("compile", cuda) == "eager"
    with pytest.raises(ValueError, match="eager, graphs, compile"):
        resolve_mode("fast", cuda)
    # The app's mode: graphs, or compile on request; the eager switch still wins.
    monkeypatch.delenv("STYLECAM_COMPILE", raising=False)
    assert default_mode() == "graphs"
    monkeypatch.setenv("STYLECAM_COMPILE", "1")
    assert default_mode() == "compile"
    assert resolve_mode(default_mode(), cuda) == "eager"
    monkeypatch.delenv("STYLECAM_EAGER")
    assert resolve_mode(default_mode(), cuda) == "compile"


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_graphs_replayed_at_once_on_two_streams_do_not_share_a_workspace():
    """Two graphs of float32 GEMMs (no TF32: split-K kernels that use cuBLAS's workspace),
    each captured on the stream it replays on, replayed concurrently over and over: each stays
    equal to its eager result. With both captured on one shared stream they shared a workspace
    and the engine hung in ``collect`` (H200)."""
    from stylecam.core.stylize.compile import GraphedStep

    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        g = torch.Generator(device="cuda").manual_seed(0)
        # Tall-skinny products: few output tiles and a long K, the shapes cuBLAS splits along K.
        a = [torch.randn(64, 8192, device="cuda", generator=g) for _ in range(2)]
        b = [torch.randn(8192, 64, device="cuda", generator=g) for _ in range(2)]
        expected = [a[i] @ b[i] @ b[i].T @ b[i] for i in range(2)]
        streams = [torch.cuda.Stream(), torch.cuda.Stream()]
        steps = []
        for i, s in enumerate(streams):
            with torch.cuda.stream(s):
                steps.append(GraphedStep(lambda i=i: a[i] @ b[i] @ b[i].T @ b[i], name=f"mm{i}"))
            assert steps[-1].stream == s
        # A captured graph's output holds its values only after a replay: one each, alone.
        ref = []
        for s, step in zip(streams, steps):
            with torch.cuda.stream(s):
                ref.append(step.replay().clone())
            torch.cuda.synchronize()
        for i in range(2):
            torch.testing.assert_close(ref[i], expected[i], rtol=1e-4, atol=1e-2)
        for _ in range(200):
            for s, step in zip(streams, steps):
                with torch.cuda.stream(s):
                    step.replay()
        torch.cuda.synchronize()
        for i in range(2):
            torch.testing.assert_close(steps[i].output, ref[i], rtol=0, atol=0)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_engine_steps_are_captured_on_their_replay_streams(bundles):
    engine = StreamEngine(bundles("mllm-edit", "cuda"), _settings("cuda", batch_size=2), STYLE_A)
    try:
        engine.process([np.zeros((64, 64, 3), np.uint8)] * 2)
        side = {engine._steps[k].stream for k in ("encode", "cond", "lllite")}
        main = {engine._steps[k].stream for k in ("unet", "decode")}
        assert side == {engine._side} and main == {engine._main} and engine._side != engine._main
    finally:
        engine.close()


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("stack", ["mllm-edit", "sd-turbo"])
def test_cuda_graphs_and_side_stream_equal_reference(stack, bundles, refs, clip):
    ref = refs(stack, STYLE_A, "cuda")
    engine = StreamEngine(bundles(stack, "cuda"), _settings("cuda", batch_size=3, refresh=1, lllite_refresh=1),
                          STYLE_A)
    try:
        tickets = []
        out = []
        for i in range(0, N_FRAMES, 3):
            if len(tickets) == 2:
                t = tickets.pop(0)
                out += engine.collect(t)
            tickets.append(engine.submit(clip[i:i + 3]))
        for t in tickets:
            out += engine.collect(t)
        assert engine.report.graphs >= 3
        stages = engine.stage_times([])
        assert isinstance(stages, dict)
    finally:
        engine.close()
    assert_close(out, ref, f"{stack} on CUDA")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
def test_a_sleeping_host_wait_paints_what_a_spinning_one_does(bundles, clip):
    # host_wait only changes how the host waits for its events, never what the GPU computes.
    outs = {}
    for wait in ("spin", "sleep"):
        engine = StreamEngine(bundles("sd-turbo", "cuda"), _settings("cuda", batch_size=3, host_wait=wait), STYLE_A)
        try:
            outs[wait] = engine.process(clip)
        finally:
            engine.close()
    assert_close(outs["sleep"], outs["spin"], "host_wait")


def test_style_presets_carry_engine_policies(bundles, clip, monkeypatch):
    from stylecam.core.styles import StyleError, make_style

    style = make_style({"name": "edit-cached", "backend": "diffusion",
                        "params": dict(STYLE_A, refresh=2, lllite_refresh=3)})
    with pytest.raises(StyleError, match="refresh"):
        make_style({"name": "bad", "backend": "diffusion", "params": dict(STYLE_A, refresh=0)})
    with pytest.raises(StyleError, match="'feedback_warp' must be true or false"):
        make_style({"name": "bad", "backend": "diffusion", "params": dict(STYLE_A, feedback_warp="yes")})
    from stylecam.core.styles import load_styles

    steady = load_styles()[0]["ai-oil-steady"].params
    assert EngineSettings().with_style(steady).feedback_warp is True
    bundle = bundles("mllm-edit")
    engine = StreamEngine(bundle, EngineSettings(batch_size=2, refresh=1, lllite_refresh=1))
    try:
        engine.set_style(style)
        # ... and, the conditioning now kept across batches, each batch's newest frame broadcast
        assert (engine.settings.refresh, engine.settings.lllite_refresh, engine.broadcast) == (2, 3, True)
        out = engine.process(clip)
    finally:
        engine.close()
    expected = _reference_with_cache(monkeypatch, bundle, clip, STYLE_A, _sources(N_FRAMES, 2, 2, True),
                                     _sources(N_FRAMES, 2, 3, True))
    assert_close(out, expected, "refresh from the style")


def test_length_bucketed_prompts_equal_the_fixed_length_reference(clip):
    """With ``pad_to_multiple_of`` the sync-free encoder runs on the real tokens rounded up to a
    bucket instead of all ``text_length``; the conditioning it gives (zero beyond the bucket) and
    so the frames are the fixed-length reference's. A longer instruction (another bucket) mid-
    stream re-captures the encoder step and is right from the next batch on."""
    bundle = _bundle("mllm-edit")
    qwen = bundle.qwen
    qwen.fast = True
    qwen.pad_to_multiple_of = 8
    long_b = dict(STYLE_B, instruction="make it a pencil sketch with long strokes and shading")
    lengths = {len(qwen.prompt(s["instruction"], qwen.num_image_tokens(64, 64)).mask[0])
               for s in (STYLE_A, long_b)}
    assert len(lengths) == 2 and max(lengths) < qwen.text_length  # two buckets, both short
    engine = StreamEngine(bundle, _settings("cpu", batch_size=2, refresh=1, lllite_refresh=1), STYLE_A)
    try:
        first = engine.process(clip[:4])
        engine.set_style(long_b)
        second = engine.process(clip[4:])
    finally:
        engine.close()
    qwen.fast = False
    qwen.pad_to_multiple_of = None
    qwen._prompts.clear()
    assert_close(first, reference.stylize_frames(clip[:4], STYLE_A, bundle), "bucketed prompt")
    assert_close(second, reference.stylize_frames(clip[4:], long_b, bundle), "longer bucketed prompt")


def _pan(clip, step: int = 3) -> list[np.ndarray]:
    """A camera pan: 64x64 windows of one frame (upscaled 2x) moving ``step`` pixels right per frame."""
    import cv2

    big = cv2.resize(clip[0], (128, 128), interpolation=cv2.INTER_CUBIC)
    return [np.ascontiguousarray(big[32:96, 16 + step * i:80 + step * i]) for i in range(N_FRAMES)]


def _warped_moving_average(frames, outs, alpha):
    """The oracle of ``feedback_warp``, in OpenCV: the previous output remapped along the same DIS
    flows (``cv2.remap``, edges replicated), then the moving average of the feedback test."""
    import cv2

    from stylecam.core.stylize.flow import FlowEstimator

    H, W = frames[0].shape[:2]
    flows = FlowEstimator((W, H)).backward(np.stack(frames))
    h, w = flows.shape[1:3]
    prev, expected = None, []
    for flow, out in zip(flows, outs):
        y = out.astype(np.float32)
        if prev is None:
            prev = y
        else:
            full = cv2.resize(flow, (W, H), interpolation=cv2.INTER_LINEAR)
            mx = (np.arange(W)[None, :] + full[..., 0] * (W / w)).astype(np.float32)
            my = (np.arange(H)[:, None] + full[..., 1] * (H / h)).astype(np.float32)
            warped = cv2.remap(prev, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            prev = y + alpha * (warped - y)
        expected.append(np.clip(np.round(prev), 0, 255).astype(np.uint8))
    return expected


@pytest.mark.parametrize("device", DEVICES)
def test_feedback_warp_equals_the_opencv_oracle(device, bundles, clip):
    alpha = 0.6
    pan = _pan(clip)
    bundle = bundles("sd-turbo", device)
    ref = reference.stylize_frames(pan, STYLE_A, bundle)  # no feedback: each frame's own output
    engine = StreamEngine(bundle, _settings(device, batch_size=3, feedback=alpha, feedback_warp=True), STYLE_A)
    try:
        out = engine.process(pan)
    finally:
        engine.close()
    d = _diff(out, _warped_moving_average(pan, ref, alpha))
    # grid_sample (float) against cv2.remap (1/32-pixel fixed point): a few levels at edges, rarely.
    assert d.max() <= 4 and d.mean() < 0.25, f"max {d.max()}, mean {d.mean():.3f}"
    # It is not the plain blend: the random tiny U-Net's output keeps a texture fixed to the
    # screen (the stream's noise does not move), which the warp moves along with the pan.
    plain = [np.clip(np.round(e), 0, 255).astype(np.uint8) for e in _warped_moving_average([pan[0]] * len(pan), ref, alpha)]
    assert _diff(out, plain).mean() > 1.0


def test_warped_feedback_leaves_no_ghost_behind_a_pan(clip):
    """The engine's blend (``moving_average``) fed a stylizer that follows the scene exactly (the
    frames themselves): the plain blend drags the previous frames behind the pan, the warped one
    stays on the frame (up to the edge that enters the picture)."""
    from stylecam.core.stylize.engine import moving_average
    from stylecam.core.stylize.flow import FlowEstimator, flow_grids

    pan = _pan(clip, step=4)
    frames = torch.from_numpy(np.stack(pan)).float()
    grids = flow_grids(torch.from_numpy(FlowEstimator((64, 64)).backward(np.stack(pan))), (64, 64))
    first = torch.zeros(())  # the first frame has no previous one
    plain = moving_average(frames, frames[0], first, 0.6)
    warped = moving_average(frames, frames[0], first, 0.6, grids)
    inner = (slice(1, None), slice(None), slice(0, 40))  # away from the entering right edge
    ghost_plain = (plain - frames)[inner].abs().mean()
    ghost_warped = (warped - frames)[inner].abs().mean()
    assert ghost_plain > 5.0  # a real ghost without the warp
    assert ghost_warped < 0.3 * ghost_plain, (float(ghost_warped), float(ghost_plain))


def test_feedback_warp_on_a_still_scene_is_the_plain_blend(bundles, clip):
    still = [clip[2]] * 5
    bundle = bundles("sd-turbo")
    outs = []
    for warp in (False, True):
        engine = StreamEngine(bundle, _settings("cpu", batch_size=2, feedback=0.5, feedback_warp=warp), STYLE_A)
        try:
            outs.append(engine.process(still))
        finally:
            engine.close()
    assert_close(outs[1], outs[0], "zero flow")


def test_flow_warp_equals_opencv_remap_at_any_scale():
    import cv2

    from stylecam.core.stylize.flow import flow_grids, flow_size, warp

    rng = np.random.default_rng(1)
    W, H = 256, 192
    assert flow_size((W, H)) == (128, 96)
    image = cv2.GaussianBlur(rng.uniform(0, 255, (H, W, 3)).astype(np.float32), (0, 0), 3)
    flow = cv2.GaussianBlur(rng.uniform(-4, 4, (96, 128, 2)).astype(np.float32), (0, 0), 5) * 4
    flow += np.array([2.5, -1.5], np.float32)  # a pan, and local motion around it
    got = warp(torch.from_numpy(image), flow_grids(torch.from_numpy(flow)[None], (W, H))[0]).numpy()
    full = cv2.resize(flow, (W, H), interpolation=cv2.INTER_LINEAR)
    mx = (np.arange(W)[None, :] + full[..., 0] * 2).astype(np.float32)
    my = (np.arange(H)[:, None] + full[..., 1] * 2).astype(np.float32)
    expected = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    assert np.abs(got - expected).max() < 0.5
    assert np.abs(got - image).mean() > 1.0  # the flow did move the picture


@pytest.mark.parametrize("stack", ["sd-turbo", "pix2pix", "mllm-edit"])
def test_a_model_size_with_the_cameras_aspect_equals_the_reference(stack, clip):
    # A bundle whose manifest size is 16:9-like (here 96x64, latents 12x8) instead of square: what
    # a 16:9 camera needs so the model does not see it squeezed (docs/models.md, `size`).
    import cv2

    from stylecam.core.stylize.bundle import build_tiny_bundle

    bundle = build_tiny_bundle(stack, size=(96, 64), lllite=stack == "mllm-edit")
    frames = [np.ascontiguousarray(cv2.resize(f, (96, 64), interpolation=cv2.INTER_AREA)) for f in clip[:3]]
    engine = StreamEngine(bundle, _settings("cpu", batch_size=2, refresh=1, lllite_refresh=1), STYLE_A)
    try:
        out = engine.process(frames)
    finally:
        engine.close()
    assert out[0].shape == (64, 96, 3)
    assert_close(out, reference.stylize_frames(frames, STYLE_A, bundle), f"{stack} at 96x64")
