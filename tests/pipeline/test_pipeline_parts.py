"""The pipeline's parts without Ray: input discovery and staging, config overrides, shard planning
and packing, resume planning, the stages. Stages are plain objects, so they are tested as such."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import fsspec
import pytest
from pipeline_helpers import write_synthetic

from curation.inputs import discover_inputs
from curation.run import CurateStage, VideoTask, curate_video
from curation.shards import SampleMeta, read_shard, shard_name
from curation.stage import Resources, run_locally
from curation.store import Store, local_copy, scratch_dir
from pipelines.bookkeeping import plan_work, reason_of
from pipelines.config import ShardConfig, load_config
from pipelines.ledger import Ledger
from pipelines.packing import PackEntry, pack, plan_shards, write_here
from pipelines.stages import CaptionStage, FramesStage, SceneTask, captionable

SMALL = ["curation.clips.width=160", "curation.clips.height=96", "curation.scenes.tiers={3s: 49}",
         "captioning.frames_per_shot=1"]


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


def test_remote_inputs_are_copied_for_the_block_and_removed(videos, tmp_path, monkeypatch):
    monkeypatch.setenv("HOLOCINE_SCRATCH", str(tmp_path))
    data = (videos / "synthetic_0.mp4").read_bytes()
    with fsspec.open("memory://bucket/clip.mp4", "wb") as handle:
        handle.write(data)
    assert discover_inputs("memory://bucket/") == ["memory:///bucket/clip.mp4"]
    with local_copy("memory://bucket/clip.mp4") as local:
        assert Path(local).read_bytes() == data and Path(local).suffix == ".mp4"
        assert Path(local).parent.parent == tmp_path / "holocine-scratch"
    assert not Path(local).exists()
    # A local input is read in place and never deleted.
    with local_copy(str(videos / "synthetic_0.mp4")) as local:
        assert local == str(videos / "synthetic_0.mp4")
    assert (videos / "synthetic_0.mp4").exists()


def test_scratch_left_by_dead_processes_of_this_host_is_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("HOLOCINE_SCRATCH", str(tmp_path))
    root = tmp_path / "holocine-scratch"
    dead = _a_dead_pid()
    host = socket.gethostname()
    left = {name: root / name for name in (f"{host}-pid{dead}", f"{host}-pid1", f"other-host-pid{dead}")}
    for folder in left.values():
        folder.mkdir(parents=True)
        (folder / "staged.mp4").write_bytes(b"x")
    mine = scratch_dir()
    assert mine == root / f"{host}-pid{os.getpid()}" and mine.is_dir()
    assert not left[f"{host}-pid{dead}"].exists(), "a dead process's copies are removed"
    assert left[f"{host}-pid1"].exists() and left[f"other-host-pid{dead}"].exists(), "live or foreign ones stay"


def _a_dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_an_unreadable_remote_input_is_a_failed_record(tmp_path):
    record = curate_video("memory://bucket/missing.mp4", tmp_path, load_config(None).curation)
    assert record.info.status == "failed" and record.info.error.startswith("cannot read input: FileNotFoundError")


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
    entries = [(PackEntry(f"k{i:02d}", f"/c/{i}.mp4", "{}"), 38) for i in range(10)]
    by_bytes = plan_shards(entries, ShardConfig(target_bytes=100, max_samples=100), taken=set())
    assert [e.key for e in by_bytes[0].entries] == ["k00", "k01"] and len(by_bytes) == 5
    by_count = plan_shards(list(reversed(entries)), ShardConfig(target_bytes=10**9, max_samples=3), taken=set())
    assert [len(t.entries) for t in by_count] == [3, 3, 3, 1] and by_count[0].entries[0].key == "k00"
    # Numbers already taken by published shards are skipped; free ones below them are used.
    assert [t.index for t in by_count] == [0, 1, 2, 3]
    assert [t.index for t in plan_shards(entries, ShardConfig(max_samples=3), taken={0, 2})] == [1, 3, 4, 5]
    # A sample larger than the target still gets a shard (of its own).
    (big,) = plan_shards([(PackEntry("big", "/c", "{}"), 500)], ShardConfig(target_bytes=100), taken=set())
    assert len(big.entries) == 1


def _sample(scene) -> str:
    return SampleMeta.model_validate({
        "key": scene.key, "source": {"uri": scene.uri, "video_id": scene.video_id, "start_s": 0.0, "end_s": 1.0},
        "fps": scene.fps, "num_frames": scene.num_frames, "width": 160, "height": 96,
        "global_caption": "g", "shots": [{"start_frame": s.start_frame, "end_frame": s.end_frame, "caption": "c"}
                                         for s in scene.shots],
        "shot_cut_frames": [s.start_frame for s in scene.shots[1:]],
        "prompt": " [shot cut] ".join("x" for _ in scene.shots),
    }).model_dump_json()


def _captioned(store: Store, videos: Path, config) -> list:
    """One video curated into ``store`` and every scene of it captioned in the ledger."""
    record = curate_video(str(videos / "synthetic_0.mp4"), store.uri("clips"), config.curation)
    ledger = Ledger(store)
    ledger.write_videos([record])
    ledger.write_captions([{"key": s.key, "video_id": s.video_id, "sample": _sample(s), "error": None, "tries": 1,
                            "seconds_frames": 0.0, "seconds_caption": 0.0} for s in record.scenes])
    assert len(record.scenes) >= 3 and all(captionable(s) for s in record.scenes)
    return record.scenes


def _pack(store: Store, scenes: list) -> tuple[dict[str, str], int]:
    ready = [(s.key, s.clip_path, s.clip_bytes) for s in scenes]
    return pack(store, Ledger(store), ready, ShardConfig(max_samples=2), write_here(store.url))


def test_packing_is_append_only_and_repacks_what_a_kill_left_unrecorded(videos, tmp_path):
    store = Store(str(tmp_path))
    scenes = _captioned(store, videos, load_config(None, SMALL))
    first, written = _pack(store, scenes[:-1])
    assert written == len(first) // 2 + len(first) % 2 and set(first) == {s.key for s in scenes[:-1]}
    tars = sorted((tmp_path / "shards").glob("*.tar"))
    assert [m.key for t in tars for m, _ in read_shard(t)] == sorted(first)
    stamps = {t.name: t.stat().st_mtime_ns for t in tars}
    # A new sample goes into a new shard; the published ones are not touched.
    second, written = _pack(store, scenes)
    assert written == 1 and {k: v for k, v in second.items() if k in first} == first
    assert {t.name: t.stat().st_mtime_ns for t in tars} == stamps
    # Nothing new: nothing written.
    assert _pack(store, scenes) == (second, 0)
    # A kill between a tar and its ledger row: the tar is unrecorded, so it is deleted and its
    # samples are packed again, each into exactly one shard.
    unrecorded = tmp_path / "shards" / shard_name(7)
    unrecorded.write_bytes((tmp_path / "shards" / shard_name(0)).read_bytes())
    third, written = _pack(store, scenes)
    assert written == 0 and not unrecorded.exists() and third == second


def test_resume_plan_skips_recorded_work(videos, tmp_path):
    store = Store(str(tmp_path))
    config = load_config(None, SMALL)
    uri = str(videos / "synthetic_0.mp4")
    ledger = Ledger(store)
    assert plan_work(ledger, [uri], retry_failed=False).to_curate == [uri]
    record = curate_video(uri, store.uri("clips"), config.curation)
    ledger.write_videos([record])
    keys = [s.key for s in record.scenes]
    plan = plan_work(ledger, [uri], retry_failed=False)
    assert plan.to_curate == [] and [s.key for s in plan.to_caption] == keys
    # Scenes come back from the ledger whole: the frame mapping included.
    assert plan.to_caption == record.scenes
    ledger.write_captions([{"key": keys[0], "video_id": record.info.video_id, "sample": None, "error": "engine: down",
                            "tries": 1, "seconds_frames": 0.0, "seconds_caption": 0.0}])
    assert [s.key for s in plan_work(ledger, [uri], retry_failed=False).to_caption] == keys[1:]
    assert [s.key for s in plan_work(ledger, [uri], retry_failed=True).to_caption] == keys
    # The frames stage builds the VLM request from the clip in the store.
    stage = FramesStage(config.captioning)
    (framed,) = run_locally([stage], [SceneTask(record.scenes[1])])
    images = [p for m in framed.request.messages for p in m["content"] if isinstance(p, dict) and p["type"] == "image_url"]
    assert framed.outcome is None and len(images) == config.captioning.frames_per_shot * record.scenes[1].num_shots


def test_failure_reasons_group_by_kind():
    assert reason_of("not a readable media file (Invalid data found)") == "not a readable media file"
    assert reason_of("too short: 1 frame(s), at least 8 needed") == "too short"
    assert reason_of("empty file (0 bytes)") == "empty file"


@pytest.mark.parametrize(("stage", "target"), [("probe", "probe_video"), ("shots", "detect_shots"), ("clips", "cut_clips")])
def test_a_step_exception_becomes_the_videos_failure(videos, tmp_path, monkeypatch, stage, target):
    import curation.run

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(curation.run, target, broken)
    config = load_config(None, SMALL)
    (task,) = run_locally([CurateStage(config.curation, tmp_path / "clips")], [VideoTask(str(videos / "synthetic_0.mp4"))])
    assert task.record.info.status == "failed" and task.record.info.error == f"{stage} failed: RuntimeError: boom"


def test_a_captioning_exception_fails_the_batchs_scenes(videos, tmp_path, holocine_cache):
    config = load_config(None, SMALL)
    config.captioning.model = str(holocine_cache / "tiny-vlm")
    record = curate_video(str(videos / "synthetic_0.mp4"), tmp_path, config.curation)
    tasks = list(run_locally([FramesStage(config.captioning)], [SceneTask(s) for s in record.scenes]))
    stage = CaptionStage(config.captioning, Resources(), batch_size=8)
    stage.setup()
    stage.captioner.engine.generate = lambda requests: 1 / 0  # a fault no real engine makes on demand
    outcome = [task.outcome for task in stage.process(tasks)]
    assert [o["key"] for o in outcome] == [s.key for s in record.scenes]
    assert all(o["sample"] is None and o["error"] == "caption: ZeroDivisionError: division by zero" for o in outcome)


def test_inputs_in_an_s3_bucket_are_listed_and_copied(videos, s3_server, s3_bucket):
    # The same layout as the local folder: a video at the top, one under a prefix, a file that is no video.
    fs = fsspec.filesystem("s3")
    for name in ("synthetic_0.mp4", "nested/synthetic_0.mp4", "notes.txt"):
        fs.put_file(str(videos / name), f"{s3_bucket}/{name}")
    root = f"s3://{s3_bucket}"
    assert discover_inputs(f"{root}/") == [f"{root}/nested/synthetic_0.mp4", f"{root}/synthetic_0.mp4"]
    assert discover_inputs(f"{root}/*.mp4") == [f"{root}/synthetic_0.mp4"]
    with local_copy(f"{root}/synthetic_0.mp4") as local:
        assert Path(local).read_bytes() == (videos / "synthetic_0.mp4").read_bytes()
    assert not Path(local).exists()
    # The bytes came over HTTP from the server.
    assert ("GET", f"/{s3_bucket}/synthetic_0.mp4") in s3_server.requests(s3_bucket)
    with pytest.raises(FileNotFoundError):
        discover_inputs(f"{root}/missing.mp4")
