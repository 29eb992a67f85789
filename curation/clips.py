"""Clip cutting: every scene of a video written as an H.264 mp4, each clip frame encoded once.

Scenes of different tiers share frames (the shots of a 60 s scene also make 15 s and 5 s
scenes), and encoding is most of the cost of cutting. So one decode pass scales each needed
source frame once, in YUV (no round trip through RGB), and encodes every distinct clip frame
once into a temporary *reel*. An IDR is forced where a scene's run of reel frames starts and a
P frame where one ends, so each run decodes on its own; each clip is then a stream copy of its
runs with fresh timestamps.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from curation.config import ClipConfig
from curation.decode import DecodeReport, decode_video, video_stream
from curation.encode import VideoWriter
from curation.files import atomic_path, partial_path
from curation.types import Scene, VideoInfo

log = logging.getLogger(__name__)


def _even(value: float) -> int:
    return max(2, round(value / 2) * 2)


@dataclass(frozen=True)
class Geometry:
    """Turn the decoded picture upright (``rotation`` degrees counter-clockwise), resize it to
    (scaled_width, scaled_height), then centre-crop to the clip size."""

    scaled_width: int
    scaled_height: int
    crop_x: int
    crop_y: int
    width: int
    height: int
    upscale: float  # > 1 when the source is smaller than the clip in either dimension
    rotation: int = 0

    @property
    def coverage(self) -> float:
        """The share of the source picture that the clip shows."""
        return self.width * self.height / (self.scaled_width * self.scaled_height)


def clip_geometry(source_width: int, source_height: int, config: ClipConfig, rotation: int = 0) -> Geometry:
    """Geometry for a source picture of this size as displayed (after its rotation)."""
    scale = max(config.width / source_width, config.height / source_height)
    # Even sizes and offsets keep the 4:2:0 chroma planes aligned with the luma when cropping.
    scaled_w = max(config.width, _even(source_width * scale))
    scaled_h = max(config.height, _even(source_height * scale))
    return Geometry(
        scaled_width=scaled_w,
        scaled_height=scaled_h,
        crop_x=(scaled_w - config.width) // 4 * 2,
        crop_y=(scaled_h - config.height) // 4 * 2,
        width=config.width,
        height=config.height,
        upscale=max(1.0, scale),
        rotation=rotation,
    )


def geometry_problem(info: VideoInfo, geometry: Geometry, config: ClipConfig) -> str | None:
    """Why this source cannot make clips of this size, or None."""
    if geometry.coverage < config.min_coverage:
        return (
            f"source {info.width}x{info.height} is too far from the clip's shape {config.width}x{config.height}: "
            f"the clip would show {geometry.coverage:.1%} of the picture (clips.min_coverage is {config.min_coverage:.0%})"
        )
    if geometry.upscale > 1 and not config.allow_upscale:
        return (
            f"source {info.width}x{info.height} is smaller than the clip "
            f"{config.width}x{config.height} (would upscale x{geometry.upscale:.2f})"
        )
    return None


def _plane(frame: av.VideoFrame, index: int) -> np.ndarray:
    plane = frame.planes[index]
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, : plane.width]


def scale_and_crop(frame: av.VideoFrame, g: Geometry) -> av.VideoFrame:
    """The clip picture of a decoded frame, as yuv420p (what the encoder takes)."""
    turns = g.rotation // 90 % 4
    # A picture lying on its side is scaled to the transposed size, then turned.
    width, height = (g.scaled_height, g.scaled_width) if turns % 2 else (g.scaled_width, g.scaled_height)
    scaled = frame.reformat(width=width, height=height, format="yuv420p", interpolation="AREA")
    if not turns and (g.scaled_width, g.scaled_height) == (g.width, g.height):
        return scaled
    # Turning each 4:2:0 plane by itself keeps chroma and luma aligned (all sizes are even).
    planes = [np.rot90(_plane(scaled, i), turns) for i in range(3)]
    luma = planes[0][g.crop_y : g.crop_y + g.height, g.crop_x : g.crop_x + g.width]
    y, x, h, w = g.crop_y // 2, g.crop_x // 2, g.height // 2, g.width // 2
    chroma = [plane[y : y + h, x : x + w] for plane in planes[1:]]
    packed = np.concatenate([luma.ravel(), *(c.ravel() for c in chroma)]).reshape(g.height * 3 // 2, g.width)
    return av.VideoFrame.from_ndarray(packed, format="yuv420p")


@dataclass
class ReelPlan:
    """Which clip frames the reel holds and how each scene is copied out of it."""

    keys: list[tuple[int, int]]  # per reel frame: (source frame, repeat), in decode order
    runs: list[list[tuple[int, int]]]  # per scene: half-open runs of reel frames, in clip order
    force: dict[int, str] = field(default_factory=dict)  # reel frame -> "I" (a run starts) or "P" (one ends)


def plan_reel(scenes: list[Scene]) -> ReelPlan:
    """Share reel frames between scenes that show the same source frame of the same shot.

    A frame repeated by frame-rate conversion is keyed by its repeat count within the scene's
    shot; a scene starting inside such a repeat may then miss a shared frame and get its own,
    which costs an encode, never a wrong picture.
    """
    scene_keys = []
    for scene in scenes:
        keys = []
        for shot in scene.shots:
            seen: Counter[int] = Counter()
            for frame in shot.source_frames:
                keys.append((frame, seen[frame]))
                seen[frame] += 1
        scene_keys.append(keys)
    reel = sorted({key for keys in scene_keys for key in keys})
    position = {key: i for i, key in enumerate(reel)}
    plan = ReelPlan(keys=reel, runs=[])
    for keys in scene_keys:
        indices = [position[key] for key in keys]
        starts = [0, *(j for j in range(1, len(indices)) if indices[j] != indices[j - 1] + 1)]
        ends = [*starts[1:], len(indices)]
        plan.runs.append([(indices[s], indices[e - 1] + 1) for s, e in zip(starts, ends)])
    for runs in plan.runs:
        for _, end in runs:
            plan.force[end - 1] = "P"
    for runs in plan.runs:  # a frame that starts one run and ends another must be an IDR
        for start, _ in runs:
            plan.force[start] = "I"
    return plan


def encode_reel(
    uri: str, plan: ReelPlan, geometry: Geometry, writer: VideoWriter, threads: int = 1
) -> str | None:
    """Decode the source once (FFmpeg's numbering) and encode the reel; the error that stopped
    it early, if one did (the frames encoded until then stay usable)."""
    if not plan.keys:
        return None
    keys = iter(enumerate(plan.keys))
    reel_index, (source_index, _) = next(keys)
    report = DecodeReport()
    try:
        with av.open(uri) as container:
            stream = video_stream(container)
            stream.codec_context.thread_count = threads
            for index, frame in enumerate(decode_video(container, stream, report)):
                if index < source_index:
                    continue
                picture = scale_and_crop(frame, geometry)
                while source_index == index:
                    writer.write_frame(picture, force=plan.force.get(reel_index))
                    reel_index, (source_index, _) = next(keys, (None, (None, None)))
                if reel_index is None:
                    return None
        return f"the source ended after {index + 1} frames, before frame {source_index}" + (
            f" ({report.ended_early})" if report.ended_early else ""
        )
    except Exception as exc:  # a corrupt stream: keep what was encoded, fail the scenes it cuts short
        return f"{type(exc).__name__}: {exc}"


def copy_clips(reel_path: Path, plan: ReelPlan, fps: float, targets: dict[int, Path]) -> None:
    """Stream-copy scene i's runs out of the reel into targets[i], atomically."""
    wanted: dict[int, list[int]] = {}  # reel frame -> scenes that show it
    for scene, path in targets.items():
        for start, end in plan.runs[scene]:
            for index in range(start, end):
                wanted.setdefault(index, []).append(scene)
    pending: dict[int, list[tuple[int, bytes, bool]]] = {scene: [] for scene in targets}
    lengths = {scene: sum(end - start for start, end in plan.runs[scene]) for scene in targets}
    with av.open(str(reel_path)) as reel:
        stream = reel.streams.video[0]
        for packet in reel.demux(stream):
            if packet.pts is None:  # the demuxer's end-of-stream marker
                continue
            index = round(packet.pts * stream.time_base * fps)
            for scene in wanted.get(index, ()):
                pending[scene].append((index, bytes(packet), packet.is_keyframe))
                if len(pending[scene]) == lengths[scene]:
                    _write_clip(targets[scene], stream, fps, plan.runs[scene], pending.pop(scene))


def _write_clip(path: Path, template: av.video.stream.VideoStream, fps: float, runs, packets) -> None:
    position, clip_frame = {}, 0
    for start, end in runs:
        for index in range(start, end):
            position[index] = clip_frame
            clip_frame += 1
    tick = round(1 / (template.time_base * fps))
    # Packets arrive in decode order; B-frames make that differ from display order, so decode
    # timestamps start `delay` frames early to stay at or before every presentation timestamp.
    delay = max(k - position[index] for k, (index, _, _) in enumerate(packets))
    # Publish only complete clips: a crash never leaves a truncated file under the real name.
    with atomic_path(path) as partial, av.open(str(partial), mode="w", format="mp4") as out:
        stream = out.add_stream_from_template(template)
        for k, (index, data, keyframe) in enumerate(packets):
            packet = av.Packet(data)
            packet.stream, packet.time_base = stream, template.time_base
            packet.pts, packet.dts, packet.duration = position[index] * tick, (k - delay) * tick, tick
            packet.is_keyframe = keyframe
            out.mux(packet)


def cut_clips(
    info: VideoInfo, scenes: list[Scene], out_dir: str | Path, config: ClipConfig, threads: int = 1
) -> list[Scene]:
    """Write each scene to OUT_DIR/KEY.mp4 and record the outcome on it."""
    if not scenes:
        return scenes
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    geometry = clip_geometry(info.width, info.height, config, info.rotation)
    for scene in scenes:
        scene.width, scene.height, scene.upscale = geometry.width, geometry.height, geometry.upscale
    reason = geometry_problem(info, geometry, config)
    if reason:
        for scene in scenes:
            scene.status, scene.error = "skipped", reason
        return scenes
    if geometry.upscale > 1:
        log.warning("%s: upscaling x%.2f to %dx%d", info.uri, geometry.upscale, config.width, config.height)
    fps = scenes[0].fps
    plan = plan_reel(scenes)
    # Named per attempt: a straggler of a killed run may still be writing its own reel.
    reel_path = partial_path(out_dir / f".{info.video_id}.reel.mp4")
    try:
        with VideoWriter(
            reel_path, geometry.width, geometry.height, fps, container_format="mp4",
            crf=config.crf, preset=config.preset, threads=config.encode_threads,
        ) as writer:
            error = encode_reel(info.uri, plan, geometry, writer, threads)
        encoded = writer.frames_written
        targets = {}
        for i, scene in enumerate(scenes):
            if plan.runs[i][-1][1] <= encoded:
                targets[i] = out_dir / f"{scene.key}.mp4"
            else:
                scene.status, scene.error = "failed", f"clip cutting failed: {error}"
        if error:
            log.warning("%s: clip cutting stopped early: %s", info.uri, error)
        if targets:
            copy_clips(reel_path, plan, fps, targets)
        for i, path in targets.items():
            scenes[i].clip_path = str(path)
    finally:
        reel_path.unlink(missing_ok=True)
    return scenes
