"""Where outputs live: a local folder or any fsspec URL (``s3://``, ``gs://``, ``az://``, ``file://``).

A :class:`Store` is an output root. Every object written through it is complete or absent: a local
file is written under a temporary name and renamed (``curation.files``); an object store never
shows an object before its upload completes (multipart uploads included), so there the object is
written directly. Nothing here copies between nodes: a task that needs bytes on its own disk
stages them into its own scratch folder (:func:`local_copy`) and removes them when done.

Credentials and endpoints come from each store's standard configuration (for S3 the ``AWS_*``
variables, ``AWS_ENDPOINT_URL`` included); nothing here reads or logs them.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from curation.files import atomic_path, remove_partials
from curation.types import is_remote


def scratch_root() -> Path:
    """This node's scratch space for staged copies: ``$HOLOCINE_SCRATCH``, else the system temp folder."""
    return Path(os.environ.get("HOLOCINE_SCRATCH") or tempfile.gettempdir()) / "holocine-scratch"


def scratch_dir() -> Path:
    """This process's folder in :func:`scratch_root`, made on first use. Folders that processes
    of this host left behind when they died (a ``kill -9`` skips every cleanup) are removed then,
    so scratch space on a long-lived node does not fill up. Only this host's folders are touched:
    containers that share a temp folder have their own host names, and their own process ids."""
    return _scratch_dir(scratch_root(), os.getpid())


@functools.cache
def _scratch_dir(root: Path, pid: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    for entry in root.iterdir():
        owner_host, _, owner = entry.name.rpartition("-pid")
        if owner_host == host and owner.isdigit() and not _alive(int(owner)):
            shutil.rmtree(entry, ignore_errors=True)
    mine = root / f"{host}-pid{pid}"
    mine.mkdir(exist_ok=True)
    return mine


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _is_local(url: str) -> bool:
    return not is_remote(url) or url.startswith("file://")


@contextmanager
def local_copy(uri: str, suffix: str = "") -> Iterator[str]:
    """A local path holding ``uri``'s bytes for the duration of the block: a local file itself, or a
    fresh copy in this node's scratch space, deleted afterwards. ``suffix`` keeps the extension
    last, since FFmpeg finds the format of raw streams by it."""
    if _is_local(uri):
        yield uri.removeprefix("file://")
        return
    # Unique per attempt: a straggler of a killed run may be staging the same object.
    local = scratch_dir() / f"{uuid.uuid4().hex}{suffix or Path(uri).suffix.lower()}"
    try:
        with fsspec.open(uri, "rb") as source, open(local, "wb") as target:
            shutil.copyfileobj(source, target, length=8 << 20)
        yield str(local)
    finally:
        local.unlink(missing_ok=True)


@dataclass
class Store:
    """An output root: ``rel`` paths below are ``/``-separated names under it."""

    url: str

    def __post_init__(self) -> None:
        if not is_remote(self.url):
            self.url = os.path.abspath(self.url)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.root = self.root.rstrip("/")
        self.local = isinstance(self.fs, LocalFileSystem)

    def path(self, rel: str) -> str:
        """The filesystem path of ``rel`` (what ``self.fs`` takes)."""
        return f"{self.root}/{rel}" if rel else self.root

    def uri(self, rel: str) -> str:
        """The name of ``rel`` that any process can open: a local path, or a full URL."""
        return self.path(rel) if self.local else self.fs.unstrip_protocol(self.path(rel))

    def rel(self, uri: str) -> str:
        """The inverse of :meth:`uri`."""
        path = uri if self.local else self.fs._strip_protocol(uri)
        return path.removeprefix(self.root + "/")

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    def write_bytes(self, rel: str, data: bytes) -> None:
        if self.local:
            with atomic_path(self.path(rel)) as partial:
                partial.write_bytes(data)
        else:
            self.fs.pipe_file(self.path(rel), data)

    def write_text(self, rel: str, text: str) -> None:
        self.write_bytes(rel, text.encode("utf-8"))

    @contextmanager
    def writing(self, rel: str) -> Iterator[Path]:
        """A local file to write ``rel`` into; published when the block exits without error.

        Locally it is the temporary name beside the target (no copy); for an object store it is
        a scratch file, uploaded in one object and then deleted."""
        if self.local:
            with atomic_path(self.path(rel)) as partial:
                yield partial
            return
        local = scratch_dir() / f"{uuid.uuid4().hex}-{Path(rel).name}"
        try:
            yield local
            self.fs.put_file(str(local), self.path(rel))
        finally:
            local.unlink(missing_ok=True)

    def write_parquet(self, rel: str, table: pa.Table) -> None:
        with self.writing(rel) as path:
            pq.write_table(table, path)

    def read_parquet(self, rels: list[str], columns: list[str] | None = None) -> pa.Table:
        """The concatenation of these Parquet objects (read in parallel), only ``columns``."""
        paths = [self.path(rel) for rel in rels]
        return pq.read_table(paths, columns=columns, filesystem=self.fs, pre_buffer=True)

    def upload(self, local: str | Path, rel: str) -> None:
        """Publish the local file ``local`` as ``rel`` (moved when the store is this disk)."""
        if self.local:
            with atomic_path(self.path(rel)) as partial:
                shutil.move(str(local), partial)
        else:
            self.fs.put_file(str(local), self.path(rel))

    def list(self, prefix: str) -> dict[str, int]:
        """``name -> size`` of the files directly under folder ``prefix`` (fresh: never a cached
        listing, since other processes write here). One request per thousand names on S3."""
        folder = self.path(prefix)
        try:
            entries = self.fs.ls(folder, detail=True, refresh=True)
        except FileNotFoundError:
            return {}
        return {
            entry["name"].rstrip("/").rsplit("/", 1)[-1]: int(entry.get("size") or 0)
            for entry in entries
            if entry.get("type") == "file"
        }

    def delete(self, rels: list[str]) -> None:
        """Remove these objects (missing ones are fine); one bulk request per thousand on S3."""
        if not rels:
            return
        paths = [self.path(rel) for rel in rels]
        if self.local:
            for path in paths:
                Path(path).unlink(missing_ok=True)
        else:
            self.fs.rm(paths)
            self.fs.invalidate_cache()

    def remove_partials(self) -> int:
        """Temporary files of a killed run (an object store has none: uploads are atomic)."""
        return remove_partials(self.root) if self.local else 0
