"""The job's work records: what a rerun reads to tell finished work from the rest.

Layout under OUTPUT/work (every file written under a temporary name and renamed, so a record
exists only when the work it describes is complete):

- ``videos/{video_id}.json``: one input after curation (probe, shots, scenes, clips); written
  after its clips, so a record means every clip it names is on disk.
- ``captions/{key}.json``: one scene after captioning: the full shard sample JSON, or the error.
- ``shards/shard-NNNNNN.json``: the fingerprint of a published shard's contents.
- ``staging/``: local copies of remote inputs while they are decoded.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from curation.types import Scene, SceneShot, Shot, VideoInfo


def work_dir(output: str | Path) -> Path:
    return Path(output) / "work"


def video_record_path(output: str | Path, video_id: str) -> Path:
    return work_dir(output) / "videos" / f"{video_id}.json"


def caption_record_path(output: str | Path, key: str) -> Path:
    return work_dir(output) / "captions" / f"{key}.json"


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data))
    os.replace(partial, path)


def read_json(path: Path) -> Any | None:
    """The record at ``path``, or None when there is none yet."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def scene_to_dict(scene: Scene) -> dict[str, Any]:
    return dataclasses.asdict(scene)


def scene_from_dict(data: dict[str, Any]) -> Scene:
    shots = [SceneShot(**{**s, "source_frames": tuple(s["source_frames"])}) for s in data["shots"]]
    return Scene(**{**data, "shots": shots})


@dataclasses.dataclass
class VideoRecord:
    """One input after curation, with the seconds each stage took on it."""

    info: VideoInfo
    shots: list[Shot]
    scenes: list[Scene]
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "info": dataclasses.asdict(self.info),
            "shots": [dataclasses.asdict(s) for s in self.shots],
            "scenes": [scene_to_dict(s) for s in self.scenes],
            "seconds": self.seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VideoRecord":
        return cls(
            VideoInfo(**data["info"]),
            [Shot(**s) for s in data["shots"]],
            [scene_from_dict(s) for s in data["scenes"]],
            data["seconds"],
        )


def load_video_record(output: str | Path, video_id: str) -> VideoRecord | None:
    data = read_json(video_record_path(output, video_id))
    return VideoRecord.from_dict(data) if data is not None else None
