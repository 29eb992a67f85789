"""Packing captioned scenes into WebDataset shards, append-only, so reruns and kills are safe.

A packed scene stays where it is. A run packs only the samples that no published shard holds,
in key order, cut at the size target, into shards numbered from the lowest free number. A shard
task writes its tar (complete or absent: ``curation.store``), then records its keys in the
ledger's shards table (``pipelines.ledger``). Before planning, every object under ``shards/``
that no recorded shard owns (a killed run's unrecorded tar) is deleted and its samples are
packed again, so after a kill at any moment every scene ends up in exactly one shard. Only
failed work is ever redone, so a packed sample never changes.

Cost: one listing of ``shards/`` and the ledger's shards table; the tasks read only the clips
they pack. The driver holds the sample JSON of this run's new samples only.
"""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import fsspec

from curation.shards import SampleMeta, shard_name, write_shard
from curation.store import Store, scratch_dir
from pipelines.config import ShardConfig
from pipelines.ledger import Ledger
from pipelines.scheduling import from_tasks, task_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackEntry:
    key: str
    clip_uri: str
    sample: str  # the sample's JSON


@dataclass
class ShardTask:
    index: int
    entries: list[PackEntry]


def shard_index(name: str) -> int:
    """The number of a shard from any of its objects' names (``shard-000007.tar``, its index file)."""
    return int(name.split(".")[0].split("-")[1])


def plan_shards(
    entries: list[tuple[PackEntry, int]], config: ShardConfig, taken: set[int]
) -> list[ShardTask]:
    """(entry, clip bytes) in key order, cut into shards of at most ``max_samples`` and about
    ``target_bytes``, numbered from the lowest numbers not in ``taken``."""
    groups: list[list[PackEntry]] = []
    current: list[PackEntry] = []
    current_bytes = 0
    for entry, clip_bytes in sorted(entries, key=lambda item: item[0].key):
        size = clip_bytes + len(entry.sample)
        if current and (len(current) >= config.max_samples or current_bytes + size > config.target_bytes):
            groups.append(current)
            current, current_bytes = [], 0
        current.append(entry)
        current_bytes += size
    if current:
        groups.append(current)
    return [ShardTask(index, group) for index, group in zip(_free(taken), groups)]


def _free(taken: set[int]) -> Iterator[int]:
    index = 0
    while True:
        if index not in taken:
            yield index
        index += 1


def _samples(entries: list[PackEntry]) -> Iterator[tuple[SampleMeta, bytes]]:
    # One clip in memory at a time, however large the shard.
    for entry in entries:
        with fsspec.open(entry.clip_uri, "rb") as clip:
            yield SampleMeta.model_validate_json(entry.sample), clip.read()


def write_planned_shard(task: ShardTask, output: str) -> int:
    """Write one planned shard into the store, then record it; returns its sample count."""
    store = Store(output)
    name = shard_name(task.index)
    if store.local:
        count = write_shard(Path(store.path(f"shards/{name}")), _samples(task.entries))
    else:
        folder = scratch_dir() / f"shard-{uuid.uuid4().hex}"
        try:
            count = write_shard(folder / name, _samples(task.entries))
            # Whatever the writer put beside the tar goes first, so a reader that sees a tar finds it.
            for path in sorted(folder.iterdir(), key=lambda p: p.name == name):
                store.upload(path, f"shards/{path.name}")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    Ledger(store).write_shard(name, [entry.key for entry in task.entries])
    return count


def published_shards(store: Store, ledger: Ledger) -> dict[str, str]:
    """``key -> shard`` of every packed scene, after deleting the objects of unrecorded shards."""
    assigned = ledger.read("shards", ["shard"])
    listed = store.list("shards")
    recorded = set(assigned["shard"].to_pylist()) & set(listed)
    stale = [name for name in listed if shard_name(shard_index(name)) not in recorded]
    if stale:
        log.info("shards: removing %d objects no finished shard owns (a killed run's)", len(stale))
        store.delete([f"shards/{name}" for name in stale])
    return {key: shard for key, shard in zip(assigned["key"].to_pylist(), assigned["shard"].to_pylist()) if shard in recorded}


def pack(
    store: Store,
    ledger: Ledger,
    ready: list[tuple[str, str, int]],
    config: ShardConfig,
    write: Callable[[list[ShardTask]], list[int]],
) -> tuple[dict[str, str], int]:
    """Pack the ``(key, clip uri, clip bytes)`` samples that no shard holds yet; ``write`` runs
    :func:`write_planned_shard` on each task (:func:`write_here`, or Ray tasks). Returns
    ``key -> shard`` of every packed scene and how many shards this call wrote."""
    shard_of = published_shards(store, ledger)
    new = [(key, clip, size) for key, clip, size in ready if key not in shard_of]
    samples = ledger.samples([key for key, _, _ in new])
    entries = [(PackEntry(key, clip, samples[key]), size) for key, clip, size in new]
    tasks = plan_shards(entries, config, {shard_index(name) for name in set(shard_of.values())})
    if tasks:
        counts = write(tasks)
        log.info("shards: %d written (%d samples), %d complete before", len(tasks), sum(counts), len(set(shard_of.values())))
        for task in tasks:
            shard_of.update({entry.key: shard_name(task.index) for entry in task.entries})
    return shard_of, len(tasks)


def write_here(output: str) -> Callable[[list[ShardTask]], list[int]]:
    """Write shards one after another in this process."""
    return lambda tasks: [write_planned_shard(task, output) for task in tasks]


def write_on_ray(output: str, cpus: float, connect: Callable[[], None]) -> Callable[[list[ShardTask]], list[int]]:
    """Write shards in parallel Ray tasks of ``cpus`` each (``connect`` joins Ray first)."""

    def write(tasks: list[ShardTask]) -> list[int]:
        connect()
        written = from_tasks(tasks, blocks=len(tasks)).map(_write_row, fn_kwargs={"output": output}, num_cpus=cpus)
        return [row["samples"] for row in written.take_all()]

    return write


def _write_row(row: dict[str, Any], output: str) -> dict[str, Any]:
    return {"samples": write_planned_shard(task_of(row), output)}
