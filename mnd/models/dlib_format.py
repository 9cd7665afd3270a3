"""dlib's face-recognition model file (``dlib_face_recognition_resnet_model_v1.dat``), read without dlib.

The weights file ships in the PyPI package ``face_recognition_models``; it is
read here directly, following ``shared/specs/dlib-face-model.md`` (the file
format, section 1-4; the network, section 3). The parser walks the known
architecture (:func:`architecture`) and accounts for every byte: anything
unexpected (a truncated file, a renamed record, a wrong size, trailing bytes)
raises :class:`DlibModelFormatError` naming the file and the byte offset.
:mod:`mnd.models.dlib_resnet` builds the network from what it returns.

>>> spec = architecture()
>>> sum(1 for layer in spec if layer.kind == "con"), spec[-1].kind
(29, 'fc')
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from mnd.errors import ModelUnavailableError

MODEL_FILENAME = "dlib_face_recognition_resnet_model_v1.dat"
MODEL_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
MODEL_SIZE = 22_466_066
CHIP_SIZE = 150
DESCRIPTOR_SIZE = 128
SAME_PERSON_DISTANCE = 0.6

# dlib's 5-point face template (shape_predictor_5_face_landmarks order), unit square.
FIVE_POINT_TEMPLATE = (
    (0.8595674595992, 0.2134981538014),
    (0.6460604764104, 0.2289674387677),
    (0.1205750620789, 0.2137274526848),
    (0.3340850613712, 0.2290642403242),
    (0.4901123135679, 0.6277975316475),
)


class DlibModelFormatError(ModelUnavailableError):
    """The dlib model file is not the expected one (checksum, truncation, layout)."""


# --- architecture ------------------------------------------------------------

LayerKind = Literal["con", "affine", "relu", "max_pool", "avg_pool", "add_prev", "tag", "skip", "fc"]


@dataclass(frozen=True)
class Layer:
    """One record of the serialized network, in stream (input-side first) order.

    Attributes:
        kind: record kind.
        channels: input channels (``con``, ``affine``, ``fc``), else 0.
        filters: output channels (``con``) or outputs (``fc``), else 0.
        kernel: kernel side (``con``, pools; 0 means the whole input), else 0.
        stride: stride (``con``, pools), else 0.
    """

    kind: LayerKind
    channels: int = 0
    filters: int = 0
    kernel: int = 0
    stride: int = 0


def _block(channels: int, filters: int, stride: int) -> list[Layer]:
    """conv(3, stride) -> affine -> relu -> conv(3, 1) -> affine."""
    return [
        Layer("con", channels, filters, 3, stride),
        Layer("affine", filters),
        Layer("relu"),
        Layer("con", filters, filters, 3, 1),
        Layer("affine", filters),
    ]


def architecture() -> list[Layer]:
    """The 130 layer records of the file after the input layer, input side first (spec section 3)."""
    layers = [Layer("con", 3, 32, 7, 2), Layer("affine", 32), Layer("relu"), Layer("max_pool", 0, 0, 3, 2)]
    channels = 32
    stages = [(32, 3, False), (64, 3, True), (128, 2, True), (256, 2, True), (256, 0, True)]
    for filters, repeats, down in stages:
        if down:
            layers += [Layer("tag"), *_block(channels, filters, 2), Layer("tag"), Layer("skip")]
            layers += [Layer("avg_pool", 0, 0, 2, 2), Layer("add_prev"), Layer("relu")]
            channels = filters
        for _ in range(repeats):
            layers += [Layer("tag"), *_block(channels, filters, 1), Layer("add_prev"), Layer("relu")]
    layers += [Layer("avg_pool", 0, 0, 0, 1), Layer("fc", 256, DESCRIPTOR_SIZE)]
    return layers


# --- primitive reader --------------------------------------------------------


class _Reader:
    """Sequential reader of dlib's serialization primitives (spec section 1)."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.path = path
        self.pos = 0

    def fail(self, problem: str, at: int | None = None) -> DlibModelFormatError:
        """An error naming the file and the byte offset."""
        return DlibModelFormatError(f"{self.path}: byte {self.pos if at is None else at}: {problem}")

    def take(self, count: int, what: str) -> bytes:
        end = self.pos + count
        if end > len(self.data):
            raise self.fail(f"file ends while reading {what} ({count} bytes needed, {len(self.data) - self.pos} left)")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def integer(self, what: str) -> int:
        start = self.pos
        control = self.take(1, what)[0]
        size = control & 0x0F
        if control & 0x70 or not 1 <= size <= 8:
            raise self.fail(f"bad integer control byte 0x{control:02x} for {what}", start)
        value = int.from_bytes(self.take(size, what), "little")
        return -value if control & 0x80 else value

    def expect_int(self, expected: int, what: str) -> None:
        start = self.pos
        value = self.integer(what)
        if value != expected:
            raise self.fail(f"{what} is {value}, expected {expected}", start)

    def boolean(self, what: str) -> bool:
        start = self.pos
        byte = self.take(1, what)
        if byte not in (b"0", b"1"):
            raise self.fail(f"{what}: expected '0' or '1', found 0x{byte[0]:02x}", start)
        return byte == b"1"

    def expect_string(self, expected: str, what: str) -> None:
        start = self.pos
        length = self.integer(f"length of {what}")
        if length < 0 or length > 256:
            raise self.fail(f"{what}: implausible string length {length}, expected {expected!r}", start)
        raw = self.take(length, what)
        if raw != expected.encode("ascii"):
            raise self.fail(f"{what}: found {raw!r}, expected {expected!r}", start)

    def real(self, what: str) -> float:
        start = self.pos
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise self.fail(f"{what}: legacy ASCII float encoding is not supported", start)
        mantissa = self.integer(f"mantissa of {what}")
        exponent = self.integer(f"exponent of {what}")
        if exponent in (32000, 32001, 32002):
            return (math.inf, -math.inf, math.nan)[exponent - 32000]
        try:
            return math.ldexp(float(mantissa), exponent)
        except OverflowError:
            raise self.fail(f"{what}: float {mantissa}*2^{exponent} overflows", start) from None

    def dims(self, version: int, what: str) -> tuple[int, int, int, int]:
        self.expect_int(version, f"version of {what}")
        start = self.pos
        shape = tuple(self.integer(f"dimension of {what}") for _ in range(4))
        if min(shape) < 0:
            raise self.fail(f"{what}: negative dimension in {shape}", start)
        return shape  # type: ignore[return-value]

    def tensor(self, expected: tuple[int, int, int, int], what: str) -> np.ndarray:
        start = self.pos
        shape = self.dims(2, what)
        if shape != expected:
            raise self.fail(f"{what} has shape {shape}, expected {expected}", start)
        count = int(np.prod(shape))
        raw = self.take(4 * count, f"{count} float32 values of {what}")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)

    def alias(self, expected: tuple[int, int, int, int], what: str) -> None:
        start = self.pos
        shape = self.dims(1, what)
        if shape != expected:
            raise self.fail(f"{what} has shape {shape}, expected {expected}", start)


# --- file walk ---------------------------------------------------------------


@dataclass(frozen=True)
class DlibWeights:
    """Everything the network needs from the file, as float32 arrays.

    Attributes:
        path: the file that was read.
        input_mean: per-channel R, G, B means subtracted by the input layer (0..255 scale).
        convs: (weight (N, C, k, k), bias (N,)) per convolution, input side first.
        affines: (gamma (C,), beta (C,)) per affine layer, input side first.
        fc: Linear weight (128, 256) (the transpose of dlib's input-major layout).
        margin: the metric loss margin (training only).
        distance_threshold: same-person threshold stored in the loss record (0.6).
    """

    path: Path
    input_mean: tuple[float, float, float]
    convs: tuple[tuple[np.ndarray, np.ndarray], ...]
    affines: tuple[tuple[np.ndarray, np.ndarray], ...]
    fc: np.ndarray
    margin: float
    distance_threshold: float


def _read_wrapper_trailer(reader: _Reader, name: str, innermost: bool) -> None:
    """Three bools and three empty tensors after a layer payload (spec 2.2 / 2.3)."""
    for flag in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
        reader.boolean(f"{flag} of {name}")
    last = "grad_final" if innermost else "params_grad"
    for buffer in ("x_grad", "cached_output", last):
        reader.tensor((0, 0, 0, 0), f"{buffer} of {name} (must be empty)")
    if innermost:
        reader.expect_int(1, f"sample_expansion_factor of {name}")


def _read_multipliers(reader: _Reader, name: str) -> None:
    for field in ("learning_rate_multiplier", "weight_decay_multiplier", "bias_lr_multiplier", "bias_wd_multiplier"):
        value = reader.real(f"{field} of {name}")
        if not math.isfinite(value):
            raise reader.fail(f"{field} of {name} is {value}")


def _read_con(reader: _Reader, layer: Layer, name: str) -> tuple[np.ndarray, np.ndarray]:
    n, c, k, s = layer.filters, layer.channels, layer.kernel, layer.stride
    pad = k // 2 if s == 1 else 0
    reader.expect_string("con_4", f"kind of {name}")
    params = reader.tensor((n * c * k * k + n, 1, 1, 1), f"params of {name}").reshape(-1)
    for field, value in (("num_filters", n), ("nr", k), ("nc", k), ("stride_y", s), ("stride_x", s)):
        reader.expect_int(value, f"{field} of {name}")
    reader.expect_int(pad, f"padding_y of {name}")
    reader.expect_int(pad, f"padding_x of {name}")
    reader.alias((n, c, k, k), f"filters alias of {name}")
    reader.alias((1, n, 1, 1), f"biases alias of {name}")
    _read_multipliers(reader, name)
    return params[: n * c * k * k].reshape(n, c, k, k).copy(), params[n * c * k * k :].copy()


def _read_affine(reader: _Reader, layer: Layer, name: str) -> tuple[np.ndarray, np.ndarray]:
    c = layer.channels
    reader.expect_string("affine_", f"kind of {name}")
    params = reader.tensor((2 * c, 1, 1, 1), f"params of {name}").reshape(-1)
    reader.alias((1, c, 1, 1), f"gamma alias of {name}")
    reader.alias((1, c, 1, 1), f"beta alias of {name}")
    reader.expect_int(0, f"mode of {name} (0 = per-channel)")
    return params[:c].copy(), params[c:].copy()


def _read_pool(reader: _Reader, layer: Layer, name: str) -> None:
    reader.expect_string(f"{layer.kind}_2", f"kind of {name}")
    for field, value in (("nr", layer.kernel), ("nc", layer.kernel), ("stride_y", layer.stride),
                         ("stride_x", layer.stride), ("padding_y", 0), ("padding_x", 0)):
        reader.expect_int(value, f"{field} of {name}")


def _read_fc(reader: _Reader, layer: Layer, name: str) -> np.ndarray:
    inputs, outputs = layer.channels, layer.filters
    reader.expect_string("fc_2", f"kind of {name}")
    reader.expect_int(outputs, f"num_outputs of {name}")
    reader.expect_int(inputs, f"num_inputs of {name}")
    weights = reader.tensor((inputs, outputs, 1, 1), f"params of {name}").reshape(inputs, outputs)
    reader.alias((inputs, outputs, 1, 1), f"weights alias of {name}")
    reader.alias((0, 0, 0, 0), f"biases alias of {name}")
    reader.expect_int(1, f"bias_mode of {name} (1 = no bias)")
    _read_multipliers(reader, name)
    return np.ascontiguousarray(weights.T)


def parse_dlib_model(data: bytes, path: Path) -> DlibWeights:
    """Decode the bytes of ``dlib_face_recognition_resnet_model_v1.dat`` (spec sections 1-4).

    Raises:
        DlibModelFormatError: anything that does not match the expected layout,
            with the file name and byte offset.
    """
    reader = _Reader(data, path)
    layers = architecture()
    reader.expect_int(1, "version of the loss_metric wrapper")
    reader.expect_string("loss_metric_2", "kind of the loss layer")
    margin = reader.real("margin of the loss layer")
    threshold = reader.real("distance threshold of the loss layer")
    for index in range(len(layers) - 1, -1, -1):
        layer = layers[index]
        expected = 1 if layer.kind in ("tag", "skip") else (3 if index == 0 else 2)
        reader.expect_int(expected, f"version of the wrapper of layer {index} ({layer.kind})")
    reader.expect_string("input_rgb_image_sized", "kind of the input layer")
    mean = tuple(reader.real(f"avg_{c} of the input layer") for c in ("red", "green", "blue"))
    reader.expect_int(CHIP_SIZE, "nr of the input layer")
    reader.expect_int(CHIP_SIZE, "nc of the input layer")
    convs, affines, fc = [], [], None
    for index, layer in enumerate(layers):
        name = f"layer {index} ({layer.kind})"
        if layer.kind in ("tag", "skip"):
            continue
        if layer.kind == "con":
            convs.append(_read_con(reader, layer, name))
        elif layer.kind == "affine":
            affines.append(_read_affine(reader, layer, name))
        elif layer.kind in ("max_pool", "avg_pool"):
            _read_pool(reader, layer, name)
        elif layer.kind == "fc":
            fc = _read_fc(reader, layer, name)
        else:  # relu, add_prev: no fields
            reader.expect_string({"relu": "relu_", "add_prev": "add_prev_"}[layer.kind], f"kind of {name}")
        _read_wrapper_trailer(reader, name, innermost=index == 0)
    if reader.pos != len(data):
        raise reader.fail(f"{len(data) - reader.pos} unexpected trailing bytes after the last record")
    if fc is None:  # unreachable with the fixed architecture; kept for type checkers
        raise reader.fail("no fc layer found")
    return DlibWeights(
        path=path,
        input_mean=tuple(float(np.float32(m)) for m in mean),  # type: ignore[arg-type]
        convs=tuple(convs),
        affines=tuple(affines),
        fc=fc,
        margin=float(np.float32(margin)),
        distance_threshold=float(np.float32(threshold)),
    )


def default_model_path() -> Path:
    """Where ``face_recognition_models`` installed the weights file.

    The package's own ``face_recognition_model_location()`` needs
    ``pkg_resources``, which recent setuptools no longer provides, so the
    package folder is located without importing it.

    Raises:
        ModelUnavailableError: the package is not installed.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            "dlib_resnet_v1 needs the package face_recognition_models==0.3.0 (pip install it)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "models" / MODEL_FILENAME


def read_dlib_model(path: str | Path | None = None, *, verify: bool = True) -> DlibWeights:
    """Read and check the weights file (cached per path, size and mtime).

    Args:
        path: the ``.dat`` file; default: the one in ``face_recognition_models``.
        verify: check the SHA-256 of the spec first; ``False`` lets altered
            copies reach the parser's own checks.

    Raises:
        ModelUnavailableError: the file does not exist.
        DlibModelFormatError: checksum mismatch or unexpected layout.
    """
    path = Path(path) if path is not None else default_model_path()
    try:
        stat = path.stat()
    except OSError:
        raise ModelUnavailableError(f"{path}: dlib face model file not found") from None
    return _read_cached(path.resolve(), verify, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_cached(path: Path, verify: bool, size: int, mtime_ns: int) -> DlibWeights:
    data = path.read_bytes()
    if verify:
        digest = hashlib.sha256(data).hexdigest()
        if digest != MODEL_SHA256:
            raise DlibModelFormatError(
                f"{path}: SHA-256 {digest} ({len(data)} bytes) differs from the expected {MODEL_SHA256} "
                f"({MODEL_SIZE} bytes); the file is altered or another model (pass verify=False to parse it anyway)"
            )
    return parse_dlib_model(data, path)
