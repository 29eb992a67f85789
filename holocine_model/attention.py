"""Shot layout, window cross-attention and sparse inter-shot self-attention.

A multi-shot clip is a sequence of latent frames, each belonging to one shot; shots are contiguous
runs of latent frames (cuts fall on latent boundaries, see DESIGN.md). Video tokens are ordered
(frame, row, column), so a shot is a contiguous run of tokens and its first latent frame is the first
``tokens_per_frame`` tokens of that run.

Sparse inter-shot self-attention (clean definition, the default)
    A query in shot ``s`` attends to every token of shot ``s`` plus the tokens of the first latent
    frame of every other shot. With one shot this is plain full attention.

    ``holocine_compat``: HoloCine's released code (``attention_per_batch_with_shots``) concatenates
    the first frame of *every* shot to the query's own shot, so the query's own first frame is in the
    key set twice. Two identical keys get the softmax weight of one key with ``ln 2`` added to its
    score: compat mode is the clean mask plus ``ln 2`` on the scores of the query's own first frame
    (also with a single shot, where the released sparse path still duplicates it).

Window cross-attention (clean definition, the default)
    A video token in shot ``s`` attends to the text tokens of the global caption span and of shot
    ``s``'s span (spans are ``[start, end)`` token ranges); padding and other shots are hidden.
    Without text spans in the layout every token sees every text token, as in Wan.

    ``holocine_compat``: the released pipeline (``model_fn_wan_video``) fills ``mask[s0:s1+1]`` for
    spans whose ``s1`` is already exclusive, so each span also shows the token right after it, and it
    lets every video token see the "padding" ``[max_end + 1, L)`` where ``max_end`` is the largest
    span end over every span the prompt defines, also the spans of shots the video does not have. Compat mode reproduces that mask exactly (the released code uses a ``-1e4`` additive
    bias, which underflows to the same zero weight as our boolean mask).

Self-attention backends, all computing the same function (the dense one is the reference):
    ``dense``     one SDPA call with a [B, 1, S, S] mask (bias in compat mode). CPU reference.
    ``per_shot``  one SDPA call per shot over [shot tokens ∪ first frames of the other shots],
                  gathered contiguously, so cuDNN / flash kernels run unmasked at full speed.
    ``flex``      FlexAttention with a block mask (compiled on CUDA; forward only on CPU).
    ``flash``     one varlen flash-attention call over all shots of the batch (``flash_attn`` when
                  installed, else ``torch.nn.attention.varlen``); CUDA, fp16/bf16 only.
    ``auto``      ``per_shot``: fastest measured on H100/H200 (see benchmarks/attention.py).
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import ATTENTION_BACKENDS

LN2 = math.log(2.0)


@dataclass
class ShotLayout:
    """Shot structure of a batch.

    shot_ids:     [B, F] long, shot index of every latent frame: 0 for the first shot, increasing by
                  one at each cut (shots are contiguous runs of latent frames).
    global_spans: [B, 2] long, ``[start, end)`` text-token span of the global caption, or None.
    shot_spans:   [B, S_max, 2] long, ``[start, end)`` text-token span of each shot's caption, as many
                  rows as the prompt defines (at least the video's shots; padding rows ``[0, 0]``).
                  Rows past a sample's shot count are no shot's window; only compat mode reads them
                  (HoloCine's padding starts after the largest span end the prompt defines).
                  Given together with ``global_spans``.

    Keep layouts on the CPU: the backends plan their work from them on the host, once per forward.
    """

    shot_ids: torch.Tensor
    global_spans: torch.Tensor | None = None
    shot_spans: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self.shot_ids = torch.as_tensor(self.shot_ids, dtype=torch.long)
        if self.shot_ids.ndim != 2:
            raise ValueError(f"shot_ids must be [B, F], got {tuple(self.shot_ids.shape)}")
        if (self.global_spans is None) != (self.shot_spans is None):
            raise ValueError("global_spans and shot_spans must be given together")
        ids = self.shot_ids.cpu()
        steps = ids[:, 1:] - ids[:, :-1]
        if (ids[:, 0] != 0).any() or ((steps != 0) & (steps != 1)).any():
            raise ValueError("shot_ids must start at 0 and increase by 1 at each cut")
        if self.global_spans is not None:
            self.global_spans = torch.as_tensor(self.global_spans, dtype=torch.long)
            self.shot_spans = torch.as_tensor(self.shot_spans, dtype=torch.long)
            batch = ids.shape[0]
            if self.global_spans.shape != (batch, 2) or self.shot_spans.ndim != 3 or self.shot_spans.shape[0] != batch:
                raise ValueError("global_spans must be [B, 2] and shot_spans [B, S_max, 2]")
            if self.shot_spans.shape[1] < int(ids.max()) + 1:
                raise ValueError(f"shot_spans has {self.shot_spans.shape[1]} rows but there are {int(ids.max()) + 1} shots")

    @property
    def batch_size(self) -> int:
        return self.shot_ids.shape[0]

    @property
    def num_frames(self) -> int:
        return self.shot_ids.shape[1]

    @property
    def has_text_spans(self) -> bool:
        return self.global_spans is not None

    def frames_per_shot(self) -> list[list[int]]:
        """Latent frames of each shot, per sample."""
        return [torch.bincount(row).tolist() for row in self.shot_ids.cpu()]

    def without_text_spans(self) -> ShotLayout:
        """The same shots with full cross-attention (e.g. for an unconditional / negative prompt)."""
        return ShotLayout(self.shot_ids)

    @classmethod
    def from_frames_per_shot(
        cls,
        frames_per_shot: Sequence[Sequence[int]],
        global_spans: Sequence[Sequence[int]] | torch.Tensor | None = None,
        shot_spans: Sequence[Sequence[Sequence[int]]] | torch.Tensor | None = None,
    ) -> ShotLayout:
        """Layout from the latent-frame count of each shot, one list per sample (equal totals).

        ``shot_spans`` may be ragged lists; they are padded with empty spans.
        """
        ids = [torch.repeat_interleave(torch.arange(len(n)), torch.tensor(n)) for n in frames_per_shot]
        if len({len(row) for row in ids}) != 1:
            raise ValueError("all samples must have the same number of latent frames")
        if shot_spans is not None and not isinstance(shot_spans, torch.Tensor):
            rows = max(len(s) for s in shot_spans)
            shot_spans = torch.tensor([list(s) + [[0, 0]] * (rows - len(s)) for s in shot_spans], dtype=torch.long)
        return cls(torch.stack(ids), global_spans, shot_spans)

    @classmethod
    def from_cut_frames(cls, num_frames: int, cut_frames: Sequence[int]) -> ShotLayout:
        """Layout of one clip of ``num_frames = 4k+1`` video frames with hard cuts at ``cut_frames``.

        The Wan VAE encodes frame 0 alone, then 4 frames per latent frame, so a cut at frame ``f``
        (``f % 4 == 1``) starts latent frame ``(f - 1) // 4 + 1``.
        """
        if (num_frames - 1) % 4:
            raise ValueError(f"num_frames must be 4k+1, got {num_frames}")
        latent = (num_frames - 1) // 4 + 1
        ids = torch.zeros(latent, dtype=torch.long)
        for f in sorted(cut_frames):
            if f % 4 != 1:
                raise ValueError(f"cut at frame {f} is not on a latent boundary (f % 4 == 1)")
            ids[(f - 1) // 4 + 1:] += 1
        return cls(ids[None])


def text_window_mask(layout: ShotLayout, text_len: int, compat: bool = False) -> torch.Tensor:
    """[B, S_max, text_len] bool: the text tokens each shot's video tokens may attend to."""
    if not layout.has_text_spans:
        raise ValueError("layout has no text spans")
    batch, rows = layout.shot_spans.shape[:2]
    pos = torch.arange(text_len)
    gs, ge = layout.global_spans[:, 0, None, None], layout.global_spans[:, 1, None, None]
    ss, se = layout.shot_spans[..., 0, None], layout.shot_spans[..., 1, None]
    # The released code fills [start, end] inclusive although end is exclusive: one token past each span.
    extra = 1 if compat else 0
    mask = ((pos >= gs) & (pos < ge + extra)) | ((pos >= ss) & (pos < se + extra))
    if compat:
        # HoloCine takes max_end over every span the prompt defines, also those of shots the video
        # lacks (a 5-shot prompt over 3 shots): rows past the video's shots count here. Padding
        # rows are [0, 0] and never raise it.
        max_end = torch.maximum(layout.global_spans[:, 1], layout.shot_spans[..., 1].amax(1))
        mask |= (pos[None, :] >= (max_end + 1)[:, None])[:, None, :]
    return mask


def shot_self_attention_bias(
    layout: ShotLayout, tokens_per_frame: int, compat: bool = False, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Dense [B, 1, S, S] form of sparse inter-shot self-attention.

    Boolean (True = attend) in clean mode; in compat mode an additive float bias of ``dtype``
    (0, ``ln 2`` on the query's own first frame, ``-inf`` elsewhere).
    """
    shot = layout.shot_ids.repeat_interleave(tokens_per_frame, dim=1)
    first_frame = torch.zeros_like(layout.shot_ids, dtype=torch.bool)
    first_frame[:, 0] = True
    first_frame[:, 1:] = layout.shot_ids[:, 1:] != layout.shot_ids[:, :-1]
    first = first_frame.repeat_interleave(tokens_per_frame, dim=1)
    same = shot[:, :, None] == shot[:, None, :]
    allowed = (same | first[:, None, :])[:, None]
    if not compat:
        return allowed
    bias = torch.zeros(allowed.shape, dtype=dtype or torch.float32)
    bias.masked_fill_(~allowed, -math.inf)
    bias.masked_fill_((same & first[:, None, :])[:, None], LN2)
    return bias


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """SDPA on [B, S, H, D] tensors."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


def full_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Unmasked attention on [B, S, H, D] tensors (cuDNN first on CUDA)."""
    if q.is_cuda:
        with torch.nn.attention.sdpa_kernel(_CUDA_SDPA_ORDER, set_priority=True):
            return _sdpa(q, k, v)
    return _sdpa(q, k, v)


_CUDA_SDPA_ORDER = [
    torch.nn.attention.SDPBackend.CUDNN_ATTENTION,
    torch.nn.attention.SDPBackend.FLASH_ATTENTION,
    torch.nn.attention.SDPBackend.EFFICIENT_ATTENTION,
    torch.nn.attention.SDPBackend.MATH,
]


def _varlen_fn():
    try:
        from flash_attn import flash_attn_varlen_func

        return flash_attn_varlen_func
    except ImportError:
        pass
    try:
        from torch.nn.attention.varlen import varlen_attn

        return varlen_attn
    except ImportError:
        return None


def flash_available(device: torch.device) -> bool:
    return torch.device(device).type == "cuda" and _varlen_fn() is not None


@functools.cache
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


class ShotSelfAttention:
    """Sparse inter-shot self-attention for one batch layout.

    Built once per model forward (host-side bookkeeping, masks) and called by every block.
    """

    def __init__(
        self,
        layout: ShotLayout | None,
        tokens_per_frame: int,
        backend: str = "auto",
        compat: bool = False,
    ) -> None:
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"backend must be one of {ATTENTION_BACKENDS}, got {backend!r}")
        self.layout = layout
        self.tokens_per_frame = tokens_per_frame
        self.compat = compat
        self.backend = "per_shot" if backend == "auto" else backend
        frames = layout.frames_per_shot() if layout is not None else []
        self.shot_tokens = [[n * tokens_per_frame for n in row] for row in frames]
        # One shot without the compat duplicate is plain full attention: no mask, no gathering.
        self.is_full = layout is None or (not compat and all(len(row) == 1 for row in frames))
        self._cache: dict[object, object] = {}

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v: [B, S, H, D] (RoPE applied); returns [B, S, H, D]."""
        if self.is_full:
            return full_attention(q, k, v)
        return getattr(self, f"_{self.backend}")(q, k, v)

    # -- dense reference ----------------------------------------------------------------------
    def _dense(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        key = ("dense", q.device, q.dtype)
        if key not in self._cache:
            bias = shot_self_attention_bias(self.layout, self.tokens_per_frame, self.compat, q.dtype)
            self._cache[key] = bias.to(q.device)
        return _sdpa(q, k, v, self._cache[key])

    # -- gathered per-shot key sets ----------------------------------------------------------
    def _shot_kv(self, x: torch.Tensor, shot_tokens: list[int]) -> list[torch.Tensor]:
        """Key/value set of each shot: [shot tokens, first frames of the other shots] along dim 1.

        One split into (first frame, rest) pieces and one cat per shot: autograd then returns the
        gradient through a single cat instead of materialising a full-size gradient per slice.
        """
        hw = self.tokens_per_frame
        pieces = x.split([n for tokens in shot_tokens for n in (hw, tokens - hw)], dim=1)
        firsts, rests = pieces[0::2], pieces[1::2]
        kv = []
        for s in range(len(shot_tokens)):
            # compat: the released code appends every shot's first frame, its own one included.
            summary = [f for j, f in enumerate(firsts) if j != s or self.compat]
            kv.append(torch.cat([firsts[s], rests[s], *summary], dim=1))
        return kv

    def _groups(self) -> list[list[int]]:
        """Sample indices grouped by identical layout (each group runs as one batch)."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for b, row in enumerate(self.shot_tokens):
            groups.setdefault(tuple(row), []).append(b)
        return list(groups.values())

    def _per_shot(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        outs, order = [], []
        for group in self._groups():
            if len(group) == q.shape[0]:
                qg, kg, vg = q, k, v
            else:
                idx = torch.tensor(group, device=q.device)
                qg, kg, vg = q.index_select(0, idx), k.index_select(0, idx), v.index_select(0, idx)
            tokens = self.shot_tokens[group[0]]
            ks, vs = self._shot_kv(kg, tokens), self._shot_kv(vg, tokens)
            shot_out = [full_attention(qs, ks_, vs_) for qs, ks_, vs_ in zip(qg.split(tokens, dim=1), ks, vs)]
            outs.append(torch.cat(shot_out, dim=1))
            order.extend(group)
        out = torch.cat(outs, dim=0)
        if order != sorted(order):
            out = out.index_select(0, torch.tensor(order, device=q.device).argsort())
        return out

    # -- varlen flash ---------------------------------------------------------------------------
    def _flash(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        fn = _varlen_fn()
        if not q.is_cuda or fn is None or q.dtype not in (torch.float16, torch.bfloat16):
            raise RuntimeError("the flash backend needs CUDA, fp16/bf16 and flash_attn or torch.nn.attention.varlen")
        batch, seq, heads, dim = q.shape
        # Queries are already packed: shots are contiguous and in order within each sample.
        ks, vs, q_lens, kv_lens = [], [], [], []
        for b, tokens in enumerate(self.shot_tokens):
            ks += [t[0] for t in self._shot_kv(k[b:b + 1], tokens)]
            vs += [t[0] for t in self._shot_kv(v[b:b + 1], tokens)]
            q_lens += tokens
        kv_lens = [t.shape[0] for t in ks]
        key = ("flash", q.device)
        if key not in self._cache:
            self._cache[key] = tuple(
                torch.tensor([0, *lens], device=q.device).cumsum(0).to(torch.int32) for lens in (q_lens, kv_lens))
        cu_q, cu_k = self._cache[key]
        out = fn(q.reshape(batch * seq, heads, dim), torch.cat(ks), torch.cat(vs), cu_q, cu_k, max(q_lens), max(kv_lens))
        return out.reshape(batch, seq, heads, dim)

    # -- FlexAttention --------------------------------------------------------------------------
    def _flex(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        if not q.is_cuda and torch.is_grad_enabled() and q.requires_grad:
            raise RuntimeError("FlexAttention has no backward on CPU; use another backend for training on CPU")
        batch, seq = q.shape[:2]
        key = ("flex", q.device)
        if key not in self._cache:
            ids = self.layout.shot_ids.to(q.device)
            shot = ids.repeat_interleave(self.tokens_per_frame, dim=1)
            first_frame = torch.ones_like(ids, dtype=torch.bool)
            first_frame[:, 1:] = ids[:, 1:] != ids[:, :-1]
            first = first_frame.repeat_interleave(self.tokens_per_frame, dim=1)

            def mask_mod(b, h, q_idx, kv_idx):
                return (shot[b, q_idx] == shot[b, kv_idx]) | first[b, kv_idx]

            def compat_score(score, b, h, q_idx, kv_idx):
                own_first = (shot[b, q_idx] == shot[b, kv_idx]) & first[b, kv_idx]
                return score + torch.where(own_first, LN2, 0.0)

            block_mask = create_block_mask(mask_mod, batch, None, seq, seq, device=q.device, _compile=q.is_cuda)
            self._cache[key] = (block_mask, compat_score if self.compat else None)
        block_mask, score_mod = self._cache[key]
        args = (q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        if q.is_cuda:
            out = _compiled_flex()(*args, score_mod=score_mod, block_mask=block_mask)
        else:
            # Eager (unfused) FlexAttention is the CPU path on purpose: a reference for tests.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
                out = flex_attention(*args, score_mod=score_mod, block_mask=block_mask)
        return out.transpose(1, 2)


def _clip_runs(lengths: list[int], start: int, stop: int) -> list[int]:
    """How many tokens of each consecutive run of ``lengths`` fall in ``[start, stop)``."""
    bounds = [0, *itertools.accumulate(lengths)]
    return [max(0, min(b, stop) - max(a, start)) for a, b in zip(bounds, bounds[1:])]


class WindowCrossAttention:
    """Window cross-attention for one batch layout: each shot's tokens see their text window.

    ``queries`` is the ``[start, stop)`` of the video tokens the queries are, when they are a chunk
    of the clip (context parallelism); default: all of them.
    """

    def __init__(self, layout: ShotLayout | None, tokens_per_frame: int, text_len: int, compat: bool = False,
                 queries: tuple[int, int] | None = None) -> None:
        self.windows: list[list[torch.Tensor]] | None = None
        if layout is None or not layout.has_text_spans:
            return
        mask = text_window_mask(layout, text_len, compat)
        frames = layout.frames_per_shot()
        self.shot_tokens = [[n * tokens_per_frame for n in row] for row in frames]
        self.windows = [[mask[b, s].nonzero().flatten() for s in range(len(row))] for b, row in enumerate(frames)]
        if any(w.numel() == 0 for row in self.windows for w in row):
            raise ValueError("a shot sees no text token: empty global and shot spans")
        if queries is not None:
            # Keep the shots (and their windows) that have tokens in the chunk, clipped to it.
            clipped = [_clip_runs(row, *queries) for row in self.shot_tokens]
            self.windows = [[w for w, n in zip(ws, row) if n] for ws, row in zip(self.windows, clipped)]
            self.shot_tokens = [[n for n in row if n] for row in clipped]
        self._device_windows: dict[torch.device, list[list[torch.Tensor]]] = {}

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q: [B, S, H, D], k, v: [B, L, H, D]; returns [B, S, H, D]."""
        if self.windows is None:
            return full_attention(q, k, v)
        if q.device not in self._device_windows:
            self._device_windows[q.device] = [[w.to(q.device) for w in row] for row in self.windows]
        windows = self._device_windows[q.device]
        outs = []
        for b, tokens in enumerate(self.shot_tokens):
            pieces = q[b:b + 1].split(tokens, dim=1)
            outs.append(torch.cat([
                full_attention(qs, k[b:b + 1, w], v[b:b + 1, w]) for qs, w in zip(pieces, windows[b])
            ], dim=1))
        return torch.cat(outs, dim=0)
