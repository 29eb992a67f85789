"""Training checkpoints with ``torch.distributed.checkpoint`` and export to safetensors.

``OUTPUT/checkpoints/step-00000100/`` holds the DCP files of the (sharded) model and optimizer and
``trainer.pt``: step, LR schedule, every rank's data position and skipped-sample count, and every
rank's torch RNG state. Only trained parameters are saved: a LoRA run's frozen base (28 GB for an
A14B expert) is rebuilt by ``build_model`` from ``model.checkpoint`` or the seed, as the run began.
``OUTPUT/checkpoints/latest`` names the newest complete checkpoint; it is written last, so a run
killed while saving resumes from the one before.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from holocine_model import index_path, save_checkpoint

from .config import CheckpointConfig, LoRAConfig
from .data import Position, resplit_position
from .lora import merge_lora
from .parallel import barrier

log = logging.getLogger(__name__)

LATEST = "latest"
TRAINER_STATE = "trainer.pt"


def _gather(obj: object) -> list[object]:
    if not dist.is_initialized():
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _dcp(fn, state: dict, folder: Path) -> None:
    """``dcp.save`` / ``dcp.load``; a single process says so instead of being warned about it."""
    single = not dist.is_initialized()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is (disabled, )?unavailable or uninitialized")
        fn(state, checkpoint_id=str(folder), no_dist=single)


def _step(folder: Path) -> int:
    return int(folder.name.removeprefix("step-"))


def _prune(root: Path, step: int, keep: int) -> None:
    """Delete all but the ``keep`` newest checkpoints up to ``step``, newest by step number (names sort
    wrongly past 10^8 steps), and any past ``step``: a killed run left those half-written beyond the
    checkpoint this run resumed from, and ``latest`` never named them."""
    folders = sorted(root.glob("step-*"), key=_step)
    done = [folder for folder in folders if _step(folder) <= step]
    for old in done[:-keep] + [folder for folder in folders if _step(folder) > step]:
        shutil.rmtree(old, ignore_errors=True)


# What a checkpoint holds of the model: the parameters that train. Loading leaves the frozen ones as
# built; ``_check_loaded`` makes sure that nothing else was missing.
TRAINED = StateDictOptions(ignore_frozen_params=True)
_LOAD_TRAINED = StateDictOptions(ignore_frozen_params=True, strict=False)


def _check_loaded(model, missing_keys: list[str], folder: Path) -> None:
    frozen = {name for name, param in model.named_parameters() if not param.requires_grad}
    missing = sorted(set(missing_keys) - frozen)
    if missing:
        raise KeyError(f"{folder} lacks {len(missing)} trained parameters, e.g. {missing[:3]}")


def save(root: Path, step: int, model, optimizer, scheduler, position: Position, skipped: int, keep: int) -> Path:
    """Save a resumable checkpoint of ``step``, keeping the ``keep`` newest; collective (every rank calls it)."""
    folder = root / f"step-{step:08d}"
    model_sd, optim_sd = get_state_dict(model, optimizer, options=TRAINED)
    _dcp(dcp.save, {"model": model_sd, "optim": optim_sd}, folder)
    ranks = _gather({"position": asdict(position), "skipped": skipped, "rng": torch.get_rng_state()})
    if not dist.is_initialized() or dist.get_rank() == 0:
        torch.save({"step": step, "scheduler": scheduler.state_dict(), "ranks": ranks}, folder / TRAINER_STATE)
        tmp = root / f"{LATEST}.tmp"
        tmp.write_text(folder.name)
        tmp.replace(root / LATEST)
        _prune(root, step, keep)
        log.info("saved checkpoint %s", folder)
    barrier()
    return folder


def latest(root: Path) -> Path | None:
    marker = root / LATEST
    return root / marker.read_text().strip() if marker.is_file() else None


def load(folder: Path, model, optimizer, scheduler, rank: int) -> tuple[int, Position, int]:
    """Restore model, optimizer, schedule and this rank's RNG; returns (step, data position, skipped)."""
    model_sd, optim_sd = get_state_dict(model, optimizer, options=TRAINED)
    state = {"model": model_sd, "optim": optim_sd}
    _dcp(dcp.load, state, folder)
    loaded = set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                            options=_LOAD_TRAINED)
    _check_loaded(model, loaded.missing_keys, folder)
    trainer = torch.load(folder / TRAINER_STATE, weights_only=True)
    scheduler.load_state_dict(trainer["scheduler"])
    ranks = trainer["ranks"]
    world_size = dist.get_world_size() if dist.is_initialized() else 1
    mine = ranks[rank % len(ranks)]
    torch.set_rng_state(mine["rng"])
    log.info("resumed from %s at step %d", folder, trainer["step"])
    if len(ranks) == world_size:
        return trainer["step"], Position(**mine["position"]), mine["skipped"]
    # Another world size: every rank continues after the furthest saved position (README, Resume).
    log.warning("the checkpoint was saved by %d ranks, this run has %d: the rest of the epoch is re-split",
                len(ranks), world_size)
    skipped = sum(r["skipped"] for r in ranks) if rank == 0 else 0  # the logged total stays the same
    return trainer["step"], resplit_position([Position(**r["position"]) for r in ranks]), skipped


def load_trained(model, folder: Path) -> None:
    """Load a checkpoint's trained parameters into ``model`` as ``build_model`` built it, in one process
    (for export)."""
    state = {"model": get_model_state_dict(model, options=TRAINED)}
    _dcp(dcp.load, state, folder)
    _check_loaded(model, set_model_state_dict(model, state["model"], options=_LOAD_TRAINED).missing_keys, folder)


def export(model, path: Path, settings: CheckpointConfig, lora: LoRAConfig | None, is_main: bool) -> Path:
    """Full weights (adapters merged) as safetensors in the Wan/DiffSynth or diffusers layout, in the
    settings' dtype and shards; returns what ``load_checkpoint`` reads: ``path``, or its index. Collective."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    max_shard_bytes = int(settings.export_shard_gb * 1e9) or None
    if is_main:
        if lora is not None and lora.enabled:
            state = merge_lora(state, lora)  # in fp32, then cast
        save_checkpoint(state, path, settings.export_layout, max_shard_bytes, getattr(torch, settings.export_dtype))
        log.info("exported %s (%s layout, %s)", path, settings.export_layout, settings.export_dtype)
    barrier()
    return index_path(path) if max_shard_bytes else path
