"""Awkward real inputs (see hard_inputs.py): valid footage is curated, damaged footage loses only
the scenes its damage touches, impossible geometry is refused with a reason, and an exception in
any step becomes that video's failure instead of the caller's."""

from __future__ import annotations

import hashlib
import os

import av
import numpy as np
import pytest
from hard_inputs import (
    CORRUPT_PACKET,
    HARD_INPUTS,
    MARKER,
    make_corrupt_packet,
    make_extreme_aspect,
    make_non_utf8_name,
    make_rotated_phone,
    make_truncated_faststart,
)

import curation.run
from curation.config import CurationConfig
from curation.manifests import SCENES_SCHEMA, VIDEOS_SCHEMA, read_manifest, write_manifest
from curation.run import curate_video
from curation.types import printable_uri, uri_bytes, video_id_for

# Inputs that are valid footage: each must give at least one scene with its clip.
VALID = sorted(set(HARD_INPUTS) - {"extreme_aspect", "corrupt_packet", "truncated_faststart"})


def _config(**clips) -> CurationConfig:
    return CurationConfig.from_dict(
        {"clips": {"width": 160, "height": 96, **clips}, "scenes": {"tiers": {"2s": 33, "5s": 81}}}
    )


def _clip_frames(path: str) -> list[np.ndarray]:
    with av.open(path) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


@pytest.mark.parametrize("name", VALID)
def test_valid_footage_is_curated(tmp_path, name):
    source = HARD_INPUTS[name](tmp_path)
    record = curate_video(str(source), tmp_path / "clips", _config())
    assert record.info.ok, record.info.error
    assert abs(record.info.fps - 24) < 1.5, "the stream's rate (not a demuxer default of 25)"
    assert record.info.num_frames >= 150
    scenes = [s for s in record.scenes if s.status == "ok"]
    assert {s.tier for s in scenes} == {"2s", "5s"}
    for scene in scenes:
        assert len(_clip_frames(scene.clip_path)) == scene.num_frames


def test_the_main_stream_is_curated_not_a_preview(tmp_path):
    record = curate_video(str(HARD_INPUTS["two_video_streams"](tmp_path)), tmp_path / "clips", _config())
    assert (record.info.width, record.info.height, record.info.num_frames) == (160, 90, 156)


def test_rotation_is_applied_to_analysis_and_clips(tmp_path):
    source = make_rotated_phone(tmp_path)
    record = curate_video(str(source), tmp_path / "clips", _config(width=96, height=160))
    info = record.info
    assert (info.width, info.height, info.rotation) == (90, 160, 270)  # shown upright: portrait
    scene = next(s for s in record.scenes if s.status == "ok")
    first = _clip_frames(scene.clip_path)[0].astype(int)
    # The displayed top-left corner holds a white square and the top-right a red one.
    corner = MARKER // 2
    top_left, top_right = first[4 : 4 + corner, :corner], first[4 : 4 + corner, -corner:]
    assert top_left.mean() > 200
    assert top_right[..., 0].mean() > 180 and top_right[..., 1:].mean() < 80


def test_a_damaged_packet_costs_only_the_scenes_it_touches(tmp_path):
    damaged = make_corrupt_packet(tmp_path)
    whole = make_corrupt_packet(tmp_path, damage=False)
    config = CurationConfig.from_dict({"clips": {"width": 160, "height": 96}, "scenes": {"tiers": {"2s": 33}}})
    record = curate_video(str(damaged), tmp_path / "clips", config)
    assert record.info.ok and record.info.decode_errors == 1
    # FFmpeg's numbering: the lost frame is not counted, later frames move one index down.
    assert record.info.num_frames == 191
    dropped = [s for s in record.shots if s.drop_reason and s.drop_reason.startswith("damaged")]
    assert len(dropped) == 1 and dropped[0].start_frame == CORRUPT_PACKET
    damaged_frames = set(range(dropped[0].start_frame, dropped[0].end_frame))
    scenes = [s for s in record.scenes if s.status == "ok"]
    sources = [[f for shot in s.shots for f in shot.source_frames] for s in scenes]
    assert any(max(f) < CORRUPT_PACKET for f in sources) and any(min(f) > CORRUPT_PACKET for f in sources)
    assert not any(damaged_frames & set(f) for f in sources)
    # A clip after the damage shows the frames its manifest names: the undamaged file's frame
    # index + 1 there.
    after = next(s for s, f in zip(scenes, sources) if min(f) > CORRUPT_PACKET)
    with av.open(str(whole)) as container:
        truth = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    first_source = after.shots[0].source_frames[0]
    clip_first = _clip_frames(after.clip_path)[0].astype(int)
    expected = av.VideoFrame.from_ndarray(truth[first_source + 1], format="rgb24")
    expected = expected.reformat(width=171, height=96).to_ndarray(format="rgb24")[:, 5:165].astype(int)
    wrong = av.VideoFrame.from_ndarray(truth[first_source], format="rgb24")
    wrong = wrong.reformat(width=171, height=96).to_ndarray(format="rgb24")[:, 5:165].astype(int)
    assert np.abs(clip_first - expected).mean() < np.abs(clip_first - wrong).mean() / 2


def test_a_truncated_faststart_file_keeps_the_scenes_before_the_cut(tmp_path):
    source = make_truncated_faststart(tmp_path)
    with av.open(str(source)) as container:
        stated = container.streams.video[0].frames
    record = curate_video(str(source), tmp_path / "clips", _config())
    assert record.info.ok and record.info.num_frames < stated
    scenes = [s for s in record.scenes if s.status == "ok"]
    assert scenes and all(s.shots[-1].source_frames[-1] < record.info.num_frames for s in scenes)


def test_impossible_geometry_is_refused_with_a_reason(tmp_path):
    source = make_extreme_aspect(tmp_path)
    record = curate_video(str(source), tmp_path / "clips", _config())
    assert record.info.ok and record.scenes
    assert all(s.status == "skipped" and "too far from the clip's shape" in s.error for s in record.scenes)
    # With the guard off, FFmpeg's scaler refuses the 832x416000 picture: the scenes fail with
    # the reason, nothing raises.
    record = curate_video(str(source), tmp_path / "clips", _config(width=832, height=480, min_coverage=0.0))
    assert record.scenes and all(s.status == "failed" and s.clip_path is None for s in record.scenes)
    assert not list((tmp_path / "clips").glob("*.mp4"))


def test_a_non_utf8_name_gets_a_stable_id_and_printable_manifests(tmp_path):
    source = make_non_utf8_name(tmp_path)
    record = curate_video(str(source), tmp_path / "clips", _config())
    assert record.info.ok and any(s.status == "ok" for s in record.scenes)
    name_bytes = os.fsencode(str(source))
    assert uri_bytes(record.info.uri) == name_bytes
    assert record.info.video_id == hashlib.sha1(name_bytes).hexdigest()[:16]
    write_manifest([record.info.to_row()], tmp_path / "videos.parquet", VIDEOS_SCHEMA)
    write_manifest([s.to_row() for s in record.scenes], tmp_path / "scenes.parquet", SCENES_SCHEMA)
    (row,) = read_manifest(tmp_path / "videos.parquet")
    assert row["uri"].endswith("caf\\xe9.mp4") and row["uri"] == printable_uri(record.info.uri)


def test_ids_do_not_depend_on_how_the_path_is_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    absolute = str(tmp_path / "a.mp4")
    assert video_id_for("a.mp4") == video_id_for("./sub/../a.mp4") == video_id_for(absolute)
    assert video_id_for("s3://bucket/a.mp4") != video_id_for(absolute)


@pytest.mark.parametrize(
    ("step", "target"),
    [("probe", "probe_video"), ("shots", "detect_shots"), ("clips", "cut_clips")],
)
def test_an_exception_in_any_step_fails_the_video_not_the_caller(tmp_path, monkeypatch, multishot, step, target):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(curation.run, target, broken)
    record = curate_video(multishot[0], tmp_path / "clips", _config())
    assert record.info.status == "failed" and record.info.error == f"{step} failed: RuntimeError: boom"
    assert all(s.status == "failed" and s.clip_path is None for s in record.scenes)
    assert step in record.seconds
