"""Several devices: the engine split over two devices and replicated over several (core/stylize/devices.py).

CPU (CI): two logical devices that are both the CPU drive the real scheduling — the split's side
buffers, staging copies and first-batch set-up; the pool's round-robin, in-order collection,
shared skip, flow and feedback hand-off — and the outputs must equal the one-device engine's
(exactly: the same float32 kernels run), for sd-turbo and mllm-edit (Qwen3-VL + LLLite) tiny
bundles; nothing lost, order kept; the split's placement of each component (checked on the meta
device); the bundle back in one piece after close; the grammar and its errors; the backend and
the CLI. GPU (``-m gpu``): the same equalities on ``cuda:0,cuda:1`` with CUDA graphs when two
GPUs exist, and the one-GPU degenerate case (``split:0,0``, ``replicate:0,0``).
"""

from __future__ import annotations


import numpy as np
import pytest
import torch

from clips import clip_path, read_clip
from stylecam.core import cli
from stylecam.core.frames import fit
from stylecam.core.stylize.base import BackendError
from tiny import tiny_bundle
from stylecam.core.stylize.devices import (DeviceError, DevicePlan, EnginePool, open_engine, parse_devices,
                                           place_split)
from stylecam.core.stylize.diffusion import DiffusionBackend
from stylecam.core.stylize.engine import EngineError, EngineSettings, StreamEngine

STYLE = {"prompt": "an oil painting, thick brush strokes", "instruction": "turn it into an oil painting", "seed": 3}
N_FRAMES = 7  # three batches of 3: the last one short

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads cost more than they give on two cores
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def clip():
    frames = read_clip(clip_path("davis_blackswan.mp4"), 7 * N_FRAMES)[::7]
    return [fit(f, (64, 64), "stretch") for f in frames]


@pytest.fixture(scope="module")
def bundles():
    cache = {}

    def get(stack):
        if stack not in cache:
            cache[stack] = tiny_bundle(stack)
        return cache[stack]

    return get


def run(bundle, frames, devices=None, style=STYLE, **kw) -> list[np.ndarray]:
    engine = open_engine(bundle, EngineSettings(devices=devices, mode="eager", **kw), style)
    try:
        return engine.process(frames)
    finally:
        engine.close()


def assert_equal(out, ref, what):
    assert len(out) == len(ref), what
    d = np.stack([np.abs(a.astype(np.int16) - b.astype(np.int16)) for a, b in zip(out, ref)])
    # The same kernels in the same order: equal; the tolerance of tests/test_engine.py at most.
    assert d.max() <= 1 and d.mean() < 0.01, f"{what}: max {d.max()}, mean {d.mean():.4f}"


# --------------------------------------------------------------------------------------------
# The grammar


@pytest.mark.parametrize("spec, gpus, placement, devices", [
    ("0", 2, "single", ("cuda:0",)),
    ("cuda:1", 2, "single", ("cuda:1",)),
    ("0,1", 2, "split", ("cuda:0", "cuda:1")),
    (" cuda:1 , 0 ", 2, "split", ("cuda:1", "cuda:0")),
    ("all", 2, "replicate", ("cuda:0", "cuda:1")),
    ("all", 1, "single", ("cuda:0",)),
    ("replicate:0,1", 2, "replicate", ("cuda:0", "cuda:1")),
    ("0,1,2,3", 4, "replicate", ("cuda:0", "cuda:1", "cuda:2", "cuda:3")),
    ("split:all", 4, "split", ("cuda:0", "cuda:1", "cuda:2", "cuda:3")),
    ("split:0,0", 1, "split", ("cuda:0", "cuda:0")),
    (("cuda:0", "cuda:1"), 2, "split", ("cuda:0", "cuda:1")),
    ([0, 1, 2], 3, "replicate", ("cuda:0", "cuda:1", "cuda:2")),
    ("cpu,cpu", 0, "split", ("cpu", "cpu")),
    ("replicate:cpu", 0, "single", ("cpu",)),
])
def test_device_lists(spec, gpus, placement, devices):
    plan = parse_devices(spec, gpus=gpus)
    assert plan == DevicePlan(placement, devices)
    assert parse_devices(str(plan), gpus=gpus) == plan  # the plan's spelling reads back
    assert plan.engines == (len(devices) // 2 if placement == "split" else len(devices))
    assert parse_devices(None) is None


@pytest.mark.parametrize("spec, gpus, message", [
    ("0,1", 0, "there is no cuda:0; this machine has no CUDA GPU"),
    ("0,2", 2, "there is no cuda:2; this machine has 2 CUDA GPUs (0 to 1)"),
    ("all", 0, "means every CUDA GPU, and this machine has none"),
    ("split:0,1,2", 3, "pairs of devices"),
    ("cpu,0", 1, "mixes the CPU and GPUs"),
    ("gpu0", 1, "'gpu0' is not a device"),
    ("", 1, "at least one device"),
])
def test_bad_device_lists_say_what_would_work(spec, gpus, message):
    with pytest.raises(DeviceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_devices(spec, gpus=gpus)


# --------------------------------------------------------------------------------------------
# Split and replicate against the one-device engine


@pytest.mark.parametrize("stack", ["sd-turbo", "mllm-edit"])
@pytest.mark.parametrize("devices", ["cpu,cpu", "replicate:cpu,cpu", "replicate:cpu,cpu,cpu", "split:cpu,cpu,cpu,cpu"])
def test_equal_to_one_device_with_conditioning_every_batch(stack, devices, bundles, clip):
    bundle = bundles(stack)
    ref = run(bundle, clip, batch_size=3, refresh=1, lllite_refresh=1)
    out = run(bundle, clip, devices, batch_size=3, refresh=1, lllite_refresh=1)
    assert_equal(out, ref, f"{stack} on {devices}")
    # Nothing lost, order kept: each output is nearest its own frame's one-device output.
    for i, o in enumerate(out):
        assert int(np.argmin([np.abs(o.astype(np.int16) - r).mean() for r in ref])) == i
    # The bundle is whole again on its device, LLLite unfolded: the one-device engine agrees.
    assert_equal(run(bundle, clip, batch_size=3, refresh=1, lllite_refresh=1), ref, "after close")


@pytest.mark.parametrize("stack", ["sd-turbo", "mllm-edit"])
def test_split_keeps_the_refresh_schedule(stack, bundles, clip):
    # Refresh every 2 batches (Qwen3-VL), LLLite every 3, broadcast: the cached conditioning
    # matters (checked), and the split reuses exactly what the one-device engine reuses.
    bundle = bundles(stack)
    kw = dict(batch_size=2, refresh=2, lllite_refresh=3, broadcast=stack == "mllm-edit")
    ref = run(bundle, clip, **kw)
    assert_equal(run(bundle, clip, "cpu,cpu", **kw), ref, f"{stack} split")
    if stack == "mllm-edit":
        fresh = run(bundle, clip, batch_size=2, refresh=1, lllite_refresh=1)
        assert max(np.abs(a.astype(np.int16) - b).max() for a, b in zip(ref, fresh)) > 1


def test_replicas_refresh_on_their_own_batches(bundles, clip):
    # Each engine of a pool is today's engine on its share of the stream: batch k runs on engine
    # k mod 2, which refreshes every 2 of its own batches (module docstring).
    bundle = bundles("mllm-edit")
    kw = dict(batch_size=1, refresh=2, lllite_refresh=2)
    out = run(bundle, clip, "replicate:cpu,cpu", **kw)
    for r in range(2):
        share = run(bundle, clip[r::2], **kw)
        assert_equal(out[r::2], share, f"engine {r}")


@pytest.mark.parametrize("devices", ["cpu,cpu", "replicate:cpu,cpu"])
def test_feedback_warp_and_skip_follow_the_stream(devices, bundles, clip):
    # The blend with the previous output, moved along the flow, crosses from one engine to the
    # next; a still stretch is skipped once for the stream, whichever engine is next.
    bundle = bundles("sd-turbo")
    frames = clip[:3] + [clip[3]] * 4 + clip[4:]
    kw = dict(batch_size=2, feedback=0.6, feedback_warp=True, skip_threshold=2.0)
    single = open_engine(bundle, EngineSettings(mode="eager", **kw), STYLE)
    try:
        ref = single.process(frames)
        skipped = single.skipped_batches
    finally:
        single.close()
    engine = open_engine(bundle, EngineSettings(devices=devices, mode="eager", **kw), STYLE)
    try:
        out = engine.process(frames)
        assert engine.skipped_batches == skipped == 1  # [3, 3] after [3, 3]
    finally:
        engine.close()
    assert_equal(out, ref, devices)
    plain = run(bundle, frames, batch_size=2)
    assert np.mean([np.abs(a.astype(np.int16) - b).mean() for a, b in zip(ref, plain)]) > 1.0


def test_reset_temporal_starts_the_pool_afresh(bundles, clip):
    # After a pause the runner resets: the pool's next frames owe nothing to the earlier ones
    # (feedback in every engine, the stream's flow and skip reference).
    bundle = bundles("sd-turbo")
    kw = dict(batch_size=2, feedback=0.6, feedback_warp=True, skip_threshold=2.0)
    engine = open_engine(bundle, EngineSettings(devices="replicate:cpu,cpu", mode="eager", **kw), STYLE)
    try:
        first = engine.process(clip)
        carried = engine.process(clip)  # follows the first pass's last frame
        engine.reset_temporal()
        fresh = engine.process(clip)
    finally:
        engine.close()
    assert_equal(fresh, first, "after reset")
    assert np.abs(carried[0].astype(np.int16) - first[0]).mean() > 1.0


def test_style_switch_reaches_every_engine(bundles, clip):
    bundle = bundles("sd-turbo")
    other = {"prompt": "a pencil sketch", "seed": 5, "strength": 0.7}
    outs = {}
    for devices in (None, "replicate:cpu,cpu"):
        engine = open_engine(bundle, EngineSettings(devices=devices, mode="eager", batch_size=2), STYLE)
        try:
            first = engine.submit(clip[:2])
            engine.set_style(other)  # from the next batch on, whichever engine runs it
            second = engine.submit(clip[2:4])
            out = engine.collect(first)
            third = engine.submit(clip[4:6])
            outs[devices] = out + engine.collect(second) + engine.collect(third)
        finally:
            engine.close()
    assert_equal(outs["replicate:cpu,cpu"], outs[None], "switch")


def test_split_compiles_each_step_as_one_graph(bundles, clip):
    # Dynamo traces every step with fullgraph=True (a graph break is an error), run without
    # Inductor: the side device's LLLite step included.
    bundle = bundles("mllm-edit")
    kw = dict(batch_size=3, refresh=1, lllite_refresh=1, fast_encoder=True)
    ref = run(bundle, clip, **kw)
    engine = open_engine(bundle, EngineSettings(devices="cpu,cpu", mode="compile", compile_backend="eager", **kw),
                         STYLE)
    try:
        out = engine.process(clip)
        assert engine.mode == "compile" and engine.report.compile_s > 0
    finally:
        engine.close()
    assert_equal(out, ref, "compiled split")


# --------------------------------------------------------------------------------------------
# The pool's contract


def test_pool_tickets_metrics_and_errors(bundles, clip):
    bundle = bundles("sd-turbo")
    engine = open_engine(bundle, EngineSettings(devices="replicate:cpu,cpu", mode="eager", batch_size=3,
                                                profile=True), STYLE)
    try:
        assert isinstance(engine, EnginePool) and engine.SLOTS == 4
        tickets = [engine.submit(clip[i:i + 3]) for i in range(0, N_FRAMES, 3)]
        assert [t.replica for t in tickets] == [0, 1, 0] and [t.index for t in tickets] == [0, 1, 2]
        with pytest.raises(EngineError, match="in the order"):
            engine.collect(tickets[1])
        engine.submit(clip[:1])
        with pytest.raises(EngineError, match="collect the oldest"):
            engine.submit(clip[:1])
        got = [engine.collect(t) for t in tickets]
        assert [len(g) for g in got] == [3, 3, 1]
        assert engine.collect(tickets[0]) is got[0]  # an old ticket keeps its frames
        report = engine.report.as_dict()
        assert [(d["devices"], d["batches"], d["frames"]) for d in report["per_device"]] == [
            (["cpu"], 2, 4), (["cpu"], 2, 4)]  # batches 0, 2 and 1, 3 (the last of one frame)
        per = engine.stage_times(tickets)["per_device"]
        assert [p["batches"] for p in per] == [2, 1]
    finally:
        engine.close()
    engine.close()  # idempotent
    assert engine.report.as_dict()["per_device"][1]["frames"] == 4 and not engine.engines  # kept; engines let go
    with pytest.raises(EngineError, match="closed"):
        engine.submit(clip[:1])


def test_device_list_goes_through_open_engine(bundles):
    with pytest.raises(EngineError, match="open_engine"):
        StreamEngine(bundles("sd-turbo"), EngineSettings(devices="cpu,cpu"))
    # A list of one device is today's engine.
    engine = open_engine(bundles("sd-turbo"), EngineSettings(devices="cpu", mode="eager"), STYLE)
    try:
        assert type(engine) is StreamEngine and not engine.split
    finally:
        engine.close()


def test_split_places_each_component_on_its_device():
    # The meta device stands in for the side GPU: each parameter says where it went.
    bundle = tiny_bundle("mllm-edit")
    place_split(bundle, "meta", "cpu")

    def where(module):
        return {p.device.type for p in module.parameters()}

    assert where(bundle.vae.encoder) == {"meta"} and where(bundle.vae.decoder) == {"cpu"}
    assert where(bundle.qwen) == {"meta"} and where(bundle.unet) == {"cpu"}
    for name in bundle.lllite.names():
        adapter = bundle.lllite[name]
        assert where(adapter.conditioning1) == {"meta"}
        assert where(adapter.down) | where(adapter.mid) | where(adapter.up) == {"cpu"}
    assert bundle.device == torch.device("cpu")
    clip_bundle = tiny_bundle("sd-turbo")
    place_split(clip_bundle, "meta", "cpu")
    assert where(clip_bundle.text_encoder) == {"meta"} and where(clip_bundle.unet) == {"cpu"}


# --------------------------------------------------------------------------------------------
# The backend and the CLI


def test_backend_with_devices_equals_one_device(bundles, clip):
    from stylecam.core.styles import Style

    style = Style("ai-test", "diffusion", params=STYLE)
    outs = {}
    for devices in (None, "replicate:cpu,cpu"):
        backend = DiffusionBackend(bundles("mllm-edit"), "cpu", batch_size=2, devices=devices,
                                   engine={"refresh": 1, "lllite_refresh": 1})
        try:
            backend.set_style(style)
            outs[devices] = backend.process(clip)
        finally:
            backend.close()
    assert_equal(outs["replicate:cpu,cpu"], outs[None], "backend")
    with pytest.raises(BackendError, match="no cuda:7"):
        DiffusionBackend(bundles("sd-turbo"), devices="7")


@pytest.mark.parametrize("args, message", [
    (["--devices", "0,1", "--style", "oil"], "diffusion styles; style 'oil' uses the classic backend"),
    (["--devices", "0,1", "--style", "ai-oil", "--server", "http://127.0.0.1:9"], "with --server"),
    (["--devices", "gpu0", "--style", "ai-oil"], "'gpu0' is not a device"),
])
def test_cli_devices_errors_are_one_line(args, message, capsys):
    rc = cli.main(["run", "--frames", "1", *args])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_cli_runs_a_clip_on_two_logical_devices(tmp_path, capsys, offline):
    from stylecam.core.stylize.bundle import write_tiny_bundle

    folder = write_tiny_bundle("sd-turbo", tmp_path / "bundle")
    out = tmp_path / "out"
    rc = cli.main(["run", "--backend", "diffusion", "--bundle", str(folder), "--devices", "replicate:cpu,cpu",
                   "--source", f"file:{clip_path('carphone_pristine.mp4')}", "--sink", f"file:{out}/",
                   "--frames", "5", "--batch", "2"])
    assert rc == 0, capsys.readouterr().err
    assert len(list(out.glob("*.png"))) == 5


# --------------------------------------------------------------------------------------------
# CUDA


def _cuda_case(bundle_stack, devices, clip, mode="graphs"):
    bundle = tiny_bundle(bundle_stack).to("cuda:0")
    kw = dict(batch_size=3, refresh=1, lllite_refresh=1, mode=mode, profile=True)
    one = open_engine(bundle, EngineSettings(**kw), STYLE)
    try:
        ref = one.process(clip)
    finally:
        one.close()
    engine = open_engine(bundle, EngineSettings(devices=devices, **kw), STYLE)
    try:
        engine.start_profile()
        tickets, out = [], []
        for i in range(0, len(clip), 3):
            if len(tickets) == engine.SLOTS:
                t = tickets.pop(0)
                out += engine.collect(t)
            tickets.append(engine.submit(clip[i:i + 3]))
        done = list(tickets)
        for t in tickets:
            out += engine.collect(t)
        times = engine.stage_times(done)
    finally:
        engine.close()
    assert_equal(out, ref, f"{bundle_stack} on {devices}")
    return times


@pytest.mark.gpu
@pytest.mark.skipif(GPUS < 1, reason="needs a CUDA GPU")
@pytest.mark.parametrize("stack", ["sd-turbo", "mllm-edit"])
@pytest.mark.parametrize("devices", ["split:0,0", "replicate:0,0"])
def test_one_gpu_degenerate_case_equals_one_device(stack, devices, clip):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    _cuda_case(stack, devices, clip)


@pytest.mark.gpu
@pytest.mark.skipif(GPUS < 2, reason="needs two CUDA GPUs")
@pytest.mark.parametrize("stack", ["sd-turbo", "mllm-edit"])
@pytest.mark.parametrize("devices", ["0,1", "replicate:0,1"])
@pytest.mark.parametrize("mode", ["eager", "graphs"])
def test_two_gpus_equal_one(stack, devices, mode, clip):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    times = _cuda_case(stack, devices, clip, mode)
    if devices == "0,1":
        assert "peer_copy_ms" in times and "main_busy" in times


# --------------------------------------------------------------------------------------------
# The benchmark's rows


def test_bench_plans_rows_per_device_list_and_checks_them(bundles, clip, monkeypatch):
    from stylecam.core import bench_diffusion as bd

    monkeypatch.setenv("STYLECAM_BENCH_DEVICES", "split:0,1;replicate:0,1")
    monkeypatch.setenv("STYLECAM_BENCH_MODES", "stream,latency")
    monkeypatch.delenv("STYLECAM_BENCH_COMPILE", raising=False)
    rows = bd.plan("mllm-edit")
    several = [(r["mode"], r["batch"], r["extra"]["devices"]) for r in rows if "devices" in (r.get("extra") or {})]
    assert several == [("stream", 16, "split:0,1"), ("latency", 1, "split:0,1"),
                       ("stream", 16, "replicate:0,1"), ("latency", 1, "replicate:0,1")]
    assert rows[0] == dict(mode="stream", batch=16, refresh=4, inflight=2)  # one GPU's headline stays first
    monkeypatch.setenv("STYLECAM_BENCH_COMPILE", "1")
    compiled = [r for r in bd.plan("mllm-edit") if (r.get("extra") or {}).get("mode") == "compile"
                and "devices" in r["extra"]]
    assert len(compiled) == 4
    # The check row, here on two logical CPUs: the same pixels as one device.
    check = bd.device_equivalence(bundles("mllm-edit"), clip * 3, STYLE, "replicate:cpu,cpu", batch=2)
    assert check["frames"] == 8 and check["pixel_max"] <= 1 and check["pixel_mean_abs"] < 0.01


def test_bench_e2e_row_on_two_logical_devices(bundles, tmp_path, monkeypatch):
    import tempfile

    from stylecam.core.bench_e2e import run_e2e
    from stylecam.core.styles import Style

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    row = run_e2e(tiny_bundle("sd-turbo"), Style("ai-test", "diffusion", params=STYLE), batch=2, refresh=1,
                  frames_total=8, mode="eager", size=(96, 64), devices="replicate:cpu,cpu")
    assert row["devices"] == "replicate:cpu,cpu" and row["frames_out"] == 8 and row["passthrough"] == 0
    # Both engines ran (the warm-up run counts too), taking turns.
    counts = [d["batches"] for d in row["per_device"]]
    assert min(counts) > 0 and abs(counts[0] - counts[1]) <= 1
