"""The curation of one video, as a stage that both runners schedule.

A video goes through three steps, each filling in its :class:`VideoRecord`: ``probe_step``
(is it a usable video), ``scenes_step`` (shots, filters, scenes) and ``clips_step``. Any
exception inside a step becomes that video's failure, with the step and the reason; it never
reaches the caller, so one bad input cannot stop a folder or a job. :class:`CurateStage` runs
the three on one node with one local copy of the input (shared-nothing: no step reads what
another node left on its disk); ``curate_folder`` runs it in this process, the Ray job
(``pipelines.caption``) on a cluster.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from curation.clips import cut_clips
from curation.config import CurationConfig
from curation.filters import filter_shots, score_shots
from curation.inputs import discover_inputs
from curation.manifests import SCENES_SCHEMA, SHOTS_SCHEMA, VIDEOS_SCHEMA, manifest_table
from curation.probe import probe_video
from curation.scenes import assemble_scenes
from curation.shots import detect_shots
from curation.stage import Resources, Stage, run_locally
from curation.store import Store, local_copy, scratch_dir
from curation.types import Scene, Shot, VideoInfo, canonical_uri, video_id_for

log = logging.getLogger(__name__)

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
        info.fades = sum(t.kind == "fade" for t in detection.transitions)
        info.dissolves = sum(t.kind == "dissolve" for t in detection.transitions)
        if detection.num_frames < config.probe.min_frames:
            record.fail(f"too short: {detection.num_frames} frame(s) decode, at least {config.probe.min_frames} needed")
            return
        record.shots = filter_shots(score_shots(info.video_id, detection), config.filters)
        record.scenes = assemble_scenes(info, record.shots, config.scenes)


def clips_step(record: VideoRecord, source: str, clips_url: str | Path, config: CurationConfig) -> None:
    """Cut the scenes' clips into folder ``clips_url`` (local, or any fsspec URL: cut in this
    node's scratch space, then uploaded one object per clip)."""
    if not (record.info.ok and record.scenes):
        return
    with _step(record, "clips"):
        store = Store(str(clips_url))
        folder = Path(store.root) if store.local else scratch_dir() / f"clips-{uuid.uuid4().hex}"
        try:
            cut_clips(_at(record.info, source), record.scenes, folder, config.clips, threads=config.probe.decode_threads)
            for scene in record.scenes:
                if scene.clip_path:
                    scene.clip_bytes = os.path.getsize(scene.clip_path)
                    if not store.local:
                        name = Path(scene.clip_path).name
                        store.upload(scene.clip_path, name)
                        scene.clip_path = store.uri(name)
        finally:
            if not store.local:
                shutil.rmtree(folder, ignore_errors=True)


def curate_video(uri: str, clips_url: str | Path, config: CurationConfig) -> VideoRecord:
    """Probe, detect, filter, assemble and cut one video (local or any fsspec URL) into folder
    ``clips_url``. Never raises for bad input: the reason is on the record."""
    uri = canonical_uri(uri)
    start = time.perf_counter()
    try:
        with local_copy(uri) as source:
            record = probe_step(uri, source, config)
            record.seconds["probe"] = time.perf_counter() - start  # the copy of a remote input included
            scenes_step(record, source, config)
            clips_step(record, source, clips_url, config)
    except Exception as exc:  # the steps never raise, so only reading a remote input got here
        record = VideoRecord(VideoInfo(video_id_for(uri), uri))
        record.fail(f"cannot read input: {type(exc).__name__}: {exc}")
        record.seconds["probe"] = time.perf_counter() - start
    return record


@dataclass
class VideoTask:
    """A video on its way through the stages: the input's name, then its record."""

    uri: str
    record: VideoRecord | None = None


class CurateStage(Stage):
    """Input name -> curated record, with the clips written under ``clips_url``.

    One stage, not three, so that the input is copied to a node once and read there by every
    step; one whole CPU, since FFmpeg decodes with ``curation.probe.decode_threads`` threads."""

    name = "curate"
    resources = Resources(cpus=1.0)

    def __init__(self, config: CurationConfig, clips_url: str | Path, cpus: float = 1.0) -> None:
        super().__init__()
        self.config, self.clips_url = config, str(clips_url)
        self.resources = Resources(cpus=cpus)

    def process(self, tasks: list[VideoTask]) -> list[VideoTask]:
        for task in tasks:
            task.record = curate_video(task.uri, self.clips_url, self.config)
            log_outcome(task.record)
        return tasks


def write_manifests(records: list[VideoRecord], output: str | Path) -> None:
    store = Store(str(output))
    store.write_parquet("manifests/videos.parquet", manifest_table([r.info.to_row() for r in records], VIDEOS_SCHEMA))
    store.write_parquet("manifests/shots.parquet", manifest_table([s.to_row() for r in records for s in r.shots], SHOTS_SCHEMA))
    store.write_parquet("manifests/scenes.parquet", manifest_table([s.to_row() for r in records for s in r.scenes], SCENES_SCHEMA))


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


def curate_folder(source: str | Path, output: str | Path, config: CurationConfig) -> list[VideoRecord]:
    """Curate every video at ``source`` (a folder, a glob or a URL) into OUTPUT/clips and
    OUTPUT/manifests (OUTPUT local or any fsspec URL), in this process."""
    store = Store(str(output))
    stage = CurateStage(config, store.uri("clips"))
    uris = discover_inputs(str(source))
    tasks = run_locally([stage], (VideoTask(uri) for uri in uris))
    records = [task.record for task in tqdm(tasks, total=len(uris), desc="curating", unit="video", mininterval=2.0)]
    write_manifests(records, output)
    return records
