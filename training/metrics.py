"""Per-step metrics: ``OUTPUT/metrics.jsonl`` (one JSON object per step), TensorBoard, a progress bar."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)


class MetricsLogger:
    """Writes on the main rank only; other ranks get a silent logger."""

    def __init__(self, output: Path, enabled: bool, start_step: int, max_steps: int) -> None:
        self.enabled = enabled
        self.path = output / "metrics.jsonl"
        self.tensorboard = None
        self.bar = tqdm(total=max_steps, initial=start_step, disable=not enabled, desc="train", dynamic_ncols=True)
        if not enabled:
            return
        # A resumed run drops what the killed run logged after its checkpoint: the file then reads
        # exactly like one uninterrupted run.
        if self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= start_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(output / "tensorboard"), purge_step=start_step + 1)
        except ImportError:
            log.warning("tensorboard is not installed; metrics go to %s only", self.path)

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.tensorboard is not None:
            for name, value in values.items():
                self.tensorboard.add_scalar(name, value, step)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if k in ("loss", "val_loss")}, refresh=False)

    def advance(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
