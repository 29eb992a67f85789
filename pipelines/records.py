"""The job's work records: what a rerun reads to tell finished work from the rest.

Layout under OUTPUT/work (every file written under a temporary name and renamed, so a record
exists only when the work it describes is complete):

- ``videos/{video_id}.json``: one input after curation (``curation.run.VideoRecord``); written
  after its clips, so a record means every clip it names is on disk.
- ``captions/{key}.json``: one scene after captioning: the full shard sample JSON, or the error.
- ``shards/shard-NNNNNN.json``: the fingerprint of a published shard's contents.
- ``staging/``: local copies of remote inputs while they are decoded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curation.files import atomic_path
from curation.run import VideoRecord


def work_dir(output: str | Path) -> Path:
    return Path(output) / "work"


def video_record_path(output: str | Path, video_id: str) -> Path:
    return work_dir(output) / "videos" / f"{video_id}.json"


def caption_record_path(output: str | Path, key: str) -> Path:
    return work_dir(output) / "captions" / f"{key}.json"


def write_json_atomic(path: Path, data: Any) -> None:
    with atomic_path(path) as partial:
        partial.write_text(json.dumps(data))


def read_json(path: Path) -> Any | None:
    """The record at ``path``, or None when there is none yet."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def load_video_record(output: str | Path, video_id: str) -> VideoRecord | None:
    data = read_json(video_record_path(output, video_id))
    return VideoRecord.from_dict(data) if data is not None else None
