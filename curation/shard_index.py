"""Per-shard sample index: where each sample's bytes lie in its tar, so a reader fetches only its own.

``shard-000001.tar`` has ``shard-000001.idx.json`` next to it (``index_url``): the tar's size and, per
sample in tar order, its key, the byte offset of its first member's header and the byte length up to
the end of its last member's data (tar padding included). A reader then reads ``[offset, offset +
size)`` with one seek (local) or one range request (fsspec: ``s3://``, ``gs://``, ``http(s)://``...)
and parses that slice as a tar with webdataset, getting the same sample dict a full read would.

Writers publish the index first and the tar second (``curation.shards.write_shard``), each through a
temporary name, so a reader that sees a tar finds its index. An index whose ``tar_bytes`` differs from
the tar's size describes another version of the tar (a tar appended to, or rewritten and killed between
the two renames); readers then scan the tar's headers instead (``scan_tar``: 512 bytes read per member,
the data seeked over), as they do for shards written before indexes existed. ``python -m
curation.shard_index SHARD...`` writes the missing indexes of such shards, local or remote.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import fsspec
import webdataset as wds
from webdataset import tariterators

from curation.files import atomic_path

log = logging.getLogger(__name__)

INDEX_SUFFIX = ".idx.json"
INDEX_VERSION = 1
TAR_BLOCK = 512


def index_url(tar_url: str | Path) -> str:
    """The index's path or URL next to a shard: ``…/shard-000001.tar`` -> ``…/shard-000001.idx.json``.

    Writers of shards (``write_shard``, the pipeline's packing and upload) name the index with this."""
    tar_url = str(tar_url)
    return (tar_url[:-len(".tar")] if tar_url.endswith(".tar") else tar_url) + INDEX_SUFFIX


@dataclass(frozen=True)
class ShardIndex:
    """Samples of one tar, in tar order: ``keys[i]`` lies at ``[offsets[i], offsets[i] + sizes[i])``."""

    tar_bytes: int
    keys: tuple[str, ...]
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.keys)

    def to_json(self) -> bytes:
        return json.dumps({"version": INDEX_VERSION, "tar_bytes": self.tar_bytes, "keys": list(self.keys),
                           "offsets": list(self.offsets), "sizes": list(self.sizes)}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ShardIndex:
        tree = json.loads(data)
        if tree.get("version") != INDEX_VERSION:
            raise ValueError(f"index version {tree.get('version')}, this reader knows {INDEX_VERSION}")
        index = cls(int(tree["tar_bytes"]), tuple(tree["keys"]), tuple(tree["offsets"]), tuple(tree["sizes"]))
        if not len(index.keys) == len(index.offsets) == len(index.sizes):
            raise ValueError("index columns differ in length")
        return index


def scan_tar(fileobj: BinaryIO, tar_bytes: int) -> ShardIndex:
    """The index of a tar from its headers alone: tarfile reads each member's header and seeks over its
    data. Members are grouped into samples as webdataset groups them (consecutive members of one key)."""
    keys: list[str] = []
    offsets: list[int] = []
    ends: list[int] = []
    with tarfile.open(fileobj=fileobj, mode="r:") as tar:
        for member in tar:
            if not member.isreg():
                continue
            key, _ = tariterators.base_plus_ext(member.name)
            if key is None:
                continue
            end = member.offset_data + -(-member.size // TAR_BLOCK) * TAR_BLOCK
            if keys and keys[-1] == key:
                ends[-1] = end
            else:
                keys.append(key)
                offsets.append(member.offset)  # an extended (pax, GNU long name) header's start, if any
                ends.append(end)
    return ShardIndex(tar_bytes, tuple(keys), tuple(offsets), tuple(e - o for o, e in zip(offsets, ends)))


def scan_local_tar(path: str | Path) -> ShardIndex:
    with open(path, "rb") as f:
        return scan_tar(f, Path(path).stat().st_size)


def write_index(tar_path: str | Path, index: ShardIndex) -> Path:
    """Publish ``index`` as the index of the local tar ``tar_path`` (atomically); returns its path."""
    path = Path(index_url(tar_path))
    with atomic_path(path) as partial:
        partial.write_bytes(index.to_json())
    return path


def write_indexed_tar(path: str | Path, samples: Iterable[dict]) -> int:
    """Write webdataset sample dicts (``__key__`` + one bytes value per extension) to a local tar and
    its index: index first, tar second, each atomically; returns how many samples were written."""
    count = 0
    with atomic_path(path) as partial:
        with open(partial, "wb") as stream, wds.TarWriter(stream, mtime=0) as writer:
            for sample in samples:
                writer.write(sample)
                count += 1
        # A reader that sees the tar must find its index: publish the index before the tar.
        write_index(path, scan_local_tar(partial))
    return count


def samples_in(data: bytes, url: str) -> Iterator[dict]:
    """The webdataset samples (``__key__``, ``__url__``, one entry per extension) of a byte range of a
    tar that starts at a member's header: the dicts a full read of the shard yields for them."""
    return tariterators.group_by_keys(tariterators.tar_file_expander([{"url": url, "stream": io.BytesIO(data)}]))


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _local_path(url: str) -> str:
    return url.removeprefix("file://")


class _CountingReader:
    """A file's read / seek / tell, counting the bytes ``read`` returned."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.bytes_read += len(data)
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()


@dataclass(frozen=True)
class LoadedIndex:
    index: ShardIndex
    bytes_read: int  # what loading it cost: the index file, or the headers scanned
    scanned: bool  # no index matched the tar: its headers were scanned


def load_index(url: str) -> LoadedIndex:
    """A shard's index: the one next to it if it matches the tar's size, else a scan of its headers.
    Raises if the tar cannot be read."""
    if url.startswith("pipe:"):
        raise ValueError(f"{url}: pipe: shards cannot be read by byte range; use the fsspec URL (s3://, gs://, "
                         "https://...) instead")
    if is_local(url):
        fs, path = fsspec.filesystem("file"), _local_path(url)
    else:
        fs, path = fsspec.core.url_to_fs(url)
    tar_bytes = fs.size(path)
    index_path = index_url(path)
    try:
        data = fs.cat_file(index_path)
    except FileNotFoundError:
        data = None
    if data is not None:
        try:
            index = ShardIndex.from_json(data)
        except (ValueError, KeyError) as exc:
            log.warning("%s: unreadable index (%s); scanning the tar", index_path, exc)
        else:
            if index.tar_bytes == tar_bytes:
                return LoadedIndex(index, len(data), scanned=False)
    # Header reads only: no read-ahead, which would fetch member data too.
    opened = open(path, "rb", buffering=0) if is_local(url) else fs.open(path, "rb", block_size=TAR_BLOCK,
                                                                        cache_type="none")
    with opened as raw:
        counting = _CountingReader(raw)
        index = scan_tar(counting, tar_bytes)
    return LoadedIndex(index, counting.bytes_read + len(data or b""), scanned=True)


def read_range(url: str, offset: int, size: int) -> bytes:
    """``size`` bytes of a shard from ``offset``: one seek and read (local) or one range request."""
    if is_local(url):
        with open(_local_path(url), "rb", buffering=0) as f:
            f.seek(offset)
            return f.read(size)
    fs, path = fsspec.core.url_to_fs(url)
    return fs.cat_file(path, start=offset, end=offset + size)


def _tar_urls(patterns: list[str]) -> list[str]:
    urls = []
    for pattern in patterns:
        fs, _, paths = fsspec.core.get_fs_token_paths(pattern)
        urls.extend(fs.unstrip_protocol(p) if "://" in pattern else p for p in sorted(paths))
    return urls


def index_shard(url: str) -> ShardIndex:
    """Scan one shard (any fsspec URL or local path) and publish its index next to it."""
    fs, path = fsspec.core.url_to_fs(url)
    if "://" not in url:
        index = scan_local_tar(path)
        write_index(path, index)
        return index
    # Header reads only: no read-ahead, which would fetch member data too.
    with fs.open(path, "rb", block_size=TAR_BLOCK, cache_type="none") as f:
        index = scan_tar(f, fs.size(path))
    fs.pipe_file(fsspec.core.url_to_fs(index_url(url))[1], index.to_json())
    return index


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m curation.shard_index", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shards", nargs="+", metavar="SHARD",
                        help="tar paths, globs or fsspec URLs (s3://bucket/shards/*.tar) whose index to write")
    parser.add_argument("--force", action="store_true",
                        help="rewrite indexes that exist and match their tar "
                             "(default: off, only missing or stale ones)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for url in _tar_urls(args.shards):
        fs, path = fsspec.core.url_to_fs(url)
        if not args.force and fs.exists(fsspec.core.url_to_fs(index_url(url))[1]):
            current = ShardIndex.from_json(fs.cat_file(fsspec.core.url_to_fs(index_url(url))[1]))
            if current.tar_bytes == fs.size(path):
                continue
        index = index_shard(url)
        log.info("indexed %s: %d samples", url, len(index))


if __name__ == "__main__":
    main()
