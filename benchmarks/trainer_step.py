"""The trainer's step on a latent cache against the model's own step, on one GPU and under FSDP2.

    python benchmarks/trainer_step.py --tiers 5s,15s [--gpus 1,2] [--steps 16]
    python benchmarks/trainer_step.py --tiers 60s --gpus 1,2 --context 2          # context parallel
    python benchmarks/trainer_step.py --preset wan2.2-a14b --tiers 15s --gpus 2 --context 2 --no-model \
        --set lora.enabled=true                                                   # an A14B expert, LoRA

For each tier, writes a latent cache of random samples in ``training.cache``'s format (latents at the
tier's 480x832 bucket, 512 bf16 text states, the tier's shots; sample indexes next to the shards), then:

- model: one step of the model alone, as ``benchmarks/train_step.py`` measures it (random batch already
  on the GPU, the trainer's speed options, AdamW);
- trainer on N GPUs: ``python -m training.train`` (``torchrun`` for N > 1) on that cache from random
  weights, ``log_every=1``, stopped once it has logged ``--steps`` steps; its ``step_s``, ``data_wait_s``
  and ``peak_gib`` from ``metrics.jsonl``, the median over the steps after the first ``--skip``
  (compilation and warm-up).

Prints per tier: the model step, the trainer step on each GPU count, their ratio (target <= 1.1 on one
GPU), the data wait, peak memory per GPU, MFU, and either per-GPU throughput on two GPUs relative to one
(target >= 0.9) or, with ``--context 2``, the step on two GPUs relative to one (target <= 0.55). MFU
counts the model FLOPs of forward and backward, with the attention the sparse masks compute, and no
recomputation; with LoRA the frozen weights' gradients are not counted either (see ``step_flops``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save as save_safetensors

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import train_step  # noqa: E402  (benchmarks/train_step.py: the model step)
from curation.shard_index import write_indexed_tar  # noqa: E402
from training.cache import SPAN_RULE  # noqa: E402
from training.config import ModelSection, load_config  # noqa: E402


def write_cache(folder: Path, tier: train_step.Tier, preset: str, samples: int, shards: int = 2) -> None:
    """Random cache samples with the tier's latent grid and shots, ``samples`` over ``shards`` tars."""
    cfg = train_step.get_config(preset)
    frames = tier.latent_frames
    base, extra = divmod(frames, tier.shots)
    shot_ids = torch.tensor([i for i in range(tier.shots) for _ in range(base + (i < extra))])
    spans = [[train_step.GLOBAL_TOKENS + i * train_step.SHOT_TOKENS, train_step.GLOBAL_TOKENS + (i + 1) * train_step.SHOT_TOKENS]
             for i in range(tier.shots)]
    generator = torch.Generator().manual_seed(0)
    per = -(-samples // shards)
    for shard in range(shards):
        def items(start: int = shard * per):
            for i in range(start, min(start + per, samples)):
                tensors = {
                    "latents": torch.randn(cfg.in_channels, frames, tier.height // 8, tier.width // 8, generator=generator),
                    "text_states": torch.randn(train_step.TEXT_LEN, cfg.text_dim, generator=generator).bfloat16(),
                    "shot_ids": shot_ids,
                }
                meta = {"key": f"{tier.name}-{i:05d}", "global_span": [0, train_step.GLOBAL_TOKENS],
                        "shot_spans": spans, "span_rule": SPAN_RULE}
                yield {"__key__": meta["key"], "json": json.dumps(meta).encode(), "safetensors": save_safetensors(tensors)}

        write_indexed_tar(folder / f"shard-{shard:06d}.tar", items())


def run_trainer(cache: Path, tier: train_step.Tier, preset: str, gpus: int, steps: int, output: Path,
                context: int = 1, extra: list[str] = ()) -> list[dict]:
    """The trainer's logged steps on ``gpus`` GPUs of this machine, ``context`` of them per sample.

    The trainer is stopped once it has logged ``steps`` steps: its final checkpoint and export (minutes
    for a 14B expert) are not what is measured."""
    overrides = [
        f"output={output}", f"data.shards=[{cache}/shard-*.tar]", f"data.bucket=[{tier.seconds * 16 + 1},{tier.height},{tier.width}]",
        "data.batch_size=1", "data.num_workers=2", "data.shuffle_buffer=4", f"model.preset={preset}",
        "model.gradient_checkpointing=true", "optim.warmup_steps=1", f"optim.max_steps={steps + 1}", "log_every=1",
        f"checkpoint.every={steps * 10}", "validation.every=0", f"parallel.context={context}", *extra,
    ]
    launcher = ([sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={gpus}"] if gpus > 1 else [sys.executable])
    command = [*launcher, "-m", "training.train", "--config", str(REPO / "training/configs/tiny.yaml"), *overrides, "--overwrite"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    metrics = output / "metrics.jsonl"
    output.mkdir(parents=True, exist_ok=True)
    with open(output / "trainer.log", "w+") as log:
        trainer = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        while trainer.poll() is None and len(_steps(metrics)) < steps:
            time.sleep(2)
        if trainer.poll() is None:
            # SIGTERM: torchrun passes it on to its workers, which run in sessions of their own.
            trainer.terminate()
            trainer.wait()
        rows = _steps(metrics)
        if len(rows) < steps:
            log.seek(0)
            raise RuntimeError(f"trainer failed after {len(rows)} steps:\n{log.read()[-4000:]}")
    return rows[:steps]


def _steps(metrics: Path) -> list[dict]:
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line] if metrics.exists() else []
    return [row for row in rows if "step_s" in row]


def summary(rows: list[dict], skip: int, step_flops: float, samples_per_step: int, gpus: int,
            peak_tflops: float) -> dict:
    """Medians over the steps after the first ``skip``; MFU = the model FLOPs of a step's samples / step time /
    the GPUs' bf16 matmul peak."""
    kept = rows[skip:]
    step_s = statistics.median(r["step_s"] for r in kept)
    return {
        "step_s": step_s,
        "data_wait_s": statistics.median(max(r["data_wait_s"]) for r in kept),
        "samples_per_s_per_rank": statistics.median(statistics.mean(r["samples_per_s"]) for r in kept),
        "peak_gib_per_gpu": max((r.get("peak_gib", 0.0) for r in kept), default=0.0),
        "mfu": round(step_flops * samples_per_step / step_s / (gpus * peak_tflops * 1e12), 3),
        "steps": len(kept),
    }


def forward_flops(tier: train_step.Tier, preset: str) -> tuple[float, float]:
    """One forward of one sample of the tier: all of it, and its attention (as the sparse masks compute it)."""
    cfg = train_step.get_config(preset)
    layout = train_step.make_batch(tier, cfg.in_channels, "cpu")["layout"]
    args = (cfg, layout, (tier.height // 16) * (tier.width // 16), train_step.TEXT_LEN)
    return train_step.model_flops(*args), train_step.attention_flops(*args)


def step_flops(tier: train_step.Tier, preset: str, frozen_base: bool) -> float:
    """A training step's model FLOPs for one sample: forward and backward, not recomputation.

    The backward costs twice the forward; with a frozen base (LoRA) the weights get no gradient, which
    leaves one forward's worth for the inputs' gradients of the matmuls and two for attention's."""
    total, attention = forward_flops(tier, preset)
    return 2 * total + attention if frozen_base else 3 * total


def model_step(tier: train_step.Tier, preset: str, steps: int, peak_tflops: float) -> float:
    cfg = train_step.get_config(preset)
    batch = train_step.make_batch(tier, cfg.in_channels, "cuda")
    model = train_step.build_ours(preset, ModelSection(preset=preset))
    row = train_step.measure(f"model {tier.name}", model, train_step.ours_forward, batch, steps, 2,
                             forward_flops(tier, preset)[0], peak_tflops)
    del model
    train_step.release_memory()
    return row["step_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiers", default="5s,15s")
    parser.add_argument("--preset", default="wan2.1-1.3b")
    parser.add_argument("--gpus", default="1,2", help="GPU counts to run the trainer on (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=16, help="trainer steps per run (default: %(default)s)")
    parser.add_argument("--skip", type=int, default=4, help="first steps left out of the median (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=24, help="cache samples per tier (default: %(default)s)")
    parser.add_argument("--no-model", action="store_true", help="skip the model-alone step")
    parser.add_argument("--context", type=int, default=1,
                        help="GPUs sharing each sample (parallel.context) in the runs on more than one GPU")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="more trainer overrides, e.g. lora.enabled=true (repeatable)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the caches and the trainers' outputs (trainer.log, metrics.jsonl) here "
                             "instead of in a temporary folder")
    args = parser.parse_args()
    lora = load_config(None, args.set).lora.enabled  # the trainer's own reading of the overrides
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    peak = train_step.matmul_peak_tflops()
    print(json.dumps({"device": device, "gpus": torch.cuda.device_count(), "torch": torch.__version__,
                      "bf16_matmul_tflops": round(peak)}), flush=True)
    with contextlib.nullcontext(args.workdir) if args.workdir else tempfile.TemporaryDirectory() as tmp:
        for name in args.tiers.split(","):
            tier = train_step.TIERS[name]
            cache = Path(tmp) / f"cache-{name}"
            write_cache(cache, tier, args.preset, args.samples)
            result: dict = {"tier": name}
            for gpus in map(int, args.gpus.split(",")):
                context = args.context if gpus > 1 else 1
                rows = run_trainer(cache, tier, args.preset, gpus, args.steps, Path(tmp) / f"train-{name}-{gpus}",
                                   context, args.set)
                result[f"trainer_{gpus}gpu"] = summary(rows, args.skip, step_flops(tier, args.preset, lora),
                                                       gpus // context, gpus, peak)
                print(json.dumps({"tier": name, "gpus": gpus, "context": context, **result[f"trainer_{gpus}gpu"]}),
                      flush=True)
            if not args.no_model:
                result["model_step_s"] = model_step(tier, args.preset, 3, peak)
                one = result.get("trainer_1gpu")
                if one:
                    result["trainer_over_model"] = one["step_s"] / result["model_step_s"]
            one, two = result.get("trainer_1gpu"), result.get("trainer_2gpu")
            if one and two and args.context == 2:
                result["step_2_over_1"] = two["step_s"] / one["step_s"]  # the same sample on two GPUs
            elif one and two:
                result["per_gpu_throughput_2_vs_1"] = one["step_s"] / two["step_s"]
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
