"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in PyTorch.

The weights file ships in the PyPI package ``face_recognition_models``; it is
read directly, without dlib, by :mod:`mnd.models.dlib_format`, following
``shared/specs/dlib-face-model.md`` (the file format, section 1-4; the
network, section 3; the input scaling, section 5.1). Anything unexpected in
it raises :class:`DlibModelFormatError` naming the file and the byte offset.

:class:`DlibResNet` takes RGB chips in [0, 1] of shape (N, 3, 150, 150) and
returns the (N, 128) descriptors dlib computes (not L2-normalized; two faces
are the same person when the Euclidean distance is below 0.6). The input
layer's scaling ``(255 x - mean) / 256`` lives inside the module, so gradients
reach the image.

The face chip dlib feeds the network (``get_face_chip(img, shape, 150, 0.25)``)
is reproduced in :mod:`mnd.models.dlib_chips` by :func:`face_chip_details`
(the similarity fit from the 5 landmarks) and :func:`extract_chip` (bilinear
sampling, with dlib's ``pyramid_down<2>`` when the face is more than twice
the chip size). In
``quantize=True`` mode it emulates dlib's 8-bit arithmetic; otherwise it is
differentiable with respect to the photo. The names of both modules are
re-exported here, where they lived before.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mnd.models.dlib_chips import (  # re-exported: the face chip lived here
    ChipDetails,
    chip_box,
    chip_details_from_points,
    extract_chip,
    face_chip,
    face_chip_details,
    pyramid_down2,
    similarity_transform,
)
from mnd.models.dlib_format import (  # re-exported: the file reader lived here
    CHIP_SIZE,
    DESCRIPTOR_SIZE,
    FIVE_POINT_TEMPLATE,
    MODEL_FILENAME,
    MODEL_SHA256,
    MODEL_SIZE,
    SAME_PERSON_DISTANCE,
    DlibModelFormatError,
    DlibWeights,
    Layer,
    LayerKind,
    architecture,
    default_model_path,
    parse_dlib_model,
    read_dlib_model,
)

__all__ = [
    "CHIP_SIZE", "DESCRIPTOR_SIZE", "FIVE_POINT_TEMPLATE", "MODEL_FILENAME", "MODEL_SHA256", "MODEL_SIZE",
    "SAME_PERSON_DISTANCE", "Affine", "ChipDetails", "DlibModelFormatError", "DlibResNet", "DlibWeights", "Layer",
    "LayerKind", "Residual", "architecture", "chip_box", "chip_details_from_points", "default_model_path",
    "dlib_resnet_v1", "extract_chip", "face_chip", "face_chip_details", "parse_dlib_model", "pyramid_down2",
    "read_dlib_model", "similarity_transform", "zero_extend_add",
]

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

