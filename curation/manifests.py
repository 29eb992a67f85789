"""Parquet manifests: videos, shots and scenes, as laid out in DESIGN.md.

Each has a fixed schema, so a manifest with no rows, or parts written separately and merged
later, still has every column with the same type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.files import atomic_path

_frames = pa.list_(pa.int64())

VIDEOS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("fps", pa.float64()),
        ("num_frames", pa.int64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("duration_s", pa.float64()),
        ("codec", pa.string()),
        ("decoder", pa.string()),
        ("rotation", pa.int64()),
        ("decode_errors", pa.int64()),
        ("fades", pa.int64()),
        ("dissolves", pa.int64()),
    ]
)

SHOTS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("shot_index", pa.int64()),
        ("start_frame", pa.int64()),
        ("end_frame", pa.int64()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("kept", pa.bool_()),
        ("drop_reason", pa.string()),
        ("score_brightness", pa.float64()),
        ("score_motion", pa.float64()),
        ("score_damaged", pa.float64()),
    ]
)

SCENES_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("scene_index", pa.int64()),
        ("tier", pa.string()),
        ("num_shots", pa.int64()),
        ("shot_indices", _frames),
        ("shot_start_frames", _frames),
        ("shot_end_frames", _frames),
        ("shot_source_start_frames", _frames),
        ("shot_source_end_frames", _frames),
        ("shot_cut_frames", _frames),
        ("fps", pa.float64()),
        ("num_frames", pa.int64()),
        ("duration_s", pa.float64()),
        ("source_fps", pa.float64()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("upscale", pa.float64()),
        ("clip_path", pa.string()),
        ("status", pa.string()),
        ("error", pa.string()),
        ("shard", pa.string()),
    ]
)


def manifest_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows as a table of the manifest's schema. A row key the schema lacks is an error, not a
    silently dropped column."""
    unknown = {key for row in rows for key in row} - set(schema.names)
    if unknown:
        raise ValueError(f"columns {sorted(unknown)} are not in the manifest schema")
    return pa.Table.from_pylist(rows, schema=schema)


def write_manifest(rows: list[dict[str, Any]], path: str | Path, schema: pa.Schema) -> Path:
    """Write rows as one local Parquet file with the given schema, atomically (a reader never
    sees half a file); ``curation.store.Store.write_parquet`` writes anywhere else."""
    path = Path(path)
    with atomic_path(path) as partial:
        pq.write_table(manifest_table(rows, schema), partial)
    return path


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()
