"""``OUTPUT/report.html``: the page a person opens instead of reading Parquet.

Per scene a strip with one thumbnail per shot under the shot's caption, then the global caption
and the HoloCine prompt; failures and the run's figures on top. Self-contained: thumbnails are
embedded as base64 JPEG, so the page can be mailed or copied anywhere.
"""

from __future__ import annotations

import html
import json
import logging
from typing import Any

from PIL import Image

from captioning.frames import data_url, decode_frames
from curation.store import Store, local_copy
from pipelines.config import ReportConfig

log = logging.getLogger(__name__)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 2em; }
table { border-collapse: collapse; font-size: 0.9em; } td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
.scene { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 0.8em; margin: 1em 0; }
.key { font-family: monospace; color: #555; }
.strip { display: flex; gap: 0.6em; overflow-x: auto; margin: 0.6em 0; }
.shot { flex: 0 0 auto; width: WIDTHpx; font-size: 0.8em; }
.shot .cap { min-height: 3.6em; overflow-wrap: anywhere; } .shot img { width: WIDTHpx; display: block; border-radius: 3px; }
.camera { color: #777; font-style: italic; }
.global { margin: 0.4em 0; overflow-wrap: anywhere; } .prompt { font-family: monospace; font-size: 0.8em; background: #f1f1f1; padding: 0.5em; white-space: pre-wrap; }
.failed { color: #a00; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def shot_thumbnails(clip_path: str, spans: list[tuple[int, int]], width: int) -> list[str]:
    """The middle frame of each shot as a JPEG data URL, ``width`` pixels wide."""
    middles = [(start + end - 1) // 2 for start, end in spans]
    with local_copy(clip_path) as local:
        frames = decode_frames(local, middles)
    urls = []
    for index in middles:
        image = frames[index]
        height = max(1, round(image.height * width / image.width))
        urls.append(data_url(image.resize((width, height), Image.Resampling.BICUBIC), quality=80))
    return urls


def _scene_html(sample: dict[str, Any], clip_path: str, config: ReportConfig) -> str:
    spans = [(s["start_frame"], s["end_frame"]) for s in sample["shots"]]
    try:
        thumbs = shot_thumbnails(clip_path, spans, config.thumb_width)
    except (OSError, ValueError) as exc:  # a clip removed since it was packed: show the text anyway
        log.warning("report: no thumbnails for %s: %s", sample["key"], exc)
        thumbs = [""] * len(spans)
    shots = "".join(
        f'<div class="shot"><div class="cap">{n}. {_esc(shot["caption"])} '
        f'<span class="camera">{_esc(shot.get("camera", ""))}</span></div>'
        + (f'<img src="{url}" alt="shot {n}">' if url else "")
        + f'<div class="key">frames {shot["start_frame"]}–{shot["end_frame"] - 1}</div></div>'
        for n, (shot, url) in enumerate(zip(sample["shots"], thumbs), start=1)
    )
    source = sample["source"]
    return (
        f'<div class="scene" id="{_esc(sample["key"])}"><div class="key">{_esc(sample["key"])} · '
        f'{_esc(sample.get("tier", ""))} · {len(spans)} shots · {sample["num_frames"]} frames @ {sample["fps"]:g} fps · '
        f'{_esc(source["uri"])} {source["start_s"]:.1f}–{source["end_s"]:.1f} s</div>'
        f'<div class="strip">{shots}</div>'
        f'<div class="global"><b>Global:</b> {_esc(sample["global_caption"])}</div>'
        f'<div class="prompt">{_esc(sample["prompt"])}</div></div>'
    )


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...] | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def render_report(
    store: Store,
    samples: list[tuple[dict[str, Any], str]],
    failures: list[tuple[str, str]],
    summary: dict[str, Any],
    config: ReportConfig,
) -> None:
    """Write the page: ``samples`` are (sample JSON, clip path) in key order, ``failures`` (what, why)."""
    shown = samples[: config.max_scenes]
    figures = [
        ("inputs", summary["inputs"]),
        ("inputs failed", summary["inputs_failed"]),
        ("scenes in shards", summary["samples"]),
        ("scene captions failed", summary["scenes_failed"]),
        ("hours in / out", f'{summary["hours_in"]:.3f} / {summary["hours_out"]:.3f}'),
        ("shards", summary["shards"]),
    ]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>holocine caption report</title>"
        f"<style>{_STYLE.replace('WIDTH', str(config.thumb_width))}</style></head><body>",
        "<h1>Caption pipeline report</h1>",
        _table(figures),
        f'<p>Captioner: {_esc(summary.get("captioner", {}))}</p>',
    ]
    if failures:
        parts += [f'<h2 class="failed">Failures ({len(failures)})</h2>', _table(failures, ("input or scene", "reason"))]
    more = f" (first {len(shown)} of {len(samples)})" if len(shown) < len(samples) else ""
    parts.append(f"<h2>Scenes{more}</h2>")
    parts += [_scene_html(sample, clip, config) for sample, clip in shown]
    parts.append("</body></html>")
    store.write_text("report.html", "".join(parts))


def write_report(store: Store, ledger: Any, summary: dict[str, Any], config: ReportConfig, stand_in: bool) -> None:
    """``report.html`` from the manifests and summary already in ``store`` and the ledger's samples."""
    import pyarrow.parquet as pq

    scenes = pq.read_table(store.path("manifests/scenes.parquet"), filesystem=store.fs).to_pylist()
    packed = sorted((s for s in scenes if s["shard"]), key=lambda s: s["key"])[: config.max_scenes]
    samples = ledger.samples([s["key"] for s in packed])
    shown = [(json.loads(samples[s["key"]]), s["clip_path"]) for s in packed]
    failures = sorted(summary["failed_inputs"].items()) + [(s["key"], s["error"]) for s in scenes if s["status"] != "ok"]
    render_report(store, shown, failures, summary, config)
