"""Export a training checkpoint as safetensors that holocine_model and HoloCine's inference code load.

    python -m training.export OUTPUT [--step N] [--layout wan|diffusers] [--dtype float32|bfloat16]
                                     [--shard-gb GB] [--out FILE]

Builds the model from ``OUTPUT/config.yaml`` (a LoRA run's frozen base as the run built it), loads
the DCP checkpoint (any world size it was saved with), folds LoRA adapters into the weights and
writes ``OUTPUT/export/dit-step-N.safetensors`` (or its shards and index).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import torch

from . import checkpointing
from .config import argument_parser, load_config
from .train import build_model


def export_checkpoint(output: Path, step: int | None = None, out: Path | None = None, **settings) -> Path:
    """Export a checkpoint of the run in ``output``; returns what ``load_checkpoint`` reads (the file or its
    index). ``settings`` override the run's ``checkpoint.export_*`` ones (``export_layout="diffusers"``...)."""
    config = load_config(output / "config.yaml")
    folder = output / "checkpoints" / f"step-{step:08d}" if step is not None else checkpointing.latest(output / "checkpoints")
    if folder is None or not folder.is_dir():
        raise FileNotFoundError(f"no checkpoint in {output / 'checkpoints'}")
    # On the kind of device the trainer built it on: a LoRA checkpoint's frozen base is rebuilt, not read.
    model = build_model(config, "cuda" if torch.cuda.is_available() else "cpu")
    checkpointing.load_trained(model, folder)
    out = out or output / "export" / f"dit-{folder.name}.safetensors"
    return checkpointing.export(model, out, dataclasses.replace(config.checkpoint, **settings), config.lora, is_main=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argument_parser("python -m training.export", __doc__)
    parser.add_argument("output", type=Path, metavar="OUTPUT", help="the training run's OUTPUT folder (required)")
    parser.add_argument("--step", type=int, metavar="N",
                        help="export the checkpoint of step N (default: the latest, OUTPUT/checkpoints/latest)")
    parser.add_argument("--layout", choices=("wan", "diffusers"),
                        help="key layout: wan (Wan / DiffSynth / HoloCine, what holocine_model.load_checkpoint "
                             "and HoloCine's inference read) or diffusers (default: the run's checkpoint.export_layout)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"),
                        help="weights' dtype; bfloat16 keeps Wan's fp32 parameters in fp32 "
                             "(default: the run's checkpoint.export_dtype)")
    parser.add_argument("--shard-gb", type=float, metavar="GB",
                        help="shards of at most GB plus an index; 0 = one file (default: the run's "
                             "checkpoint.export_shard_gb)")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="file to write (default: OUTPUT/export/dit-step-N.safetensors)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = {"export_layout": args.layout, "export_dtype": args.dtype, "export_shard_gb": args.shard_gb}
    print(export_checkpoint(args.output, args.step, args.out, **{k: v for k, v in settings.items() if v is not None}))


if __name__ == "__main__":
    main()
