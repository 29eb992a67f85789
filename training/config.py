"""Training configuration: dataclasses with defaults, filled from YAML and ``key=value`` overrides.

A YAML file mirrors ``TrainConfig`` (sections ``data``, ``model``, ``encoders``, ``flow``, ``optim``,
``lora``, ``checkpoint``, ``validation``); overrides use dotted paths (``optim.lr=1e-5``) and are parsed
as YAML scalars, so ``data.bucket=[81,480,832]`` and ``lora.enabled=true`` work.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from curation.config import apply_override, build_config


@dataclass
class DataConfig:
    # Shards: paths, globs, brace patterns ("shard-{000000..000009}.tar") or URIs, raw or latent-cached.
    shards: list[str] = field(default_factory=list)
    # (frames, height, width) every clip is cut / resized / cropped to; frames is 4k+1.
    bucket: tuple[int, int, int] = (81, 480, 832)
    batch_size: int = 1  # per rank
    num_workers: int = 2
    shuffle_shards: bool = True
    # Sample locations (not bytes: readers fetch each sample's byte range), so a large buffer costs no I/O.
    shuffle_buffer: int = 64  # 0 or 1 keeps stream order
    # Batches a background thread keeps ready (collated, shot layout built, pinned on CUDA); 0 = none.
    prefetch_batches: int = 2
    text_len: int = 512
    # A sample that fails to decode is skipped; the run stops when more than `max_skipped_fraction` of
    # the last `skip_window` samples of a rank's stream were (broken data, or a bucket or text_len most
    # samples do not fit). Below 1, so that a stream of which no sample decodes cannot loop forever.
    skip_window: int = 100
    max_skipped_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.skip_window < 1 or not 0 <= self.max_skipped_fraction < 1:
            raise ValueError("need data.skip_window >= 1 and 0 <= data.max_skipped_fraction < 1, got "
                             f"{self.skip_window} and {self.max_skipped_fraction}")


@dataclass
class ModelSection:
    preset: str = "wan2.1-1.3b"
    overrides: dict[str, Any] = field(default_factory=dict)
    # Initial DiT weights (Wan / DiffSynth / HoloCine or diffusers layout); None = random init.
    checkpoint: str | None = None
    # Recompute each block in the backward pass instead of storing its activations.
    gradient_checkpointing: bool = True
    # Of those, the last N blocks keep their self-attention output instead of recomputing it, the
    # costliest recomputation on long clips: 0.27 GiB a block at 15 s / 480p. 20 of the 1.3B's 30 blocks
    # is faster than recomputing all, within the memory diffusers' Wan needs (README, Training speed).
    selective_checkpoint_blocks: int = 20
    # Keep what checkpointing holds from the forward to the backward, each block's input (tokens x dim
    # bf16: 1.8 GiB a block for the A14B at 60 s on 2 GPUs, 72 GiB in all), in pinned host memory.
    offload_checkpoints: bool = False
    # torch.compile each block on CUDA, fusing the fp32 norm / modulation / RoPE / gate work; CPU runs eager.
    compile: bool = True


@dataclass
class EncoderConfig:
    # A diffusers-format Wan folder (vae/, text_encoder/, tokenizer/) or Wan's original folder
    # (Wan2.1_VAE.pth / Wan2.2_VAE.pth, models_t5_umt5-xxl-enc-bf16.pth, google/umt5-xxl/).
    # "tiny" builds random tiny encoders and a locally trained tokenizer (tests, CPU smoke runs).
    source: str = "tiny"
    dtype: str = "bfloat16"  # encoder weights on GPU; CPU always runs fp32


@dataclass
class FlowConfig:
    sampling: str = "logit_normal"  # or "uniform"
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 5.0
    # Train one expert of a mixture: timesteps (of 1000) in [min, max). A14B high noise: [875, 1000].
    timestep_min: float = 0.0
    timestep_max: float = 1000.0


@dataclass
class OptimConfig:
    lr: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    eps: float = 1e-8
    warmup_steps: int = 100
    schedule: str = "constant"  # after warm-up: "constant", "linear" or "cosine" decay to 0 at max_steps
    max_grad_norm: float = 1.0
    max_steps: int = 1000


@dataclass
class LoRAConfig:
    enabled: bool = False
    rank: int = 32
    alpha: float = 32.0
    target_modules: list[str] = field(default_factory=lambda: ["q", "k", "v", "o", "ffn.0", "ffn.2"])


@dataclass
class CheckpointConfig:
    every: int = 500
    # The newest checkpoints (by step) kept; older ones are deleted as each new one is saved.
    keep: int = 2
    export_layout: str = "wan"  # safetensors layout written at the end: "wan" (DiffSynth / HoloCine) or "diffusers"
    # "float32" writes what was trained exactly; "bfloat16" halves the file (an A14B expert: 28.6 GB
    # instead of 57 GB), keeping the parameters Wan computes in fp32 in fp32.
    export_dtype: str = "float32"
    # Shards of at most this many GB plus an index, as Wan's releases come (one file over 50 GB cannot go
    # to the Hugging Face Hub); 0 = one file.
    export_shard_gb: float = 0

    def __post_init__(self) -> None:
        if self.keep < 1:
            raise ValueError(f"checkpoint.keep must be at least 1, got {self.keep}")
        if self.export_dtype not in ("float32", "bfloat16") or self.export_shard_gb < 0:
            raise ValueError("need checkpoint.export_dtype float32 or bfloat16 and checkpoint.export_shard_gb >= 0, "
                             f"got {self.export_dtype!r} and {self.export_shard_gb}")


@dataclass
class ValidationConfig:
    every: int = 0  # steps between validations; 0 = never
    num_samples: int = 2  # the first samples of the first shards, a fixed set (they are trained on too)
    sample_steps: int = 30
    guidance_scale: float = 1.0
    write_video: bool = True
    # Every N steps (0 = never) generate the validation samples from their prompts and cuts and log the
    # share of requested cuts the shot detector finds (cut_accuracy, extra_cuts; training/validation_video.py).
    transition_every: int = 0
    transition_tolerance: int = 4  # frames between a requested and a detected cut


@dataclass
class ParallelConfig:
    # Ranks that share each sample and split its video tokens (context parallelism, Ulysses style:
    # holocine_model/context_parallel.py). The world size must be a multiple of it; samples are
    # split over world / context groups; FSDP2 shards over every rank.
    context: int = 1


@dataclass
class TrainConfig:
    output: str = "out/train"
    seed: int = 0
    log_every: int = 1
    mixed_precision: str = "bf16"  # on GPU; CPU runs fp32
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    encoders: EncoderConfig = field(default_factory=EncoderConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    # Fault injection for the resume test: SIGKILL this process in the middle of that step.
    kill_in_step: int | None = None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """A ``TrainConfig`` from a YAML file (or defaults) with ``key=value`` overrides applied."""
    tree: dict[str, Any] = (yaml.safe_load(Path(path).read_text()) or {}) if path else {}
    for item in overrides or []:
        apply_override(tree, item)
    return build_config(TrainConfig, tree)


def config_to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain nested dict (tuples as lists), suitable for YAML and Ray's train_loop_config."""
    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def config_from_dict(values: dict[str, Any]) -> TrainConfig:
    return build_config(TrainConfig, values)


def argument_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """A parser for one of the training commands, with its module docstring as the description."""
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_config_arguments(parser: argparse.ArgumentParser, config_help: str) -> None:
    """``--config FILE`` and ``KEY=VALUE`` overrides; parse with ``parse_intermixed_args`` so that
    overrides may stand before, between and after the flags."""
    parser.add_argument("--config", metavar="FILE",
                        help=f"{config_help} (default: none, TrainConfig's defaults in training/config.py)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config values by dotted path, applied over --config, e.g. optim.lr=1e-5 "
                             "data.bucket=[33,64,64] (default: none)")
