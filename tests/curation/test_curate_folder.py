"""`python -m curation scenes` on good videos mixed with bad inputs: manifests, clips, failures."""

import json
import os
import shutil
import subprocess
import sys

import av
import pyarrow.parquet as pq
import pytest
import yaml

from curation.config import CurationConfig, DetectConfig
from curation.manifests import SCENES_SCHEMA, SHOTS_SCHEMA, read_manifest
from curation.probe import probe_video
from curation.run import curate_folder
from curation.shots import detect_shots

CLIP_CONFIG = {
    "clips": {"width": 160, "height": 96},
    "scenes": {"tiers": {"3s": 49, "5s": 81}},
}


def _command(args):
    """Run as root without the capability to bypass file permissions, so an unreadable file is
    unreadable even to root (CI runs as root)."""
    if os.geteuid() == 0 and shutil.which("setpriv"):
        caps = "-dac_override,-dac_read_search"
        return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", "--", *args]
    return args


@pytest.fixture(scope="module")
def curated(mixed_folder, tmp_path_factory):
    folder, bad, good = mixed_folder
    out = tmp_path_factory.mktemp("curated")
    config = out / "config.yaml"
    config.write_text(yaml.safe_dump(CLIP_CONFIG))
    run = subprocess.run(
        _command([sys.executable, "-m", "curation", "scenes", str(folder), str(out / "run"), "--config", str(config)]),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    return out / "run", bad, good, json.loads(run.stdout)


def test_every_bad_input_is_a_failure_row_with_its_reason(curated):
    out, bad, good, summary = curated
    videos = {os.path.basename(r["uri"]): r for r in read_manifest(out / "manifests" / "videos.parquet")}
    assert set(videos) == set(bad) | set(good)
    for name, words in bad.items():
        assert videos[name]["status"] == "failed", name
        assert words in videos[name]["error"], (name, videos[name]["error"])
    for name in good:
        assert videos[name]["status"] == "ok", (name, videos[name]["error"])
        assert videos[name]["num_frames"] > 0 and videos[name]["fps"] > 0
    assert summary["failed"] == len(bad)


def test_every_good_video_has_shots_and_clips(curated):
    out, bad, good, _ = curated
    videos = {r["video_id"]: os.path.basename(r["uri"]) for r in read_manifest(out / "manifests" / "videos.parquet")}
    shots = read_manifest(out / "manifests" / "shots.parquet")
    scenes = read_manifest(out / "manifests" / "scenes.parquet")
    assert {videos[s["video_id"]] for s in shots} == set(good)
    assert {videos[s["video_id"]] for s in scenes if s["status"] == "ok"} == set(good)
    assert all(s["drop_reason"] for s in shots if not s["kept"])
    assert all(s["clip_path"] and os.path.exists(s["clip_path"]) for s in scenes if s["status"] == "ok")
    bikes = [s for s in scenes if videos[s["video_id"]] == "b_bikes.mp4"]
    assert all(s["upscale"] == 1.0 for s in bikes)  # 640x272 covers a 160x96 clip
    assert not list((out / "clips").glob("*.partial.mp4"))


def test_clips_have_4k_plus_1_frames_and_cuts_where_the_manifest_says(curated):
    out, *_ = curated
    scenes = [s for s in read_manifest(out / "manifests" / "scenes.parquet") if s["status"] == "ok"]
    assert scenes
    for scene in scenes:
        with av.open(scene["clip_path"]) as container:
            stream = container.streams.video[0]
            decoded = sum(1 for _ in container.decode(stream))
            assert (stream.codec_context.width, stream.codec_context.height) == (160, 96)
        assert decoded == scene["num_frames"] and decoded % 4 == 1
        assert all(f % 4 == 1 for f in scene["shot_cut_frames"])
        assert scene["shot_cut_frames"] == scene["shot_start_frames"][1:]
        # bikes' softest cut scores ~3x its neighbours, the default threshold; in a re-encoded
        # 160 px clip it may land either side, so look for cuts at 2x (no non-cut scores 1.6x).
        detection = detect_shots(probe_video(scene["clip_path"]), DetectConfig(adaptive_threshold=2.0))
        assert [s for s, _ in detection.shots][1:] == scene["shot_cut_frames"], scene["key"]


def test_manifests_keep_their_columns_when_every_input_fails(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "empty.mp4").write_bytes(b"")
    curate_folder(folder, tmp_path / "out", CurationConfig())
    assert pq.read_schema(tmp_path / "out" / "manifests" / "shots.parquet").names == SHOTS_SCHEMA.names
    scenes = pq.read_table(tmp_path / "out" / "manifests" / "scenes.parquet")
    assert scenes.num_rows == 0 and scenes.schema.names == SCENES_SCHEMA.names


def test_curation_reads_and_writes_a_bucket(mixed_folder, s3_server, s3_bucket):
    """In one process, as on a cluster: input and output are s3:// URLs; clips and manifests land in the bucket."""
    import fsspec

    folder, _, good = mixed_folder
    fs = fsspec.filesystem("s3")
    name = sorted(good)[0]
    fs.put_file(str(folder / name), f"{s3_bucket}/in/{name}")
    records = curate_folder(f"s3://{s3_bucket}/in/", f"s3://{s3_bucket}/out", CurationConfig.from_dict(CLIP_CONFIG))
    (record,) = records
    assert record.info.ok and record.info.uri == f"s3://{s3_bucket}/in/{name}"
    clips = [s.clip_path for s in record.scenes if s.clip_path]
    assert clips and all(c.startswith(f"s3://{s3_bucket}/out/clips/") for c in clips)
    assert sorted(fs.ls(f"{s3_bucket}/out/clips", refresh=True)) == sorted(c.removeprefix("s3://") for c in clips)
    with fs.open(f"{s3_bucket}/out/manifests/scenes.parquet", "rb") as handle:
        scenes = pq.read_table(handle).to_pylist()
    assert sorted(s["clip_path"] for s in scenes if s["clip_path"]) == sorted(clips)
    assert not [p for p in fs.find(f"{s3_bucket}/out") if ".partial-" in p]
