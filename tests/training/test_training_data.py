"""The data path on real shards: splitting, resume positions, corrupt samples, spans, shot ids, buckets."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import SHOT_PLANS, append_corrupt_sample, holocine_prompt, make_sample, write_shards

from curation.shards import write_shard
from training.data import BatchIterator, Position, SampleDecoder, ShardStream, SkipGuard, expand_shards
from training.encoders import load_tokenizer
from training.prompt import PromptTokenizer, truncate_prompt
from training.video import fit_to_bucket

BUCKET = (17, 32, 32)


@pytest.fixture(scope="module")
def decoder() -> SampleDecoder:
    return SampleDecoder(BUCKET, PromptTokenizer(load_tokenizer("tiny"), 64))


def batches_of(stream: ShardStream, workers: int, guard: SkipGuard | None = None, prefetch: int = 2) -> BatchIterator:
    return BatchIterator(stream, batch_size=1, num_workers=workers, guard=guard, prefetch=prefetch)


def keys_of(stream: ShardStream, workers: int, count: int) -> list[str]:
    batches = batches_of(stream, workers)
    return [next(batches)["keys"][0] for _ in range(count)]


def test_expand_shards_globs_braces_and_uris(shards):
    assert expand_shards([f"{shards}/shard-*.tar"]) == [str(p) for p in sorted(shards.glob("shard-*.tar"))]
    assert expand_shards([f"{shards}/shard-{{000000..000001}}.tar"]) == [f"{shards}/shard-00000{i}.tar" for i in (0, 1)]
    assert expand_shards(["s3://bucket/shard-{0..1}.tar"]) == ["s3://bucket/shard-0.tar", "s3://bucket/shard-1.tar"]
    with pytest.raises(FileNotFoundError):
        expand_shards([f"{shards}/nothing-*.tar"])


@pytest.mark.parametrize("world,workers", [(1, 2), (2, 1), (2, 2)])
def test_ranks_and_workers_read_every_sample_once_per_epoch(shards, decoder, world, workers):
    urls = expand_shards([f"{shards}/shard-*.tar"])
    per_rank = [keys_of(ShardStream(urls, decoder, rank, world, seed=3, shuffle_buffer=5), workers, 12 // world)
                for rank in range(world)]
    seen = Counter(k for keys in per_rank for k in keys)
    assert sorted(seen) == [f"clip-{i:04d}" for i in range(12)] and set(seen.values()) == {1}
    # The global order interleaves ranks: it is the same stream a single process reads.
    single = keys_of(ShardStream(urls, decoder, 0, 1, seed=3, shuffle_buffer=5), 1, 12)
    assert [per_rank[g % world][g // world] for g in range(12)] == single
    assert single != sorted(single), "shards and samples are shuffled"


def test_epochs_reshuffle_and_resume_continues_the_stream(shards, decoder):
    urls = expand_shards([f"{shards}/shard-*.tar"])
    full = keys_of(ShardStream(urls, decoder, seed=1, shuffle_buffer=4), 2, 30)
    assert sorted(full[:12]) == sorted(full[12:24]) and full[:12] != full[12:24]
    batches = batches_of(ShardStream(urls, decoder, seed=1, shuffle_buffer=4), 2)
    for _ in range(17):
        next(batches)
    position = batches.position
    assert position == Position(epoch=1, index=4, global_index=16, local_index=16)
    resumed = keys_of(ShardStream(urls, decoder, seed=1, shuffle_buffer=4, resume_after=position), 2, 13)
    assert resumed == full[17:30]


def test_corrupt_samples_are_skipped_counted_and_logged_once_per_reason(tmp_path, decoder, caplog):
    shard = tmp_path / "shard-000000.tar"
    write_shard(shard, [make_sample(tmp_path, i, SHOT_PLANS[i]) for i in range(3)])
    append_corrupt_sample(shard, "bad-0001", broken="mp4")
    append_corrupt_sample(shard, "bad-0002", broken="json")
    guard = SkipGuard(window=10, max_fraction=0.5)  # 2 of every 5 fail: never more than 5 of 10
    # Without prefetching, so that the guard has seen exactly the samples of the batches handed over.
    batches = batches_of(ShardStream([str(shard)], decoder, shuffle_shards=False), 0, guard, prefetch=0)
    with caplog.at_level(logging.WARNING, logger="training.data"):
        keys = [next(batches)["keys"][0] for _ in range(9)]
    assert keys == ["clip-0000", "clip-0001", "clip-0002"] * 3
    assert guard.skipped == batches.skipped == 4  # two epochs' two; the third epoch's come after its last good sample
    logged = [record.getMessage() for record in caplog.records if "skipping" in record.getMessage()]
    assert len(logged) == 2, logged
    assert logged[0].startswith("skipping sample bad-0001: [Errno") and "1 skipped so far" in logged[0]
    assert logged[1].startswith("skipping sample bad-0002: 1 validation error") and "2 skipped so far" in logged[1]
    assert guard.counts == {"InvalidDataError: [Errno N] Invalid data found when processing input: '<none>'": 2,
                            "ValidationError: N validation error for SampleMeta": 2}


def test_a_stream_that_mostly_fails_to_decode_stops_with_the_reason(shards):
    # 24 tokens hold only 2 of these 12 prompts at 33 frames: the run used to go on with those two.
    decoder = SampleDecoder((33, 32, 32), PromptTokenizer(load_tokenizer("tiny"), 24))
    guard = SkipGuard(window=10, max_fraction=0.5)
    batches = batches_of(ShardStream(expand_shards([f"{shards}/shard-*.tar"]), decoder, shuffle_shards=False), 2, guard)
    assert next(batches)["keys"] == ["clip-0002"]  # after clips 0 and 1, skipped
    with pytest.raises(RuntimeError, match=r"^6 of the last 7 samples failed to decode, more than data.max_skipped_"
                                           r"fraction=0.5 of data.skip_window=10: 6 x ValueError: a shot caption "
                                           r"was truncated away at N tokens .*\(first: clip-0000: .* at 24 tokens"):
        next(batches)


def test_resume_after_a_skipped_sample_continues_the_stream_exactly(tmp_path, decoder):
    # A loader worker that dropped a corrupt sample handed over its next one early: the recorded position
    # then ran ahead of samples not yet used (a resume dropped them) or behind used ones (it repeated them).
    urls = [str(path) for path in write_shards(tmp_path, num_samples=8, per_shard=4)]
    append_corrupt_sample(Path(urls[0]), "bad-0001", broken="mp4")

    def batches(after: Position = Position()) -> BatchIterator:
        return batches_of(ShardStream(urls, decoder, seed=1, shuffle_buffer=3, resume_after=after), 2)

    straight = batches()
    keys, positions = [], []
    for _ in range(16):  # two epochs of 8 good samples and a corrupt one
        keys.append(next(straight)["keys"][0])
        positions.append(straight.position)
    assert sorted(keys[:8]) == sorted(keys[8:]) == [f"clip-{i:04d}" for i in range(8)]
    assert [p.local_index for p in positions] == sorted(p.local_index for p in positions)
    for stop in range(2, 16, 2):
        resumed = batches(positions[stop - 1])
        assert [next(resumed)["keys"][0] for _ in range(16 - stop)] == keys[stop:], stop


def test_sample_decoding_maps_cuts_to_latent_shots_and_spans(tmp_path):
    meta, mp4 = make_sample(tmp_path, 0, [21, 20, 24])
    decoder = SampleDecoder((65, 32, 32), PromptTokenizer(load_tokenizer("tiny"), 64))
    sample = decoder({"__key__": meta.key, "json": meta.model_dump_json().encode(), "mp4": mp4})
    assert sample["video"].shape == (3, 65, 32, 32)
    # Cuts at frames 21 and 41: latent frames 1..5 hold frames 1..20, 6..10 hold 21..40.
    assert sample["shot_ids"].tolist() == [0] * 6 + [1] * 5 + [2] * 6
    tokenizer = decoder.tokenizer.tokenizer
    ids = sample["input_ids"].tolist()
    texts = [tokenizer.decode(ids[a:b]).replace(" ", "") for a, b in [sample["global_span"].tolist(), *sample["shot_spans"].tolist()]]
    assert texts[0].startswith("[globalcaption]abstract") and texts[0].endswith("contains3shots.")
    # HoloCine's rule: each [shot cut] belongs to the shot before it.
    assert texts[1] == "[pershotcaption]" + meta.shots[0].caption.replace(" ", "") + "[shotcut]"
    assert texts[2] == meta.shots[1].caption.replace(" ", "") + "[shotcut]"
    assert sample["shot_spans"][-1, 1] < sample["attention_mask"].sum(), "the end-of-sequence token is in no span"


def test_a_bucket_shorter_than_the_clip_drops_the_shots_past_it(tmp_path):
    meta, mp4 = make_sample(tmp_path, 0, [21, 20, 24])
    decoder = SampleDecoder((33, 32, 32), PromptTokenizer(load_tokenizer("tiny"), 64))
    sample = decoder({"__key__": meta.key, "json": meta.model_dump_json().encode(), "mp4": mp4})
    assert sample["shot_ids"].tolist() == [0] * 6 + [1] * 3
    assert len(sample["shot_spans"]) == 2
    prompt = truncate_prompt(meta.prompt, 2)
    assert "This scene contains 2 shots." in prompt and prompt.count("[shot cut]") == 1
    assert truncate_prompt(holocine_prompt("g", ["a", "b"]), 1).endswith("[per shot caption] a ")


def test_fit_to_bucket_covers_and_centre_crops():
    frames = np.zeros((3, 40, 80, 3), np.uint8)
    frames[:, :, 30:50] = 255  # a white band in the middle columns
    video = fit_to_bucket(frames, 32, 32)
    assert video.shape == (3, 3, 32, 32) and video.min() >= -1 and video.max() <= 1
    # Height scales 40 -> 32, width 80 -> 64, then the centre 32 columns: the band spans columns 8..24.
    row = video[0, 0, 16]
    assert torch.all(row[10:22] > 0.9) and torch.all(row[:4] < -0.9) and torch.all(row[-4:] < -0.9)


def test_stream_of_missing_shard_is_logged_not_raised(tmp_path, decoder, shards):
    urls = [str(tmp_path / "missing.tar"), str(Path(shards) / "shard-000000.tar")]
    keys = keys_of(ShardStream(urls, decoder, shuffle_shards=False), 0, 4)
    assert keys == [f"clip-{i:04d}" for i in range(4)]


def test_uris_outside_webdataset_are_read_through_fsspec(shards, decoder):
    import fsspec

    fs = fsspec.filesystem("memory")
    for path in sorted(Path(shards).glob("shard-*.tar")):
        fs.pipe(f"/remote/{path.name}", path.read_bytes())
    urls = expand_shards(["memory://remote/shard-00000[01].tar"])
    assert urls == ["memory:///remote/shard-000000.tar", "memory:///remote/shard-000001.tar"]
    keys = keys_of(ShardStream(urls, decoder, shuffle_shards=False), 0, 8)
    assert keys == [f"clip-{i:04d}" for i in range(8)]


def test_shards_in_s3_yield_the_samples_of_local_disk(shards, decoder, s3_server, s3_bucket):
    import fsspec

    local = expand_shards([f"{shards}/shard-*.tar"])
    fs = fsspec.filesystem("s3")
    for path in local:
        fs.put_file(path, f"{s3_bucket}/{Path(path).name}")
    remote = expand_shards([f"s3://{s3_bucket}/*.tar"])
    assert remote == [f"s3://{s3_bucket}/{Path(path).name}" for path in local]

    # As the trainer reads them: two loader workers (forked after s3fs was used here), 12 samples.
    def batches(urls: list[str]) -> list[dict]:
        iterator = BatchIterator(ShardStream(urls, decoder, shuffle_shards=False), batch_size=1, num_workers=2)
        return [next(iterator) for _ in range(12)]

    from_disk, from_s3 = batches(local), batches(remote)
    assert [b["keys"] for b in from_s3] == [b["keys"] for b in from_disk] == [[f"clip-{i:04d}"] for i in range(12)]
    for s3_batch, disk_batch in zip(from_s3, from_disk):
        assert all(torch.equal(a, b) for a, b in zip(_batch_tensors(s3_batch), _batch_tensors(disk_batch)))
    # Every shard was fetched from the server.
    fetched = {target for method, target in s3_server.requests(s3_bucket) if method == "GET"}
    assert {f"/{s3_bucket}/{Path(path).name}" for path in local} <= fetched


def _batch_tensors(batch: dict) -> list[torch.Tensor]:
    layout = batch["layout"]
    return [batch["video"], batch["input_ids"], batch["attention_mask"], layout.shot_ids, layout.global_spans, layout.shot_spans]
