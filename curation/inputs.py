"""Where the videos come from: a local folder, a file, a glob, or any fsspec URL (``s3://``, ``gs://``, ``file://``)."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import fsspec

from curation.types import is_remote

VIDEO_EXTENSIONS = {
    ".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".m2v", ".ts", ".mts", ".m2ts",
    ".flv", ".wmv",
}
_GLOB_CHARS = set("*?[")


def _is_video_name(path: str) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def list_inputs(input_dir: str | Path) -> list[str]:
    """Every entry under input_dir named like a video (directories and unreadable files too,
    so they get a failure row rather than vanishing), as absolute paths in a stable order."""
    root = Path(input_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"input folder {root} does not exist or is not a folder")
    return sorted(os.path.abspath(p) for p in root.rglob("*") if _is_video_name(str(p)))


def discover_inputs(source: str, limit: int | None = None) -> list[str]:
    """Every input named like a video under ``source``, sorted; the first ``limit`` when given.

    Local folders list as :func:`list_inputs` does. Local inputs are absolute paths, so the same
    input keeps its video_id whatever directory the job runs from. A path that exists is taken
    literally, even when its name has glob characters (``films [2020]/``); only a source that
    does not exist is expanded as a glob.
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
