"""Files that appear complete or not at all.

Every output is written under a temporary name and renamed into place. The temporary name is
unique per writer: after a ``kill -9``, Ray workers of the dead job can outlive it by seconds
and finish a task, and a straggler must never write into the same temporary file as the rerun.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_MARK = ".partial-"


def partial_path(path: str | Path) -> Path:
    """A fresh temporary name next to ``path`` (same folder, so the rename is atomic). It ends
    in the mark, not in the extension, so a reader globbing ``*.tar`` or ``*.mp4`` never sees
    it; writers that choose a format by extension must name the format."""
    path = Path(path)
    return path.with_name(f"{path.name}{PARTIAL_MARK}{uuid.uuid4().hex[:12]}")


def is_partial(path: str | Path) -> bool:
    return PARTIAL_MARK in Path(path).name


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(path)
    try:
        yield partial
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def remove_partials(folder: str | Path) -> int:
    """Delete the temporary files a killed run left under ``folder``; returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for path in folder.rglob(f"*{PARTIAL_MARK}*"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed
