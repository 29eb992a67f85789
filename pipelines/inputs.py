"""Where the videos come from: a local folder, a glob, or any fsspec URI (``s3://``, ``gs://``, ``file://``).

Decoders need a local path, so a remote input is copied to a local file for the tasks that
decode it and deleted afterwards; a local input is read in place.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import uuid
from pathlib import Path

import fsspec

from curation.run import VIDEO_EXTENSIONS, list_inputs
from curation.types import is_remote, video_id_for

log = logging.getLogger(__name__)

_GLOB_CHARS = set("*?[")


def _is_video_name(path: str) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def discover_inputs(source: str, limit: int | None = None) -> list[str]:
    """Every input named like a video under ``source``, sorted; the first ``limit`` when given.

    Local folders list as ``curation.run.list_inputs`` does (directories and unreadable files
    named like videos included, so they get a failure row instead of vanishing). Local inputs are
    absolute paths, so the same input keeps its video_id whatever directory the job runs from.
    A path that exists is taken literally, even when its name has glob characters
    (``films [2020]/``); only a source that does not exist is expanded as a glob.
    """
    if is_remote(source):
        uris = _discover_remote(source)
    elif os.path.isdir(source):
        uris = list_inputs(source)
    elif os.path.lexists(source):
        uris = [os.path.abspath(source)]
    elif set(source) & _GLOB_CHARS:
        uris = sorted(os.path.abspath(p) for p in glob.glob(source, recursive=True) if _is_video_name(p))
    else:
        raise FileNotFoundError(f"input {source} does not exist")
    return uris[:limit] if limit is not None else uris


def _discover_remote(source: str) -> list[str]:
    fs, root = fsspec.core.url_to_fs(source)
    if fs.isdir(root):
        paths = fs.find(root, withdirs=True)
    elif fs.exists(root):
        paths = [root]
    elif set(root) & _GLOB_CHARS:
        paths = fs.glob(root)
    else:
        raise FileNotFoundError(f"input {source} does not exist")
    return sorted(fs.unstrip_protocol(p) for p in paths if _is_video_name(p))


def stage_input(uri: str, staging_dir: str | Path) -> str:
    """A local path holding ``uri``'s bytes: the path itself for local inputs, a fresh copy otherwise.

    Raises ``OSError``/``ValueError`` when a remote object cannot be read; the caller records that
    as the input's failure.
    """
    if not is_remote(uri):
        return uri
    staging_dir = Path(staging_dir)
    staging_dir.mkdir(parents=True, exist_ok=True)
    # Unique per attempt (a straggler of a killed run may still be staging the same input); the
    # extension stays last, since FFmpeg finds the format of raw streams by it.
    local = staging_dir / f"{video_id_for(uri)}-{uuid.uuid4().hex[:12]}{Path(uri).suffix.lower()}"
    try:
        with fsspec.open(uri, "rb") as source, open(local, "wb") as target:
            shutil.copyfileobj(source, target, length=8 << 20)
    except (OSError, ValueError) as exc:
        log.warning("%s: cannot copy to local staging: %s", uri, exc)
        local.unlink(missing_ok=True)
        raise
    return str(local)


def unstage(uri: str, local: str) -> None:
    """Delete the staged copy of a remote input (never a local input)."""
    if is_remote(uri) and local != uri:
        Path(local).unlink(missing_ok=True)
