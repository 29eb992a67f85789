"""Sparse inter-shot self-attention on the GPU: correctness of every backend, then speed.

Run on a CUDA machine from the repository root:

    PYTHONPATH=. python benchmarks/attention.py

1. Correctness: every backend (bf16) against the dense masked reference (fp32) on random layouts
   (1 to 13 shots, uneven lengths, a batch of two different layouts), clean and compat, outputs and
   gradients, as relative L2 errors; then two Wan2.1-1.3B blocks with each backend against the
   dense backend (outputs, parameter gradients, step time).
2. Speed at HoloCine's tiers at 480x832 (1560 tokens per latent frame), 12 heads of dim 128, bf16:
   forward + backward time of dense cuDNN SDPA over the same tokens and of each backend, the speedup
   over dense, the ideal speedup (1 / density of the sparse mask) and TFLOP/s on the work done
   (FlashAttention convention: forward 4 * pairs * head_dim * heads, backward 2.5x forward).

Prints figures; asserts nothing.

Measured 2026-11-21 on one NVIDIA H200, torch 2.11.0+cu130, cuDNN 9.19, no flash_attn package
(``flash`` ran on torch.nn.attention.varlen), ``--iters 10 --warmup 3``, fraction of the ideal speedup:
    5 s / 3 shots:   per_shot 0.98, flex 0.64, flash 0.59   (ideal 2.33x, dense 42.9 ms)
    15 s / 6 shots:  per_shot 0.98, flex 0.64, flash 0.60   (ideal 4.02x, dense 359.5 ms)
    60 s / 13 shots: per_shot 0.99, flex 0.65, flash 0.62   (ideal 7.89x, dense 5676.5 ms)
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from holocine_model import ShotLayout, ShotSelfAttention, WanDiT, get_config
from holocine_model.attention import flash_available

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
        ref = ShotSelfAttention(layout, hw, "dense", compat)(*ref_in)
        ref_grads = torch.autograd.grad(ref, ref_in, grad)
        for name in backends_on(device):
            ins = [t.to(torch.bfloat16).requires_grad_() for t in (q, k, v)]
            out = ShotSelfAttention(layout, hw, name, compat)(*ins)
            grads = torch.autograd.grad(out, ins, grad.to(torch.bfloat16))
            e_out = rel(out, ref)
            e_grad = max(rel(g, r) for g, r in zip(grads, ref_grads))
            worst = max(worst, e_out, e_grad)
            print(f"| {trial} | {compat} | {[len(x) for x in layouts]} | {name} | {e_out:.2e} | {e_grad:.2e} |")
    print(f"worst relative error: {worst:.2e} (bf16 rounding is ~4e-3)")


def median_ms(step, iters: int, warmup: int) -> float:
    """Median time of ``step()`` in ms, timed with CUDA events after ``warmup`` untimed calls."""
    times = []
    for i in range(warmup + iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(start.elapsed_time(end))
    return statistics.median(times)


def time_fwd_bwd(fn, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, iters: int, warmup: int) -> float:
    """Median forward + backward time of attention ``fn`` in ms."""
    grad = torch.randn_like(q)

    def step():
        for t in (q, k, v):
            t.grad = None
        fn(q, k, v).backward(grad)

    return median_ms(step, iters, warmup)


def check_model(device: torch.device, iters: int, warmup: int) -> None:
    """Wan2.1-1.3B blocks (2 of 30) at the 5 s tier with window cross-attention, bf16, gradient
    checkpointing: each backend's output and gradients vs the dense backend, and the step time."""
    cfg = get_config("wan2.1-1.3b", num_layers=2)
    torch.manual_seed(0)
    model = WanDiT(cfg).to(device).to_compute_dtype(torch.bfloat16)
    model.enable_gradient_checkpointing()
    spans = [[40 * i, 40 * (i + 1)] for i in range(1, 4)]
    layout = ShotLayout.from_frames_per_shot([even_split(21, 3)], global_spans=[[0, 40]], shot_spans=[spans])
    latents = torch.randn(1, 16, 21, 60, 104, device=device, dtype=torch.bfloat16)
    text = torch.randn(1, 512, 4096, device=device, dtype=torch.bfloat16)
    text_mask = (torch.arange(512, device=device) < 160)[None]
    t = torch.tensor([700.0], device=device)

    def step():
        model.zero_grad(set_to_none=True)
        out = model(latents, t, text, text_mask, layout)
        out.float().square().mean().backward()
        return out

    print(f"\n## Model check: 2 Wan2.1-1.3B blocks, 21 latent frames x {TOKENS_PER_FRAME} tokens, 3 shots, bf16, checkpointing")
    print("| backend | out rel err vs dense | grad rel err vs dense (max over params) | fwd+bwd ms |")
    print("|---|---|---|---|")
    ref_out = ref_grads = None
    for backend in ["dense", *backends_on(device)]:
        cfg.attention_backend = backend
        out = step()
        grads = [p.grad.float() for p in model.parameters()]
        if ref_out is None:
            ref_out, ref_grads = out, grads
        e_out = rel(out, ref_out)
        e_grad = max(rel(g, r) for g, r in zip(grads, ref_grads))
        print(f"| {backend} | {e_out:.2e} | {e_grad:.2e} | {median_ms(step, iters, warmup):.1f} |")


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
            attn = ShotSelfAttention(layout, TOKENS_PER_FRAME, backend)
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
    check_model(device, 3, 1)
    bench(device, args.iters, args.warmup, args.tiers.split(","))


if __name__ == "__main__":
    main()
