"""One video through every curation stage, and a folder of videos into manifests and clips.

This is the plain, single-process composition of the stages; the Ray pipeline composes the
same functions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from curation.clips import cut_clips
from curation.config import CurationConfig
from curation.filters import filter_shots, score_shots
from curation.manifests import SCENES_SCHEMA, SHOTS_SCHEMA, VIDEOS_SCHEMA, write_manifest
from curation.probe import probe_video
from curation.scenes import assemble_scenes
from curation.shots import detect_shots
from curation.types import Scene, Shot, VideoInfo

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".mts", ".flv", ".wmv"}


@dataclass
class VideoResult:
    info: VideoInfo
    shots: list[Shot] = field(default_factory=list)
    scenes: list[Scene] = field(default_factory=list)


def curate_video(uri: str, clips_dir: str | Path, config: CurationConfig) -> VideoResult:
    """Probe, detect, filter, assemble and cut one video. Bad input becomes a failed VideoInfo."""
    info = probe_video(uri, config.probe)
    if not info.ok:
        return VideoResult(info)
    threads = config.probe.decode_threads
    try:
        detection = detect_shots(info, config.detect, threads=threads)
    except Exception as exc:
        log.exception("%s: shot detection failed", uri)
        info.status, info.error = "failed", f"shot detection failed: {type(exc).__name__}: {exc}"
        return VideoResult(info)
    # The decoded count is exact; the container's was only what it claimed.
    info.num_frames = detection.num_frames
    info.duration_s = detection.num_frames / info.fps
    shots = filter_shots(score_shots(info.video_id, detection), config.filters)
    scenes = assemble_scenes(info, shots, config.scenes)
    cut_clips(info, scenes, clips_dir, config.clips, threads=threads)
    return VideoResult(info, shots, scenes)


def list_inputs(input_dir: str | Path) -> list[str]:
    """Every entry under input_dir named like a video (directories and unreadable files too,
    so they get a failure row rather than vanishing), in a stable order."""
    root = Path(input_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"input folder {root} does not exist or is not a folder")
    return sorted(str(p) for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)


def write_manifests(results: list[VideoResult], output_dir: str | Path) -> None:
    manifests = Path(output_dir) / "manifests"
    write_manifest([r.info.to_row() for r in results], manifests / "videos.parquet", VIDEOS_SCHEMA)
    write_manifest([s.to_row() for r in results for s in r.shots], manifests / "shots.parquet", SHOTS_SCHEMA)
    write_manifest([s.to_row() for r in results for s in r.scenes], manifests / "scenes.parquet", SCENES_SCHEMA)


def curate_folder(input_dir: str | Path, output_dir: str | Path, config: CurationConfig) -> list[VideoResult]:
    """Curate every video under input_dir into OUTPUT/clips and OUTPUT/manifests."""
    clips_dir = Path(output_dir) / "clips"
    results = []
    for uri in list_inputs(input_dir):
        result = curate_video(uri, clips_dir, config)
        log.info(
            "%s: %s, %d shots (%d kept), %d scenes",
            uri,
            result.info.status if result.info.ok else f"failed: {result.info.error}",
            len(result.shots),
            sum(s.kept for s in result.shots),
            len(result.scenes),
        )
        results.append(result)
    write_manifests(results, output_dir)
    return results
