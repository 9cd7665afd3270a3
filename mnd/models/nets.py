"""The contract every network of ``mnd`` follows, and the two helpers that keep it.

A network takes RGB images of shape (N, 3, H, W) in [0, 1] and returns logits
(or, for a face embedder, embeddings). Its input normalization lives inside
the module (:class:`Normalized`), so attacks (ours and torchattacks') see the
same contract and gradients reach the [0, 1] image. An attacked network is
frozen (:func:`freeze`): eval mode, no parameter gradients.

:data:`Task` names what a network's logits are over; it also selects which
betas of the hyper-parameter file an MND attack uses.

>>> net = Normalized(torch.nn.Identity(), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
>>> net(torch.ones(1, 3, 1, 1)).flatten().tolist()
[1.0, 1.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalized(nn.Module):
    """Wrap ``net`` so that it accepts [0, 1] images: ``net((scale * x - mean) / std)``.

    ``scale`` is 1 for the usual per-channel mean/std of [0, 1] images
    (ImageNet's); facenet-pytorch's fixed standardization works on 0..255
    values, ``(255 x - 127.5) / 128``, which is ``scale=255``, mean 127.5 and
    std 128 (kept in that form so the arithmetic is facenet-pytorch's own).

    Args:
        net: the network, taking normalized inputs.
        mean, std: per-channel values (one for each of the 3 channels).
        scale: what [0, 1] pixels are multiplied by first.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float], *, scale: float = 1.0) -> None:
        super().__init__()
        self.net = net
        self.scale = float(scale)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale != 1.0:
            x = x * self.scale
        return self.net((x - self.mean) / self.std)


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients (the attack only differentiates w.r.t. the input)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
