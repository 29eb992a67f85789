"""One epoch of the training stream under torchrun (gloo), the way the trainer reads it, for the I/O tests.

    torchrun --nproc-per-node 2 tests/training/read_stream.py --shards 'DIR/*.tar' --out OUT [--kill-at K] [--resume]

Each rank reads its share of epoch 0 through a ``BatchIterator`` (batch 1, ``--workers`` loader workers),
appends ``STEP KEY`` to ``OUT/rank-R.keys`` for every batch it gets, and every ``--save-every`` batches
saves all ranks' positions to ``OUT/positions.json`` as the trainer's checkpoint does. With ``--kill-at K``
rank 0 SIGKILLs itself at batch K; ``--resume`` continues from the saved positions, with however many
ranks this run has. At the end each rank writes ``OUT/rank-R.json``: its read statistics.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist

from training.data import BatchIterator, Position, ShardStream, expand_shards, resplit_position


def light_decode(raw: dict) -> dict:
    """The key and a one-shot layout: what collate needs, without decoding video (the test is about I/O)."""
    return {"key": raw["__key__"], "shot_ids": torch.zeros(1, dtype=torch.long),
            "global_span": torch.zeros(2, dtype=torch.long), "shot_spans": torch.zeros(1, 2, dtype=torch.long)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shards", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--save-every", type=int, default=2)
    parser.add_argument("--kill-at", type=int, default=0)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    positions = args.out / "positions.json"
    start, step = Position(), 0
    if args.resume:
        saved = json.loads(positions.read_text())
        ranks = [Position(**p) for p in saved["positions"]]
        start = ranks[rank] if len(ranks) == world else resplit_position(ranks)
        step = saved["step"]
    stream = ShardStream(expand_shards([args.shards]), light_decode, rank, world, seed=5, shuffle_buffer=4,
                         resume_after=start, loop=False)
    batches = BatchIterator(stream, batch_size=1, num_workers=args.workers)
    with open(args.out / f"rank-{rank}.keys", "a") as log:
        for batch in batches:
            step += 1
            log.write(f"{step} {batch['keys'][0]}\n")
            log.flush()
            if args.kill_at and step == args.kill_at and rank == 0:
                os.kill(os.getpid(), signal.SIGKILL)
            if step % args.save_every == 0:
                gathered: list = [None] * world
                dist.all_gather_object(gathered, asdict(batches.position))
                if rank == 0:
                    tmp = positions.with_suffix(".tmp")
                    tmp.write_text(json.dumps({"step": step, "positions": gathered}))
                    tmp.replace(positions)
                dist.barrier()
    (args.out / f"rank-{rank}.json").write_text(json.dumps({
        "reader_bytes": dict(batches.reader_bytes), "index_bytes": batches.index_bytes, "samples": batches.samples}))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
