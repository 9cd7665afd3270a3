"""Eq. (21): one descent step of Algorithm 1, with Adam's per-image moments by default."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

@dataclass(eq=False)
class Adam:
    """Adam's state for a batch of images, one row per image (Kingma and Ba, 2015).

    The step count ``t`` is kept per image, so images that joined at different
    times (the float32 continuation of ``amp``) each keep their own bias
    correction, and an image attacked alone or in a batch takes the same steps.
    """

    step_size: float
    """alpha of eq. (21), Adam's learning rate."""
    m: torch.Tensor
    v: torch.Tensor
    t: torch.Tensor
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    @classmethod
    def start(cls, like: torch.Tensor, step_size: float) -> Adam:
        """Zero moments and steps for a batch shaped like ``like``."""
        t = torch.zeros(like.shape[0], dtype=torch.long, device=like.device)
        return cls(step_size, torch.zeros_like(like), torch.zeros_like(like), t)

    def step(self, z: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """``z`` moved by one Adam step on ``grad``; updates the moments and step counts.

        ``z - alpha * (m / c1) / (sqrt(v) / sqrt(c2) + eps)`` with per-image bias
        corrections ``c1``, ``c2``, written as torch.optim.Adam writes it, in
        eight element-wise passes.
        """
        self.t += 1
        self.m.lerp_(grad, 1 - self.b1)
        self.v.mul_(self.b2).addcmul_(grad, grad, value=1 - self.b2)
        shape = (-1,) + (1,) * (z.ndim - 1)
        # bias corrections in float64 as Python would compute them, one per image
        c1 = (1 - self.b1 ** self.t.double()).view(shape)
        c2 = (1 - self.b2 ** self.t.double()).view(shape)
        denom = self.v.sqrt().div_(c2.sqrt().to(z.dtype)).add_(self.eps).mul_((c1 / self.step_size).to(z.dtype))
        return torch.addcdiv(z, self.m, denom, value=-1)

    def keep(self, rows: torch.Tensor) -> Adam:
        """The state of ``rows`` only."""
        return dataclasses.replace(self, m=self.m[rows], v=self.v[rows], t=self.t[rows])

    @staticmethod
    def joined(parts: list[Adam]) -> Adam:
        """The states of several batches, one after the other."""
        m, v, t = (torch.cat([getattr(p, k) for p in parts]) for k in ("m", "v", "t"))
        return dataclasses.replace(parts[0], m=m, v=v, t=t)


def descent_step(z: torch.Tensor, grad: torch.Tensor, *, step_size: float, adam: Adam | None = None) -> torch.Tensor:
    """Eq. (21), ``Z^{t+1} = Z^t - alpha * dL(Z^t, X) / dZ^t``, projected onto [0, 1].

    With ``adam`` (the default, ``optimizer="adam"``) the step is Adam's,
    ``alpha * m_hat / (sqrt(v_hat) + eps)`` with per-image moments of the
    gradient, instead of ``alpha * grad``: eq. (21) read literally
    (``optimizer="gd"``, no ``adam``) barely moves an 8-bit image at the
    paper's alpha = 1e-4 (book/reading-notes.md, section 2). Algorithm 1
    projects into the feasible space once, at the end; this projects every
    step, so Z stays in [0, 1].

    Args:
        z: (N, C, H, W) the iterate Z^t.
        grad: (N, C, H, W) the gradient of eq. (1) at Z^t (eq. 20).
        step_size: alpha.
        adam: Adam's state for these images, updated in place; None for plain
            gradient descent.

    Returns:
        Z^{t+1} in [0, 1].

    >>> descent_step(torch.full((1, 1, 1, 2), 0.5), torch.tensor([[[[1.0, -1.0]]]]), step_size=0.25)
    tensor([[[[0.2500, 0.7500]]]])
    """
    with torch.no_grad():
        moved = adam.step(z, grad) if adam is not None else z - step_size * grad
        return moved.clamp_(0, 1)
