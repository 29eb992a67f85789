"""Export a training checkpoint as safetensors that holocine_model and HoloCine's inference code load.

    python -m training.export OUTPUT [--step N] [--layout wan|diffusers] [--out FILE]

Builds the model from ``OUTPUT/config.yaml`` (a LoRA run's frozen base as the run built it), loads
the DCP checkpoint (any world size it was saved with), folds LoRA adapters into the weights and
writes ``OUTPUT/export/dit-step-N.safetensors``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from . import checkpointing
from .config import argument_parser, load_config
from .train import build_model


def export_checkpoint(output: Path, step: int | None = None, layout: str = "wan", out: Path | None = None) -> Path:
    config = load_config(output / "config.yaml")
    folder = output / "checkpoints" / f"step-{step:08d}" if step is not None else checkpointing.latest(output / "checkpoints")
    if folder is None or not folder.is_dir():
        raise FileNotFoundError(f"no checkpoint in {output / 'checkpoints'}")
    # On the kind of device the trainer built it on: a LoRA checkpoint's frozen base is rebuilt, not read.
    model = build_model(config, "cuda" if torch.cuda.is_available() else "cpu")
    checkpointing.load_trained(model, folder)
    out = out or output / "export" / f"dit-{folder.name}.safetensors"
    checkpointing.export(model, out, layout, config.lora, is_main=True)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argument_parser("python -m training.export", __doc__)
    parser.add_argument("output", type=Path, metavar="OUTPUT", help="the training run's OUTPUT folder (required)")
    parser.add_argument("--step", type=int, metavar="N",
                        help="export the checkpoint of step N (default: the latest, OUTPUT/checkpoints/latest)")
    parser.add_argument("--layout", choices=("wan", "diffusers"), default="wan",
                        help="key layout: wan (Wan / DiffSynth / HoloCine, what holocine_model.load_checkpoint "
                             "and HoloCine's inference read) or diffusers (default: wan)")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="file to write (default: OUTPUT/export/dit-step-N.safetensors)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(export_checkpoint(args.output, args.step, args.layout, args.out))


if __name__ == "__main__":
    main()
