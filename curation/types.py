"""Plain data passed between curation stages (and read by captioning and the pipeline).

Frame numbers are 0-based FFmpeg decode order; spans are half-open ``[start, end)``.
Source frames count in the input video's own frames, clip frames in the written clip.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "failed", "skipped"]


def is_remote(uri: str) -> bool:
    """Whether an input names an object behind an fsspec protocol (s3://, gs://, file://, ...)."""
    return "://" in uri


def canonical_uri(uri: str) -> str:
    """The one name of an input, however it was written: a URI as given, a local path made
    absolute and normalised (``clips/a.mp4`` and ``./clips/../clips/a.mp4`` name one file)."""
    return uri if is_remote(uri) else os.path.abspath(uri)


# Names are bytes on Linux; Python holds the bytes that are not UTF-8 as lone surrogates
# ("surrogateescape"), which no UTF-8 text format (Arrow, Parquet, JSON schemas, HTML) accepts.
def uri_bytes(uri: str) -> bytes:
    """The exact bytes of an input's name."""
    return uri.encode("utf-8", "surrogateescape")


def uri_from_bytes(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def printable_uri(uri: str) -> str:
    """The name as text for manifests, shards and reports: bytes that are not UTF-8 shown as \\xNN."""
    return uri_bytes(uri).decode("utf-8", "backslashreplace")


def video_id_for(uri: str) -> str:
    """Stable id of an input: the first 16 hex digits of the SHA-1 of its canonical name's bytes."""
    return hashlib.sha1(uri_bytes(canonical_uri(uri))).hexdigest()[:16]


def scene_key(video_id: str, scene_index: int) -> str:
    return f"{video_id}-{scene_index:04d}"


@dataclass
class VideoInfo:
    """One input video as probed; a row of ``videos.parquet``."""

    video_id: str
    uri: str
    status: Status = "ok"
    error: str | None = None
    fps: float = 0.0
    num_frames: int = 0
    width: int = 0
    height: int = 0
    duration_s: float = 0.0
    codec: str | None = None
    # Which decoder reproduces FFmpeg's frame numbering for this file ("decord" or "pyav").
    decoder: str | None = None
    # Degrees clockwise that a player turns the decoded pictures (the display matrix);
    # width and height above are the picture as displayed, after this rotation.
    rotation: int = 0
    # Packets the decoder rejected in the detection pass (damaged data it skipped).
    decode_errors: int = 0
    # Gradual transitions found between shots (their frames belong to no shot).
    fades: int = 0
    dissolves: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_row(self) -> dict[str, Any]:
        return {**asdict(self), "uri": printable_uri(self.uri)}


@dataclass
class Shot:
    """A shot in source frames; a row of ``shots.parquet``."""

    video_id: str
    shot_index: int
    start_frame: int
    end_frame: int
    fps: float
    kept: bool = True
    drop_reason: str | None = None
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame

    @property
    def start_s(self) -> float:
        return self.start_frame / self.fps

    @property
    def end_s(self) -> float:
        return self.end_frame / self.fps

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps

    def to_row(self) -> dict[str, Any]:
        row = {
            "video_id": self.video_id,
            "shot_index": self.shot_index,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "kept": self.kept,
            "drop_reason": self.drop_reason,
        }
        row.update({f"score_{name}": value for name, value in self.scores.items()})
        return row


@dataclass(frozen=True)
class SceneShot:
    """One shot inside a scene clip.

    Clip frame ``start_frame + j`` shows source frame ``source_frames[j]``; the mapping is
    stored explicitly because frame-rate conversion repeats or skips source frames.
    """

    shot_index: int
    start_frame: int
    end_frame: int
    source_frames: tuple[int, ...]

    @property
    def num_frames(self) -> int:
        return self.end_frame - self.start_frame


@dataclass
class Scene:
    """A multi-shot scene cut from one video; a row of ``scenes.parquet`` and one clip."""

    key: str
    video_id: str
    uri: str
    scene_index: int
    tier: str
    fps: float
    num_frames: int
    source_fps: float
    shots: list[SceneShot]
    width: int = 0
    height: int = 0
    upscale: float = 1.0
    clip_path: str | None = None
    clip_bytes: int = 0
    status: Status = "ok"
    error: str | None = None
    shard: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Scene":
        """The inverse of ``dataclasses.asdict`` (JSON turns the frame tuples into lists)."""
        shots = [SceneShot(**{**s, "source_frames": tuple(s["source_frames"])}) for s in data["shots"]]
        return cls(**{**data, "shots": shots})

    @property
    def num_shots(self) -> int:
        return len(self.shots)

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps

    @property
    def shot_cut_frames(self) -> list[int]:
        """Clip frames where a new shot starts (every one satisfies ``f % 4 == 1``)."""
        return [shot.start_frame for shot in self.shots[1:]]

    @property
    def start_s(self) -> float:
        return self.shots[0].source_frames[0] / self.source_fps

    @property
    def end_s(self) -> float:
        return (self.shots[-1].source_frames[-1] + 1) / self.source_fps

    def to_row(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "video_id": self.video_id,
            "uri": printable_uri(self.uri),
            "scene_index": self.scene_index,
            "tier": self.tier,
            "num_shots": self.num_shots,
            "shot_indices": [shot.shot_index for shot in self.shots],
            "shot_start_frames": [shot.start_frame for shot in self.shots],
            "shot_end_frames": [shot.end_frame for shot in self.shots],
            "shot_source_start_frames": [shot.source_frames[0] for shot in self.shots],
            "shot_source_end_frames": [shot.source_frames[-1] + 1 for shot in self.shots],
            "shot_cut_frames": self.shot_cut_frames,
            "fps": self.fps,
            "num_frames": self.num_frames,
            "duration_s": self.duration_s,
            "source_fps": self.source_fps,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "width": self.width,
            "height": self.height,
            "upscale": self.upscale,
            "clip_path": self.clip_path,
            "status": self.status,
            "error": self.error,
            "shard": self.shard,
        }
