"""Scene assembly: contiguous kept shots of one video grouped into multi-shot clips of a tier.

A scene of tier T is exactly T = 4k+1 frames at the training fps. Shots are resampled to that
fps; the first shot gives up frames at its start and the last shot at its end so the scene
fits T, and every cut is snapped to the VAE's latent grid: the first shot is 1 mod 4 frames
long and every later shot a multiple of 4, so each cut frame f has ``f % 4 == 1`` and no
latent frame mixes two shots. Snapping drops at most 3 frames before each cut.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from curation.config import SceneConfig
from curation.types import Scene, SceneShot, Shot, VideoInfo, scene_key


@dataclass(frozen=True)
class _Resampled:
    """A kept shot seen at the output fps: output frame j shows source frame start + floor(j*step)."""

    shot: Shot
    step: float  # source frames per output frame

    @property
    def length(self) -> int:
        return math.floor((self.shot.num_frames - 1) / self.step) + 1

    def source_frames(self, first: int, count: int) -> tuple[int, ...]:
        return tuple(self.shot.start_frame + math.floor(j * self.step) for j in range(first, first + count))


def contiguous_runs(shots: list[Shot], fps: float, max_gap_s: float) -> list[list[Shot]]:
    """Maximal runs of consecutive kept shots separated by at most max_gap_s of transition frames."""
    runs: list[list[Shot]] = []
    current: list[Shot] = []
    for shot in shots:
        adjacent = bool(current) and (
            shot.shot_index == current[-1].shot_index + 1
            and (shot.start_frame - current[-1].end_frame) / fps <= max_gap_s
        )
        if current and not (shot.kept and adjacent):
            runs.append(current)
            current = []
        if shot.kept:
            current.append(shot)
    if current:
        runs.append(current)
    return runs


def _lengths_for_tier(shots: list[_Resampled], frames: int, min_shot: int) -> list[int] | None:
    """Per-shot output lengths that fill `frames` exactly with every cut on the latent grid.

    Middle shots keep all their frames but the 0-3 before the next cut; the first shot is cut
    at its start and the last at its end. None if these shots cannot make such a scene.
    """
    middle = [s.length - s.length % 4 for s in shots[1:-1]]
    if any(length < min_shot for length in middle):
        return None
    first_max = shots[0].length - (shots[0].length - 1) % 4  # longest with length % 4 == 1
    last_max = shots[-1].length - shots[-1].length % 4
    first_min = min_shot + (1 - min_shot) % 4  # shortest >= min_shot with length % 4 == 1
    last_min = min_shot + (-min_shot) % 4
    room = frames - sum(middle)
    if first_max < first_min or last_max < last_min or not first_min + last_min <= room <= first_max + last_max:
        return None
    last = min(last_max, room - first_min)
    return [room - last, *middle, last]


def _scene_from_shots(
    shots: list[_Resampled], frames: int, config: SceneConfig
) -> list[SceneShot] | None:
    lengths = _lengths_for_tier(shots, frames, config.min_shot_frames)
    if lengths is None:
        return None
    scene_shots, start = [], 0
    for position, (shot, length) in enumerate(zip(shots, lengths)):
        # The first shot keeps its end (next to the cut), every other shot its start.
        first = shot.length - length if position == 0 else 0
        scene_shots.append(
            SceneShot(shot.shot.shot_index, start, start + length, shot.source_frames(first, length))
        )
        start += length
    return scene_shots


def _first_scene(run: list[_Resampled], frames: int, config: SceneConfig) -> list[SceneShot] | None:
    """The scene made of the fewest shots from the start of `run`, if there is one."""
    for count in range(config.min_shots, min(config.max_shots, len(run)) + 1):
        if sum(s.length - s.length % 4 for s in run[1 : count - 1]) > frames:
            return None  # the middle shots alone are too long; more shots won't help
        scene = _scene_from_shots(run[:count], frames, config)
        if scene is not None:
            return scene
    return None


def _scenes_in_run(run: list[_Resampled], frames: int, config: SceneConfig) -> list[list[SceneShot]]:
    """Non-overlapping scenes, greedily from left to right."""
    scenes, i = [], 0
    while i + config.min_shots <= len(run):
        scene = _first_scene(run[i:], frames, config)
        if scene is None:
            i += 1
        else:
            scenes.append(scene)
            i += len(scene)
    return scenes


def assemble_scenes(info: VideoInfo, shots: list[Shot], config: SceneConfig) -> list[Scene]:
    """Every scene of every tier the video's kept shots can make, tiers independently."""
    step = info.fps / config.fps
    runs = [
        [_Resampled(shot, step) for shot in run]
        for run in contiguous_runs(shots, info.fps, config.max_gap_s)
    ]
    scenes: list[Scene] = []
    for tier, frames in config.tiers.items():
        for run in runs:
            for scene_shots in _scenes_in_run(run, frames, config):
                index = len(scenes)
                scenes.append(
                    Scene(
                        key=scene_key(info.video_id, index),
                        video_id=info.video_id,
                        uri=info.uri,
                        scene_index=index,
                        tier=tier,
                        fps=config.fps,
                        num_frames=frames,
                        source_fps=info.fps,
                        shots=scene_shots,
                    )
                )
    return scenes
