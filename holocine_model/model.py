"""The Wan2.1/2.2 text-to-video DiT with HoloCine's shot-aware attention.

Parameter names follow the original Wan / DiffSynth / HoloCine checkpoints (``blocks.N.self_attn.q``,
``blocks.N.norm3`` = the cross-attention norm, ``head.modulation`` ...); checkpoint.py maps them to
and from diffusers' names. Numerics follow Wan: the timestep embedding, the six modulation chunks,
the layer norms and the gated residual adds run in fp32 whatever the parameter dtype, and the
sinusoidal timestep and RoPE angles are computed in float64.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .attention import ShotLayout, ShotSelfAttention, WindowCrossAttention
from .config import ModelConfig
from .rope import apply_rope, rope_cos_sin


def sinusoidal_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Wan's timestep embedding ``[cos(t w), sin(t w)]`` with ``w_i = 10000**(-i / (dim/2))``, in fp32."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=timesteps.device) / half)
    angles = timesteps.to(torch.float64)[..., None] * freqs
    return torch.cat([angles.cos(), angles.sin()], dim=-1).float()


# Tables depend only on the grid: computed once per (grid, device), not once per step.
_cached_rope = functools.lru_cache(maxsize=4)(rope_cos_sin)

# Parameters Wan keeps in fp32 when the model runs in bf16: the timestep MLPs and modulation tables
# (Wan computes them under fp32 autocast) and the affine cross-attention norm.
FP32_PARAMETERS = ("time_embedding", "time_projection", "modulation", "norm3")


class RMSNorm(nn.Module):
    """RMS norm over the whole projection (all heads), normalised in fp32 as in Wan."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def _layer_norm_fp32(x: torch.Tensor, eps: float, norm: nn.LayerNorm | None = None) -> torch.Tensor:
    """LayerNorm in fp32; ``norm`` supplies the affine parameters when it has them."""
    if norm is None:
        return F.layer_norm(x.float(), x.shape[-1:], eps=eps)
    return F.layer_norm(x.float(), x.shape[-1:], norm.weight.float(), norm.bias.float(), eps)


class Attention(nn.Module):
    """q/k/v/o projections with RMS norm of q and k across all heads (Wan's ``qk_norm``)."""

    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.o = nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)

    def qkv(self, x: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries from ``x``, keys and values from ``context``, as [B, S, heads, head_dim]."""
        heads = (self.num_heads, -1)
        return (self.norm_q(self.q(x)).unflatten(-1, heads), self.norm_k(self.k(context)).unflatten(-1, heads),
                self.v(context).unflatten(-1, heads))


class SelfAttention(Attention):
    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], attn: ShotSelfAttention) -> torch.Tensor:
        q, k, v = self.qkv(x, x)
        return self.o(attn(apply_rope(q, *rope), apply_rope(k, *rope), v).flatten(-2))


class CrossAttention(Attention):
    def forward(self, x: torch.Tensor, context: torch.Tensor, attn: WindowCrossAttention) -> torch.Tensor:
        return self.o(attn(*self.qkv(x, context)).flatten(-2))


class WanBlock(nn.Module):
    """Self-attention, cross-attention, FFN; self-attention and FFN are modulated by the timestep."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim = config.dim
        self.eps = config.eps
        self.self_attn = SelfAttention(dim, config.num_heads, config.eps)
        self.cross_attn = CrossAttention(dim, config.num_heads, config.eps)
        # norm1 / norm2 (before self-attention / FFN) have no parameters; norm3 (before cross-attention)
        # is affine. Names as in Wan; diffusers calls them norm1 / norm3 / norm2.
        self.norm3 = nn.LayerNorm(dim, eps=config.eps)
        self.ffn = nn.Sequential(nn.Linear(dim, config.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(config.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.randn(1, 6, dim) / dim**0.5)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        t_mod: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        self_attn: ShotSelfAttention,
        cross_attn: WindowCrossAttention,
    ) -> torch.Tensor:
        # t_mod: [B, 6, dim] or per token [B, S, 6, dim]; chunks are [B, 1, dim] or [B, S, dim], fp32.
        mod = self.modulation.float() + t_mod.float()
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = mod.unbind(-2) if mod.ndim == 4 else mod.split(1, dim=1)

        h = (_layer_norm_fp32(x, self.eps) * (1 + scale_sa) + shift_sa).type_as(x)
        x = (x.float() + self.self_attn(h, rope, self_attn).float() * gate_sa).type_as(x)

        x = x + self.cross_attn(_layer_norm_fp32(x, self.eps, self.norm3).type_as(x), context, cross_attn)

        h = (_layer_norm_fp32(x, self.eps) * (1 + scale_ff) + shift_ff).type_as(x)
        return (x.float() + self.ffn(h).float() * gate_ff).type_as(x)


class Head(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.eps = config.eps
        self.head = nn.Linear(config.dim, config.out_channels * math.prod(config.patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, config.dim) / config.dim**0.5)

    def forward(self, x: torch.Tensor, t_emb: torch.Tensor) -> torch.Tensor:
        # t_emb: [B, dim] or per token [B, S, dim]; shift and scale broadcast against x [B, S, dim].
        if t_emb.ndim == 2:
            shift, scale = (self.modulation.float() + t_emb.float()[:, None]).split(1, dim=1)
        else:
            shift, scale = (self.modulation.float() + t_emb.float()[:, :, None]).unbind(-2)
        return self.head((_layer_norm_fp32(x, self.eps) * (1 + scale) + shift).type_as(x))


class WanDiT(nn.Module):
    """Wan2.1/2.2 DiT with window cross-attention and sparse inter-shot self-attention.

    ``model(latents, timesteps, text_states, text_mask, layout)`` returns the flow prediction with the
    shape of ``latents``. Blocks live in ``self.blocks`` (an ``nn.ModuleList``) so FSDP2 can shard each.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.dim
        self.patch_embedding = nn.Conv3d(config.in_channels, dim, kernel_size=config.patch_size, stride=config.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(config.text_dim, dim), nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(config.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList([WanBlock(config) for _ in range(config.num_layers)])
        self.head = Head(config)
        self.gradient_checkpointing = False

    def forward(
        self,
        latents: torch.Tensor,
        timesteps: torch.Tensor,
        text_states: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        layout: ShotLayout | None = None,
    ) -> torch.Tensor:
        """Predict the flow velocity.

        latents:     [B, C, F, H, W].
        timesteps:   [B], or per token [B, F*H*W / prod(patch_size)] as Wan2.2 TI2V uses.
        text_states: [B, L, text_dim] umT5 states.
        text_mask:   [B, L], 1 for real tokens. Padding states are zeroed before the text embedding,
                     as Wan's text encoder wrapper does; which tokens are attended is decided by the
                     layout's text spans (all L tokens without spans, as in Wan).
        layout:      shot structure; None = one shot, plain Wan.
        """
        cfg = self.config
        batch, _, frames, height, width = latents.shape
        pt, ph, pw = cfg.patch_size
        grid = (frames // pt, height // ph, width // pw)
        tokens_per_frame = grid[1] * grid[2]
        if layout is not None and (layout.batch_size, layout.num_frames) != (batch, grid[0]):
            raise ValueError(f"layout is for {layout.batch_size} samples of {layout.num_frames} latent frames, "
                             f"latents have {batch} of {grid[0]}")

        x = self.patch_embedding(latents.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)

        # Timestep embedding in fp32 (Wan runs it under fp32 autocast).
        t_emb = self.time_embedding(sinusoidal_embedding(timesteps, cfg.freq_dim).to(self.time_embedding[0].weight.dtype))
        t_mod = self.time_projection(t_emb).unflatten(-1, (6, cfg.dim)).float()

        if text_mask is not None:
            text_states = text_states * text_mask[..., None].to(text_states.dtype)
        context = self.text_embedding(text_states.to(self.text_embedding[0].weight.dtype))

        rope = _cached_rope(grid, cfg.head_dim, cfg.rope_theta, x.device)
        self_attn = ShotSelfAttention(layout if cfg.sparse_self_attention else None, tokens_per_frame,
                                      cfg.attention_backend, cfg.holocine_compat)
        cross_attn = WindowCrossAttention(layout, tokens_per_frame, context.shape[1], cfg.holocine_compat)

        for block in self.blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, context, t_mod, rope, self_attn, cross_attn, use_reentrant=False)
            else:
                x = block(x, context, t_mod, rope, self_attn, cross_attn)

        x = self.head(x, t_emb)
        # [B, F*H*W, pt*ph*pw*C] -> [B, C, F*pt, H*ph, W*pw]
        x = x.reshape(batch, *grid, pt, ph, pw, cfg.out_channels)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(batch, cfg.out_channels, *(g * p for g, p in zip(grid, cfg.patch_size)))

    def to_compute_dtype(self, dtype: torch.dtype) -> WanDiT:
        """Cast to ``dtype`` (e.g. bf16) except ``FP32_PARAMETERS``, which stay fp32 as in Wan."""
        self.to(dtype)
        for name, param in self.named_parameters():
            if any(part in FP32_PARAMETERS for part in name.split(".")):
                param.data = param.data.float()
        return self

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.gradient_checkpointing = enabled
