"""Shot layouts, attention masks and the equivalence of the self-attention backends."""

import math
import random

import pytest
import torch
import torch.nn.functional as F

from holocine_model import ShotLayout, ShotSelfAttention, WindowCrossAttention, text_window_mask
from holocine_model.attention import flash_available

HW = 6  # tokens per latent frame in these tests


def random_layout(rng: random.Random, batch: int, frames: int, max_shots: int = 13) -> ShotLayout:
    rows = []
    for _ in range(batch):
        n = rng.randint(1, min(max_shots, frames))
        cuts = sorted(rng.sample(range(1, frames), n - 1))
        rows.append([b - a for a, b in zip([0, *cuts], [*cuts, frames])])
    return ShotLayout.from_frames_per_shot(rows)


def qkv(batch: int, seq: int, heads: int = 2, dim: int = 8, dtype=torch.float64):
    return [torch.randn(batch, seq, heads, dim, dtype=dtype, requires_grad=True) for _ in range(3)]


def sdpa(q, k, v, mask=None):
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask).transpose(1, 2)


def explicit_bias(frames_per_shot: list[list[int]], hw: int, compat: bool) -> torch.Tensor:
    """Reference mask written pair by pair from the definition (no vectorised tricks)."""
    seq = sum(frames_per_shot[0]) * hw
    bias = torch.full((len(frames_per_shot), 1, seq, seq), -math.inf, dtype=torch.float64)
    for b, fps in enumerate(frames_per_shot):
        starts = [sum(fps[:i]) * hw for i in range(len(fps))]
        shot_of = [s for s, n in enumerate(fps) for _ in range(n * hw)]
        for qi in range(seq):
            for ki in range(seq):
                own = shot_of[qi] == shot_of[ki]
                first = starts[shot_of[ki]] <= ki < starts[shot_of[ki]] + hw
                if own or first:
                    bias[b, 0, qi, ki] = math.log(2) if (compat and own and first) else 0.0
    return bias


def holocine_released_sparse(q, k, v, frames_per_shot: list[int], hw: int):
    """HoloCine's released ``attention_per_batch_with_shots`` for one sample, re-expressed with SDPA:
    keys of a shot = its own tokens followed by the first ``hw`` tokens of *every* shot."""
    cuts = [0]
    for n in frames_per_shot:
        cuts.append(cuts[-1] + n * hw)
    k_global = torch.cat([k[:, a:a + hw] for a in cuts[:-1]], dim=1)
    v_global = torch.cat([v[:, a:a + hw] for a in cuts[:-1]], dim=1)
    outs = [sdpa(q[:, a:b], torch.cat([k[:, a:b], k_global], 1), torch.cat([v[:, a:b], v_global], 1))
            for a, b in zip(cuts[:-1], cuts[1:])]
    return torch.cat(outs, dim=1)


# -- layout ------------------------------------------------------------------------------------

def test_layout_from_cut_frames_follows_vae_latent_grid():
    # 81 frames -> 21 latent frames; a cut at frame 37 starts latent 10, at 73 latent 19.
    layout = ShotLayout.from_cut_frames(81, [37, 73])
    assert layout.frames_per_shot() == [[10, 9, 2]]
    assert layout.shot_ids[0, 9] == 0 and layout.shot_ids[0, 10] == 1 and layout.shot_ids[0, 19] == 2
    with pytest.raises(ValueError, match="latent boundary"):
        ShotLayout.from_cut_frames(81, [36])


@pytest.mark.parametrize("ids", [[[1, 1, 2]], [[0, 2, 2]], [[0, 1, 0]]])
def test_layout_rejects_non_contiguous_shot_ids(ids):
    with pytest.raises(ValueError):
        ShotLayout(torch.tensor(ids))


def test_layout_requires_a_text_span_per_shot():
    with pytest.raises(ValueError, match="rows"):
        ShotLayout(torch.tensor([[0, 1, 2]]), torch.tensor([[0, 2]]), torch.tensor([[[2, 3], [3, 4]]]))


# -- masks -------------------------------------------------------------------------------------

@pytest.mark.parametrize("compat", [False, True])
def test_dense_backend_matches_pairwise_definition(compat):
    frames = [[2, 1, 3], [6]]
    layout = ShotLayout.from_frames_per_shot(frames)
    q, k, v = qkv(2, 6 * HW)
    out = ShotSelfAttention(layout, HW, "dense", compat)(q, k, v)
    torch.testing.assert_close(out, sdpa(q, k, v, explicit_bias(frames, HW, compat)))


def test_text_window_mask_clean_and_released_compat():
    # 16 tokens: global [0, 3), shot 0 [4, 7), shot 1 [7, 10); token 3 is a separator; 10.. padding.
    layout = ShotLayout(torch.tensor([[0, 1]]), torch.tensor([[0, 3]]), torch.tensor([[[4, 7], [7, 10]]]))
    clean = text_window_mask(layout, 16, compat=False)[0]
    assert clean[0].nonzero().flatten().tolist() == [0, 1, 2, 4, 5, 6]
    assert clean[1].nonzero().flatten().tolist() == [0, 1, 2, 7, 8, 9]
    compat = text_window_mask(layout, 16, compat=True)[0]
    # Released code: spans filled inclusively (one token past each end) and [max_end + 1, L) open.
    assert compat[0].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 14, 15]
    assert compat[1].nonzero().flatten().tolist() == [0, 1, 2, 3, 7, 8, 9, 10, 11, 12, 13, 14, 15]


def test_compat_padding_starts_after_every_span_the_prompt_defines():
    # Sample 0's video has one shot, its prompt two: HoloCine's max_end counts the second span (ends
    # at 8), so padding opens at 9, not after shot 0's span. Zero rows (collate filler) count for nothing.
    layout = ShotLayout(torch.tensor([[0, 0], [0, 1]]), torch.tensor([[0, 2], [0, 2]]),
                        torch.tensor([[[2, 4], [6, 8], [0, 0]], [[2, 4], [4, 6], [0, 0]]]))
    mask = text_window_mask(layout, 12, compat=True)
    assert mask[0, 0].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 9, 10, 11]
    assert mask[1, 0].nonzero().flatten().tolist() == [0, 1, 2, 3, 4, 7, 8, 9, 10, 11]
    # The clean mask never shows another shot's span or padding, whatever the prompt defines.
    assert text_window_mask(layout, 12)[0, 0].nonzero().flatten().tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("compat", [False, True])
def test_window_cross_attention_matches_masked_sdpa(compat):
    frames = [[2, 3], [4, 1]]
    layout = ShotLayout.from_frames_per_shot(frames, [[0, 3], [0, 2]], [[[3, 6], [6, 9]], [[2, 5], [5, 7]]])
    text_len = 12
    q = torch.randn(2, 5 * HW, 2, 8, dtype=torch.float64)
    k, v = (torch.randn(2, text_len, 2, 8, dtype=torch.float64) for _ in range(2))
    per_shot = text_window_mask(layout, text_len, compat)
    token_mask = torch.stack([per_shot[b, layout.shot_ids[b].repeat_interleave(HW)] for b in range(2)])[:, None]
    out = WindowCrossAttention(layout, HW, text_len, compat)(q, k, v)
    torch.testing.assert_close(out, sdpa(q, k, v, token_mask))


def test_cross_attention_without_text_spans_sees_every_token():
    layout = ShotLayout.from_frames_per_shot([[2, 3]])
    q, k, v = (torch.randn(1, n, 2, 8, dtype=torch.float64) for n in (5 * HW, 7, 7))
    torch.testing.assert_close(WindowCrossAttention(layout, HW, 7)(q, k, v), sdpa(q, k, v))


# -- backends ----------------------------------------------------------------------------------

@pytest.mark.parametrize("compat", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_per_shot_matches_dense_outputs_and_grads(seed, compat):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    frames = rng.randint(13, 16)
    # Batch of 3: two identical layouts and a different one exercises the grouping and reordering.
    first = random_layout(rng, 1, frames)
    other = random_layout(rng, 1, frames)
    fps = first.frames_per_shot() + other.frames_per_shot() + first.frames_per_shot()
    layout = ShotLayout.from_frames_per_shot(fps)
    q, k, v = qkv(3, frames * HW)
    grad = torch.randn(3, frames * HW, 2, 8, dtype=torch.float64)
    ref = ShotSelfAttention(layout, HW, "dense", compat)(q, k, v)
    ref_grads = torch.autograd.grad(ref, (q, k, v), grad)
    out = ShotSelfAttention(layout, HW, "per_shot", compat)(q, k, v)
    grads = torch.autograd.grad(out, (q, k, v), grad)
    torch.testing.assert_close(out, ref)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r)


def test_auto_is_per_shot_and_matches_dense_with_thirteen_shots():
    layout = ShotLayout.from_frames_per_shot([[1] * 6 + [2] * 7])
    attn = ShotSelfAttention(layout, HW, "auto")
    assert attn.backend == "per_shot"
    q, k, v = qkv(1, 20 * HW)
    torch.testing.assert_close(attn(q, k, v), ShotSelfAttention(layout, HW, "dense")(q, k, v))


@pytest.mark.parametrize("compat", [False, True])
def test_flex_forward_matches_dense(compat):
    # FlexAttention has no CPU backward, so only the forward is compared here; the GPU benchmark
    # compares gradients too.
    rng = random.Random(7)
    layout = random_layout(rng, 2, 12)
    q, k, v = (t.detach().float() for t in qkv(2, 12 * HW))
    with torch.no_grad():
        out = ShotSelfAttention(layout, HW, "flex", compat)(q, k, v)
    torch.testing.assert_close(out, ShotSelfAttention(layout, HW, "dense", compat)(q, k, v), atol=1e-5, rtol=1e-5)


def test_flex_refuses_cpu_backward_with_a_clear_error():
    layout = ShotLayout.from_frames_per_shot([[2, 2]])
    with pytest.raises(RuntimeError, match="no backward on CPU"):
        ShotSelfAttention(layout, HW, "flex")(*qkv(1, 4 * HW, dtype=torch.float32))


@pytest.mark.skipif(not flash_available(torch.device("cuda")) or not torch.cuda.is_available(),
                    reason="flash backend needs CUDA and flash_attn or torch.nn.attention.varlen (run benchmarks/attention.py on the GPU)")
def test_flash_matches_dense_on_gpu():
    layout = random_layout(random.Random(3), 2, 12)
    q, k, v = (t.detach().to("cuda", torch.bfloat16) for t in qkv(2, 12 * HW, dim=64))
    ref = ShotSelfAttention(layout, HW, "dense")(*(t.float() for t in (q, k, v)))
    torch.testing.assert_close(ShotSelfAttention(layout, HW, "flash")(q, k, v).float(), ref, atol=2e-2, rtol=2e-2)


def test_flash_refuses_cpu():
    layout = ShotLayout.from_frames_per_shot([[2, 2]])
    with pytest.raises(RuntimeError, match="needs CUDA"):
        ShotSelfAttention(layout, HW, "flash")(*qkv(1, 4 * HW))


# -- compat switch -----------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["dense", "per_shot"])
def test_compat_reproduces_released_holocine_sparse_attention(backend):
    fps = [3, 1, 2, 4]
    layout = ShotLayout.from_frames_per_shot([fps])
    q, k, v = qkv(1, 10 * HW)
    released = holocine_released_sparse(q, k, v, fps, HW)
    torch.testing.assert_close(ShotSelfAttention(layout, HW, backend, compat=True)(q, k, v), released)
    # The clean definition differs from it (by the ln 2 on the own first frame).
    assert not torch.allclose(ShotSelfAttention(layout, HW, backend, compat=False)(q, k, v), released)


def test_single_shot_clean_is_full_attention_but_compat_is_not():
    layout = ShotLayout.from_frames_per_shot([[5]])
    q, k, v = qkv(1, 5 * HW)
    clean = ShotSelfAttention(layout, HW, "per_shot")
    assert clean.is_full
    torch.testing.assert_close(clean(q, k, v), sdpa(q, k, v))
    compat = ShotSelfAttention(layout, HW, "per_shot", compat=True)(q, k, v)
    torch.testing.assert_close(compat, holocine_released_sparse(q, k, v, [5], HW))
    assert not torch.allclose(compat, sdpa(q, k, v))
