"""The neural styles' GPU tier, on the CPU: ``stylecam bench --backend neural`` gives rows with the
fields the GPU report reads and sane values on a short real run (runner, looped file, virtual
camera, null sink), and every step of the device path (:class:`DeviceSettings`: resize in,
half precision, channels-last, compile, guided filter and scale-up in torch) matches the host
path that the quality bars were measured on, on real frames of the bundled clip."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from stylecam.core import cli
from stylecam.core.bench import sample_frames
from stylecam.core.bench_neural import picture_style, summarize_rows
from stylecam.core.styles import load_styles, make_style
from stylecam.core.stylize import neural
from stylecam.core.stylize.neural import DeviceSettings, NeuralBackend, device_settings

pytest.importorskip("onnx")
pytestmark = pytest.mark.usefixtures("one_thread")

E2E_KEYS = ("fps", "latency_p50_ms", "latency_p95_ms", "cpu_loop_ms_per_frame", "cpu_capture_ms_per_frame",
            "frames_out", "paint_side", "paint_size", "batch", "device", "settings", "steady", "size", "setup_s",
            "virtualcam_sent", "machine")


def test_bench_rows_on_the_cpu(tmp_path, monkeypatch, capsys):
    """Three presets (built-in, blend, any picture), stabilizer off and on, each with its network
    twin, plus the device path as a settings variant with its own e2e row: every row measured,
    none failed, the values those of a real run."""
    frames = 6
    for key, value in {"SIZES": "320x180", "FRAMES": str(frames), "CALLS": "3",
                       "SETTINGS": json.dumps([{"on_device": True, "dtype": "bfloat16", "channels_last": True}]),
                       "SETTINGS_E2E": "1"}.items():
        monkeypatch.setenv(f"STYLECAM_BENCH_{key}", value)
    out = tmp_path / "rows.jsonl"
    assert cli.main(["bench", "--backend", "neural", "--json", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert not (tmp_path / "rows.jsonl.partial").exists()  # the whole run made it: no partial copy left
    assert all("error" not in r for r in rows), [r["error"] for r in rows if "error" in r]
    e2e = [r for r in rows if r["path"] == "e2e"]
    network = [r for r in rows if r["path"] == "network"]
    # 3 presets x (host network row + device network row); 3 x (off, on) + the variant's one e2e row.
    assert len(network) == 6 and len(e2e) == 7
    assert {r["preset_kind"] for r in e2e} == {"built-in", "blend", "picture"}
    assert sorted(r["steady"] for r in e2e if r["settings"] == "float32+host") == [False] * 3 + [True] * 3
    variant = [r for r in rows if r["settings"] == "bfloat16+channels_last+on_device"]
    assert sorted(r["path"] for r in variant) == ["e2e", "network", "network", "network"]
    for r in e2e:
        assert all(r.get(k) is not None for k in E2E_KEYS), r
        assert r["frames_out"] == frames and r["passthrough"] == 0 and r["backend_errors"] == 0
        assert r["size"] == "320x180" and r["device"] == "cpu" and r["batch"] == 1
        assert r["paint_side"] == 180 and r["paint_size"] == [320, 180]  # (240 > the frame's 180: full)
        assert 0 < r["latency_p50_ms"] <= r["latency_p95_ms"] < 30_000
        assert r["cpu_loop_ms_per_frame"] > 0 and r["cpu_capture_ms_per_frame"] > 0 and r["virtualcam_sent"] >= 1
        twin = next(n for n in network if (n["style"], n["settings"]) == (r["style"], r["settings"]))
        # The path a user runs does the network's work and more: never much faster than it.
        assert 0 < r["fps"] < 2.0 * twin["fps"], (r, twin)
    for r in network:
        assert r["fps"] > 0 and r["ms_p50"] <= r["ms_p95"] and r["calls"] == 3
    lines = summarize_rows(rows)
    assert len(lines) == 7 and all("% of the network's" in line for line in lines)
    assert "stylecam bench: neural-blend 320x180 painted at 180" in capsys.readouterr().err


def test_bench_refuses_an_unknown_preset(monkeypatch, capsys):
    monkeypatch.setenv("STYLECAM_BENCH_PRESETS", "neural-nope")
    assert cli.main(["bench", "--backend", "neural"]) != 0
    err = capsys.readouterr().err
    assert "unknown neural preset 'neural-nope'" in err and "neural-starry-blue" in err


def test_device_defaults():
    """The CPU keeps the measured path; CUDA gets half precision, channels-last and the device
    path, no compile (a first start must not wait for Inductor)."""
    assert device_settings("cpu") == DeviceSettings() and not DeviceSettings().on_device
    assert NeuralBackend(device="cpu").settings == DeviceSettings()
    cuda = device_settings("cuda")
    assert (cuda.dtype, cuda.channels_last, cuda.on_device, cuda.compile) == ("float16", True, True, None)
    assert device_settings("cuda", dtype="float32").dtype == "float32"
    with pytest.raises(ValueError, match="dtype must be one of"):
        DeviceSettings(dtype="int8")
    # The host waits for the GPU asleep unless told to spin (the A/B twin), and a row says which.
    assert cuda.host_wait == "sleep" and cuda.mix_bands
    assert cuda.describe() == "float16+channels_last+on_device"
    assert device_settings("cuda", host_wait="spin", mix_bands=False).describe() == \
        "float16+channels_last+whole_mix+spin+on_device"
    with pytest.raises(ValueError, match="host_wait must be one of sleep, spin"):
        DeviceSettings(host_wait="yield")


# ------------------------------------------------------------------------- the device steps


@pytest.fixture(scope="module")
def frame():
    return sample_frames((640, 360), 1)[0]


def t(img: np.ndarray) -> torch.Tensor:
    """(H, W[, C]) uint8 -> (1, C, H, W) float levels."""
    x = torch.from_numpy(img).float()
    return (x[None, None] if x.dim() == 2 else x.permute(2, 0, 1)[None]).contiguous()


def back(x: torch.Tensor) -> np.ndarray:
    return x[0].permute(1, 2, 0).squeeze(-1).numpy()


def test_grey_box_and_resizes_match_opencv(frame):
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    noise = np.random.default_rng(1).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    for img in (frame, noise):  # the same fixed-point rounding, every pixel
        assert np.array_equal(back(neural.grey_t(t(img))), cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
    f = grey.astype(np.float32) / 255.0
    for r in (1, 4, 13, 39):  # up to the radius at a 720 working side
        want = cv2.blur(f, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)
        assert np.abs(back(neural.box_t(t(f), r)) - want).max() < 1e-5, r
    for size, to in (((640, 360), (428, 240)), ((640, 360), (320, 180)), ((1280, 720), (428, 240))):
        img = frame if size == (640, 360) else sample_frames(size, 1)[0]
        got = back(neural.resize_t(t(img), to[1], to[0], "area"))
        d = np.abs(got - cv2.resize(img, to, interpolation=cv2.INTER_AREA))
        assert d.max() <= 1 and d.mean() < 0.2, (size, to, d.mean())
    small = cv2.resize(frame, (428, 240), interpolation=cv2.INTER_AREA)
    d = np.abs(back(neural.resize_t(t(small), 360, 640, "bicubic")) - cv2.resize(small, (640, 360),
                                                                                  interpolation=cv2.INTER_CUBIC))
    assert d.max() <= 1 and d.mean() < 0.01


def test_guided_filter_on_the_device_matches_the_host_one(frame):
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(frame, (428, 240), interpolation=cv2.INTER_AREA)
    gs = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    painted = cv2.applyColorMap(gs, cv2.COLORMAP_OCEAN)  # a picture unlike its guide
    for pic, g_small, radius in ((painted, gs, 13), (cv2.resize(painted, (640, 360)), grey, 39)):
        want = neural.guided_up(pic, g_small, grey, radius)
        got = back(neural.guided_up_t(t(pic), t(g_small), t(grey), radius))
        d = np.abs(got - want)
        assert d.max() <= 1 and d.mean() < 0.05, (radius, d.mean(), d.max())


def stream(settings: DeviceSettings | None, style, clip, steady: bool = True) -> np.ndarray:
    be = NeuralBackend(steady=steady, device="cpu", settings=settings)
    be.set_style(style)
    return np.stack(be.process(clip[:2]) + be.process(clip[2:])).astype(np.int16)


# (settings, mean bound, max bound) against the host float32 path; measured on this CPU: float32
# mean 0.003 max 1; float16 0.02 / 1; bfloat16 0.13 / 1 (bfloat16 keeps 8 bits of mantissa).
VARIANTS = [
    (DeviceSettings(on_device=True), 0.05, 2),
    (DeviceSettings(dtype="float16", channels_last=True, on_device=True), 0.1, 2),  # the CUDA default
    (DeviceSettings(dtype="bfloat16", channels_last=True, on_device=True), 0.3, 3),
    (DeviceSettings(channels_last=True, compile="eager", on_device=True), 0.05, 2),  # traced, one graph
]


@pytest.mark.parametrize("settings, mean, most", VARIANTS, ids=[v[0].describe() for v in VARIANTS])
def test_device_path_matches_the_host_path_on_the_cpu(settings, mean, most):
    """A steadied stream of real frames in batches, for a built-in style, a blend and any
    picture: the device path (here on the CPU) within a level or two of the host path."""
    clip = sample_frames((480, 272), 5)
    styles, _ = load_styles()
    for style in (styles["neural-starry-blue"], styles["neural-blend"], picture_style()):
        d = np.abs(stream(settings, style, clip) - stream(None, style, clip))
        assert d.mean() <= mean and d.max() <= most, (style.name, d.mean(), d.max())


def test_device_path_keeps_texture_and_working_side():
    """``texture = 1`` (the picture scaled up as painted: bicubic on the device) and a working
    side equal to the frame's (no resize in): as the host path, stabilizer off."""
    clip = sample_frames((480, 272), 2)
    for params in ({"style": "stained-glass", "texture": 1}, {"style": "charcoal", "size": 272}):
        style = make_style({"name": "t", "backend": "neural", "params": params})
        d = np.abs(stream(DeviceSettings(on_device=True), style, clip, steady=False) - stream(None, style, clip, False))
        # (texture = 1 shows the network's raw texture, which a level of input difference moves)
        assert d.mean() < 0.1 and np.percentile(d, 99) <= 1 and d.max() <= 4, (params, d.mean(), d.max())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_default_matches_the_cpu_path():
    """On a GPU: the CUDA defaults (float16, channels-last, device path) against the CPU's
    float32 host path, on a steadied stream of real frames."""
    clip = sample_frames((1280, 720), 5)
    styles, _ = load_styles()
    for style in (styles["neural-starry-blue"], picture_style()):
        be = NeuralBackend(device="cuda")
        assert be.settings == device_settings("cuda")
        be.set_style(style)
        got = np.stack(be.process(clip[:4]) + be.process(clip[4:])).astype(np.int16)
        d = np.abs(got - stream(None, style, clip))
        assert d.mean() <= 0.1 and d.max() <= 3, (style.name, d.mean(), d.max())


def steadied_by_hand(style, clip, batch: int) -> np.ndarray:
    """The host path as it was before the motion moved to threads: paint a batch, then look,
    measure the motion from the frame before and mix, one frame after the other, on this thread."""
    be = NeuralBackend(device="cpu", batch_size=batch)
    be.set_style(style)
    stab, prev, out = be.stabilizer, None, []
    for start in range(0, len(clip), batch):
        images = clip[start:start + batch]
        painted, small = be._paint_small(images)
        mix = (painted[0].shape[1], painted[0].shape[0])
        for image, picture, sm in zip(images, painted, small):
            view = stab.look(image, mix)
            steadied = stab.apply(picture, stab.motion(prev, view))
            prev = view
            out.append(be._finish(steadied, sm, image))
    be.close()
    return np.stack(out).astype(np.int16)


def test_the_motion_measured_in_threads_beside_the_network_changes_no_pixel(monkeypatch):
    """The stabilizer's look and motion run in worker threads while the network paints, and the
    mix of a large picture is cut into bands the threads share; the pictures are the same bits
    as measuring and mixing in order on one thread, on the host path and on the device path
    (here on the CPU), for a moving clip in batches of four."""
    clip = sample_frames((320, 180), 24)[::3]  # 8 frames, far enough apart to move
    # Bands from 64x36 pixels: the 320x180 painting is mixed in four (one per worker thread).
    monkeypatch.setattr(neural, "MIX_BAND_PIXELS", 64 * 36)
    style = load_styles()[0]["neural-starry-blue"]
    want = steadied_by_hand(style, clip, batch=4)
    plain = NeuralBackend(steady=False, device="cpu", batch_size=4)
    plain.set_style(style)
    still = np.stack(plain.process(clip[:4])).astype(np.int16)
    assert np.abs(want[:4] - still).mean() > 0.1  # the stabilizer does something here
    for on_device in (False, True):
        results = []
        for threads in (4, 1):
            settings = DeviceSettings(on_device=on_device, motion_threads=threads)
            be = NeuralBackend(device="cpu", settings=settings, batch_size=4)
            assert be.workers == threads
            be.set_style(style)
            results.append(np.stack(be.process(clip[:4]) + be.process(clip[4:])).astype(np.int16))
            be.close()
        assert np.array_equal(results[0], results[1]), on_device
        if not on_device:
            assert np.array_equal(results[0], want)
