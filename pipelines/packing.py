"""Packing captioned scenes into WebDataset shards, deterministically, so reruns are idempotent.

Samples are ordered by key and cut into shards at the size target; a shard's fingerprint (its
keys and the bytes of each sample's clip and caption record) is stored beside the work records
once the tar is published. A rerun plans the same shards from the same samples and rewrites
only those whose fingerprint changed, so after a kill at any moment every scene ends up in
exactly one shard. Tars are written under ``.partial`` names and renamed when complete
(``curation.shards.write_shard``): a reader globbing ``*.tar`` never sees a truncated one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from curation.shards import SampleMeta, shard_name, write_shard
from pipelines.config import ShardConfig
from pipelines.records import caption_record_path, read_json, work_dir, write_json_atomic

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackEntry:
    key: str
    clip_path: str
    size: int  # clip bytes + caption record bytes: what the sample adds to a shard, near enough


def plan_shards(entries: list[PackEntry], config: ShardConfig) -> list[list[PackEntry]]:
    """Entries in key order, cut into shards of at most ``max_samples`` and about ``target_bytes``."""
    shards: list[list[PackEntry]] = []
    current: list[PackEntry] = []
    current_bytes = 0
    for entry in sorted(entries, key=lambda e: e.key):
        full = len(current) >= config.max_samples or current_bytes + entry.size > config.target_bytes
        if current and full:
            shards.append(current)
            current, current_bytes = [], 0
        current.append(entry)
        current_bytes += entry.size
    if current:
        shards.append(current)
    return shards


def fingerprint(output: str | Path, entries: list[PackEntry]) -> str:
    digest = hashlib.sha1()
    for entry in entries:
        record = caption_record_path(output, entry.key).read_bytes()
        clip = Path(entry.clip_path).stat()
        digest.update(f"{entry.key}\0{clip.st_size}\0{clip.st_mtime_ns}\0".encode())
        digest.update(hashlib.sha1(record).digest())
    return digest.hexdigest()


def _fingerprint_path(output: str | Path, index: int) -> Path:
    return work_dir(output) / "shards" / f"{shard_name(index)}.json"


def shard_task(index: int, entries: list[PackEntry]) -> dict[str, Any]:
    """A Ray Data row for one planned shard."""
    return {"index": index, "entries": json.dumps([e.__dict__ for e in entries])}


def _samples(output: str | Path, entries: list[PackEntry]) -> Iterator[tuple[SampleMeta, bytes]]:
    # One clip in memory at a time, however large the shard.
    for entry in entries:
        record = read_json(caption_record_path(output, entry.key))
        yield SampleMeta.model_validate(record["sample"]), Path(entry.clip_path).read_bytes()


def write_planned_shard(row: dict[str, Any], output: str) -> dict[str, Any]:
    """Write one planned shard unless the published one already holds exactly these samples."""
    index = int(row["index"])
    entries = [PackEntry(**e) for e in json.loads(row["entries"])]
    path = Path(output) / "shards" / shard_name(index)
    marker = _fingerprint_path(output, index)
    expected = fingerprint(output, entries)
    previous = read_json(marker)
    if path.exists() and previous is not None and previous.get("fingerprint") == expected:
        return {"index": index, "written": False, "samples": len(entries)}
    marker.unlink(missing_ok=True)
    count = write_shard(path, _samples(output, entries))
    write_json_atomic(marker, {"fingerprint": expected, "keys": [e.key for e in entries]})
    return {"index": index, "written": True, "samples": count}


def remove_stale(output: str | Path, num_shards: int) -> None:
    """Drop shards past the plan's end (the run's start already removed a killed run's partial tars)."""
    folder = Path(output) / "shards"
    for tar in folder.glob("shard-*.tar"):
        index = int(tar.stem.split("-")[1])
        if index >= num_shards:
            tar.unlink(missing_ok=True)
            _fingerprint_path(output, index).unlink(missing_ok=True)
