"""The output store, the ledger and the driver's bookkeeping, on local disk and on the S3 server.

The S3 tests count the requests the server receives (moto's recorder): a rerun with nothing to
do must cost the same few requests whatever the number of videos.
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curation.store import Store
from pipelines.bookkeeping import finish, plan_work
from pipelines.config import PipelineConfig
from pipelines.ledger import Ledger, PartWriter
from pipelines.packing import write_here
from pipelines.synthetic import finished_record, input_uris, write_finished


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Store:
    if request.param == "local":
        return Store(str(tmp_path / "out"))
    bucket = request.getfixturevalue("s3_bucket")
    return Store(f"s3://{bucket}/out")


def test_objects_appear_whole_and_listings_are_fresh(store):
    store.write_text("a/one.json", "1")
    assert store.list("a") == {"one.json": 1}
    with pytest.raises(RuntimeError), store.writing("a/two.tar") as local:
        Path(local).write_bytes(b"half")
        raise RuntimeError("killed while writing")
    assert store.list("a") == {"one.json": 1}, "a failed write publishes nothing"
    with store.writing("a/two.tar") as local:
        Path(local).write_bytes(b"whole")
    assert store.read_bytes("a/two.tar") == b"whole"
    assert store.rel(store.uri("a/two.tar")) == "a/two.tar"
    store.delete(["a/one.json", "a/missing"])
    assert store.list("a") == {"two.tar": 5} and store.list("nothing-here") == {}


def test_the_newest_row_wins_and_compaction_keeps_only_it(store):
    ledger = Ledger(store)
    uri = "s3://footage/in/a.mp4"
    record = finished_record(uri, store.uri("clips"), scenes=2)
    ledger.write_videos([record])
    record.info.status, record.info.error = "failed", "retried and failed"
    ledger.write_videos([record])
    row = {"key": record.scenes[0].key, "video_id": record.info.video_id, "error": None, "tries": 1,
           "seconds_frames": 0.0, "seconds_caption": 0.0}
    ledger.write_captions([{**row, "sample": "old"}])
    ledger.write_captions([{**row, "sample": "new"}, {**row, "key": record.scenes[1].key, "sample": "other"}])
    assert ledger.read("videos", ["status"])["status"].to_pylist() == ["failed"]
    assert ledger.samples([record.scenes[0].key]) == {record.scenes[0].key: "new"}
    assert ledger.compact("captions") == 2 and ledger.compact("videos") == 2
    assert len(ledger.parts("captions")) == len(ledger.parts("videos")) == 1
    assert ledger.read("videos", ["status"])["status"].to_pylist() == ["failed"]
    assert ledger.samples([s.key for s in record.scenes]) == {record.scenes[0].key: "new", record.scenes[1].key: "other"}
    assert ledger.compact("captions") == 0, "one part is left alone"


def _rerun(store: Store, count: int) -> dict:
    uris = input_uris("s3://footage/in", count)
    plan = plan_work(Ledger(store), uris, retry_failed=False)
    assert not plan.to_curate and not plan.to_caption
    return finish(store, uris, PipelineConfig(), False, (time.perf_counter(), time.time_ns()), write_here(store.url))


def test_a_rerun_with_nothing_to_do_costs_the_same_requests_at_any_size(s3_server, s3_bucket):
    counts = {}
    for videos in (4, 40):
        store = Store(f"s3://{s3_bucket}/out-{videos}")
        write_finished(store, input_uris("s3://footage/in", videos), scenes_per_video=3, part_videos=7, shard_samples=5)
        first = _rerun(store, videos)  # compacts the ledger and writes manifests and report
        assert first["samples"] == 3 * videos and first["this_run"]["shards_written"] == 0
        before = len(s3_server.requests(s3_bucket))
        again = _rerun(store, videos)
        requests = s3_server.requests(s3_bucket)[before:]
        counts[videos] = len(requests)
        assert again["samples"] == first["samples"] and again["shards"] == first["shards"]
        assert not [r for r in requests if "/clips/" in r[1]], "no clip is read"
        scenes = pq.read_table(store.path("manifests/scenes.parquet"), filesystem=store.fs)
        assert scenes.num_rows == 3 * videos and scenes["shard"].null_count == 0
    assert counts[40] == counts[4], counts


def test_new_work_is_packed_into_new_shards_only(store):
    old = input_uris("s3://footage/in", 6)
    write_finished(store, old, scenes_per_video=2, shard_samples=4)
    first = _rerun(store, 6)
    assert first["shards"] == 3 and first["this_run"]["shards_written"] == 0
    new = input_uris("s3://footage/in", 3, start=6)
    write_finished(store, new, scenes_per_video=2, packed=False)
    after = _rerun(store, 9)
    assert after["samples"] == 18 and after["this_run"]["shards_written"] == 1 and after["shards"] == 4
    scenes = pq.read_table(store.path("manifests/scenes.parquet"), filesystem=store.fs).to_pylist()
    new_ids = {row["video_id"] for row in Ledger(store).read("videos", []).to_pylist()} - {
        s["video_id"] for s in scenes if s["shard"] != "shard-000003.tar"}
    assert len(new_ids) == 3, "the new videos' scenes, and only theirs, are in the new shard"


def test_finished_work_is_written_a_part_at_a_time():
    parts = []
    writer = PartWriter(parts.append, rows=3, seconds=3600)
    writer.add([1, 2])
    assert parts == []
    writer.add([3, 4])
    assert parts == [[1, 2, 3, 4]], "a part as soon as the rows are there"
    writer.flush()
    writer.add([5])
    writer.flush()
    assert parts == [[1, 2, 3, 4], [5]] and writer.added() == 5, "flush writes the rest, and nothing when empty"
    slow = PartWriter(parts.append, rows=100, seconds=0.0)
    slow.add([6])
    assert parts[-1] == [6], "or when the time is up"
