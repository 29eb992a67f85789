"""Kill -9 the job (a real subprocess, Ray's processes included) at several points with its input and
output on ``s3://`` (the S3 API server of ``tests/conftest.py``), rerun it, and check that every
expected scene is in exactly one shard, no partial object is ever listed, and the manifests agree
with the shards.

Each kill point is the first moment a listing of the bucket shows a new object of some kind of
work. The ledger writes its parts in batches (the job flushes at the end of the graph), so some
points may come only once the job is about to finish it: not every kill has to land.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from s3_buckets import bucket_on
from pipeline_helpers import (
    SMALL_CONFIG,
    download,
    job_command,
    job_env,
    kill_tree,
    listed,
    read_all_shards,
    scene_signature,
    signed_samples,
    write_config,
    write_synthetic,
)

from curation.config import CurationConfig
from curation.manifests import read_manifest
from curation.run import curate_video

# Where to kill: the first new object of each kind of work under the output.
KILL_POINTS = {
    "cutting clips": "clips/",
    "recording videos": "work/videos/part-",
    "captioning": "work/captions/part-",
    "writing shards": "shards/",
}


def _run_until(command: list[str], env: dict[str, str], fs, out: str, prefix: str, log: Path) -> bool:
    """Start the job, SIGKILL it as soon as a listing of ``out`` shows an object under ``prefix``
    that was not there when it started; False when it finished first."""
    before = set(listed(fs, out))
    with open(log, "ab") as stderr:
        job = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 400
            while job.poll() is None and time.monotonic() < deadline:
                if any(path.startswith(f"{out}/{prefix}") for path in set(listed(fs, out)) - before):
                    kill_tree(job)
                    return True
                time.sleep(0.05)
            return False
        finally:
            if job.poll() is None:
                kill_tree(job)


def _shard_objects(fs, out: str) -> dict[str, tuple[str, str]]:
    """name -> (ETag, LastModified) of every object under ``out/shards``."""
    fs.invalidate_cache()
    return {entry["name"].rsplit("/", 1)[-1]: (entry["ETag"], str(entry["LastModified"]))
            for entry in fs.ls(f"{out}/shards", detail=True, refresh=True) if entry["type"] == "file"}


@pytest.fixture(scope="module")
def resumed(s3_server, holocine_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    names = write_synthetic(root / "in", 2)
    config = write_config(root / "config.yaml")
    with bucket_on(s3_server, {f"in/{name}": root / "in" / name for name in names}) as (bucket, fs):
        out = f"{bucket}/out"
        command = job_command(f"s3://{bucket}/in/*.mp4", f"s3://{out}", config)
        # Its own scratch folder (staged inputs, files on their way to the bucket), not the shared /tmp one.
        env = s3_server.env({**job_env(holocine_cache), "HOLOCINE_SCRATCH": str(root / "scratch")})
        killed, partials_seen = {}, []
        for n, (point, prefix) in enumerate(KILL_POINTS.items()):
            killed[point] = _run_until(command, env, fs, out, prefix, root / "killed.log")
            # Whatever the moment of the kill, a listed shard is whole (read_shard raises on a
            # sample cut short) and no key is in two listed shards.
            read_all_shards(download(fs, f"{out}/shards", root / f"shards-after-kill-{n}"))
            partials_seen += [p for p in listed(fs, out) if ".partial-" in p]
        final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert final.returncode == 0, final.stderr[-5000:]
        fs.invalidate_cache()  # s3fs answers from listings it cached before the run wrote these
        summary = json.loads(fs.cat_file(f"{out}/summary.json"))
        shard_objects = _shard_objects(fs, out)
        finished = download(fs, out, root / "finished")
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert again.returncode == 0, again.stderr[-5000:]
        fs.invalidate_cache()
        print("kills landed:", killed)
        print("left in scratch:", [str(p.relative_to(root)) for p in (root / "scratch").rglob("*") if p.is_file()])
        yield {
            "root": root, "names": names, "fs": fs, "out": out, "killed": killed, "partials_seen": partials_seen,
            "summary": summary, "shard_objects": shard_objects, "finished": finished,
            "after": json.loads(fs.cat_file(f"{out}/summary.json")), "listing": listed(fs, out),
            "shard_objects_after": _shard_objects(fs, out),
        }


def test_kills_landed_while_the_job_was_running(resumed):
    assert sum(resumed["killed"].values()) >= 2, resumed["killed"]


def test_every_expected_scene_is_in_the_shards_exactly_once(resumed, tmp_path):
    curation = CurationConfig.from_dict(SMALL_CONFIG["curation"])
    expected = set()
    for name in resumed["names"]:
        record = curate_video(str(resumed["root"] / "in" / name), tmp_path, curation)
        expected |= {scene_signature(name, s.scene_index, s.tier, s.shots) for s in record.scenes if s.status == "ok"}
    assert expected
    finished = resumed["finished"]
    samples = signed_samples(finished)  # read_all_shards inside raises on a key in two shards
    assert set(samples) == expected
    assert all(row["uri"].startswith("s3://") for _, row in samples.values())


def test_no_partial_object_is_ever_listed(resumed):
    assert not resumed["partials_seen"]
    assert not [path for path in resumed["listing"] if ".partial-" in path]


def test_manifests_agree_with_the_shards(resumed):
    finished = resumed["finished"]
    where = {key: shard for key, (_, _, shard) in read_all_shards(finished / "shards").items()}
    scenes = read_manifest(finished / "manifests" / "scenes.parquet")
    assert {s["key"]: s["shard"] for s in scenes if s["shard"] is not None} == where
    assert all(s["status"] != "ok" for s in scenes if s["shard"] is None)
    # Every listed shard is one the manifest names: a killed run's unrecorded tar was removed.
    assert {name for name in resumed["shard_objects"] if name.endswith(".tar")} == set(where.values())
    assert resumed["summary"]["samples"] == len(where) and resumed["summary"]["shards"] == len(set(where.values()))


def test_a_rerun_of_a_finished_job_redoes_nothing(resumed):
    summary, after = resumed["summary"], resumed["after"]
    assert after["this_run"]["videos_curated"] == 0
    assert after["this_run"]["scenes_captioned"] == 0 and after["this_run"]["shards_written"] == 0
    # The summary keeps every run's stage seconds apart from this run's, which did no work.
    assert after["this_run"]["stage_seconds"] == {} and after["stage_seconds"] == summary["stage_seconds"]
    # The shard objects were neither rewritten nor touched.
    assert resumed["shard_objects_after"] == resumed["shard_objects"]
    assert after["samples"] == summary["samples"] and after["shards"] == summary["shards"]
