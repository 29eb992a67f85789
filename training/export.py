"""Export a training checkpoint as safetensors that holocine_model and HoloCine's inference code load.

    python -m training.export OUTPUT [--step N] [--layout wan|diffusers] [--out FILE]

Builds the model from ``OUTPUT/config.yaml``, loads the DCP checkpoint (any world size it was saved
with), folds LoRA adapters into the weights and writes ``OUTPUT/export/dit-step-N.safetensors``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from torch.distributed.checkpoint.state_dict import get_model_state_dict

from . import checkpointing
from .config import load_config
from .train import build_model


def export_checkpoint(output: Path, step: int | None = None, layout: str = "wan", out: Path | None = None) -> Path:
    config = load_config(output / "config.yaml")
    folder = output / "checkpoints" / f"step-{step:08d}" if step is not None else checkpointing.latest(output / "checkpoints")
    if folder is None or not folder.is_dir():
        raise FileNotFoundError(f"no checkpoint in {output / 'checkpoints'}")
    model = build_model(config)
    state = {"model": get_model_state_dict(model)}
    checkpointing.load_model_only(state, folder)
    model.load_state_dict(state["model"])
    out = out or output / "export" / f"dit-{folder.name}.safetensors"
    checkpointing.export(model, out, layout, config.lora, is_main=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path, help="the training run's OUTPUT folder")
    parser.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    parser.add_argument("--layout", choices=("wan", "diffusers"), default="wan")
    parser.add_argument("--out", type=Path, help="file to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(export_checkpoint(args.output, args.step, args.layout, args.out))


if __name__ == "__main__":
    main()
