"""Context parallelism for the DiT, DeepSpeed-Ulysses style.

The ranks of a context-parallel group hold the same sample and each computes the blocks for one
contiguous chunk of its video tokens. Everything per token (norms, modulation, projections, RoPE,
the FFN, window cross-attention against the whole prompt) runs on the chunk. Self-attention needs
every token: an all-to-all turns the chunks of all heads into all tokens of ``heads / size`` heads,
the attention backend runs unchanged on those heads (per-shot and sparse masks see the whole
clip), and a second all-to-all turns the result back into chunks. The head's output is gathered
at the end, so the model returns what it returns on one rank.

Gradients: every rank of the group computes the same loss on the gathered output, so the group's
objective counts that loss ``size`` times. The gather's backward sums the ranks' gradients, and
each rank's parameter gradients come from its chunk only; averaging them over the group's ranks
(what FSDP2 does over a mesh that includes the group) gives exactly one process's gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist

Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def _all_to_all(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """Send ``x[j]`` to rank j and receive rank j's piece into ``out[j]`` (dim 0 = group size)."""
    x = x.contiguous()
    out = torch.empty_like(x)
    dist.all_to_all_single(out, x, group=group)
    return out


def _sequence_to_heads(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """[B, S/n, H, D] chunks of all heads -> [B, S, H/n, D] all tokens of this rank's heads."""
    n = dist.get_world_size(group)
    batch, chunk, heads, dim = x.shape
    pieces = x.reshape(batch, chunk, n, heads // n, dim).permute(2, 0, 1, 3, 4)  # [n, B, S/n, H/n, D]
    received = _all_to_all(pieces, group)  # received[j]: rank j's chunk, my heads
    return received.permute(1, 0, 2, 3, 4).reshape(batch, n * chunk, heads // n, dim)


def _heads_to_sequence(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """The inverse of :func:`_sequence_to_heads`: [B, S, H/n, D] -> [B, S/n, H, D]."""
    n = dist.get_world_size(group)
    batch, tokens, heads, dim = x.shape
    pieces = x.reshape(batch, n, tokens // n, heads, dim).permute(1, 0, 2, 3, 4)  # [n, B, S/n, H/n, D]
    received = _all_to_all(pieces, group)  # received[j]: my chunk, rank j's heads
    return received.permute(1, 2, 0, 3, 4).reshape(batch, tokens // n, n * heads, dim)


class _Redistribute(torch.autograd.Function):
    """One of the two all-to-alls (``to_heads`` picks which); its gradient is the other."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup, to_heads: bool) -> torch.Tensor:
        ctx.group, ctx.to_heads = group, to_heads
        return (_sequence_to_heads if to_heads else _heads_to_sequence)(x, group)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return (_heads_to_sequence if ctx.to_heads else _sequence_to_heads)(grad, ctx.group), None, None


class _GatherSequence(torch.autograd.Function):
    """All ranks' chunks along dim 1; backward sums every rank's gradient and keeps this chunk's."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        pieces = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(pieces, x.contiguous(), group=group)
        return torch.cat(pieces, dim=1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        rank, n = dist.get_rank(ctx.group), dist.get_world_size(ctx.group)
        return grad.chunk(n, dim=1)[rank].contiguous(), None


@dataclass(frozen=True)
class ContextParallel:
    """A process group whose ranks share one sample and split its video tokens."""

    group: dist.ProcessGroup

    @property
    def size(self) -> int:
        return dist.get_world_size(self.group)

    @property
    def rank(self) -> int:
        return dist.get_rank(self.group)

    def check(self, tokens: int, heads: int) -> None:
        if tokens % self.size or heads % self.size:
            raise ValueError(f"context parallel over {self.size} ranks needs video tokens ({tokens}) and "
                             f"attention heads ({heads}) that it divides")

    def chunk(self, x: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """This rank's chunk of a tensor every rank holds whole (autograd: the other chunks get no gradient)."""
        return x.chunk(self.size, dim=dim)[self.rank]

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """[B, S/n, ...] chunks -> [B, S, ...] on every rank."""
        return _GatherSequence.apply(x, self.group)

    def attend(self, attend: Attend) -> Attend:
        """``attend`` over all tokens of ``heads / size`` heads, taking and returning this rank's chunk."""
        def attend_all_tokens(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            q, k, v = (_Redistribute.apply(t, self.group, True) for t in (q, k, v))
            return _Redistribute.apply(attend(q, k, v), self.group, False)

        return attend_all_tokens
