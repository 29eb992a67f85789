"""The shard format: WebDataset tars of ``KEY.mp4`` + ``KEY.json`` samples (DESIGN.md).

`SampleMeta` is the JSON half, validated on write and on read so a broken sample is caught
where it is made, not in the middle of a training run. Shards are written under a temporary
name and renamed when complete, so a reader never finds a truncated tar.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

from curation.prompt_format import CUT_MARK, count_shots
from curation.shard_index import write_indexed_tar

SHOT_CUT = CUT_MARK  # the name other modules import


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


class SourceRef(BaseModel):
    model_config = ConfigDict(extra="allow")

    uri: str
    video_id: str
    start_s: float
    end_s: float


class ShotRecord(BaseModel):
    model_config = ConfigDict(extra="allow")

    start_frame: int
    end_frame: int
    caption: str
    camera: str = ""
    characters: list[str] = []


class SampleMeta(BaseModel):
    """``KEY.json`` of a shard sample. Keys may be added; these keep their meaning."""

    model_config = ConfigDict(extra="allow")

    key: str
    source: SourceRef
    fps: float
    num_frames: int
    width: int
    height: int
    global_caption: str
    characters: dict[str, str] = {}
    shots: list[ShotRecord]
    shot_cut_frames: list[int]
    prompt: str
    captioner: dict[str, str] = {}

    @model_validator(mode="after")
    def _check_layout(self) -> "SampleMeta":
        if self.num_frames % 4 != 1:
            raise ValueError(f"num_frames {self.num_frames} is not 4k+1")
        if not self.shots:
            raise ValueError("a sample needs at least one shot")
        if self.shots[0].start_frame != 0 or self.shots[-1].end_frame != self.num_frames:
            raise ValueError("shots must cover every frame of the clip")
        for before, after in zip(self.shots, self.shots[1:]):
            if before.end_frame != after.start_frame:
                raise ValueError(f"shots {before.end_frame} and {after.start_frame} are not contiguous")
        if self.shot_cut_frames != [shot.start_frame for shot in self.shots[1:]]:
            raise ValueError("shot_cut_frames must be the start frames of shots 2..N")
        if any(frame % 4 != 1 for frame in self.shot_cut_frames):
            raise ValueError(f"cut frames {self.shot_cut_frames} are not all on the latent grid (f % 4 == 1)")
        if count_shots(self.prompt) != len(self.shots):
            raise ValueError(f"prompt has {self.prompt.count(SHOT_CUT)} '{SHOT_CUT}' for {len(self.shots)} shots")
        return self


def write_shard(path: str | Path, samples: Iterable[tuple[SampleMeta, bytes]]) -> int:
    """Write (meta, mp4 bytes) samples to one tar, atomically, with its sample index
    (``curation.shard_index.index_url(path)``); returns how many were written.

    The index is published before the tar, so a reader that sees the tar finds its index."""
    return write_indexed_tar(path, ({"__key__": meta.key, "mp4": mp4, "json": meta.model_dump_json().encode()}
                                    for meta, mp4 in samples))


def read_shard(path: str | Path) -> Iterator[tuple[SampleMeta, bytes]]:
    """(meta, mp4 bytes) for each sample of one tar, in order."""
    pending: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            pending.setdefault(key, {})[ext] = tar.extractfile(member).read()
            if {"mp4", "json"} <= pending[key].keys():
                parts = pending.pop(key)
                yield SampleMeta.model_validate_json(parts["json"]), parts["mp4"]
    if pending:
        raise ValueError(f"{path}: incomplete samples {sorted(pending)}")


def decode_sample(sample: dict) -> tuple[SampleMeta, bytes]:
    """A sample dict as the `webdataset` library yields it (raw bytes) -> (meta, mp4 bytes)."""
    return SampleMeta.model_validate_json(sample["json"]), sample["mp4"]
