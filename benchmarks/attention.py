"""Sparse inter-shot self-attention on the GPU: correctness of every backend, then speed.

Run on a CUDA machine from the repository root:

    PYTHONPATH=. python benchmarks/attention.py

1. Correctness: every backend (bf16) against the dense masked reference (fp32) on random layouts
   (1 to 13 shots, uneven lengths, a batch of two different layouts), clean and compat, outputs and
   gradients, as relative L2 errors.
2. Speed at HoloCine's tiers at 480x832 (1560 tokens per latent frame), 12 heads of dim 128, bf16:
   forward + backward time of dense cuDNN SDPA over the same tokens and of each backend, the speedup
   over dense, the ideal speedup (1 / density of the sparse mask) and TFLOP/s on the work done
   (FlashAttention convention: forward 4 * pairs * head_dim * heads, backward 2.5x forward).

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from holocine_model.attention import ShotLayout, ShotSelfAttention, flash_available

TOKENS_PER_FRAME = 1560  # 480x832 -> 60x104 latent -> 30x52 patches
HEADS, HEAD_DIM = 12, 128
TIERS = [("5 s", 3, 21), ("15 s", 6, 61), ("60 s", 13, 241)]  # (name, shots, latent frames)
FWD_BWD_FLOP_FACTOR = 4 * 3.5  # per attended (query, key) pair per channel


def even_split(frames: int, shots: int) -> list[int]:
    base, extra = divmod(frames, shots)
    return [base + 1] * extra + [base] * (shots - extra)


def attended_pairs(frames_per_shot: list[int], hw: int) -> int:
    """(query, key) pairs of the clean sparse mask of one sample."""
    n = len(frames_per_shot)
    return sum(f * hw * (f * hw + (n - 1) * hw) for f in frames_per_shot)


def backends_on(device: torch.device) -> list[str]:
    names = ["per_shot", "flex"]
    if flash_available(device):
        names.append("flash")
    return names + ["auto"]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def check_correctness(device: torch.device, trials: int, seed: int) -> None:
    rng = random.Random(seed)
    hw, frames = 40, 24  # hw not a multiple of 16 or 128: blocks straddle frame boundaries
    print(f"\n## Correctness vs dense fp32 reference (bf16 inputs, {HEADS} heads x {HEAD_DIM}, {hw} tokens/frame, {frames} frames, batch 2)")
    print("| trial | compat | shots per sample | backend | out rel err | grad rel err (max of q,k,v) |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    for trial in range(trials):
        compat = trial % 2 == 1
        layouts = []
        for _ in range(2):
            n = rng.randint(1, 13)
            cuts = sorted(rng.sample(range(1, frames), n - 1))
            layouts.append([b - a for a, b in zip([0, *cuts], [*cuts, frames])])
        layout = ShotLayout.from_frames_per_shot(layouts)
        q, k, v = (torch.randn(2, frames * hw, HEADS, HEAD_DIM, device=device) for _ in range(3))
        grad = torch.randn_like(q)
        ref_in = [t.clone().requires_grad_() for t in (q, k, v)]
        ref = ShotSelfAttention(layout, hw, 2, "dense", compat)(*ref_in)
        ref_grads = torch.autograd.grad(ref, ref_in, grad)
        for name in backends_on(device):
            ins = [t.to(torch.bfloat16).requires_grad_() for t in (q, k, v)]
            out = ShotSelfAttention(layout, hw, 2, name, compat)(*ins)
            grads = torch.autograd.grad(out, ins, grad.to(torch.bfloat16))
            e_out = rel(out, ref)
            e_grad = max(rel(g, r) for g, r in zip(grads, ref_grads))
            worst = max(worst, e_out, e_grad)
            print(f"| {trial} | {compat} | {[len(x) for x in layouts]} | {name} | {e_out:.2e} | {e_grad:.2e} |")
    print(f"worst relative error: {worst:.2e} (bf16 rounding is ~4e-3)")


def time_fwd_bwd(fn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, iters: int, warmup: int) -> float:
    """Median forward + backward time in ms."""
    grad = torch.randn_like(q)
    times = []
    for i in range(warmup + iters):
        for t in (q, k, v):
            t.grad = None
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(q, k, v).backward(grad)
        end.record()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(start.elapsed_time(end))
    return statistics.median(times)


def dense_cudnn(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2)


def bench(device: torch.device, iters: int, warmup: int, tiers: list[str]) -> None:
    rows = []
    for name, shots, frames in TIERS:
        if name.replace(" ", "") not in tiers:
            continue
        fps = even_split(frames, shots)
        layout = ShotLayout.from_frames_per_shot([fps])
        seq = frames * TOKENS_PER_FRAME
        pairs = attended_pairs(fps, TOKENS_PER_FRAME)
        ideal = seq * seq / pairs
        q, k, v = (torch.randn(1, seq, HEADS, HEAD_DIM, device=device, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        flop = FWD_BWD_FLOP_FACTOR * HEAD_DIM * HEADS
        dense_ms = time_fwd_bwd(dense_cudnn, q, k, v, iters, warmup)
        rows.append((name, shots, frames, seq, "dense cuDNN", dense_ms, 1.0, 1.0, flop * seq * seq / dense_ms / 1e9))
        print(f"{name}: dense cuDNN {dense_ms:.1f} ms", file=sys.stderr, flush=True)
        for backend in backends_on(device):
            attn = ShotSelfAttention(layout, TOKENS_PER_FRAME, 1, backend)
            ms = time_fwd_bwd(attn, q, k, v, iters, warmup)
            rows.append((name, shots, frames, seq, backend, ms, dense_ms / ms, ideal, flop * pairs / ms / 1e9))
            print(f"{name}: {backend} {ms:.1f} ms", file=sys.stderr, flush=True)
        del q, k, v
        torch.cuda.empty_cache()

    print(f"\n## Sparse inter-shot self-attention, forward + backward, bf16, {HEADS} heads x {HEAD_DIM}, "
          f"{TOKENS_PER_FRAME} tokens per latent frame, {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    print("| tier | shots | latent frames | tokens | backend | ms | speedup vs dense | ideal (1/density) | of ideal | TFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, shots, frames, seq, backend, ms, speedup, ideal, tflops in rows:
        print(f"| {name} | {shots} | {frames} | {seq} | {backend} | {ms:.1f} | {speedup:.2f} | {ideal:.2f} | "
              f"{speedup / ideal:.2f} | {tflops:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--trials", type=int, default=4, help="random layouts in the correctness check")
    parser.add_argument("--tiers", default="5s,15s,60s")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs a CUDA GPU")
    device = torch.device("cuda")
    torch.manual_seed(args.seed)
    check_correctness(device, args.trials, args.seed)
    bench(device, args.iters, args.warmup, args.tiers.split(","))


if __name__ == "__main__":
    main()
