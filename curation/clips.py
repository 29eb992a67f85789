"""Clip cutting: every scene of a video written as an H.264 mp4 in one decode pass."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from curation.config import ClipConfig
from curation.decode import open_reader
from curation.encode import VideoWriter
from curation.types import Scene, VideoInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Geometry:
    """Resize the source to (scaled_width, scaled_height), then centre-crop to the clip size."""

    scaled_width: int
    scaled_height: int
    crop_x: int
    crop_y: int
    width: int
    height: int
    upscale: float  # > 1 when the source is smaller than the clip in either dimension


def clip_geometry(source_width: int, source_height: int, config: ClipConfig) -> Geometry:
    scale = max(config.width / source_width, config.height / source_height)
    scaled_w = max(config.width, round(source_width * scale))
    scaled_h = max(config.height, round(source_height * scale))
    return Geometry(
        scaled_width=scaled_w,
        scaled_height=scaled_h,
        crop_x=(scaled_w - config.width) // 2,
        crop_y=(scaled_h - config.height) // 2,
        width=config.width,
        height=config.height,
        upscale=max(1.0, scale),
    )


class _SceneWriter:
    """Feeds one scene's encoder as source frames stream past, repeating frames where the
    scene's fps is higher than the source's."""

    def __init__(self, scene: Scene, path: Path, geometry: Geometry, config: ClipConfig) -> None:
        self.scene = scene
        self.path = path
        self.partial = path.with_name(path.stem + ".partial.mp4")
        self.geometry = geometry
        self.config = config
        self.sources = [f for shot in scene.shots for f in shot.source_frames]
        self.position = 0
        self.writer: VideoWriter | None = None

    @property
    def done(self) -> bool:
        return self.position == len(self.sources)

    def feed(self, index: int, image) -> None:
        if self.done or self.sources[self.position] != index:
            return
        if self.writer is None:
            g = self.geometry
            self.writer = VideoWriter(
                self.partial, g.width, g.height, self.scene.fps, crf=self.config.crf, preset=self.config.preset
            )
        g = self.geometry
        crop = image[g.crop_y : g.crop_y + g.height, g.crop_x : g.crop_x + g.width]
        while not self.done and self.sources[self.position] == index:
            self.writer.write(crop)
            self.position += 1
        if self.done:
            self.writer.close()
            # Publish only complete clips: a crash never leaves a truncated file under the real name.
            os.replace(self.partial, self.path)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


def cut_clips(
    info: VideoInfo, scenes: list[Scene], out_dir: str | Path, config: ClipConfig, threads: int = 1
) -> list[Scene]:
    """Write each scene to OUT_DIR/KEY.mp4 (in one decode pass) and record the outcome on it."""
    if not scenes:
        return scenes
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    geometry = clip_geometry(info.width, info.height, config)
    for scene in scenes:
        scene.width, scene.height, scene.upscale = geometry.width, geometry.height, geometry.upscale
    if geometry.upscale > 1:
        if not config.allow_upscale:
            reason = (
                f"source {info.width}x{info.height} is smaller than the clip "
                f"{config.width}x{config.height} (would upscale x{geometry.upscale:.2f})"
            )
            for scene in scenes:
                scene.status, scene.error = "skipped", reason
            return scenes
        log.warning("%s: upscaling x%.2f to %dx%d", info.uri, geometry.upscale, config.width, config.height)
    writers = [_SceneWriter(s, out_dir / f"{s.key}.mp4", geometry, config) for s in scenes]
    needed = sorted({f for w in writers for f in w.sources})
    reader = open_reader(info.uri, info.decoder or "pyav", threads=threads)
    try:
        for index, image in reader.frames_at(needed, geometry.scaled_width, geometry.scaled_height):
            for writer in writers:
                writer.feed(index, image)
    except Exception as exc:
        for writer in writers:
            if not writer.done:
                writer.abort()
                writer.scene.status, writer.scene.error = "failed", f"clip cutting failed: {exc}"
        log.warning("%s: clip cutting failed: %s", info.uri, exc)
    for writer in writers:
        if writer.done:
            writer.scene.clip_path = str(writer.path)
    return scenes
