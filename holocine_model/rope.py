"""3D rotary position embedding of the Wan DiT.

Each head's channels are split into (t, h, w) groups of ``d - 4*(d//6)``, ``2*(d//6)``, ``2*(d//6)``
channels; consecutive channel pairs are rotated by ``position * theta**(-2i/n)`` of their axis.
"""

from __future__ import annotations

import torch


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Channels of a head given to the (t, h, w) axes, as in Wan and diffusers."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def _axis_angles(length: int, channels: int, theta: float, device: torch.device | None) -> torch.Tensor:
    freqs = theta ** (-torch.arange(0, channels, 2, dtype=torch.float64, device=device) / channels)
    return torch.arange(length, dtype=torch.float64, device=device)[:, None] * freqs[None, :]


def rope_cos_sin(
    grid: tuple[int, int, int], head_dim: int, theta: float = 10000.0, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of shape [F*H*W, head_dim // 2] (fp32) for a token grid in (f, h, w) order.

    Angles are computed in float64 as Wan does, so large positions keep their precision.
    """
    f, h, w = grid
    dt, dh, dw = rope_split(head_dim)
    at = _axis_angles(f, dt, theta, device)[:, None, None, :].expand(f, h, w, -1)
    ah = _axis_angles(h, dh, theta, device)[None, :, None, :].expand(f, h, w, -1)
    aw = _axis_angles(w, dw, theta, device)[None, None, :, :].expand(f, h, w, -1)
    angles = torch.cat([at, ah, aw], dim=-1).reshape(f * h * w, head_dim // 2)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i+1) of ``x`` [B, S, heads, head_dim]; computed in fp32."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)
    return out.type_as(x)
