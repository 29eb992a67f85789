"""One training step of the 1.3B DiT on a multi-shot batch: ours (sparse attention) vs diffusers (dense).

    python benchmarks/train_step.py                      # 15 s / 6-shot tier, ours and diffusers
    python benchmarks/train_step.py --tiers 15s,60s      # adds the 60 s / 13-shot tier (ours only)

Both models train the same way the trainer does on one GPU: fp32 master weights, bf16 autocast,
gradient checkpointing of every block, flow-matching MSE, gradient clipping and an AdamW step, on
random latents and text states (512 tokens). Ours also takes the trainer's speed options
(``training.config.ModelSection``): compiled blocks, and the last 20 blocks checkpointed selectively
(their self-attention output kept). Prints step time, tokens/s, peak memory and MFU, where
MFU = model FLOPs of one step (3 x forward, counting only the attention our sparse mask computes and
not the recomputation) / step time / the bf16 matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from holocine_model import ShotLayout, WanDiT, get_config, text_window_mask
from training.config import ModelSection

TEXT_LEN = 512
GLOBAL_TOKENS = 96
SHOT_TOKENS = 40


@dataclass
class Tier:
    name: str
    seconds: int
    shots: int
    height: int = 480
    width: int = 832

    @property
    def latent_frames(self) -> int:
        # 16 fps clips of 4k+1 frames: frame 0 alone, then 4 frames per latent frame.
        return (self.seconds * 16) // 4 + 1


TIERS = {"5s": Tier("5s", 5, 3), "15s": Tier("15s", 15, 6), "60s": Tier("60s", 60, 13)}


def matmul_peak_tflops(size: int = 8192, iters: int = 10) -> float:
    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize()
    return 2 * size**3 * iters / (time.perf_counter() - start) / 1e12


def make_batch(tier: Tier, channels: int, device: str) -> dict:
    frames = tier.latent_frames
    base, extra = divmod(frames, tier.shots)
    frames_per_shot = [base + (i < extra) for i in range(tier.shots)]
    shot_spans = [[GLOBAL_TOKENS + i * SHOT_TOKENS, GLOBAL_TOKENS + (i + 1) * SHOT_TOKENS] for i in range(tier.shots)]
    layout = ShotLayout.from_frames_per_shot([frames_per_shot], [[0, GLOBAL_TOKENS]], [shot_spans])
    gen = torch.Generator(device=device).manual_seed(0)
    shape = (1, channels, frames, tier.height // 8, tier.width // 8)
    return {
        "x0": torch.randn(shape, device=device, generator=gen),
        "noise": torch.randn(shape, device=device, generator=gen),
        "sigma": torch.full((1,), 0.7, device=device),
        "text": torch.randn(1, TEXT_LEN, 4096, device=device, generator=gen),
        "layout": layout,
    }


def attention_flops(cfg, layout: ShotLayout, tokens_per_frame: int, text_len: int) -> float:
    """FLOPs of QK^T and PV in one forward of one sample, only where the sparse masks attend."""
    shot_tokens = [n * tokens_per_frame for n in layout.frames_per_shot()[0]]
    first_frames = len(shot_tokens) * tokens_per_frame
    # A query sees its own shot plus the first latent frame of every other shot.
    per_block = sum(4 * n * (n + first_frames - tokens_per_frame) * cfg.dim for n in shot_tokens)
    windows = text_window_mask(layout, text_len).sum(-1)[0].tolist()
    per_block += sum(4 * n * w * cfg.dim for n, w in zip(shot_tokens, windows))
    return cfg.num_layers * per_block


def model_flops(cfg, layout: ShotLayout, tokens_per_frame: int, text_len: int) -> float:
    """FLOPs of one forward of one sample: matmuls plus the attention the sparse mask computes."""
    dim, tokens = cfg.dim, layout.num_frames * tokens_per_frame
    per_block = 2 * tokens * (6 * dim * dim + 2 * dim * cfg.ffn_dim)  # self q,k,v,o; cross q,o; FFN
    per_block += 2 * text_len * 2 * dim * dim  # cross-attention k, v of the text
    patch = 2 * tokens * dim * cfg.in_channels * 4 + 2 * tokens * dim * cfg.out_channels * 4
    text = 2 * text_len * (cfg.text_dim * dim + dim * dim)
    return cfg.num_layers * per_block + patch + text + attention_flops(cfg, layout, tokens_per_frame, text_len)


def dense_flops(cfg, tokens: int, text_len: int) -> float:
    """FLOPs of one forward of the dense model (full self- and cross-attention)."""
    dim = cfg.dim
    per_block = 2 * tokens * (6 * dim * dim + 2 * dim * cfg.ffn_dim) + 4 * text_len * dim * dim
    per_block += 4 * tokens * tokens * dim + 4 * tokens * text_len * dim
    return cfg.num_layers * per_block + 2 * tokens * dim * (cfg.in_channels + cfg.out_channels) * 4


def train_step(model, optimizer, batch: dict, forward) -> float:
    sigma = batch["sigma"].view(-1, 1, 1, 1, 1)
    x_t = (1 - sigma) * batch["x0"] + sigma * batch["noise"]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        pred = forward(model, x_t, batch["sigma"] * 1000, batch)
    loss = F.mse_loss(pred.float(), batch["noise"] - batch["x0"])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def ours_forward(model, x_t, t, batch):
    return model(x_t, t, batch["text"], None, batch["layout"])


def diffusers_forward(model, x_t, t, batch):
    return model(x_t, t, batch["text"], return_dict=False)[0]


def build_ours(preset: str, options: ModelSection) -> WanDiT:
    """The model as ``python -m training.train`` sets it up on one GPU with the same model options."""
    with torch.device("cuda"):
        model = WanDiT(get_config(preset, attention_backend="per_shot"))
    model.enable_gradient_checkpointing(options.gradient_checkpointing, options.selective_checkpoint_blocks)
    if options.compile:
        model.compile_blocks()
    return model


def build_diffusers(preset: str) -> torch.nn.Module:
    from diffusers import WanTransformer3DModel

    cfg = get_config(preset)
    with torch.device("cuda"):
        model = WanTransformer3DModel(
            patch_size=cfg.patch_size, num_attention_heads=cfg.num_heads, attention_head_dim=cfg.head_dim,
            in_channels=cfg.in_channels, out_channels=cfg.out_channels, text_dim=cfg.text_dim,
            freq_dim=cfg.freq_dim, ffn_dim=cfg.ffn_dim, num_layers=cfg.num_layers, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", eps=cfg.eps)
    model.enable_gradient_checkpointing()
    return model


def measure(name: str, model, forward, batch: dict, steps: int, warmup: int, fwd_flops: float, peak: float) -> dict:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    for _ in range(warmup):
        train_step(model, optimizer, batch, forward)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    losses = [train_step(model, optimizer, batch, forward) for _ in range(steps)]
    torch.cuda.synchronize()
    step_s = (time.perf_counter() - start) / steps
    tokens = batch["x0"].shape[2] * batch["x0"].shape[3] * batch["x0"].shape[4] // 4
    row = {
        "model": name, "step_s": round(step_s, 3), "tokens_per_s": round(tokens / step_s),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "model_tflop_per_step": round(3 * fwd_flops / 1e12, 1),
        "mfu": round(3 * fwd_flops / step_s / (peak * 1e12), 3), "loss": round(losses[-1], 4),
    }
    print(json.dumps(row), flush=True)
    return row


def release_memory() -> None:
    gc.collect()
    torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="wan2.1-1.3b")
    parser.add_argument("--tiers", default="15s")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-diffusers", action="store_true")
    parser.add_argument("--selective-checkpoint-blocks", type=int, default=ModelSection.selective_checkpoint_blocks,
                        help="blocks that keep their self-attention output (training's model.selective_checkpoint_blocks)")
    parser.add_argument("--no-compile", action="store_true", help="run the blocks eagerly (training's model.compile=false)")
    args = parser.parse_args()
    options = ModelSection(preset=args.preset, selective_checkpoint_blocks=args.selective_checkpoint_blocks,
                           compile=not args.no_compile)

    torch.backends.cuda.matmul.allow_tf32 = True
    peak = matmul_peak_tflops()
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                      "bf16_matmul_peak_tflops": round(peak, 1), "ours": {"compile": options.compile,
                      "selective_checkpoint_blocks": options.selective_checkpoint_blocks}}), flush=True)
    cfg = get_config(args.preset)
    for tier_name in args.tiers.split(","):
        tier = TIERS[tier_name]
        batch = make_batch(tier, cfg.in_channels, "cuda")
        tokens_per_frame = (tier.height // 16) * (tier.width // 16)
        print(json.dumps({"tier": tier.name, "shots": tier.shots, "latent_frames": tier.latent_frames,
                          "video_tokens": tier.latent_frames * tokens_per_frame}), flush=True)
        flops = model_flops(cfg, batch["layout"], tokens_per_frame, TEXT_LEN)
        model = build_ours(args.preset, options)
        measure(f"ours {tier.name}", model, ours_forward, batch, args.steps, args.warmup, flops, peak)
        del model
        release_memory()
        if not args.no_diffusers and tier.name == "15s":
            model = build_diffusers(args.preset)
            tokens = tier.latent_frames * tokens_per_frame
            row = measure(f"diffusers {tier.name}", model, diffusers_forward, batch, args.steps, args.warmup,
                          dense_flops(cfg, tokens, TEXT_LEN), peak)
            print(json.dumps({"note": "diffusers mfu counts its dense attention", "row": row["model"]}), flush=True)
            del model
            release_memory()


if __name__ == "__main__":
    main()
