"""The curation steps of one video, and a folder of videos into manifests and clips.

A video goes through three steps, each filling in its :class:`VideoRecord`: ``probe_step``
(is it a usable video), ``scenes_step`` (shots, filters, scenes) and ``clips_step``. Any
exception inside a step becomes that video's failure, with the step and the reason; it never
reaches the caller, so one bad input cannot stop a folder or a job. The single-process
``curate_folder`` and the Ray job (``pipelines.stages``) run these same steps.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from curation.clips import cut_clips
from curation.config import CurationConfig
from curation.filters import filter_shots, score_shots
from curation.manifests import SCENES_SCHEMA, SHOTS_SCHEMA, VIDEOS_SCHEMA, write_manifest
from curation.probe import probe_video
from curation.scenes import assemble_scenes
from curation.shots import detect_shots
from curation.types import Scene, Shot, VideoInfo, canonical_uri, video_id_for

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {
    ".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".m2v", ".ts", ".mts", ".m2ts",
    ".flv", ".wmv",
}


@dataclass
class VideoRecord:
    """One input after curation, with the seconds each step took on it."""

    info: VideoInfo
    shots: list[Shot] = field(default_factory=list)
    scenes: list[Scene] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def fail(self, reason: str) -> None:
        """Mark the video failed; scenes not yet written fail with it."""
        self.info.status, self.info.error = "failed", reason
        for scene in self.scenes:
            if scene.status == "ok":
                scene.status, scene.error, scene.clip_path = "failed", reason, None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VideoRecord":
        return cls(
            VideoInfo(**data["info"]),
            [Shot(**s) for s in data["shots"]],
            [Scene.from_dict(s) for s in data["scenes"]],
            data["seconds"],
        )


@contextmanager
def _step(record: VideoRecord, name: str) -> Iterator[None]:
    """Time a step; an exception inside it fails the video instead of propagating."""
    start = time.perf_counter()
    try:
        yield
    except Exception as exc:
        reason = f"{name} failed: {type(exc).__name__}: {exc}"
        log.warning("%s: %s", record.info.uri, reason)
        log.debug("%s: %s traceback", record.info.uri, name, exc_info=True)
        record.fail(reason)
    finally:
        record.seconds[name] = record.seconds.get(name, 0.0) + time.perf_counter() - start


def _at(info: VideoInfo, source: str) -> VideoInfo:
    """The info with the file to decode in place of the URI (a copy: the URI stays what every
    record and scene names)."""
    return dataclasses.replace(info, uri=source)


def probe_step(uri: str, source: str, config: CurationConfig) -> VideoRecord:
    """Probe input ``uri`` whose bytes are at local path ``source`` (the input itself or a copy)."""
    record = VideoRecord(VideoInfo(video_id_for(uri), uri))
    with _step(record, "probe"):
        info = probe_video(source, config.probe)
        # Identity comes from the URI the user gave, not from where the bytes were read.
        info.uri, info.video_id = uri, record.info.video_id
        record.info = info
    return record


def scenes_step(record: VideoRecord, source: str, config: CurationConfig) -> None:
    """Shot detection, filters and scene assembly, in one step because the filters read the
    detection's per-frame analysis, too large to pass between tasks for a long film."""
    if not record.info.ok:
        return
    with _step(record, "shots"):
        info = record.info
        detection = detect_shots(_at(info, source), config.detect, threads=config.probe.decode_threads)
        # The decoded count is exact; the container's was only what it claimed.
        info.num_frames = detection.num_frames
        info.duration_s = detection.num_frames / info.fps
        info.decode_errors = len(detection.decode_errors)
        if detection.num_frames < config.probe.min_frames:
            record.fail(f"too short: {detection.num_frames} frame(s) decode, at least {config.probe.min_frames} needed")
            return
        record.shots = filter_shots(score_shots(info.video_id, detection), config.filters)
        record.scenes = assemble_scenes(info, record.shots, config.scenes)


def clips_step(record: VideoRecord, source: str, clips_dir: str | Path, config: CurationConfig) -> None:
    if not (record.info.ok and record.scenes):
        return
    with _step(record, "clips"):
        cut_clips(_at(record.info, source), record.scenes, clips_dir, config.clips, threads=config.probe.decode_threads)


def curate_video(uri: str, clips_dir: str | Path, config: CurationConfig) -> VideoRecord:
    """Probe, detect, filter, assemble and cut one local video. Never raises for bad input."""
    uri = canonical_uri(uri)
    record = probe_step(uri, uri, config)
    scenes_step(record, uri, config)
    clips_step(record, uri, clips_dir, config)
    return record


def list_inputs(input_dir: str | Path) -> list[str]:
    """Every entry under input_dir named like a video (directories and unreadable files too,
    so they get a failure row rather than vanishing), as absolute paths in a stable order."""
    root = Path(input_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"input folder {root} does not exist or is not a folder")
    return sorted(os.path.abspath(p) for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)


def write_manifests(records: list[VideoRecord], output_dir: str | Path) -> None:
    manifests = Path(output_dir) / "manifests"
    write_manifest([r.info.to_row() for r in records], manifests / "videos.parquet", VIDEOS_SCHEMA)
    write_manifest([s.to_row() for r in records for s in r.shots], manifests / "shots.parquet", SHOTS_SCHEMA)
    write_manifest([s.to_row() for r in records for s in r.scenes], manifests / "scenes.parquet", SCENES_SCHEMA)


def log_outcome(record: VideoRecord) -> None:
    info = record.info
    log.info(
        "%s: %s, %d shots (%d kept), %d scenes",
        info.uri,
        "ok" if info.ok else f"failed: {info.error}",
        len(record.shots),
        sum(s.kept for s in record.shots),
        len(record.scenes),
    )


def curate_folder(input_dir: str | Path, output_dir: str | Path, config: CurationConfig) -> list[VideoRecord]:
    """Curate every video under input_dir into OUTPUT/clips and OUTPUT/manifests."""
    clips_dir = Path(output_dir) / "clips"
    records = []
    for uri in tqdm(list_inputs(input_dir), desc="curating", unit="video", mininterval=2.0):
        record = curate_video(uri, clips_dir, config)
        log_outcome(record)
        records.append(record)
    write_manifests(records, output_dir)
    return records
