"""Clip cutting: each clip frame is the source frame the manifest names, frames shared between
tiers are encoded once, and a source that ends early fails only the scenes it cuts short."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from curation.clips import clip_geometry, cut_clips, plan_reel, scale_and_crop
from curation.config import CurationConfig
from curation.encode import VideoWriter
from curation.run import curate_video
from curation.synthetic import make_multishot_video

SHOTS = [44, 38, 52, 41, 47, 39]


def _config() -> CurationConfig:
    return CurationConfig.from_dict(
        {
            "clips": {"width": 160, "height": 96},
            # Overlapping tiers, so scenes share frames; small enough for several scenes.
            "scenes": {"tiers": {"2s": 33, "3s": 49, "6s": 97}},
            "filters": {"min_duration_s": 0.5},
        }
    )


def _luma(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="gray").astype(np.int16)


def _expected_pictures(path: str, geometry) -> list[np.ndarray]:
    """Every source frame as the clip should show it: scaled and cropped, before encoding."""
    with av.open(path) as container:
        return [_luma(scale_and_crop(frame, geometry)) for frame in container.decode(video=0)]


@pytest.mark.parametrize("fps", [25, 12], ids=["fewer-clip-frames", "repeated-frames"])
def test_each_clip_frame_is_the_source_frame_the_manifest_names(tmp_path, fps):
    source = tmp_path / "source.mp4"
    make_multishot_video(source, SHOTS, fps=fps, width=256, height=144, seed=5)
    result = curate_video(str(source), tmp_path / "clips", _config())
    scenes = [s for s in result.scenes if s.status == "ok"]
    assert {s.tier for s in scenes} == {"2s", "3s", "6s"}
    assert all(Path(s.clip_path).exists() for s in scenes)
    assert not list((tmp_path / "clips").glob(".*")), "the reel is removed"
    expected = _expected_pictures(str(source), clip_geometry(256, 144, _config().clips))
    for scene in scenes:
        sources = [f for shot in scene.shots for f in shot.source_frames]
        with av.open(scene.clip_path) as container:
            frames = list(container.decode(video=0))
        clip = [_luma(frame) for frame in frames]
        assert len(clip) == scene.num_frames == len(sources)
        # Timestamps a reader can seek by: frame j is shown at j / fps.
        assert [round(frame.time * scene.fps, 3) for frame in frames] == list(range(len(frames)))
        for j, (picture, f) in enumerate(zip(clip, sources)):
            error = np.abs(picture - expected[f]).mean()
            # Encoding loses a little; a neighbouring source frame that shows a different
            # picture (the textures move, but not on every frame) is further away.
            neighbours = [
                np.abs(picture - expected[g]).mean()
                for g in (f - 1, f + 1)
                if 0 <= g < len(expected) and np.abs(expected[g] - expected[f]).mean() > 3
            ]
            assert error < 2.5 and all(error < n for n in neighbours), (scene.key, j, f, error, neighbours)


def test_frames_shared_by_scenes_of_different_tiers_are_encoded_once(tmp_path):
    source = tmp_path / "source.mp4"
    make_multishot_video(source, SHOTS, fps=25, width=256, height=144, seed=5)
    result = curate_video(str(source), tmp_path / "clips", _config())
    plan = plan_reel(result.scenes)
    distinct = {f for scene in result.scenes for shot in scene.shots for f in shot.source_frames}
    assert len(plan.keys) == len(distinct) < sum(scene.num_frames for scene in result.scenes)
    for runs in plan.runs:
        assert all(plan.force[start] == "I" and plan.force[end - 1] in ("I", "P") for start, end in runs)


def test_a_source_that_ends_early_fails_only_the_scenes_it_cuts_short(tmp_path):
    # MPEG-TS has no index at its end, so the first half of the file still decodes.
    full = tmp_path / "full.ts"
    make_multishot_video(full, SHOTS, fps=25, width=256, height=144, seed=5)
    complete = curate_video(str(full), tmp_path / "complete", _config())
    truncated = tmp_path / "truncated.ts"
    data = full.read_bytes()
    truncated.write_bytes(data[: len(data) * 6 // 10])

    info = replace(complete.info, uri=str(truncated))
    scenes = [replace(scene, clip_path=None) for scene in complete.scenes]
    cut_clips(info, scenes, tmp_path / "cut", _config().clips)
    with av.open(str(truncated)) as container:
        readable = sum(1 for _ in container.decode(video=0))
    last_frame = {s.key: s.shots[-1].source_frames[-1] for s in scenes}
    ok = [s for s in scenes if s.status == "ok"]
    failed = [s for s in scenes if s.status == "failed"]
    assert ok and failed
    assert all(last_frame[s.key] < readable and Path(s.clip_path).exists() for s in ok)
    assert all(last_frame[s.key] >= readable - 1 for s in failed)
    assert all("source ended after" in s.error and s.clip_path is None for s in failed)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_encoder_runs_the_configured_threads(tmp_path, threads):
    path = tmp_path / "out.mp4"
    with VideoWriter(path, 320, 192, 16, threads=threads) as writer:  # x264 uses one thread on tiny frames
        for value in range(3):
            writer.write(np.full((192, 320, 3), value * 60, np.uint8))
    # x264 writes its settings into the stream's first SEI message.
    assert f" threads={threads} ".encode() in path.read_bytes()
