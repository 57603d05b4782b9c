"""Losses of PETGEN's adversarial phase: relativistic GAN, detector attack, and the MMD
terms that keep a written post near the user's recent and same-context posts."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gaussian_mmd(x: torch.Tensor, y: torch.Tensor, y_mask: torch.Tensor, *, kernels: int = 5,
                 multiplier: float = 2.0) -> torch.Tensor:
    """Squared MMD between one generated representation per user and each user's set of
    reference representations, with a sum of ``kernels`` Gaussian kernels whose
    bandwidths are the mean pairwise squared distance of the user's points times
    ``multiplier**k`` for k centred on 0 (PETGEN: 5 kernels, multiplier 2).

    ``x [B, D]``, ``y [B, M, D]``, ``y_mask [B, M]`` (users with no reference give 0).
    Returns ``[B]``.
    """
    pts = torch.cat([x.unsqueeze(1), y], dim=1)                         # [B, 1+M, D]
    mask = torch.cat([torch.ones_like(y_mask[:, :1]), y_mask], dim=1).to(pts.dtype)
    d2 = torch.cdist(pts, pts).pow(2)                                   # [B, 1+M, 1+M]
    pair = mask.unsqueeze(2) * mask.unsqueeze(1)
    n = mask.sum(1)
    bandwidth = (d2 * pair).sum((1, 2)) / (n * n - n).clamp(min=1)      # mean off-diagonal distance
    bandwidth = bandwidth.detach().clamp(min=1e-6)
    offsets = torch.arange(kernels, dtype=pts.dtype, device=pts.device) - kernels // 2
    scales = bandwidth[:, None] * multiplier ** offsets[None, :]        # [B, K]
    k = torch.exp(-d2.unsqueeze(-1) / scales[:, None, None, :]).sum(-1)  # [B, 1+M, 1+M]
    m = y_mask.to(pts.dtype).sum(1)
    yy = (k[:, 1:, 1:] * pair[:, 1:, 1:]).sum((1, 2)) / (m * m).clamp(min=1)
    xy = (k[:, 0, 1:] * y_mask.to(pts.dtype)).sum(1) / m.clamp(min=1)
    xx = k[:, 0, 0]
    return torch.where(m > 0, xx - 2 * xy + yy, torch.zeros_like(xx))


def relativistic_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """RSGAN discriminator loss: real should look more real than fake."""
    return F.binary_cross_entropy_with_logits(real - fake, torch.ones_like(real))


def relativistic_g_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """RSGAN generator loss: fake should look more real than real."""
    return F.binary_cross_entropy_with_logits(fake - real, torch.ones_like(fake))
