"""Per-step metrics: ``OUTPUT/metrics.jsonl`` (one JSON object per step), TensorBoard, a progress bar.

Besides loss, grad norm, lr, skipped samples and ``step_s``, every logged step has the data path's
figures, one value per rank (a list indexed by rank; TensorBoard gets ``NAME/rankR``):

- ``data_wait_s``: seconds a step waited for its batch (mean over the steps since the last log). With
  the batches prefetched this is 0 unless the loader workers fall behind.
- ``samples_per_s``: stream samples (skipped ones included) the rank consumed per second of step time.
- ``bytes_read``: bytes the rank's readers have read so far in this process (cumulative): sample byte
  ranges plus, once, the shard indexes (or the tar headers scanned where a shard has none).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from tqdm import tqdm

if TYPE_CHECKING:
    from .data import BatchIterator

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

    def log(self, step: int, values: dict[str, float | list[float]]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.tensorboard is not None:
            for name, value in values.items():
                if isinstance(value, list):
                    for rank, item in enumerate(value):
                        self.tensorboard.add_scalar(f"{name}/rank{rank}", item, step)
                else:
                    self.tensorboard.add_scalar(name, value, step)
        self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if k in ("loss", "val_loss")}, refresh=False)

    def advance(self) -> None:
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def per_rank(values: list[float]) -> list[list[float]]:
    """``values`` of every rank, indexed by rank (collective; just this process's without a process group)."""
    if not dist.is_initialized():
        return [values]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    mine = torch.tensor(values, dtype=torch.float64, device=device)
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine)
    return [row.tolist() for row in gathered]


class DataMeter:
    """The data figures of a rank's ``BatchIterator`` since the last call, gathered from every rank."""

    def __init__(self, batches: BatchIterator) -> None:
        self.batches = batches
        self.wait_s, self.samples = batches.wait_s, batches.samples

    def values(self, seconds: float, steps: int) -> dict[str, list[float]]:
        """Collective. ``seconds``: wall time of the ``steps`` steps since the last call."""
        wait, samples = self.batches.wait_s - self.wait_s, self.batches.samples - self.samples
        self.wait_s, self.samples = self.batches.wait_s, self.batches.samples
        rows = per_rank([wait / steps, samples / max(seconds, 1e-9), float(self.batches.bytes_read)])
        return {"data_wait_s": [row[0] for row in rows], "samples_per_s": [row[1] for row in rows],
                "bytes_read": [int(row[2]) for row in rows]}
