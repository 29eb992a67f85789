"""Fine-tune the shot-aware Wan DiT with flow matching.

    python -m training.train --config training/configs/tiny.yaml [key=value ...] [--resume]
    torchrun --nproc-per-node 8 -m training.train --config training/configs/wan2.1-1.3b.yaml data.shards=[...]
    python -m training.train --config ... --ray-workers 8        # the same loop under Ray Train

Reads top to bottom: set up the world, model, optimizer, data and encoders; restore a checkpoint;
then per step draw a batch, encode it (unless it comes from the latent cache), noise it, predict,
step the optimizer, log, and now and then validate and checkpoint; export safetensors at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch.distributed.tensor import DTensor

from holocine_model import FlowEulerSampler, ShotLayout, WanDiT, get_config, load_checkpoint

from . import checkpointing
from .cache import check_span_rule
from .config import OptimConfig, TrainConfig, add_config_arguments, argument_parser, config_to_dict, load_config
from .data import (
    BatchIterator,
    Position,
    SampleDecoder,
    ShardCatalog,
    ShardStream,
    SkipGuard,
    expand_shards,
    fixed_batches,
    is_latent_cache,
)
from .encoders import Encoders, load_encoders, load_tokenizer
from .flow import FlowMatching
from .lora import apply_lora, freeze_base_in_bf16
from .metrics import DataMeter, MetricsLogger, per_rank
from .parallel import World, all_mean, all_sum, barrier, init_world, shard_model
from .prompt import PromptTokenizer
from .validation_video import transition_validation
from .video import write_mp4

log = logging.getLogger("training")

# An earlier run's traces in OUTPUT: a new run mixed into them would have retention delete its
# checkpoints (the earlier run's later steps rank above them) and `latest` name a deleted one.
RUN_HISTORY = ("checkpoints", "metrics.jsonl")
# Everything a run writes into OUTPUT, removed when starting over (Ray's own `ray/` folder stays).
RUN_OUTPUTS = (*RUN_HISTORY, "tensorboard", "samples", "export", "config.yaml")


def build_model(config: TrainConfig, device: torch.device | str = "cpu") -> WanDiT:
    """The DiT with its initial weights: ``model.checkpoint``, or random from ``config.seed``, the same
    on every rank and in every process that builds it on the same kind of device (resume and export
    rebuild a LoRA run's frozen base here: its checkpoints hold the adapters only).

    Built on ``device``: random initialisation on the GPU takes seconds for a 14B expert where the CPU
    takes minutes, and needs no host copy of the weights."""
    torch.manual_seed(config.seed)
    with torch.device(device):
        model = WanDiT(get_config(config.model.preset, **config.model.overrides))
    if config.model.checkpoint:
        load_checkpoint(model, config.model.checkpoint)
    if config.lora.enabled:
        model = apply_lora(model, config.lora)
    model.enable_gradient_checkpointing(config.model.gradient_checkpointing, config.model.selective_checkpoint_blocks,
                                        config.model.offload_checkpoints)
    return model


def lr_lambda(optim: OptimConfig):
    """Linear warm-up, then constant or linear / cosine decay to 0 at ``max_steps``."""
    def factor(step: int) -> float:
        if step < optim.warmup_steps:
            return (step + 1) / optim.warmup_steps
        if optim.schedule == "constant":
            return 1.0
        progress = (step - optim.warmup_steps) / max(1, optim.max_steps - optim.warmup_steps)
        if optim.schedule == "linear":
            return max(0.0, 1.0 - progress)
        if optim.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        raise ValueError(f"unknown schedule {optim.schedule!r}")

    return factor


@dataclass
class Step:
    """What the loop needs to turn a batch into a loss."""

    model: torch.nn.Module
    encoders: Encoders | None
    flow: FlowMatching
    device: torch.device
    autocast: bool

    def inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean latents and text states, from the cache or encoded now."""
        if "latents" in batch:
            # Pinned on CUDA (BatchIterator), so these copies overlap with the work already queued.
            return (batch["latents"].to(self.device, non_blocking=True),
                    batch["text_states"].to(self.device, non_blocking=True).float())
        return (self.encoders.encode_video(batch["video"]),
                self.encoders.encode_text(batch["input_ids"], batch["attention_mask"]))

    def loss(self, batch: dict, global_index: torch.Tensor) -> torch.Tensor:
        latents, text = self.inputs(batch)
        x_t, timesteps, target = self.flow.noised(latents, global_index)
        with torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext():
            pred = self.model(x_t, timesteps, text, batch["attention_mask"].to(self.device, non_blocking=True),
                              batch["layout"])
        return F.mse_loss(pred.float(), target)


def prepare_output(config: TrainConfig, resume: bool, overwrite: bool, world: World) -> Path:
    """OUTPUT with this run's config.yaml; a new run refuses an earlier run's OUTPUT unless ``overwrite``
    says to start over, which removes what the earlier run wrote. Collective."""
    output = Path(config.output)
    history = [name for name in RUN_HISTORY if (output / name).exists()]
    if history and not (resume or overwrite):
        raise FileExistsError(f"{output} holds an earlier run ({', '.join(history)}): pass --resume to continue it "
                              "or --overwrite to delete it and start over")
    if world.is_main:
        if overwrite:
            for name in RUN_OUTPUTS:
                path = output / name
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        output.mkdir(parents=True, exist_ok=True)
        (output / "config.yaml").write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
    barrier()  # no rank reads OUTPUT while the main rank clears it
    return output


def train(config: TrainConfig, resume: bool = False, overwrite: bool = False) -> Path:
    world = init_world(config.parallel.context)
    output = prepare_output(config, resume, overwrite, world)
    cuda = world.device.type == "cuda"
    bf16 = cuda and config.mixed_precision == "bf16"

    # Same initial weights on every rank, whatever the world size; FSDP then shards them.
    model = build_model(config, world.device).to(world.device)
    model.enable_context_parallel(world.context_parallel)
    if bf16 and config.lora.enabled:
        freeze_base_in_bf16(model)
    if cuda and config.model.compile:
        model.compile_blocks()
    if world.distributed:
        shard_model(model, mixed_precision=bf16)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.optim.lr, betas=config.optim.betas, eps=config.optim.eps,
                                  weight_decay=config.optim.weight_decay, fused=cuda)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config.optim))

    step, position, skipped = 0, Position(), 0
    checkpoints = output / "checkpoints"
    resume_from = checkpointing.latest(checkpoints) if resume else None
    if resume_from is not None:
        step, position, skipped = checkpointing.load(resume_from, model, optimizer, scheduler, world.rank)
    elif resume:
        log.info("no checkpoint in %s to resume from: starting at step 0", checkpoints)

    # Every shard's sample index, read once here: the loader workers inherit it.
    catalog = ShardCatalog.load(expand_shards(config.data.shards))
    # Every rank computes the stream's order itself: a shard one rank failed to read would shift it.
    seen = per_rank([len(catalog.urls), catalog.num_samples])
    if any(row != seen[0] for row in seen):
        raise RuntimeError(f"ranks see different shards (shards, samples per rank: {seen}): a shard was unreadable "
                           "on some ranks only; see the warnings above")
    check_span_rule(catalog)
    # On the latent cache the encoders are only needed to decode validation videos.
    videos = bool(config.validation.every and config.validation.write_video) or config.validation.transition_every > 0
    encoders = None
    if videos or not is_latent_cache(catalog):
        encoders = load_encoders(config.encoders.source, world.device,
                                 getattr(torch, config.encoders.dtype) if cuda else torch.float32)
    tokenizer = encoders.tokenizer if encoders else load_tokenizer(config.encoders.source)
    decoder = SampleDecoder(config.data.bucket, PromptTokenizer(tokenizer, config.data.text_len))
    stream = ShardStream(catalog, decoder, world.data_rank, world.data_size, config.seed, config.data.shuffle_shards,
                         config.data.shuffle_buffer, resume_after=position)
    # The skip window starts empty on resume; the count goes on.
    skips = SkipGuard.from_config(config.data, skipped)
    batches = BatchIterator(stream, config.data.batch_size, config.data.num_workers, skips, pin_memory=cuda,
                            prefetch=config.data.prefetch_batches)
    val_batches = []
    if config.validation.every or config.validation.transition_every:
        val_batches = fixed_batches(catalog, decoder, config.data.batch_size, config.validation.num_samples,
                                    SkipGuard.from_config(config.data))

    runner = Step(model, encoders, FlowMatching(config.flow, config.seed), world.device, autocast=bf16 and not world.distributed)
    metrics = MetricsLogger(output, world.is_main, step, config.optim.max_steps)
    if step == 0 and config.validation.every:
        metrics.log(0, {"val_loss": validation_loss(runner, val_batches)})

    if cuda:
        # Building the model holds its full fp32 weights on every rank before FSDP shards them (53 GiB for an
        # A14B expert): logged here, so that the steps' peak_gib is the training's own.
        log.info("peak memory while setting up: %.1f GiB", torch.cuda.max_memory_allocated(world.device) / 2**30)
        torch.cuda.reset_peak_memory_stats(world.device)
    model.train()
    data_meter = DataMeter(batches)
    last_log = time.perf_counter()
    while step < config.optim.max_steps:
        step += 1
        batch = next(batches)
        loss = runner.loss(batch, batch["global_index"])
        loss.backward()
        if config.kill_in_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, config.optim.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

        if step % config.log_every == 0:
            if isinstance(grad_norm, DTensor):
                grad_norm = grad_norm.full_tensor()
            values = {"loss": all_mean(loss.detach()).item(), "grad_norm": grad_norm.item(),
                      "lr": scheduler.get_last_lr()[0], "skipped": all_sum(batches.skipped)}
            # .item() above synchronises the device, so this is the wall time of the steps since the last log.
            now = time.perf_counter()
            values["step_s"] = (now - last_log) / config.log_every
            values.update(data_meter.values(now - last_log, config.log_every))
            last_log = now
            if cuda:
                values["peak_gib"] = torch.cuda.max_memory_allocated(world.device) / 2**30
            metrics.log(step, values)
        if config.validation.every and step % config.validation.every == 0:
            metrics.log(step, {"val_loss": validation_loss(runner, val_batches)})
            if config.validation.write_video:
                sample_video(runner, val_batches[0], config, output / "samples" / f"step-{step:08d}.mp4", world)
            last_log = time.perf_counter()
        if config.validation.transition_every and step % config.validation.transition_every == 0:
            folder = output / "samples" / "transitions" / f"step-{step:08d}"
            metrics.log(step, transition_validation(runner, val_batches, config, folder, world))
            last_log = time.perf_counter()
        if step % config.checkpoint.every == 0 or step == config.optim.max_steps:
            checkpointing.save(checkpoints, step, model, optimizer, scheduler, batches.position, batches.skipped,
                               config.checkpoint.keep)
            last_log = time.perf_counter()  # step_s times training, not saving
        metrics.advance()

    metrics.close()
    batches.close()
    return checkpointing.export(model, output / "export" / "dit.safetensors", config.checkpoint, config.lora, world.is_main)


@torch.no_grad()
def validation_loss(runner: Step, batches: list[dict]) -> float:
    """Mean loss on the fixed validation set with fixed noise (stream indices below 0, never trained on)."""
    runner.model.eval()
    losses = [runner.loss(batch, -1 - batch["global_index"]) for batch in batches]
    runner.model.train()
    return all_mean(torch.stack(losses).mean()).item()


@torch.no_grad()
def sample_video(runner: Step, batch: dict, config: TrainConfig, path: Path, world: World) -> None:
    """Generate the first validation sample's clip from its prompt and write it as mp4 (main rank)."""
    runner.model.eval()
    latents, text = runner.inputs(batch)
    layout = batch["layout"]
    first = ShotLayout(layout.shot_ids[:1], layout.global_spans[:1], layout.shot_spans[:1])
    sampler = FlowEulerSampler(config.validation.sample_steps, config.flow.shift, config.validation.guidance_scale)
    with torch.autocast("cuda", dtype=torch.bfloat16) if runner.autocast else contextlib.nullcontext():
        out = sampler.sample(runner.model, tuple(latents[:1].shape), text[:1], batch["attention_mask"][:1].to(world.device),
                             first, seed=config.seed, device=world.device)
    runner.model.train()
    if world.is_main:
        write_mp4(path, runner.encoders.decode_latents(out)[0])


def build_parser() -> argparse.ArgumentParser:
    parser = argument_parser("python -m training.train", __doc__)
    add_config_arguments(parser, "YAML training config, e.g. training/configs/tiny.yaml")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", action="store_true",
                       help="continue the run in OUTPUT from OUTPUT/checkpoints/latest, or start at step 0 "
                            "if it has none (default: off, a new run, which refuses an OUTPUT holding an "
                            "earlier run's checkpoints or metrics)")
    start.add_argument("--overwrite", action="store_true",
                       help="start a new run over an earlier one in OUTPUT, deleting its checkpoints, metrics, "
                            "samples and exports first (default: off)")
    parser.add_argument("--ray-workers", type=int, default=0, metavar="N",
                        help="run under Ray Train with N workers, one per GPU (default: 0, run in this process "
                             "or as torchrun started it)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    config = load_config(args.config, args.overrides)
    if args.ray_workers:
        from .ray_launch import launch

        launch(config, args.ray_workers, args.resume, args.overwrite)
    else:
        train(config, args.resume, args.overwrite)
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
