"""The job's ledger: what a rerun reads to tell finished work from the rest, in few large objects.

Three tables under ``OUTPUT/work/``, each a set of Parquet parts written per batch of finished
work (an object store shows a part whole or not at all; locally a part is renamed into place):

- ``videos/part-*.parquet``: one row per curated input, its ``VideoRecord`` as columns: the
  ``videos.parquet`` fields, the input's name as bytes, the step seconds (JSON), its shots and
  scenes as nested lists in the ``shots.parquet`` / ``scenes.parquet`` layout (scenes add the
  clip's size), and apart from them each scene's clip-to-source frame mapping, the one large
  column, read only to caption a scene again. A row is written after the video's clips are in
  the store, so a row means its clips are there.
- ``captions/part-*.parquet``: one row per captioned scene: the shard sample's JSON, or the error.
- ``shards/part-*.parquet``: which published shard holds each packed scene; a shard's rows are
  written after its tar, so a row means the tar is there.

Every row carries ``written_ns``; when an input or scene has several rows (a retried failure, a
compaction cut short by a kill) the newest counts. At the end of a job the parts of each table
are compacted into one, so the next run's plan reads a few objects however many videos there are.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from curation.manifests import SCENES_SCHEMA, SHOTS_SCHEMA, VIDEOS_SCHEMA
from curation.run import VideoRecord
from curation.store import Store
from curation.types import Scene, SceneShot, uri_bytes, uri_from_bytes

_ints = pa.list_(pa.int64())
VIDEOS_LEDGER = pa.schema(
    [
        *VIDEOS_SCHEMA,
        pa.field("uri_bytes", pa.binary()),
        pa.field("seconds", pa.string()),
        pa.field("shots", pa.list_(pa.struct(list(SHOTS_SCHEMA)))),
        pa.field("scenes", pa.list_(pa.struct([*SCENES_SCHEMA, pa.field("clip_bytes", pa.int64())]))),
        # Per scene, per shot: the source frame each clip frame shows (see ``SceneShot``).
        pa.field("scene_source_frames", pa.list_(pa.list_(_ints))),
        pa.field("written_ns", pa.int64()),
    ]
)
CAPTIONS_LEDGER = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("video_id", pa.string()),
        pa.field("sample", pa.string()),  # the shard sample's JSON; null when captioning failed
        pa.field("error", pa.string()),
        pa.field("tries", pa.int64()),
        pa.field("seconds_frames", pa.float64()),
        pa.field("seconds_caption", pa.float64()),
        pa.field("written_ns", pa.int64()),
    ]
)
SHARDS_LEDGER = pa.schema(
    [pa.field("key", pa.string()), pa.field("shard", pa.string()), pa.field("written_ns", pa.int64())]
)
# A compacted part's row groups hold about this much: few groups, so a read takes few requests.
ROW_GROUP_BYTES = 64 << 20
TABLES = {"videos": ("video_id", VIDEOS_LEDGER), "captions": ("key", CAPTIONS_LEDGER), "shards": ("key", SHARDS_LEDGER)}


def video_row(record: VideoRecord) -> dict[str, Any]:
    return {
        **record.info.to_row(),
        "uri_bytes": uri_bytes(record.info.uri),
        "seconds": json.dumps(record.seconds),
        "shots": [shot.to_row() for shot in record.shots],
        "scenes": [{**scene.to_row(), "clip_bytes": scene.clip_bytes} for scene in record.scenes],
        "scene_source_frames": [[list(shot.source_frames) for shot in scene.shots] for scene in record.scenes],
    }


def scenes_of(row: dict[str, Any]) -> list[Scene]:
    """The ``Scene`` objects of a ``videos`` ledger row (read with ``scenes`` and ``scene_source_frames``)."""
    uri = uri_from_bytes(row["uri_bytes"])
    return [_scene(scene, frames, uri) for scene, frames in zip(row["scenes"], row["scene_source_frames"], strict=True)]


def _scene(row: dict[str, Any], source_frames: list[list[int]], uri: str) -> Scene:
    shots = [
        SceneShot(index, start, end, tuple(frames))
        for index, start, end, frames in zip(
            row["shot_indices"], row["shot_start_frames"], row["shot_end_frames"], source_frames, strict=True
        )
    ]
    names = ("key", "video_id", "scene_index", "tier", "fps", "num_frames", "source_fps", "width", "height",
             "upscale", "clip_path", "clip_bytes", "status", "error")
    return Scene(uri=uri, shots=shots, **{name: row[name] for name in names})


def newest(table: pa.Table, key: str) -> pa.Table:
    """One row per ``key``: the one written last (in no particular order)."""
    if table.num_rows == 0 or pc.count_distinct(table[key]).as_py() == table.num_rows:
        return table
    table = table.take(pc.sort_indices(table, sort_keys=[(key, "ascending"), ("written_ns", "descending")]))
    keys = table[key].combine_chunks()
    first = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1))
    return table.filter(pa.concat_arrays([pa.array([True]), first.fill_null(True)]))


def written_now(count: int) -> list[int]:
    """Distinct, increasing ``written_ns`` stamps for ``count`` rows written together."""
    now = time.time_ns()
    return [now + i for i in range(count)]


@dataclass
class Ledger:
    store: Store

    def _folder(self, table: str) -> str:
        return f"work/{table}"

    def _write(self, table: str, rows: list[dict[str, Any]]) -> None:
        """One new part holding ``rows`` (every column but the stamp, which is added here)."""
        if rows:
            rows = [{**row, "written_ns": ns} for row, ns in zip(rows, written_now(len(rows)), strict=True)]
            name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
            self.store.write_parquet(f"{self._folder(table)}/{name}", pa.Table.from_pylist(rows, schema=TABLES[table][1]))

    def write_videos(self, records: list[VideoRecord]) -> None:
        self._write("videos", [video_row(r) for r in records])

    def write_captions(self, rows: list[dict[str, Any]]) -> None:
        """Rows with the ``CAPTIONS_LEDGER`` columns but ``written_ns``."""
        self._write("captions", rows)

    def parts(self, table: str) -> list[str]:
        folder = self._folder(table)
        names = sorted(name for name in self.store.list(folder) if name.startswith("part-") and name.endswith(".parquet"))
        return [f"{folder}/{name}" for name in names]

    def read(self, table: str, columns: list[str] | None = None) -> pa.Table:
        """The newest row of each video or scene, only ``columns`` (plus the key and stamp)."""
        key, schema = TABLES[table]
        if columns is not None:
            columns = list(dict.fromkeys([key, "written_ns", *columns]))
        parts = self.parts(table)
        if not parts:
            return schema.empty_table().select(columns) if columns else schema.empty_table()
        return newest(self.store.read_parquet(parts, columns), key)

    def compact(self, table: str) -> int:
        """Replace the table's parts by one holding the newest row of each key; returns how many
        parts it replaced. Streams a row group at a time: memory holds ``ROW_GROUP_BYTES`` plus
        every key's stamp. A kill between writing the new part and deleting the old ones leaves
        duplicates, which ``read`` resolves by stamp and the next compaction removes."""
        key, schema = TABLES[table]
        parts = self.parts(table)
        if len(parts) <= 1:
            return 0
        winners = newest(self.store.read_parquet(parts, [key, "written_ns"]), key)["written_ns"]
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        with self.store.writing(f"{self._folder(table)}/{name}") as local, pq.ParquetWriter(local, schema) as writer:
            pending: list[pa.RecordBatch] = []
            for batch in self._dataset(table, parts).to_batches(filter=pc.field("written_ns").isin(winners)):
                pending.append(batch)
                if sum(b.nbytes for b in pending) >= ROW_GROUP_BYTES:
                    writer.write_table(pa.Table.from_batches(pending, schema))
                    pending = []
            if pending:
                writer.write_table(pa.Table.from_batches(pending, schema))
        self.store.delete(parts)
        return len(parts)

    def _dataset(self, table: str, parts: list[str]) -> pads.Dataset:
        return pads.dataset([self.store.path(p) for p in parts], schema=TABLES[table][1], format="parquet", filesystem=self.store.fs)

    def samples(self, keys: list[str]) -> dict[str, str]:
        """``key -> sample JSON`` of these captioned scenes, in one pass over the captions parts."""
        if not keys:
            return {}
        parts = self.parts("captions")
        if not parts:
            return {}
        table = self._dataset("captions", parts).to_table(columns=["key", "sample", "written_ns"], filter=pc.field("key").isin(keys))
        table = newest(table, "key")
        return dict(zip(table["key"].to_pylist(), table["sample"].to_pylist(), strict=True))

    def any_sample(self) -> str | None:
        """The JSON of one captioned sample, reading as little as the first row group that has one."""
        for batch in self._dataset("captions", self.parts("captions")).to_batches(columns=["sample"], batch_size=256):
            found = pc.drop_null(batch["sample"])
            if len(found):
                return found[0].as_py()
        return None

    def write_shard(self, shard: str, keys: list[str]) -> None:
        """Record that the published shard ``shard`` holds these scenes."""
        self._write("shards", [{"key": key, "shard": shard} for key in keys])


class PartWriter:
    """Finished work written a ledger part at a time: every ``rows`` items or ``seconds``, and at
    :meth:`flush`. What a kill loses is what was not yet written: at most that much work."""

    def __init__(self, write: Callable[[list[Any]], None], rows: int = 256, seconds: float = 30.0) -> None:
        self.write, self.rows, self.seconds = write, rows, seconds
        self.pending: list[Any] = []
        self.flushed_at = time.monotonic()
        self.count = 0

    def add(self, items: list[Any]) -> None:
        self.pending += items
        self.count += len(items)
        if len(self.pending) >= self.rows or time.monotonic() - self.flushed_at > self.seconds:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.write(self.pending)
        self.pending, self.flushed_at = [], time.monotonic()

    def added(self) -> int:
        """Items added so far (a method, so that a Ray actor of this class answers it)."""
        return self.count
