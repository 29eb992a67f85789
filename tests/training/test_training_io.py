"""Readers read only what they decode: per-shard sample indexes, byte-range reads split over ranks x
loader workers (gloo, torchrun), the corpus once per epoch, and resume after kill -9 without repeats."""

from __future__ import annotations

import json
import logging
import random
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from training_helpers import REPO, _run
from webdataset import tariterators

from curation.shard_index import ShardIndex, index_url, scan_local_tar, write_indexed_tar
from training.data import ShardCatalog

SCRIPT = REPO / "tests" / "training" / "read_stream.py"
WORKERS = 2


def write_corpus(folder: Path, sizes: list[int], seed: int = 0) -> list[Path]:
    """Shards of samples with random bytes (``bin``, 1-30 KB) and a small ``json``: ``sizes[i]`` in shard i."""
    rng = random.Random(seed)
    paths, n = [], 0
    for shard, count in enumerate(sizes):
        samples = []
        for _ in range(count):
            samples.append({"__key__": f"s-{n:04d}", "bin": rng.randbytes(rng.randrange(1000, 30000)),
                            "json": json.dumps({"n": n}).encode()})
            n += 1
        path = folder / f"shard-{shard:06d}.tar"
        assert write_indexed_tar(path, samples) == count
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """22 samples in 5 shards of unequal counts: fewer shards than 2 ranks x 2 workers need to split by shard."""
    folder = tmp_path_factory.mktemp("corpus")
    write_corpus(folder, [7, 3, 5, 2, 5])
    return folder


def all_keys(corpus: Path) -> list[str]:
    return [f"s-{n:04d}" for n in range(22)]


def test_the_index_locates_each_sample_as_a_full_read_yields_it(corpus):
    urls = sorted(str(p) for p in corpus.glob("*.tar"))
    catalog = ShardCatalog.load(urls)
    for shard, url in enumerate(urls):
        written = ShardIndex.from_json(Path(index_url(url)).read_bytes())
        assert written == scan_local_tar(url) == catalog.indexes[shard]
        full = list(tariterators.tarfile_samples([{"url": url}]))
        assert [s["__key__"] for s in full] == list(written.keys)
        for i, expected in enumerate(full):
            sample, bytes_read = catalog.read(shard, i)
            assert sample == expected and bytes_read == written.sizes[i]
    # Ranges tile each tar (headers, data and padding), leaving out only the end-of-archive blocks.
    for index in catalog.indexes:
        assert [o + s for o, s in zip(index.offsets, index.sizes)][:-1] == list(index.offsets[1:])
        assert index.tar_bytes - (index.offsets[-1] + index.sizes[-1]) <= 10240
    assert catalog.bytes_read == sum(Path(index_url(u)).stat().st_size for u in urls)


def test_shards_without_a_matching_index_are_scanned_and_logged_once(tmp_path, caplog):
    paths = write_corpus(tmp_path, [3, 3, 3])
    Path(index_url(paths[0])).unlink()  # a shard written before indexes existed
    with open(paths[1], "ab") as f:  # a tar that changed after its index was written
        f.write(b"\0" * 1024)
    with caplog.at_level(logging.WARNING, logger="training.data"):
        catalog = ShardCatalog.load([str(p) for p in paths])
    warnings = [r.getMessage() for r in caplog.records if "no index that matches" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("2 of 3 shards")
    assert [len(index) for index in catalog.indexes] == [3, 3, 3]
    assert catalog.read(0, 2)[0]["__key__"] == "s-0002" and catalog.read(1, 0)[0]["__key__"] == "s-0003"
    # Scanning reads headers only: one 512-byte block per member (and the tar's end), not the samples.
    assert catalog.bytes_read < 2 * 512 * 8 + Path(index_url(paths[2])).stat().st_size


def run_readers(shards: str, out: Path, *args: str, nproc: int = 2, check: bool = True):
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               str(SCRIPT), "--shards", shards, "--out", str(out), "--workers", str(WORKERS), *args]
    return _run(command, check)


def consumed(out: Path, rank: int, up_to: int | None = None) -> list[str]:
    """Keys rank ``rank`` got, in order (those of steps up to ``up_to`` only, if given)."""
    lines = (out / f"rank-{rank}.keys").read_text().split()
    steps = [(int(step), key) for step, key in zip(lines[::2], lines[1::2])]
    return [key for step, key in steps if up_to is None or step <= up_to]


def sample_sizes(corpus: Path) -> dict[str, int]:
    catalog = ShardCatalog.load(sorted(str(p) for p in corpus.glob("*.tar")))
    return {key: size for index in catalog.indexes for key, size in zip(index.keys, index.sizes)}


def s3_range_bytes(endpoint: str, bucket: str) -> Counter:
    """Bytes requested per object by the GETs moto recorded (a GET without Range counts the object's size as -1)."""
    with urllib.request.urlopen(f"{endpoint}/moto-api/recorder/download-recording", timeout=30) as response:
        entries = [json.loads(line) for line in response.read().decode().splitlines() if line]
    got: Counter = Counter()
    for entry in entries:
        path = entry["url"].split("?")[0].split(f"/{bucket}/", 1)
        if entry["method"] != "GET" or len(path) != 2 or not path[1]:
            continue
        header = {k.lower(): v for k, v in entry["headers"].items()}.get("range")
        if header is None:
            got[path[1]] = -1
            continue
        start, end = header.removeprefix("bytes=").split("-")
        got[path[1]] += int(end) - int(start) + 1
    return got


@pytest.mark.parametrize("where", ["local", "s3"])
def test_two_ranks_of_two_workers_read_each_sample_once_and_only_its_bytes(corpus, tmp_path, where, request):
    shards = f"{corpus}/*.tar"
    if where == "s3":
        import fsspec

        s3_server, bucket = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")
        fs = fsspec.filesystem("s3")
        for path in sorted(corpus.glob("shard-*")):
            fs.put_file(str(path), f"{bucket}/{path.name}")
        before = s3_range_bytes(s3_server.endpoint_url, bucket)
        shards = f"s3://{bucket}/*.tar"
    run_readers(shards, tmp_path)
    sizes = sample_sizes(corpus)
    keys = [consumed(tmp_path, rank) for rank in range(2)]
    assert sorted(keys[0] + keys[1]) == all_keys(corpus)  # the corpus, once
    assert len(keys[0]) == len(keys[1]) == 11
    readers = {}
    for rank in range(2):
        stats = json.loads((tmp_path / f"rank-{rank}.json").read_text())
        assert stats["samples"] == 11
        for worker in range(WORKERS):
            # The rank's j-th sample comes from worker j % WORKERS; that worker read its range and nothing else.
            mine = keys[rank][worker::WORKERS]
            readers[rank, worker] = stats["reader_bytes"][str(worker)]
            assert readers[rank, worker] == sum(sizes[k] for k in mine), (rank, worker)
        assert stats["index_bytes"] == sum(Path(index_url(p)).stat().st_size for p in corpus.glob("*.tar"))
    corpus_bytes = sum(p.stat().st_size for p in corpus.glob("*.tar"))
    assert all(readers.values()) and sum(readers.values()) <= 1.1 * corpus_bytes
    assert sum(readers.values()) == sum(sizes.values())
    if where == "s3":
        # What the server sent: each tar in range requests summing to its samples' bytes, never whole.
        got = s3_range_bytes(s3_server.endpoint_url, bucket) - before
        tars = {name: n for name, n in got.items() if name.endswith(".tar")}
        assert sum(tars.values()) == sum(readers.values()) and all(n > 0 for n in tars.values())
        assert set(tars) == {p.name for p in corpus.glob("*.tar")}


def test_a_reader_killed_with_sigkill_resumes_without_repeats_or_gaps(corpus, tmp_path):
    shards = f"{corpus}/*.tar"
    run_readers(shards, tmp_path / "straight", "--save-every", "3")
    straight = [consumed(tmp_path / "straight", rank) for rank in range(2)]

    killed = tmp_path / "killed"
    result = run_readers(shards, killed, "--save-every", "3", "--kill-at", "8", check=False)
    assert result.returncode != 0 and "SIGKILL" in result.stderr, result.stderr[-2000:]
    saved = json.loads((killed / "positions.json").read_text())
    assert saved["step"] == 6
    resumed_ranks = killed / "resumed"
    resumed_ranks.mkdir()
    (resumed_ranks / "positions.json").write_text(json.dumps(saved))
    run_readers(shards, resumed_ranks, "--save-every", "3", "--resume")
    for rank in range(2):
        # What the killed run used up to its checkpoint, then the resumed run: the straight run's samples.
        assert consumed(killed, rank, up_to=6) + consumed(resumed_ranks, rank) == straight[rank], rank

    # With another world size the rest of the epoch is re-split: still every sample once.
    one = killed / "one-rank"
    one.mkdir()
    (one / "positions.json").write_text(json.dumps(saved))
    run_readers(shards, one, "--save-every", "3", "--resume", nproc=1)
    used = consumed(killed, 0, up_to=6) + consumed(killed, 1, up_to=6) + consumed(one, 0)
    assert sorted(used) == all_keys(corpus)


def test_the_index_command_writes_missing_and_stale_indexes(tmp_path):
    from curation.shard_index import main

    paths = write_corpus(tmp_path, [3, 2])
    expected = [Path(index_url(p)).read_bytes() for p in paths]
    Path(index_url(paths[0])).unlink()
    Path(index_url(paths[1])).write_bytes(ShardIndex(1, ("x",), (0,), (512,)).to_json())  # another tar's
    main([f"{tmp_path}/shard-*.tar"])
    assert [Path(index_url(p)).read_bytes() for p in paths] == expected
    assert ShardCatalog.load([str(p) for p in paths]).bytes_read == sum(map(len, expected))  # nothing scanned
