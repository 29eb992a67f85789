"""The pages under ``OUTPUT/report/``: scenes of a tier, failures and the per-video table, a page
of N each, written only when their contents changed.

Nothing here reads a clip. A scene links its clip relative to the page (``../clips/KEY.mp4``) and
shows each shot as a paused ``<video>`` at the shot's middle (a Media Fragment, ``#t=SECONDS``),
so the browser fetches what it shows and the job fetches nothing: the pages work wherever the
output is readable by a browser (a local folder, a synced copy, a static-site bucket).

``report/pages.json`` keeps a fingerprint per page, of everything the page shows but the sample
JSON, which never changes once a scene is packed (``pipelines.packing``). Tier pages list scenes
by (shard, key) and shards are append-only, so new work changes a tier's last page and adds new
ones; a rerun with nothing new writes no scene page.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc

from curation.store import Store
from pipelines.config import ReportConfig

log = logging.getLogger(__name__)

FOLDER = "report"
MANIFEST = f"{FOLDER}/pages.json"
# Bump when the HTML of a page changes shape, so that every page is written again once.
LAYOUT_VERSION = 1

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.4em 0; }
td, th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.figs { display: flex; flex-wrap: wrap; gap: 1.2em 2em; align-items: flex-start; }
.figs h3 { font-size: 0.95em; margin: 0 0 0.2em; }
.bar { display: inline-block; height: 0.7em; background: #6a8caf; vertical-align: middle; }
.banner { background: #fff3cd; border: 1px solid #e0b300; padding: 0.6em 1em; border-radius: 6px; font-weight: bold; }
.nav { margin: 0.6em 0; } .nav a { margin-right: 1em; } .pages a { margin-right: 0.4em; }
.scene { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 0.8em; margin: 1em 0; }
.key { font-family: monospace; color: #555; overflow-wrap: anywhere; }
video.clip { max-width: 100%; max-height: 360px; background: #000; margin: 0.4em 0; }
.strip { display: flex; gap: 0.6em; overflow-x: auto; margin: 0.6em 0; }
.shot { flex: 0 0 auto; font-size: 0.8em; }
.shot .cap { min-height: 3.6em; overflow-wrap: anywhere; }
.shot video { display: block; border-radius: 3px; background: #000; }
.camera { color: #777; font-style: italic; }
.global { margin: 0.4em 0; overflow-wrap: anywhere; }
.prompt { font-family: monospace; font-size: 0.8em; background: #f1f1f1; padding: 0.5em; white-space: pre-wrap; overflow-wrap: anywhere; }
.failed { color: #a00; }
"""


def esc(value: Any) -> str:
    """Text (and attribute values, quotes included) made inert in HTML."""
    return html.escape("" if value is None else str(value))


def document(title: str, body: str, banner: str = "") -> str:
    """A whole self-contained page: the style is inline, there is no script."""
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title>'
        f"<style>{STYLE}</style></head><body>{banner}<h1>{esc(title)}</h1>{body}</body></html>"
    )


def table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    """An HTML table; ints and floats are right-aligned, floats with three decimals."""
    def cell(value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"<td>{esc(value)}</td>"
        return f'<td class="n">{value:.3f}</td>' if isinstance(value, float) else f'<td class="n">{value}</td>'

    head = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>" if header else ""
    return "<table>" + head + "".join("<tr>" + "".join(map(cell, row)) + "</tr>" for row in rows) + "</table>"


def slug(name: str) -> str:
    """A file-name-safe form of a tier name (tiers come from the config: ``5s``, ``15s``)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"


def page_rel(prefix: str, number: int) -> str:
    """``report/PREFIX-NNNN.html`` (numbered from 1)."""
    return f"{FOLDER}/{slug(prefix)}-{number:04d}.html"


def clip_href(store: Store, clip_uri: str) -> str:
    """The clip as a link from a page under ``report/``: relative when the clip is under the
    output root (always, for clips the job wrote), else the clip's own URL."""
    rel = store.rel(clip_uri)
    if rel != clip_uri and store.uri(rel) == clip_uri:
        return "../" + quote(rel)
    return quote(clip_uri if "://" in clip_uri else "file://" + clip_uri, safe="/:")


def clip_hrefs(store: Store, clip_paths: pa.ChunkedArray) -> list[str | None]:
    """``clip_href`` of a column of clip paths, with Arrow compute for the usual case (a clip
    under the output root, a name that needs no quoting): half a million scenes take a moment."""
    base = store.uri("_")[:-1]  # the root's own name, with a trailing "/"
    rel = pc.utf8_slice_codeunits(clip_paths, len(base.encode()))
    fast = pc.and_(pc.starts_with(clip_paths, base), pc.match_substring_regex(rel, r"^[A-Za-z0-9_.~-][A-Za-z0-9_.~/-]*$"))
    hrefs = pc.if_else(fast, pc.binary_join_element_wise("../", rel, ""), pa.scalar(None, pa.string())).to_pylist()
    paths = clip_paths.to_pylist()
    return [href if href is not None or path is None else clip_href(store, path) for href, path in zip(hrefs, paths)]


@dataclass
class Page:
    """One page to keep up to date: ``render`` is called only when ``spec`` (JSON-able, everything
    the page shows but immutable sample JSON) differs from the one recorded last time. ``keys``
    are the scenes whose sample JSON ``render`` is given (``key -> JSON``)."""

    rel: str
    spec: Any
    render: Callable[[dict[str, str]], str]
    keys: Sequence[str] = ()

    def fingerprint(self) -> str:
        data = json.dumps([LAYOUT_VERSION, self.spec], sort_keys=True, default=str).encode()
        return hashlib.blake2b(data, digest_size=16).hexdigest()


def _recorded(store: Store) -> dict[str, str]:
    """The fingerprints of the pages written last time (none when the record is missing or broken)."""
    try:
        return json.loads(store.read_bytes(MANIFEST)).get("pages", {})
    except FileNotFoundError:
        return {}
    except (ValueError, OSError, AttributeError) as exc:
        log.warning("report: %s unreadable (%s): writing every page", MANIFEST, exc)
        return {}


def _batches(pages: list[Page], samples_per_read: int) -> list[list[Page]]:
    """Consecutive pages with at most about ``samples_per_read`` scenes between them."""
    batches: list[list[Page]] = []
    size = samples_per_read
    for page in pages:
        if not batches or (size + len(page.keys) > samples_per_read and page.keys):
            batches.append([])
            size = 0
        batches[-1].append(page)
        size += len(page.keys)
    return batches


def write_pages(store: Store, ledger: Any, pages: list[Page], samples_per_read: int) -> int:
    """Write the pages whose fingerprint changed (or whose file is gone), delete pages no longer
    listed, then record the fingerprints. A kill before the record only means rewriting again.

    ``Ledger.samples`` reads the whole captions table whichever keys it is given, so the sample
    JSON of the pages to write is read ``samples_per_read`` scenes at a time, not page by page:
    a first report of 500k scenes costs 500k / ``samples_per_read`` reads, a rerun none.
    Returns how many pages were written."""
    recorded = _recorded(store)
    present = set(store.list(FOLDER))
    fingerprints = {page.rel: page.fingerprint() for page in pages}
    changed = [p for p in pages if recorded.get(p.rel) != fingerprints[p.rel] or p.rel.rsplit("/", 1)[-1] not in present]
    for batch in _batches(changed, samples_per_read):
        samples = ledger.samples([key for page in batch for key in page.keys])
        for page in batch:
            store.write_text(page.rel, page.render(samples))
    stale = sorted(set(recorded) - set(fingerprints))
    store.delete([rel for rel in stale if rel.rsplit("/", 1)[-1] in present])
    store.write_text(MANIFEST, json.dumps({"version": LAYOUT_VERSION, "pages": fingerprints}, indent=0))
    log.info("report: %d pages, %d written, %d removed", len(pages), len(changed), len(stale))
    return len(changed)


def nav(prefix: str, number: int, count: int) -> str:
    """Links to the index and to the neighbouring pages. No page total, so adding a page
    changes only the page before it."""
    links = ['<a href="../report.html">index</a>']
    if number > 1:
        links.append(f'<a href="{esc(page_rel(prefix, number - 1).split("/")[-1])}">← previous</a>')
    if number < count:
        links.append(f'<a href="{esc(page_rel(prefix, number + 1).split("/")[-1])}">next →</a>')
    return f'<div class="nav">{"".join(links)}</div>'


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)] or [items[:0]]


def table_pages(prefix: str, title: str, header: Sequence[str], rows: list[tuple[Any, ...]], size: int) -> list[Page]:
    """A table cut into pages of ``size`` rows (one empty page when there are none)."""
    parts = chunks(rows, size)
    pages = []
    for number, part in enumerate(parts, start=1):
        def render(_: dict[str, str], part: Sequence[tuple[Any, ...]] = part, number: int = number) -> str:
            bar = nav(prefix, number, len(parts))
            first = (number - 1) * size + 1
            body = f"{bar}<p>rows {first}–{first + len(part) - 1}</p>{table(part, header)}{bar}"
            return document(f"{title}, page {number}", body)

        pages.append(Page(page_rel(prefix, number), [title, list(header), number < len(parts), part], render))
    return pages


def scene_pages(tier: str, scenes: pa.Table, config: ReportConfig, banner: str) -> list[Page]:
    """Pages of ``scenes`` (manifest rows of one tier, in (shard, key) order, with the clip's link
    as ``href``: ``clip_hrefs``). A page's rows become Python objects only when it is rendered,
    and ``write_pages`` reads the sample JSON of the pages it writes only."""
    size = config.scenes_per_page
    count = max(1, -(-scenes.num_rows // size))
    ids = list(zip(*(scenes[name].to_pylist() for name in ("key", "shard", "href"))))
    pages = []
    for number in range(1, count + 1):
        start = (number - 1) * size

        def render(samples: dict[str, str], start: int = start, number: int = number) -> str:
            bar = nav(tier, number, count)
            body = "".join(scene_html(s, samples.get(s["key"]), config) for s in scenes.slice(start, size).to_pylist())
            return document(f"Scenes {tier}, page {number}", f"{bar}{body}{bar}", banner)

        # Links rather than clip paths: a moved or synced output needs no new pages.
        part = ids[start:start + size]
        spec = [tier, config.thumb_width, number < count, bool(banner), [list(row) for row in part]]
        pages.append(Page(page_rel(tier, number), spec, render, [key for key, _, _ in part]))
    return pages


def scene_html(scene: dict[str, Any], sample_json: str | None, config: ReportConfig) -> str:
    """One scene: its clip, a paused frame and the caption of each shot, the global caption and
    the prompt. ``scene`` is its manifest row, ``sample_json`` the shard sample's JSON."""
    src = scene["href"] or ""
    head = (
        f'<div class="key">{esc(scene["key"])} · {esc(scene["tier"])} · {scene["num_shots"]} shots · '
        f'{scene["num_frames"]} frames @ {scene["fps"]:g} fps · {esc(scene["uri"])} '
        f'{scene["start_s"]:.1f}–{scene["end_s"]:.1f} s · {esc(scene["shard"])}</div>'
    )
    clip = f'<video class="clip" controls preload="metadata" src="{esc(src)}"></video>' if src else ""
    if sample_json is None:
        return f'<div class="scene" id="{esc(scene["key"])}">{head}{clip}<p class="failed">no sample JSON in the ledger</p></div>'
    sample = json.loads(sample_json)
    model = str((sample.get("captioner") or {}).get("model", "")).rstrip("/").rsplit("/", 1)[-1]
    if model:
        head = head.replace("</div>", f" · captioned by {esc(model)}</div>", 1)
    fps = float(sample.get("fps") or scene["fps"])
    width = config.thumb_width
    shots = []
    for n, shot in enumerate(sample.get("shots", []), start=1):
        start, end = shot["start_frame"], shot["end_frame"]
        at = (start + (end - start) / 2) / fps
        thumb = f'<video preload="metadata" muted width="{width}" src="{esc(src)}#t={at:.3f}"></video>' if src else ""
        shots.append(
            f'<div class="shot" style="width:{width}px">{thumb}<div class="cap">{n}. {esc(shot.get("caption", ""))} '
            f'<span class="camera">{esc(shot.get("camera", ""))}</span></div>'
            f'<div class="key">frames {start}–{end - 1}</div></div>'
        )
    return (
        f'<div class="scene" id="{esc(scene["key"])}">{head}{clip}<div class="strip">{"".join(shots)}</div>'
        f'<div class="global"><b>Global:</b> {esc(sample.get("global_caption", ""))}</div>'
        f'<div class="prompt">{esc(sample.get("prompt", ""))}</div></div>'
    )
