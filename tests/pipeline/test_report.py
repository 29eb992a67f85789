"""``report.html`` and its pages, from a synthetic output: manifests and ledger rows made here, no job run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

from curation.manifests import SCENES_SCHEMA, SHOTS_SCHEMA, VIDEOS_SCHEMA
from curation.store import Store
from pipelines.config import ReportConfig
from pipelines.ledger import Ledger
from pipelines.report import write_report
from pipelines.report_pages import clip_hrefs

SCENES = SCENES_SCHEMA.append(pa.field("caption_tries", pa.int64()))
EVIL = "<script>alert(1)</script>"
DROPS = ["too_short (0.50 s < 1.0 s)", "too_short (0.20 s < 1.0 s)", "dark (mean luma 3.0 < 10)", None]


def sample_json(key: str, caption: str = "a cat") -> str:
    shots = [{"start_frame": 0, "end_frame": 25, "caption": caption, "camera": "static"},
             {"start_frame": 25, "end_frame": 49, "caption": "a dog", "camera": "pan"}]
    return json.dumps({"key": key, "fps": 16.0, "num_frames": 49, "shots": shots,
                       "global_caption": f"global {key}", "prompt": "[shot cut] prompt"})


def scene_row(store: Store, key: str, video: int, tier: str, shard: str | None, error: str | None = None) -> dict[str, Any]:
    return {
        "key": key, "video_id": f"v{video}", "uri": f"/in/video_{video}.mp4", "scene_index": 0, "tier": tier,
        "num_shots": 2, "shot_indices": [0, 1], "shot_start_frames": [0, 25], "shot_end_frames": [25, 49],
        "fps": 16.0, "num_frames": 49, "duration_s": 49 / 16, "source_fps": 24.0, "start_s": 0.0, "end_s": 3.0,
        "width": 160, "height": 96, "upscale": 1.0, "clip_path": store.uri(f"clips/{key}.mp4"),
        "status": "failed" if error else "ok", "error": error, "shard": shard, "caption_tries": 3 if error else 1,
    }


def build_output(store: Store, counts: dict[str, int], videos: int = 3, evil_key: str | None = None) -> list[dict[str, Any]]:
    """Manifests, clips and ledger captions of an output with ``counts[tier]`` packed scenes per
    tier (shards of 10), one scene whose caption failed and one failed input."""
    scenes = []
    for tier, count in counts.items():
        for i in range(count):
            key = f"{tier}-{i:05d}"
            scenes.append(scene_row(store, key, i % videos, tier, f"shard-{i // 10:06d}.tar"))
    scenes.append(scene_row(store, "zz-failed", 0, "3s", None, "caption: invalid JSON: expected value"))
    for scene in scenes:
        store.write_bytes(f"clips/{scene['key']}.mp4", b"not really an mp4")
    Ledger(store).write_captions([
        {"key": s["key"], "video_id": s["video_id"], "sample": None if s["error"] else
         sample_json(s["key"], EVIL if s["key"] == evil_key else "a cat"),
         "error": s["error"], "tries": s["caption_tries"], "seconds_frames": 0.1, "seconds_caption": 0.2}
        for s in scenes
    ])
    video_rows = [
        {"video_id": f"v{i}", "uri": f"/in/video_{i}.mp4", "status": "ok", "fps": 24.0, "num_frames": 240,
         "duration_s": 10.0, "fades": 1, "dissolves": i % 2}
        for i in range(videos)
    ] + [{"video_id": "bad", "uri": "/in/bad.mp4", "status": "failed", "error": "probe failed: not a readable media file"}]
    shots = [
        {"video_id": f"v{i}", "shot_index": k, "start_frame": 0, "end_frame": 10, "kept": drop is None, "drop_reason": drop}
        for i in range(videos) for k, drop in enumerate(DROPS)
    ]
    store.write_parquet("manifests/videos.parquet", pa.Table.from_pylist(video_rows, schema=VIDEOS_SCHEMA))
    store.write_parquet("manifests/shots.parquet", pa.Table.from_pylist(shots, schema=SHOTS_SCHEMA))
    store.write_parquet("manifests/scenes.parquet", pa.Table.from_pylist(scenes, schema=SCENES))
    return scenes


def summary_of(scenes: list[dict[str, Any]]) -> dict[str, Any]:
    samples = [s for s in scenes if s["shard"]]
    return {
        "inputs": 4, "inputs_failed": 1, "scenes": len(scenes), "samples": len(samples), "scenes_failed": 1,
        "shards": len({s["shard"] for s in samples}), "hours_in": 30 / 3600, "hours_out": 0.01,
        "stage_seconds": {"probe": 1.5, "caption": 4.0}, "captioner": {"model": "tiny"},
        "this_run": {"stage_seconds": {"probe": 0.5}, "videos_curated": 4, "videos_failed": 1,
                     "scenes_captioned": len(samples), "scenes_failed": 1, "shards_written": 2, "wall_time_s": 9.0},
    }


def count_writes(store: Store) -> list[str]:
    """Record every rel written through ``store`` from now on."""
    written: list[str] = []
    original = store.write_bytes

    def write_bytes(rel: str, data: bytes) -> None:
        written.append(rel)
        original(rel, data)

    store.write_bytes = write_bytes  # type: ignore[method-assign]
    return written


CONFIG = ReportConfig(scenes_per_page=10, rows_per_page=2, thumb_width=96)


def report(store: Store, scenes: list[dict[str, Any]], stand_in: bool = False) -> None:
    write_report(store, Ledger(store), summary_of(scenes), CONFIG, stand_in)


def test_scene_pages_are_paginated_by_tier_in_shard_order(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "out"))
    scenes = build_output(store, {"3s": 25, "5s": 10})
    report(store, scenes)
    pages = sorted(p.name for p in (tmp_path / "out" / "report").glob("3s-*.html"))
    assert pages == ["3s-0001.html", "3s-0002.html", "3s-0003.html"]
    assert [p.name for p in (tmp_path / "out" / "report").glob("5s-*.html")] == ["5s-0001.html"]
    for name, size in (("3s-0001.html", 10), ("3s-0003.html", 5)):
        page = (tmp_path / "out" / "report" / name).read_text()
        keys = re.findall(r'class="scene" id="([^"]+)"', page)
        assert len(keys) == size
    last = (tmp_path / "out" / "report" / "3s-0003.html").read_text()
    assert re.findall(r'class="scene" id="([^"]+)"', last) == [f"3s-{i:05d}" for i in range(20, 25)]
    assert "zz-failed" not in last  # a failed scene is on the failure pages only
    index = (tmp_path / "out" / "report.html").read_text()
    for rel in ("report/3s-0001.html", "report/3s-0003.html", "report/5s-0001.html", "report/videos-0001.html",
                "report/failed-inputs-0001.html", "report/failed-scenes-0001.html"):
        assert f'href="{rel}"' in index and (tmp_path / "out" / rel).exists()
    # 4 videos at 2 rows a page.
    assert sorted(p.name for p in (tmp_path / "out" / "report").glob("videos-*.html")) == ["videos-0001.html", "videos-0002.html"]


def test_clips_are_relative_links_to_existing_files(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "out"))
    report(store, build_output(store, {"3s": 12}))
    page_path = tmp_path / "out" / "report" / "3s-0001.html"
    page = page_path.read_text()
    clips = re.findall(r'<video class="clip" controls preload="metadata" src="([^"]+)">', page)
    assert len(clips) == 10
    for src in clips:
        assert src.startswith("../clips/") and (page_path.parent / src).resolve().is_file()
    # A paused frame in the middle of each shot: frames 0-25 and 25-49 at 16 fps.
    thumbs = re.findall(r'<video preload="metadata" muted width="96" src="([^"]+)">', page)
    assert len(thumbs) == 20 and thumbs[:2] == ["../clips/3s-00000.mp4#t=0.781", "../clips/3s-00000.mp4#t=2.312"]
    assert str(tmp_path) not in page


def test_a_rerun_with_nothing_new_writes_only_the_index(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "out"))
    scenes = build_output(store, {"3s": 25})
    report(store, scenes)
    written = count_writes(store)
    report(store, scenes)
    assert sorted(written) == ["report.html", "report/pages.json"]
    # Five more scenes in a new shard: only the tier's last page changes, and one page is added.
    scenes = build_output(store, {"3s": 35})
    written.clear()
    report(store, scenes)
    assert sorted(w for w in written if w.startswith("report/3s-")) == ["report/3s-0003.html", "report/3s-0004.html"]
    # Fewer scenes (say, a manifest rebuilt from fewer inputs): pages past the end are removed.
    scenes = build_output(store, {"3s": 15})
    report(store, scenes)
    assert sorted(p.name for p in (tmp_path / "out" / "report").glob("3s-*.html")) == ["3s-0001.html", "3s-0002.html"]
    assert "next" not in (tmp_path / "out" / "report" / "3s-0002.html").read_text()


class CountingLedger(Ledger):
    """A ledger that records each ``samples`` read of some keys."""

    reads: list[int]

    def samples(self, keys: list[str]) -> dict[str, str]:
        if keys:
            self.reads.append(len(keys))
        return super().samples(keys)


def test_sample_json_is_read_for_written_pages_only_a_batch_at_a_time(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "out"))
    scenes = build_output(store, {"3s": 25, "5s": 20})
    ledger = CountingLedger(store)
    ledger.reads = []
    config = ReportConfig(scenes_per_page=10, rows_per_page=2, samples_per_read=25)
    write_report(store, ledger, summary_of(scenes), config, False)
    # Pages of 10, 10, 5 (3s) then 10, 10 (5s): a read per 25 scenes at most.
    assert ledger.reads == [25, 20]
    ledger.reads = []
    write_report(store, ledger, summary_of(scenes), config, False)
    assert ledger.reads == []


def test_index_figures_match_the_manifests(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "out"))
    report(store, build_output(store, {"3s": 12, "5s": 3}, videos=3))
    index = (tmp_path / "out" / "report.html").read_text()

    def row(label: str) -> list[str]:
        match = re.search(rf"<tr><td>{re.escape(label)}</td>(.*?)</tr>", index)
        assert match, label
        return re.findall(r"<td[^>]*>([^<]*)</td>", match.group(1))

    # 3 videos x DROPS: 12 shots, 3 kept, too_short 6, dark 3.
    assert row("detected")[0] == "12" and row("kept")[0] == "3" and row("dropped")[0] == "9"
    assert row("too_short")[0] == "6" and row("dark")[0] == "3"
    assert row("fades")[:2] == ["3", "3"] and row("dissolves")[:2] == ["1", "1"]
    assert row("3s")[:3] == ["12", "1", f"{12 * 49 / 16 / 3600:.3f}"] and row("5s")[:2] == ["3", "0"]
    assert row("invalid JSON")[0] == "1"  # caption failures by reason
    assert row("probe failed")[0] == "1"  # inputs failed by reason
    assert row("1")[0] == "15" and row("3")[0] == "1"  # caption tries
    assert row("probe")[:2] == ["0.500", "1.500"]
    assert "noise" not in index


def test_captions_are_escaped_and_the_stand_in_says_so(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "out"))
    scenes = build_output(store, {"3s": 3}, evil_key="3s-00001")
    report(store, scenes, stand_in=True)
    page = (tmp_path / "out" / "report" / "3s-0001.html").read_text()
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    for path in (tmp_path / "out" / "report.html", tmp_path / "out" / "report" / "3s-0001.html"):
        assert "tiny random stand-in model: they are noise" in path.read_text()
    assert "<script" not in (tmp_path / "out" / "report.html").read_text()


def test_no_clip_is_read_on_s3(s3_bucket: str, s3_server: Any) -> None:
    store = Store(f"s3://{s3_bucket}/out")
    scenes = build_output(store, {"3s": 12})
    before = len(s3_server.requests(s3_bucket))
    report(store, scenes)
    requests = s3_server.requests(s3_bucket)[before:]
    assert not [r for r in requests if "/clips/" in r[1]], requests
    assert any(method == "PUT" and path.endswith("/report.html") for method, path in requests)
    page = store.read_bytes("report/3s-0001.html").decode()
    assert '<video class="clip" controls preload="metadata" src="../clips/3s-00000.mp4">' in page


def test_an_output_where_every_input_failed(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "out"))
    video = {"video_id": "bad", "uri": "/in/bad.mp4", "status": "failed", "error": "probe failed: empty file"}
    store.write_parquet("manifests/videos.parquet", pa.Table.from_pylist([video], schema=VIDEOS_SCHEMA))
    store.write_parquet("manifests/shots.parquet", SHOTS_SCHEMA.empty_table())
    store.write_parquet("manifests/scenes.parquet", SCENES.empty_table())
    report(store, [])
    index = (tmp_path / "out" / "report.html").read_text()
    assert "<tr><td>probe failed</td><td class=\"n\">1</td>" in index
    assert "empty file" in (tmp_path / "out" / "report" / "failed-inputs-0001.html").read_text()
    assert not list((tmp_path / "out" / "report").glob("3s-*"))


def test_clip_links_outside_the_output_or_with_odd_names(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "out"))
    paths = pa.chunked_array([[store.uri("clips/a b#.mp4"), "/elsewhere/c.mp4", None, store.uri("clips/k.mp4")]])
    assert clip_hrefs(store, paths) == ["../clips/a%20b%23.mp4", "file:///elsewhere/c.mp4", None, "../clips/k.mp4"]
    remote = Store("s3://bucket/out")
    paths = pa.chunked_array([["s3://bucket/out/clips/k.mp4", "s3://other/k.mp4"]])
    assert clip_hrefs(remote, paths) == ["../clips/k.mp4", "s3://other/k.mp4"]
