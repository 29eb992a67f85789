"""The pipeline's parts without Ray: input discovery and staging, config overrides, shard planning
and packing, resume planning. Stages are plain functions, so they are tested as such."""

from __future__ import annotations

import json
from pathlib import Path

import fsspec
import pandas as pd
import pytest
from pipeline_helpers import write_synthetic

from curation.shards import read_shard
from curation.types import Scene
from pipelines.caption import plan_work, reason_of
from pipelines.config import ShardConfig, load_config
from pipelines.inputs import discover_inputs, stage_input, unstage
from pipelines.packing import PackEntry, plan_shards, remove_stale, shard_task, write_planned_shard
from pipelines.records import caption_record_path, write_json_atomic
from pipelines.stages import CaptionStage, clips_stage, frames_stage, probe_stage, scene_row, shots_stage, video_row


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("videos")
    write_synthetic(folder / "nested", 1)
    write_synthetic(folder, 1)
    (folder / "notes.txt").write_text("not a video")
    return folder


def test_inputs_from_a_folder_a_glob_and_a_uri(videos, monkeypatch):
    folder = discover_inputs(str(videos))
    assert [Path(p).relative_to(videos).as_posix() for p in folder] == ["nested/synthetic_0.mp4", "synthetic_0.mp4"]
    assert discover_inputs(str(videos / "*.mp4")) == [str(videos / "synthetic_0.mp4")]
    assert discover_inputs(f"file://{videos}/nested/*.mp4") == [f"file://{videos}/nested/synthetic_0.mp4"]
    assert discover_inputs(f"file://{videos}") == [f"file://{p}" for p in folder]
    assert discover_inputs(str(videos), limit=1) == folder[:1]
    # A relative path names the same input (same video_id) from wherever the job runs.
    monkeypatch.chdir(videos)
    assert discover_inputs("synthetic_0.mp4") == [str(videos / "synthetic_0.mp4")]
    with pytest.raises(FileNotFoundError):
        discover_inputs(str(videos / "missing"))


def test_existing_paths_with_glob_characters_are_taken_literally(tmp_path):
    folder = tmp_path / "films [2020]"
    write_synthetic(folder, 1)
    clip = folder / "clip [1080p].mp4"
    (folder / "synthetic_0.mp4").rename(clip)
    assert discover_inputs(str(folder)) == [str(clip)]
    assert discover_inputs(str(clip)) == [str(clip)]
    assert discover_inputs(f"file://{folder}") == [f"file://{clip}"]
    # A path that does not exist is still a pattern.
    assert discover_inputs(str(tmp_path / "films ?2020?" / "*.mp4")) == [str(clip)]


def test_remote_inputs_are_staged_and_removed(videos, tmp_path):
    data = (videos / "synthetic_0.mp4").read_bytes()
    with fsspec.open("memory://bucket/clip.mp4", "wb") as handle:
        handle.write(data)
    assert discover_inputs("memory://bucket/") == ["memory:///bucket/clip.mp4"]
    local = stage_input("memory://bucket/clip.mp4", tmp_path)
    assert Path(local).read_bytes() == data and list(tmp_path.iterdir()) == [Path(local)]
    unstage("memory://bucket/clip.mp4", local)
    assert not Path(local).exists()
    # A local input is read in place and never deleted.
    assert stage_input(str(videos / "synthetic_0.mp4"), tmp_path) == str(videos / "synthetic_0.mp4")
    unstage(str(videos / "synthetic_0.mp4"), str(videos / "synthetic_0.mp4"))
    assert (videos / "synthetic_0.mp4").exists()


def test_an_unreadable_remote_input_is_a_failed_row(tmp_path):
    row = probe_stage(video_row("memory://bucket/missing.mp4"), str(tmp_path), load_config(None).curation)
    info = json.loads(row["record"])["info"]
    assert info["status"] == "failed" and info["error"].startswith("cannot read input")


def test_overrides_reach_nested_sections_and_typos_fail(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("curation: {clips: {width: 416}}\n")
    config = load_config(path, ["curation.clips.height=240", "captioning.openai.base_url=http://h:1/v1",
                                "curation.scenes.tiers={a: 49}", "shards.max_samples=7"])
    assert (config.curation.clips.width, config.curation.clips.height) == (416, 240)
    assert config.captioning.openai.base_url == "http://h:1/v1"
    assert config.curation.scenes.tiers == {"a": 49} and config.shards.max_samples == 7
    with pytest.raises(ValueError):
        load_config(None, ["curation.clips.widht=1"])
    with pytest.raises(ValueError):
        load_config(None, ["shards.max_samples"])


def test_shard_plan_respects_the_targets_and_ignores_arrival_order():
    entries = [PackEntry(f"k{i:02d}", f"/c/{i}.mp4", 40) for i in range(10)]
    by_bytes = plan_shards(entries, ShardConfig(target_bytes=100, max_samples=100))
    assert [[e.key for e in shard] for shard in by_bytes][0] == ["k00", "k01"]
    assert all(sum(e.size for e in shard) <= 100 for shard in by_bytes) and len(by_bytes) == 5
    by_count = plan_shards(list(reversed(entries)), ShardConfig(target_bytes=10**9, max_samples=3))
    assert [len(s) for s in by_count] == [3, 3, 3, 1] and by_count[0][0].key == "k00"
    # A sample larger than the target still gets a shard (of its own).
    assert [len(s) for s in plan_shards([PackEntry("big", "/c", 500)], ShardConfig(target_bytes=100))] == [1]


def test_packing_rewrites_only_changed_shards_and_drops_stale_ones(videos, tmp_path):
    out = str(tmp_path)
    config = load_config(None, ["curation.clips.width=160", "curation.clips.height=96",
                                "curation.scenes.tiers={3s: 49}", "captioning.frames_per_shot=1"]).curation
    row = clips_stage(shots_stage(probe_stage(video_row(str(videos / "synthetic_0.mp4")), out, config), config), out, config)
    scenes = json.loads(row["record"])["scenes"]
    assert len(scenes) >= 3
    entries = []
    for scene in scenes:
        sample = {
            "key": scene["key"], "source": {"uri": scene["uri"], "video_id": scene["video_id"], "start_s": 0.0, "end_s": 1.0},
            "fps": scene["fps"], "num_frames": scene["num_frames"], "width": 160, "height": 96,
            "global_caption": "g", "shots": [{"start_frame": s["start_frame"], "end_frame": s["end_frame"], "caption": "c"}
                                             for s in scene["shots"]],
            "shot_cut_frames": [s["start_frame"] for s in scene["shots"][1:]],
            "prompt": " [shot cut] ".join("x" for _ in scene["shots"]),
        }
        write_json_atomic(caption_record_path(out, scene["key"]), {"sample": sample})
        entries.append(PackEntry(scene["key"], scene["clip_path"], 1))
    plan = plan_shards(entries, ShardConfig(max_samples=2))
    first = [write_planned_shard(shard_task(i, e), out) for i, e in enumerate(plan)]
    assert all(r["written"] for r in first)
    assert [m.key for t in sorted((tmp_path / "shards").glob("*.tar")) for m, _ in read_shard(t)] == sorted(e.key for e in entries)
    again = [write_planned_shard(shard_task(i, e), out) for i, e in enumerate(plan)]
    assert not any(r["written"] for r in again)
    # A changed caption record makes exactly its shard rewritten.
    record = caption_record_path(out, plan[-1][0].key)
    data = json.loads(record.read_text())
    data["sample"]["global_caption"] = "changed"
    write_json_atomic(record, data)
    third = [write_planned_shard(shard_task(i, e), out) for i, e in enumerate(plan)]
    assert [r["written"] for r in third] == [False] * (len(plan) - 1) + [True]
    remove_stale(out, 1)
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["shard-000000.tar"]


def test_resume_plan_skips_recorded_work(videos, tmp_path):
    out = str(tmp_path)
    config = load_config(None, ["curation.clips.width=160", "curation.clips.height=96", "curation.scenes.tiers={3s: 49}"])
    uri = str(videos / "synthetic_0.mp4")
    assert plan_work(out, [uri], retry_failed=False).to_curate == [uri]
    row = clips_stage(shots_stage(probe_stage(video_row(uri), out, config.curation), config.curation), out, config.curation)
    keys = [s["key"] for s in json.loads(row["record"])["scenes"]]
    plan = plan_work(out, [uri], retry_failed=False)
    assert plan.to_curate == [] and [s.key for s in plan.to_caption] == keys
    write_json_atomic(caption_record_path(out, keys[0]), {"sample": None, "error": "engine: down"})
    assert [s.key for s in plan_work(out, [uri], retry_failed=False).to_caption] == keys[1:]
    assert [s.key for s in plan_work(out, [uri], retry_failed=True).to_caption] == keys
    # The frames stage builds the VLM request from the clip on disk.
    scene_row = {"key": keys[1], "video_id": row["video_id"], "scene": json.dumps(json.loads(row["record"])["scenes"][1])}
    (framed,) = frames_stage(scene_row, out, config.captioning)
    request = json.loads(framed["request"])
    images = [p for m in request["messages"] for p in m["content"] if isinstance(p, dict) and p["type"] == "image_url"]
    assert len(images) == config.captioning.frames_per_shot * len(json.loads(scene_row["scene"])["shots"])


def test_failure_reasons_group_by_kind():
    assert reason_of("not a readable media file (Invalid data found)") == "not a readable media file"
    assert reason_of("too short: 1 frame(s), at least 8 needed") == "too short"
    assert reason_of("empty file (0 bytes)") == "empty file"


@pytest.mark.parametrize(("stage", "target"), [("probe", "probe_video"), ("shots", "detect_shots"), ("clips", "cut_clips")])
def test_a_stage_exception_becomes_the_videos_failure_row(videos, tmp_path, monkeypatch, stage, target):
    import curation.run

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(curation.run, target, broken)
    out = str(tmp_path)
    config = load_config(None, ["curation.clips.width=160", "curation.clips.height=96"])
    row = video_row(str(videos / "synthetic_0.mp4"))
    row = clips_stage(shots_stage(probe_stage(row, out, config.curation), config.curation), out, config.curation)
    # The record is published with the reason, so the job's summary lists it and a rerun skips it.
    record = json.loads((tmp_path / "work" / "videos" / f"{row['video_id']}.json").read_text())
    assert record["info"]["status"] == "failed" and record["info"]["error"] == f"{stage} failed: RuntimeError: boom"


def test_a_captioning_exception_fails_the_batchs_scenes(videos, tmp_path, holocine_cache):
    out = str(tmp_path)
    config = load_config(None, ["curation.clips.width=160", "curation.clips.height=96", "curation.scenes.tiers={3s: 49}"])
    config.captioning.model = str(holocine_cache / "tiny-vlm")
    row = clips_stage(shots_stage(probe_stage(video_row(str(videos / "synthetic_0.mp4")), out, config.curation),
                                  config.curation), out, config.curation)
    scenes = [scene_row(Scene.from_dict(s)) for s in json.loads(row["record"])["scenes"]]
    framed = [r for s in scenes for r in frames_stage(s, out, config.captioning)]
    stage = CaptionStage(config.captioning)
    stage.captioner.engine.generate = lambda requests: 1 / 0  # a fault no real engine makes on demand
    outcome = stage(pd.DataFrame(framed))
    assert list(outcome["key"]) == [s["key"] for s in scenes]
    assert all(outcome["sample"] == "") and all(outcome["error"] == "caption: ZeroDivisionError: division by zero")


def test_inputs_in_an_s3_bucket_are_listed_staged_and_removed(videos, tmp_path, s3_server, s3_bucket):
    # The same layout as the local folder: a video at the top, one under a prefix, a file that is no video.
    fs = fsspec.filesystem("s3")
    for name in ("synthetic_0.mp4", "nested/synthetic_0.mp4", "notes.txt"):
        fs.put_file(str(videos / name), f"{s3_bucket}/{name}")
    root = f"s3://{s3_bucket}"
    assert discover_inputs(f"{root}/") == [f"{root}/nested/synthetic_0.mp4", f"{root}/synthetic_0.mp4"]
    assert discover_inputs(f"{root}/*.mp4") == [f"{root}/synthetic_0.mp4"]
    staging = tmp_path / "staging"
    local = stage_input(f"{root}/synthetic_0.mp4", staging)
    assert Path(local).read_bytes() == (videos / "synthetic_0.mp4").read_bytes()
    assert list(staging.iterdir()) == [Path(local)]
    # The bytes came over HTTP from the server.
    assert ("GET", f"/{s3_bucket}/synthetic_0.mp4") in s3_server.requests(s3_bucket)
    unstage(f"{root}/synthetic_0.mp4", local)
    assert not Path(local).exists()
    with pytest.raises(FileNotFoundError):
        discover_inputs(f"{root}/missing.mp4")
