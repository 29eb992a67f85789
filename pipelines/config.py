"""Configuration of the caption pipeline: curation and captioning sections plus the job's own.

One YAML file holds all three (``pipelines/configs/default.yaml``); ``--set a.b.c=value`` on the
command line overrides any key, so a config never has to be copied to change one number.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from captioning.config import CaptionerConfig
from curation.config import CurationConfig, apply_override, build_config


@dataclass
class StageResources:
    """Ray resources per stage. Curation takes a whole CPU because FFmpeg runs one thread per
    video (``curation.probe.decode_threads``); the light stages take less so they fit beside it."""

    curate_cpus: float = 1.0
    frames_cpus: float = 0.5
    record_cpus: float = 0.25
    shards_cpus: float = 0.5
    caption_cpus: float = 1.0
    # GPUs per captioning actor; None: one when the cluster has any (transformers/vllm engines).
    caption_gpus: float | None = None
    # Captioning actors (one model copy each).
    caption_actors: int = 1
    # Scenes per captioning call; None: the engine's own (``CaptionerConfig.scenes_per_call``).
    caption_batch_size: int | None = None


@dataclass
class ShardConfig:
    # A shard is closed before it would pass this many bytes (mp4 + json) ...
    target_bytes: int = 1 << 30
    # ... or when it holds this many samples.
    max_samples: int = 2000


@dataclass
class ReportConfig:
    # Scenes per page of report/TIER-NNNN.html: a page loads one video element per scene and per shot.
    scenes_per_page: int = 100
    # Rows per page of the per-video table and of the failure tables.
    rows_per_page: int = 500
    # Sample JSON read per pass over the ledger's captions while writing scene pages (each pass
    # reads the whole captions table; the report holds this many samples, ~2 KB each, at once).
    samples_per_read: int = 50000
    # Width in pixels of a shot's thumbnail (a paused video element, nothing is decoded here).
    thumb_width: int = 192


@dataclass
class PipelineConfig:
    curation: CurationConfig = field(default_factory=CurationConfig)
    captioning: CaptionerConfig = field(default_factory=CaptionerConfig)
    resources: StageResources = field(default_factory=StageResources)
    shards: ShardConfig = field(default_factory=ShardConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    # A rerun normally keeps recorded failures (bad inputs stay bad); True tries them again.
    retry_failed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PipelineConfig":
        return build_config(cls, data)


def load_config(path: str | Path | None, overrides: list[str] = ()) -> PipelineConfig:
    """The YAML at ``path`` (or the defaults) with ``key.path=value`` overrides applied."""
    data = (yaml.safe_load(Path(path).read_text()) or {}) if path else {}
    for item in overrides:
        apply_override(data, item)
    return PipelineConfig.from_dict(data)
