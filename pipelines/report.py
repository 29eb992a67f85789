"""``OUTPUT/report.html`` and ``OUTPUT/report/``: what a person opens instead of reading Parquet.

``report.html`` is the index: the figures a data engineer looks at first (stage times, shots
detected / kept / dropped by reason, fades and dissolves, scenes by tier, caption tries and
failures, inputs failed by reason, hours, shards) and links to the pages: the scenes of each tier,
the failures and the per-video table, a page of N each (``pipelines.report_pages``).

Built from the manifests with Arrow compute, so 100k videos and 500k scenes cost a few columnar
reads. No clip is read: the pages link the clips relative to the output root, so they play
wherever the browser can read the output. A run with the stand-in model says so in a banner.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curation.store import Store
from pipelines.config import ReportConfig
from pipelines.report_pages import (
    Page,
    clip_hrefs,
    document,
    esc,
    scene_pages,
    table,
    table_pages,
    write_pages,
)

log = logging.getLogger(__name__)

STAND_IN_BANNER = (
    '<div class="banner">This run used the stand-in model: captions come from a tiny random '
    "stand-in model: they are noise.</div>"
)
STAGES = ("probe", "shots", "clips", "frames", "caption")
SCENE_COLUMNS = ["key", "video_id", "uri", "tier", "num_shots", "num_frames", "fps", "start_s", "end_s",
                 "clip_path", "status", "error", "shard", "caption_tries"]
VIDEO_HEADER = ("uri", "status", "error", "duration (s)", "shots", "kept", "fades", "dissolves", "scenes", "samples")


def reasons(messages: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """The kind of each message, for counting: the text before its first ``:`` or `` (``
    (``too_short (1.2 s < 1.5 s)`` -> ``too_short``); as ``pipelines.caption.reason_of``."""
    cut = pc.replace_substring_regex(messages, pattern=r"(:| \().*$", replacement="")
    return pc.utf8_trim_whitespace(cut)


def counts(values: pa.Array | pa.ChunkedArray, by_value: bool = False) -> list[tuple[Any, int]]:
    """(value, how many) of the non-null values: most frequent first (ties by value), or a
    histogram's order (``by_value``)."""
    if len(values) == 0:
        return []
    pairs = pc.value_counts(values).to_pylist()
    pairs = [(p["values"], p["counts"]) for p in pairs if p["values"] is not None]
    return sorted(pairs, key=lambda p: p[0] if by_value else (-p[1], str(p[0])))


def bar_table(pairs: list[tuple[Any, int]], header: tuple[str, str]) -> str:
    """A count table with a bar per row, scaled to the largest count."""
    top = max((n for _, n in pairs), default=0) or 1
    rows = "".join(
        f'<tr><td>{esc(value)}</td><td class="n">{n}</td>'
        f'<td><span class="bar" style="width:{max(1, round(120 * n / top))}px"></span></td></tr>'
        for value, n in pairs
    )
    head = f"<tr><th>{esc(header[0])}</th><th>{esc(header[1])}</th><th></th></tr>"
    return f"<table>{head}{rows}</table>" if pairs else "<p>none</p>"


def figure(title: str, content: str) -> str:
    return f"<div><h3>{esc(title)}</h3>{content}</div>"


def read_manifests(store: Store) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The columns the report uses of ``videos``, ``shots`` and ``scenes.parquet``."""
    videos = store.read_parquet(["manifests/videos.parquet"],
                                ["video_id", "uri", "status", "error", "duration_s", "fades", "dissolves"])
    shots = store.read_parquet(["manifests/shots.parquet"], ["video_id", "kept", "drop_reason"])
    scenes = store.read_parquet(["manifests/scenes.parquet"], SCENE_COLUMNS)
    return videos, shots, scenes


def video_rows(videos: pa.Table, shots: pa.Table, scenes: pa.Table) -> list[tuple[Any, ...]]:
    """The per-video table, by uri: shot and scene counts joined onto each video."""
    shot_counts = shots.group_by("video_id").aggregate([([], "count_all"), ("kept", "sum")])
    shot_counts = shot_counts.rename_columns(["video_id", "shots", "kept"])
    scene_counts = scenes.group_by("video_id").aggregate([([], "count_all"), ("shard", "count")])
    scene_counts = scene_counts.rename_columns(["video_id", "scenes", "samples"])
    joined = videos.join(shot_counts, "video_id", join_type="left outer")
    joined = joined.join(scene_counts, "video_id", join_type="left outer").sort_by("uri")
    columns = [joined[name].to_pylist() for name in
               ("uri", "status", "error", "duration_s", "shots", "kept", "fades", "dissolves", "scenes", "samples")]
    return [
        (uri, status, error or "", duration, shots or 0, kept or 0, fades or 0, dissolves or 0, n or 0, samples or 0)
        for uri, status, error, duration, shots, kept, fades, dissolves, n, samples in zip(*columns)
    ]


def tier_figures(scenes: pa.Table) -> list[tuple[Any, ...]]:
    """(tier, samples, failed, hours out) per tier."""
    if scenes.num_rows == 0:
        return []
    failed = pc.cast(pc.not_equal(scenes["status"], "ok"), pa.int64())
    seconds = pc.divide(pc.cast(scenes["num_frames"], pa.float64()), scenes["fps"])
    seconds = pc.if_else(pc.is_valid(scenes["shard"]), seconds, 0.0)
    grouped = pa.table({"tier": scenes["tier"], "shard": scenes["shard"], "failed": failed, "seconds": seconds})
    grouped = grouped.group_by("tier").aggregate([("shard", "count"), ("failed", "sum"), ("seconds", "sum")])
    grouped = grouped.sort_by("tier")
    return [
        (tier, samples, fails, total / 3600)
        for tier, samples, fails, total in zip(*(grouped[c].to_pylist() for c in
                                                 ("tier", "shard_count", "failed_sum", "seconds_sum")))
    ]


def run_figures(summary: dict[str, Any], scenes: pa.Table) -> list[str]:
    """Totals and stage seconds, from ``summary.json``."""
    run = summary.get("this_run", {})
    total_s, run_s = summary.get("stage_seconds", {}), run.get("stage_seconds", {})
    stages = [*STAGES, *sorted((set(total_s) | set(run_s)) - set(STAGES))]
    stage_rows = [(name, float(run_s.get(name, 0.0)), float(total_s.get(name, 0.0))) for name in stages]
    this_run = (
        f'{run.get("videos_curated", 0)} videos curated ({run.get("videos_failed", 0)} failed), '
        f'{run.get("scenes_captioned", 0)} scenes captioned ({run.get("scenes_failed", 0)} failed) '
        f'in {float(run.get("wall_time_s", 0.0)):.1f} s'
    )
    totals = [
        ("inputs", summary.get("inputs", 0)),
        ("inputs failed", summary.get("inputs_failed", 0)),
        ("scenes", scenes.num_rows),
        ("samples (scenes in shards)", summary.get("samples", 0)),
        ("scenes failed", summary.get("scenes_failed", 0)),
        ("shards (written this run)", f'{summary.get("shards", 0)} ({run.get("shards_written", 0)})'),
        ("hours in", float(summary.get("hours_in", 0.0))),
        ("hours out", float(summary.get("hours_out", 0.0))),
        ("this run", this_run),
    ]
    return [figure("Totals", table(totals)), figure("Stage seconds", table(stage_rows, ("stage", "this run", "all runs")))]


def shot_figures(videos: pa.Table, shots: pa.Table) -> list[str]:
    """Shots detected / kept / dropped by reason, fades and dissolves."""
    kept = int(pc.sum(shots["kept"]).as_py() or 0)
    dropped = shots.filter(pc.invert(shots["kept"]))
    shot_rows = [("detected", shots.num_rows), ("kept", kept), ("dropped", shots.num_rows - kept)]
    transitions = [
        (kind, int(pc.sum(videos[kind]).as_py() or 0), int(pc.sum(pc.greater(videos[kind], 0)).as_py() or 0))
        for kind in ("fades", "dissolves")
    ]
    return [
        figure("Shots", table(shot_rows)),
        figure("Shots dropped by reason", bar_table(counts(reasons(dropped["drop_reason"])), ("reason", "shots"))),
        figure("Transitions", table(transitions, ("kind", "count", "videos with any"))),
    ]


def failure_figures(videos: pa.Table, scenes: pa.Table) -> list[str]:
    """Caption tries, caption and other scene failures by reason, inputs failed by reason."""
    failed = scenes.filter(pc.not_equal(scenes["status"], "ok"))
    is_caption = pc.starts_with(failed["error"], "caption: ")
    caption_errors = pc.utf8_slice_codeunits(failed.filter(is_caption)["error"], len("caption: "))
    other_errors = failed.filter(pc.invert(is_caption))["error"]
    input_errors = videos.filter(pc.not_equal(videos["status"], "ok"))["error"]
    return [
        figure("Caption tries", bar_table(counts(scenes["caption_tries"], by_value=True), ("tries", "scenes"))),
        figure("Caption failures by reason", bar_table(counts(reasons(caption_errors)), ("reason", "scenes"))),
        figure("Other scene failures by reason", bar_table(counts(reasons(other_errors)), ("reason", "scenes"))),
        figure("Inputs failed by reason", bar_table(counts(reasons(input_errors)), ("reason", "inputs"))),
    ]


def links_html(videos: pa.Table, scenes: pa.Table, links: dict[str, list[str]]) -> str:
    """Scenes by tier with their pages, then the pages of the tables."""
    tiers = "".join(
        f'<tr><td>{esc(tier)}</td><td class="n">{samples}</td><td class="n">{failed}</td>'
        f'<td class="n">{hours:.3f}</td><td class="pages">{_page_links(links.get(f"tier:{tier}", []))}</td></tr>'
        for tier, samples, failed, hours in tier_figures(scenes)
    )
    failed_inputs = pc.sum(pc.not_equal(videos["status"], "ok")).as_py() or 0
    failed_scenes = pc.sum(pc.not_equal(scenes["status"], "ok")).as_py() or 0
    sections = (("videos", f"Videos ({videos.num_rows})"), ("failed-inputs", f"Failed inputs ({failed_inputs})"),
                ("failed-scenes", f"Failed or skipped scenes ({failed_scenes})"))
    return (
        "<h2>Scenes by tier</h2>"
        "<p>Tiers are cut independently, so the same footage can be in scenes of several tiers.</p>"
        f"<table><tr><th>tier</th><th>samples</th><th>failed or skipped</th><th>hours out</th><th>pages</th></tr>{tiers}</table>"
        + "".join(f'<h2>{esc(title)}</h2><p class="pages">{_page_links(links[name])}</p>' for name, title in sections)
    )


def index_html(
    summary: dict[str, Any], videos: pa.Table, shots: pa.Table, scenes: pa.Table,
    links: dict[str, list[str]], banner: str,
) -> str:
    """The index: figures, then links to every page."""
    figures = [*run_figures(summary, scenes), *shot_figures(videos, shots), *failure_figures(videos, scenes)]
    body = (
        f'<p>Captioner: {esc(summary.get("captioner", {}))}</p>'
        f'<div class="figs">{"".join(figures)}</div>{links_html(videos, scenes, links)}'
    )
    return document("Caption pipeline report", body, banner)


def _page_links(rels: list[str]) -> str:
    return " ".join(f'<a href="{esc(rel)}">{n}</a>' for n, rel in enumerate(rels, start=1))


def write_report(store: Store, ledger: Any, summary: dict[str, Any], config: ReportConfig, stand_in: bool) -> None:
    """``report.html`` and the pages under ``report/`` from the manifests and summary already in
    ``store`` and the ledger's sample JSON; pages whose contents did not change are not written."""
    videos, shots, scenes = read_manifests(store)
    banner = STAND_IN_BANNER if stand_in else ""
    pages: list[Page] = []
    links: dict[str, list[str]] = {}
    packed = scenes.filter(pc.is_valid(scenes["shard"]))
    for tier in sorted(set(packed["tier"].to_pylist())):
        rows = packed.filter(pc.equal(packed["tier"], tier)).sort_by([("shard", "ascending"), ("key", "ascending")])
        rows = rows.append_column("href", pa.array(clip_hrefs(store, rows["clip_path"]), pa.string()))
        tier_pages = scene_pages(tier, rows, config, banner)
        links[f"tier:{tier}"] = [p.rel for p in tier_pages]
        pages += tier_pages
    failed_videos = videos.filter(pc.not_equal(videos["status"], "ok")).sort_by("uri")
    failed_scenes = scenes.filter(pc.not_equal(scenes["status"], "ok")).sort_by("key")
    tables = {
        "videos": ("Videos", VIDEO_HEADER, video_rows(videos, shots, scenes)),
        "failed-inputs": ("Failed inputs", ("input", "reason"),
                          list(zip(failed_videos["uri"].to_pylist(), failed_videos["error"].to_pylist()))),
        "failed-scenes": ("Failed or skipped scenes", ("scene", "input", "tier", "reason"),
                          list(zip(*(failed_scenes[c].to_pylist() for c in ("key", "uri", "tier", "error"))))),
    }
    for prefix, (title, header, rows) in tables.items():
        parts = table_pages(prefix, title, header, rows, config.rows_per_page)
        links[prefix] = [p.rel for p in parts]
        pages += parts
    write_pages(store, ledger, pages, config.samples_per_read)
    store.write_text("report.html", index_html(summary, videos, shots, scenes, links, banner))
