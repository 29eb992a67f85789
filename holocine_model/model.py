"""The Wan2.1/2.2 text-to-video DiT with HoloCine's shot-aware attention.

Parameter names follow the original Wan / DiffSynth / HoloCine checkpoints (``blocks.N.self_attn.q``,
``blocks.N.norm3`` = the cross-attention norm, ``head.modulation`` ...); checkpoint.py maps them to
and from diffusers' names. Numerics follow Wan: the timestep embedding, the six modulation chunks,
the layer norms and the gated residual adds run in fp32 whatever the parameter dtype, and the
sinusoidal timestep and RoPE angles are computed in float64.
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts, noop_context_fn

from .attention import ShotLayout, ShotSelfAttention, WindowCrossAttention
from .config import ModelConfig
from .context_parallel import Attend, ContextParallel
from .offload import offload_saved_tensors
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


def keeps_fp32(name: str) -> bool:
    """Whether the parameter called ``name`` is one of ``FP32_PARAMETERS``, whatever the model's dtype."""
    return any(part in FP32_PARAMETERS for part in name.split("."))


# Fused attention kernels (the ones the per_shot and dense backends reach through SDPA) whose outputs
# selective checkpointing keeps for self-attention.
_SDPA_OPS = frozenset({
    torch.ops.aten._scaled_dot_product_cudnn_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention.default,
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
})

# Set while self-attention kernels run (in the forward and in its recomputation, on whichever thread
# autograd recomputes on): cross-attention calls the same SDPA ops, and it is cheap to recompute.
_self_attention_running = threading.local()


def _keep_self_attention(ctx: object, op: object, *args: object, **kwargs: object) -> CheckpointPolicy:
    """Selective checkpointing policy: keep the self-attention kernels' outputs, recompute the rest."""
    if op in _SDPA_OPS and getattr(_self_attention_running, "value", False):
        return CheckpointPolicy.MUST_SAVE
    return CheckpointPolicy.PREFER_RECOMPUTE


def _keep_self_attention_context() -> tuple[object, object]:
    return create_selective_checkpoint_contexts(_keep_self_attention)


# Attention runs eagerly inside compiled blocks: the backends plan their work from the batch's shot
# layout on the host, and tracing them would specialise (and recompile) on every layout.
@torch.compiler.disable
def _self_attend(attn: Attend, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    _self_attention_running.value = True
    try:
        return attn(q, k, v)
    finally:
        _self_attention_running.value = False


@torch.compiler.disable
def _cross_attend(attn: WindowCrossAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return attn(q, k, v)


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


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:
    """``norm(x) * (1 + scale) + shift`` in fp32, returned in ``x``'s dtype."""
    return (_layer_norm_fp32(x, eps) * (1 + scale) + shift).type_as(x)


def _gated_add(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Wan's gated residual ``x + y * gate`` in fp32, returned in ``x``'s dtype."""
    return (x.float() + y.float() * gate).type_as(x)


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


class WanBlock(nn.Module):
    """Self-attention, cross-attention, FFN; self-attention and FFN are modulated by the timestep."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        dim = config.dim
        self.eps = config.eps
        self.self_attn = Attention(dim, config.num_heads, config.eps)
        self.cross_attn = Attention(dim, config.num_heads, config.eps)
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
        self_attn: Attend,
        cross_attn: WindowCrossAttention,
    ) -> torch.Tensor:
        # t_mod: [B, 6, dim] or per token [B, S, 6, dim]; chunks are [B, 1, dim] or [B, S, dim], fp32.
        mod = self.modulation.float() + t_mod.float()
        shift_sa, scale_sa, gate_sa, shift_ff, scale_ff, gate_ff = mod.unbind(-2) if mod.ndim == 4 else mod.split(1, dim=1)

        # The (eager) attention calls sit in this frame rather than in the attention modules: in a
        # compiled block the two graph breaks then split only this function, into three graphs, and
        # not each callee on the way to them as well.
        h = _modulate(x, shift_sa, scale_sa, self.eps)
        q, k, v = self.self_attn.qkv(h, h)
        out = _self_attend(self_attn, apply_rope(q, *rope), apply_rope(k, *rope), v)
        x = _gated_add(x, self.self_attn.o(out.flatten(-2)), gate_sa)

        h = _layer_norm_fp32(x, self.eps, self.norm3).type_as(x)
        out = _cross_attend(cross_attn, *self.cross_attn.qkv(h, context))
        x = x + self.cross_attn.o(out.flatten(-2))

        return _gated_add(x, self.ffn(_modulate(x, shift_ff, scale_ff, self.eps)), gate_ff)


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
        return self.head(_modulate(x, shift, scale, self.eps))


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
        self.selective_checkpoint_blocks = 0
        self.offload_checkpoints = False
        self.context_parallel: ContextParallel | None = None

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

        # Contiguous: every block then sees one layout (one compiled graph for all, not one for the first
        # block's transposed input), and an offloaded block input spans only its own elements.
        x = self.patch_embedding(latents.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2).contiguous()

        # Timestep embedding in fp32 (Wan runs it under fp32 autocast).
        t_emb = self.time_embedding(sinusoidal_embedding(timesteps, cfg.freq_dim).to(self.time_embedding[0].weight.dtype))
        t_mod = self.time_projection(t_emb).unflatten(-1, (6, cfg.dim)).float()

        if text_mask is not None:
            text_states = text_states * text_mask[..., None].to(text_states.dtype)
        context = self.text_embedding(text_states.to(self.text_embedding[0].weight.dtype))

        rope = _cached_rope(grid, cfg.head_dim, cfg.rope_theta, x.device)
        self_attn: Attend = ShotSelfAttention(layout if cfg.sparse_self_attention else None, tokens_per_frame,
                                              cfg.attention_backend, cfg.holocine_compat)
        queries = None
        cp = self.context_parallel
        if cp is not None:
            # From here to the head this rank holds one chunk of the tokens (context_parallel.py).
            cp.check(x.shape[1], cfg.num_heads)
            chunk = x.shape[1] // cp.size
            queries = (cp.rank * chunk, (cp.rank + 1) * chunk)
            x, rope = cp.chunk(x), tuple(cp.chunk(table, dim=0) for table in rope)
            if t_mod.ndim == 4:  # per-token timesteps
                t_mod, t_emb = cp.chunk(t_mod), cp.chunk(t_emb)
            self_attn = cp.attend(self_attn)
        cross_attn = WindowCrossAttention(layout, tokens_per_frame, context.shape[1], cfg.holocine_compat, queries)

        checkpointing = self.gradient_checkpointing and torch.is_grad_enabled()
        # What the checkpoints save for the backward is each block's inputs; offloading keeps those in
        # pinned host memory (the recomputation itself runs in the backward, outside this context).
        offload = self.offload_checkpoints and checkpointing
        with offload_saved_tensors() if offload else contextlib.nullcontext():
            for index, block in enumerate(self.blocks):
                args = (x, context, t_mod, rope, self_attn, cross_attn)
                if checkpointing:
                    x = checkpoint(block, *args, use_reentrant=False, context_fn=self._checkpoint_context(index))
                else:
                    x = block(*args)

        x = self.head(x, t_emb)
        if cp is not None:
            x = cp.gather(x)
        # [B, F*H*W, pt*ph*pw*C] -> [B, C, F*pt, H*ph, W*pw]
        x = x.reshape(batch, *grid, pt, ph, pw, cfg.out_channels)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(batch, cfg.out_channels, *(g * p for g, p in zip(grid, cfg.patch_size)))

    def enable_context_parallel(self, context_parallel: ContextParallel | None) -> None:
        """Split each clip's video tokens over the ranks of a group (None: every rank holds all)."""
        self.context_parallel = context_parallel

    def to_compute_dtype(self, dtype: torch.dtype) -> WanDiT:
        """Cast to ``dtype`` (e.g. bf16) except ``FP32_PARAMETERS``, which stay fp32 as in Wan."""
        self.to(dtype)
        for name, param in self.named_parameters():
            if keeps_fp32(name):
                param.data = param.data.float()
        return self

    def enable_gradient_checkpointing(self, enabled: bool = True, selective_blocks: int = 0, offload: bool = False) -> None:
        """Recompute each block in the backward pass instead of storing its activations.

        The last ``selective_blocks`` blocks (all, if the model has fewer) are checkpointed
        selectively: they keep their self-attention output (one [B, S, dim] tensor per block, plus a
        logsumexp) and recompute only the rest. Self-attention is the costliest part of a block to
        recompute on long multi-shot clips (per_shot and dense backends; the others are recomputed).

        ``offload`` keeps the blocks' inputs, which checkpointing still holds from the forward to the
        backward (one [B, S, dim] tensor per block), in host memory instead: a copy each way per block.
        """
        if selective_blocks < 0:
            raise ValueError(f"selective_blocks must be >= 0, got {selective_blocks}")
        self.gradient_checkpointing = enabled
        self.selective_checkpoint_blocks = selective_blocks
        self.offload_checkpoints = offload

    def _checkpoint_context(self, index: int) -> Callable[[], tuple[object, object]]:
        if index >= len(self.blocks) - self.selective_checkpoint_blocks:
            return _keep_self_attention_context
        return noop_context_fn

    def compile_blocks(self) -> None:
        """``torch.compile`` each block's forward, fusing its fp32 norms, modulation, RoPE and gated
        residuals around the matmuls. Attention stays eager; module hooks (FSDP2) and checkpointing
        stay outside the compiled code, which all blocks share (same shapes, parameters as inputs).
        """
        for block in self.blocks:
            block.forward = torch.compile(block.forward)
