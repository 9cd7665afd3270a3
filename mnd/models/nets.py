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


class Ensemble(nn.Module):
    """Several classifiers attacked as one surrogate: ``forward`` returns the mean of their logits.

    The mean is taken over logits, not over each member's eq. (3)/(4) loss:
    the loss of :mod:`mnd.core.losses` is then applied to one logit vector, so
    MND and every anchor (torchattacks' included) accept an ensemble as a
    single model, and the gradient of any function of the logits that is linear
    in them (the margin of a class pair, a logit) is the mean of the members'
    gradients. Logit averaging is also the ensemble that transferred best in
    Liu et al. (2017) and Dong et al. (2018, MI-FGSM). Success is judged per
    member (:meth:`member_logits`; :func:`mnd.core.attack.judged_logits`): an
    image fools the ensemble only when it fools every member.

    All members must share the input size and the classes (ImageNet's 1000).

    >>> a, b = nn.Linear(2, 3, bias=False), nn.Linear(2, 3, bias=False)
    >>> e = Ensemble([a, b]); x = torch.ones(1, 2)
    >>> bool(torch.allclose(e(x), (a(x) + b(x)) / 2)), tuple(e.member_logits(x).shape)
    (True, (1, 2, 3))
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least two members, got {len(members)}")
        self.members = nn.ModuleList(members)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, M, classes): each member's logits, member ``m`` in column ``m``."""
        return torch.stack([m(x) for m in self.members], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.members[0](x)
        for m in self.members[1:]:
            out = out + m(x)
        return out / len(self.members)
