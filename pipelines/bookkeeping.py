"""The driver's bookkeeping, before and after the work: what to do, then shards, manifests and summary.

Both read the ledger (``pipelines.ledger``) with a listing and columnar reads of a few objects,
and work on Arrow columns rather than per-record Python objects, so their cost grows with the
number of scenes only through in-memory column operations (and with new work through its
ledger parts and shards). Driver memory holds the ledger's light columns: the ids, states,
shot and scene rows without the frame mapping or the captions (about 1 KB per scene), plus the
sample JSON of this run's new samples while they are packed.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation.manifests import SCENES_SCHEMA, SHOTS_SCHEMA, VIDEOS_SCHEMA
from curation.store import Store
from curation.types import Scene, video_id_for
from pipelines.config import PipelineConfig
from pipelines.ledger import Ledger, scenes_of
from pipelines.packing import ShardTask, pack
from pipelines.report import write_report

log = logging.getLogger(__name__)

# scenes.parquet as DESIGN.md lays it out, plus how many VLM answers each caption took.
PIPELINE_SCENES_SCHEMA = SCENES_SCHEMA.append(pa.field("caption_tries", pa.int64()))


class JobError(RuntimeError):
    """The job itself is broken (as opposed to some inputs or scenes failing)."""


@dataclass
class WorkPlan:
    """What this run must do; everything else is already in the ledger."""

    to_curate: list[str] = field(default_factory=list)
    to_caption: list[Scene] = field(default_factory=list)


def scene_table(videos: pa.Table) -> pa.Table:
    """The scenes nested in ``videos`` ledger rows (read with ``scenes``), one row each."""
    struct = videos.schema.field("scenes").type.value_type
    if videos.num_rows == 0:
        return pa.schema(list(struct)).empty_table()
    return pa.Table.from_struct_array(pc.list_flatten(videos["scenes"]))


def _captionable(scenes: pa.Table) -> pa.ChunkedArray:
    return pc.and_(pc.equal(scenes["status"], "ok"), pc.is_valid(scenes["clip_path"]))


def plan_work(ledger: Ledger, uris: list[str], retry_failed: bool) -> WorkPlan:
    """Inputs without a record (or failed, with ``retry_failed``) to curate; recorded scenes
    without a caption (or a failed one) to caption."""
    plan = WorkPlan()
    videos = ledger.read("videos", ["status", "scenes"])
    status = dict(zip(videos["video_id"].to_pylist(), videos["status"].to_pylist(), strict=True))
    kept = []
    for uri in uris:
        video_id = video_id_for(uri)
        recorded = status.get(video_id)
        if recorded is None or (retry_failed and recorded != "ok"):
            plan.to_curate.append(uri)
        else:
            kept.append(video_id)
    scenes = scene_table(videos)
    scenes = scenes.filter(pc.and_(_captionable(scenes), pc.is_in(scenes["video_id"], pa.array(kept, pa.string()))))
    captions = ledger.read("captions", ["error"])
    done = captions if not retry_failed else captions.filter(pc.is_null(captions["error"]))
    scenes = scenes.filter(pc.invert(pc.is_in(scenes["key"], done["key"])))
    if scenes.num_rows:
        # The scenes whole (with the frame mapping), from the rows of their videos only.
        wanted = set(scenes["key"].to_pylist())
        rows = ledger.read("videos", ["uri_bytes", "scenes", "scene_source_frames"])
        rows = rows.filter(pc.is_in(rows["video_id"], scenes["video_id"].unique()))
        plan.to_caption = [s for row in rows.to_pylist() for s in scenes_of(row) if s.key in wanted]
    return plan


def reason_of(error: str) -> str:
    """The kind of a failure, for counting: the message up to its details."""
    return error.split(":")[0].split(" (")[0].strip()


def finish(
    store: Store,
    uris: list[str],
    config: PipelineConfig,
    stand_in: bool,
    started: tuple[float, int],
    write_shards: Callable[[list[ShardTask]], list[int]],
) -> dict[str, Any]:
    """Shards, manifests, ``summary.json`` and the report from the whole ledger of this output.

    ``started`` (``time.perf_counter()``, ``time.time_ns()`` at the run's start) tells this run's
    work from earlier runs' in the summary; ``write_shards`` writes the planned shards
    (``pipelines.packing``)."""
    ledger = Ledger(store)
    for table in ("videos", "captions"):
        ledger.compact(table)
    videos = ledger.read("videos", [*VIDEOS_SCHEMA.names, "seconds", "shots", "scenes"])
    missing = set(video_id_for(uri) for uri in uris) - set(videos["video_id"].to_pylist())
    if missing:
        raise JobError(f"{len(missing)} inputs have no curation record after the run, e.g. {min(missing)}")
    captions = ledger.read("captions", ["error", "tries", "seconds_frames", "seconds_caption"])
    scenes = scene_table(videos).sort_by("key")
    # Each scene's caption row (null where it has none); Arrow's join cannot carry list columns.
    at = pc.index_in(scenes["key"], value_set=captions["key"])
    scenes = scenes.append_column("caption_error", captions["error"].take(at))
    scenes = scenes.append_column("caption_tries", captions["tries"].take(at))
    uncaptioned = scenes.filter(pc.and_(_captionable(scenes), pc.is_null(scenes["caption_tries"])))
    if uncaptioned.num_rows:
        raise JobError(f"{uncaptioned.num_rows} scenes have no caption record after the run, e.g. {uncaptioned['key'][0]}")
    captioned = pc.and_(_captionable(scenes), pc.is_null(scenes["caption_error"]))
    ready = scenes.filter(captioned).select(["key", "clip_path", "clip_bytes"])
    ready_rows = list(zip(*(ready[name].to_pylist() for name in ready.column_names), strict=True))
    shard_of, shards_written = pack(store, ledger, ready_rows, config.shards, write_shards)
    ledger.compact("shards")

    failed_caption = pc.is_valid(scenes["caption_error"])
    scenes = scenes.set_column(
        scenes.schema.get_field_index("status"), "status", pc.if_else(failed_caption, "failed", scenes["status"])
    )
    scenes = scenes.set_column(
        scenes.schema.get_field_index("error"), "error",
        pc.if_else(failed_caption, pc.binary_join_element_wise("caption: ", scenes["caption_error"], ""), scenes["error"]),
    )
    keys = scenes["key"].to_pylist()
    scenes = scenes.set_column(scenes.schema.get_field_index("shard"), "shard", pa.array([shard_of.get(k) for k in keys], pa.string()))
    scenes = scenes.select(PIPELINE_SCENES_SCHEMA.names).cast(PIPELINE_SCENES_SCHEMA)
    store.write_parquet("manifests/videos.parquet", videos.select(VIDEOS_SCHEMA.names).cast(VIDEOS_SCHEMA))
    shots = pa.Table.from_struct_array(pc.list_flatten(videos["shots"])) if videos.num_rows else SHOTS_SCHEMA.empty_table()
    store.write_parquet("manifests/shots.parquet", shots.cast(SHOTS_SCHEMA))
    store.write_parquet("manifests/scenes.parquet", scenes)

    summary = summarize(videos, scenes, captions, started[1])
    summary["this_run"]["shards_written"] = shards_written
    summary["this_run"]["wall_time_s"] = time.perf_counter() - started[0]
    sample = ledger.any_sample()
    summary["captioner"] = json.loads(sample).get("captioner", {}) if sample else {}
    store.write_text("summary.json", json.dumps(summary, indent=2))
    write_report(store, ledger, summary, config.report, stand_in)
    return summary


def _count(values: list[str | None]) -> dict[str, int]:
    return dict(Counter(reason_of(v or "") for v in values))


def _seconds(video_seconds: list[str], frames: pa.ChunkedArray, caption: pa.ChunkedArray) -> dict[str, float]:
    total: Counter[str] = Counter()
    for text in video_seconds:
        total.update(json.loads(text))
    if len(frames):
        total.update({"frames": pc.sum(frames).as_py(), "caption": pc.sum(caption).as_py()})
    return dict(total)


def summarize(videos: pa.Table, scenes: pa.Table, captions: pa.Table, started_ns: int) -> dict[str, Any]:
    """The figures of ``summary.json``: the whole output's, and under ``this_run`` the work
    recorded since ``started_ns``. ``scenes`` is the scenes manifest."""
    failed = videos.filter(pc.not_equal(videos["status"], "ok"))
    failed_inputs = dict(zip(failed["uri"].to_pylist(), failed["error"].to_pylist(), strict=True))
    samples = scenes.filter(pc.is_valid(scenes["shard"]))
    failures = scenes.filter(pc.not_equal(scenes["status"], "ok"))
    seconds_out = pc.divide(pc.cast(samples["num_frames"], pa.float64()), samples["fps"])
    by_tier = pa.table({"tier": samples["tier"], "s": seconds_out}).group_by("tier").aggregate([("s", "sum"), ("s", "count")])
    new_videos = videos.filter(pc.greater_equal(videos["written_ns"], started_ns))
    new_captions = captions.filter(pc.greater_equal(captions["written_ns"], started_ns))
    new_failed = pc.sum(pc.is_valid(new_captions["error"])).as_py() or 0
    return {
        "inputs": videos.num_rows,
        "inputs_ok": videos.num_rows - failed.num_rows,
        "inputs_failed": failed.num_rows,
        "failures_by_reason": _count(failed["error"].to_pylist()),
        "failed_inputs": failed_inputs,
        "scenes": scenes.num_rows,
        "samples": samples.num_rows,
        "scenes_by_tier": dict(zip(by_tier["tier"].to_pylist(), by_tier["s_count"].to_pylist(), strict=True)),
        "scenes_failed": failures.num_rows,
        "scene_failures_by_reason": _count(failures["error"].to_pylist()),
        "shards": len(pc.unique(samples["shard"])),
        "hours_in": (pc.sum(videos.filter(pc.equal(videos["status"], "ok"))["duration_s"]).as_py() or 0.0) / 3600,
        # Tiers are cut independently, so the same footage can be in a 5 s and a 15 s scene:
        # hours out can exceed hours in.
        "hours_out": (pc.sum(seconds_out).as_py() or 0.0) / 3600,
        "hours_out_by_tier": dict(sorted(zip(by_tier["tier"].to_pylist(), (s / 3600 for s in by_tier["s_sum"].to_pylist()), strict=True))),
        "stage_seconds": _seconds(videos["seconds"].to_pylist(), captions["seconds_frames"], captions["seconds_caption"]),
        "this_run": {
            "videos_curated": new_videos.num_rows,
            "videos_failed": pc.sum(pc.not_equal(new_videos["status"], "ok")).as_py() or 0,
            "stage_seconds": _seconds(new_videos["seconds"].to_pylist(), new_captions["seconds_frames"], new_captions["seconds_caption"]),
            "scenes_captioned": new_captions.num_rows - new_failed,
            "scenes_failed": new_failed,
        },
    }
