"""The stand-in VLM: captioning's tiny random model, built on first use when no model is named.

It lets the main job run end to end offline on a fresh machine. Its captions are noise; the
job logs that loudly, and ``--model`` / ``--endpoint`` point it at a real VLM.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def stand_in_model_dir() -> Path:
    cache = os.environ.get("HOLOCINE_CACHE") or Path.home() / ".cache" / "holocine-toolkit"
    return Path(cache) / "tiny-vlm"


def ensure_stand_in_model(path: str | Path) -> Path:
    """Build the tiny VLM at ``path`` unless it is there; safe when several actors race to build it."""
    from captioning.tiny import build_tiny_vlm

    path = Path(path)
    if (path / "config.json").exists():
        return path
    partial = path.with_name(f"{path.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    build_tiny_vlm(partial)
    try:
        partial.rename(path)
    except OSError:  # another process published it first; theirs is the same model
        shutil.rmtree(partial, ignore_errors=True)
    log.info("built the stand-in tiny VLM at %s", path)
    return path
