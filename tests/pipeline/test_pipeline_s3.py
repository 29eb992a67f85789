"""The main job with its input and output on ``s3://`` (a real S3 API server, ``tests/conftest.py``),
against the same job on local disk; then the trainer reads the job's shards straight from the bucket."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from s3_buckets import bucket_on
from pipeline_helpers import (
    REPO,
    download,
    job_command,
    job_env,
    listed,
    signed_samples,
    write_config,
    write_synthetic,
)

SUMMARY_FIGURES = ("inputs", "inputs_ok", "inputs_failed", "scenes", "samples", "scenes_by_tier", "scenes_failed", "shards")
# What differs between a sample of a local input and of the same input on S3: where it came from,
# and the captions' words (the stand-in VLM samples at temperature 0.2, unseeded, so two runs of
# one job differ there too); their layout must not.
NOT_COMPARED = {**dict.fromkeys(["key", "source", "global_caption", "characters", "prompt"], True),
                "shots": {"__all__": {"caption", "camera", "characters"}}}


@pytest.fixture(scope="module")
def jobs(s3_server, holocine_cache, tmp_path_factory):
    """The job run twice on the same two videos: out of and into the bucket, and on local disk.

    Each runs from an empty working folder with its own scratch folder, so that anything it
    leaves on local disk shows. Yields (local output, S3 output downloaded, bucket, s3fs, s3 run info)."""
    root = tmp_path_factory.mktemp("s3-job")
    names = write_synthetic(root / "in", 2)
    config = write_config(root / "config.yaml")
    with bucket_on(s3_server, {f"in/{name}": root / "in" / name for name in names}) as (bucket, fs):
        runs = {}
        for where, source, output in (
            ("s3", f"s3://{bucket}/in/", f"s3://{bucket}/out"),
            ("local", str(root / "in"), str(root / "local-out")),
        ):
            cwd, scratch = root / f"cwd-{where}", root / f"scratch-{where}"
            cwd.mkdir()
            env = s3_server.env({**job_env(holocine_cache), "HOLOCINE_SCRATCH": str(scratch)})
            run = subprocess.run(job_command(source, output, config), cwd=cwd, env=env,
                                 capture_output=True, text=True, timeout=600)
            assert run.returncode == 0, run.stderr[-5000:]
            runs[where] = {"cwd": cwd, "scratch": scratch, "run": run}
        s3_out = download(fs, f"{bucket}/out", root / "s3-out")
        yield root / "local-out", s3_out, bucket, fs, runs


def test_the_s3_job_writes_its_outputs_into_the_bucket_and_nothing_on_local_disk(jobs, s3_server):
    local, _, bucket, fs, runs = jobs
    objects = [path.removeprefix(f"{bucket}/out/") for path in listed(fs, f"{bucket}/out")]
    assert {"summary.json", "report.html", "manifests/videos.parquet", "manifests/shots.parquet",
            "manifests/scenes.parquet"} <= set(objects)
    assert [o for o in objects if o.startswith("shards/") and o.endswith(".tar")]
    assert [o for o in objects if o.startswith("clips/")]
    assert not [o for o in objects if ".partial-" in o]
    # The local run, for comparison, wrote the same kinds of files.
    assert (local / "summary.json").exists() and (local / "report.html").exists()
    s3 = runs["s3"]
    assert not list(s3["cwd"].iterdir()), "the job wrote into its working folder"
    assert not [p for p in s3["scratch"].rglob("*") if p.is_file()], "staged copies are removed"
    assert not (REPO / "out").exists() and not (REPO / "s3:").exists()
    # The data went over the wire: the server received the job's uploads.
    assert ("PUT", f"/{bucket}/out/summary.json") in set(s3_server.requests(bucket))


def test_same_samples_as_on_local_disk(jobs):
    local, s3, *_ = jobs
    on_disk, in_bucket = signed_samples(local), signed_samples(s3)
    assert in_bucket and set(in_bucket) == set(on_disk)
    for signature, (meta, row) in in_bucket.items():
        twin, twin_row = on_disk[signature]
        assert meta.model_dump(exclude=NOT_COMPARED) == twin.model_dump(exclude=NOT_COMPARED), signature
        assert meta.prompt.count("[shot cut]") == twin.prompt.count("[shot cut]") == len(meta.shots) - 1
        assert meta.source.uri.startswith("s3://") and not twin.source.uri.startswith("s3://")
        assert (meta.source.start_s, meta.source.end_s) == (twin.source.start_s, twin.source.end_s)
        assert meta.key == row["key"] and row["shard"].endswith(".tar")


def test_same_manifests_as_on_local_disk(jobs):
    local, s3, *_ = jobs
    for name in ("videos", "shots", "scenes"):
        ours, theirs = (pq.read_table(out / "manifests" / f"{name}.parquet") for out in (s3, local))
        assert ours.schema == theirs.schema, name
        assert ours.num_rows == theirs.num_rows > 0, name
    videos = pq.read_table(s3 / "manifests" / "videos.parquet").to_pylist()
    assert all(v["uri"].startswith("s3://") and v["status"] == "ok" for v in videos)


def test_same_summary_as_on_local_disk(jobs):
    local, s3, *_ = jobs
    ours, theirs = (json.loads((out / "summary.json").read_text()) for out in (s3, local))
    assert {k: ours[k] for k in SUMMARY_FIGURES} == {k: theirs[k] for k in SUMMARY_FIGURES}
    for figure in ("hours_in", "hours_out"):
        assert ours[figure] == pytest.approx(theirs[figure]) and ours[figure] > 0
    assert ours["hours_out_by_tier"] == pytest.approx(theirs["hours_out_by_tier"])
    assert ours["inputs"] == 2 and ours["samples"] > 0 and ours["shards"] >= 2


def test_the_trainer_reads_the_jobs_shards_from_the_bucket(jobs, s3_server, tmp_path):
    _, _, bucket, fs, _ = jobs
    out = tmp_path / "train"
    env = s3_server.env({**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)})
    args = ["--config", str(REPO / "training" / "configs" / "tiny.yaml"), f"output={out}",
            f"data.shards=[s3://{bucket}/out/shards/shard-*.tar]", "optim.max_steps=3", "optim.warmup_steps=1",
            "validation.every=0", "checkpoint.every=3"]
    before = len(s3_server.requests(bucket))
    train = subprocess.run([sys.executable, "-m", "training.train", *args], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=600)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-5000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    assert [row["step"] for row in rows if "loss" in row] == [1, 2, 3]
    assert all(row["skipped"] == 0 for row in rows if "loss" in row)
    # The samples came from the bucket's shards, over the wire.
    fetched = {path for method, path in s3_server.requests(bucket)[before:] if method == "GET"}
    assert any(path.startswith(f"/{bucket}/out/shards/shard-") for path in fetched), sorted(fetched)[:10]
