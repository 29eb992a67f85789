"""Parquet manifests: videos, shots and scenes, as laid out in DESIGN.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def write_manifest(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write rows as one Parquet file, atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    pq.write_table(pa.Table.from_pylist(rows), partial)
    partial.replace(path)
    return path


def read_manifest(path: str | Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()
