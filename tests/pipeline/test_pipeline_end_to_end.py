"""The main job end to end on generated multi-shot videos, bikes.mp4 and every kind of bad input,
captioned by the stand-in tiny VLM; shards read back with plain webdataset and HF datasets."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
from pathlib import Path

import av
import pytest
import webdataset as wds
from pipeline_helpers import (
    bikes_path,
    job_command,
    job_env,
    read_all_shards,
    without_dac_override,
    write_bad_inputs,
    write_config,
    write_synthetic,
)

from curation.files import is_partial
from curation.manifests import read_manifest
from curation.shards import SHOT_CUT, SampleMeta


@pytest.fixture(scope="module")
def job(tmp_path_factory, holocine_cache):
    root = tmp_path_factory.mktemp("e2e")
    inputs = root / "in"
    good = write_synthetic(inputs, 2)
    (inputs / "bikes.mp4").write_bytes(Path(bikes_path()).read_bytes())
    good.append("bikes.mp4")
    bad = write_bad_inputs(inputs, str(inputs / good[0]))
    out = root / "out"
    config = write_config(root / "config.yaml")
    # No --model: the README's offline default, the stand-in VLM from the cache.
    run = subprocess.run(
        without_dac_override(job_command(str(inputs), out, config)),
        env=job_env(holocine_cache), capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-5000:]
    return out, good, bad, run


def test_every_sample_decodes_and_validates(job):
    out, *_ = job
    samples = read_all_shards(out / "shards")
    assert len(samples) >= 6
    for key, (meta, mp4, _) in samples.items():
        with av.open(io.BytesIO(mp4)) as container:
            frames = [f for f in container.decode(video=0)]
        assert len(frames) == meta.num_frames and meta.num_frames % 4 == 1
        assert (frames[0].width, frames[0].height) == (meta.width, meta.height) == (160, 96)
        cuts = meta.shot_cut_frames
        assert meta.prompt.count(SHOT_CUT) == len(meta.shots) - 1 == len(cuts)
        assert all(f % 4 == 1 for f in cuts), (key, cuts)
        assert meta.prompt.startswith("[global caption] ")
        assert f"This scene contains {len(meta.shots)} shots." in meta.prompt
        assert meta.captioner["engine"] == "transformers" and meta.captioner["model"].endswith("tiny-vlm")


def test_shards_read_with_plain_webdataset_and_hf_datasets(job, tmp_path):
    out, *_ = job
    tars = sorted(str(p) for p in (out / "shards").glob("*.tar"))
    assert len(tars) >= 2, "the shard-size target should split the output"
    plain = list(wds.WebDataset(tars, shardshuffle=False))
    assert all(set(s) >= {"__key__", "mp4", "json"} for s in plain)
    for sample in plain:
        meta = SampleMeta.model_validate_json(sample["json"])
        assert meta.key == sample["__key__"]
    import datasets

    # Explicit features, as the README shows: inferring them from the first few samples breaks
    # whenever those samples happen to have no characters (an empty list types as null).
    features = datasets.Features(
        {
            "__key__": datasets.Value("string"),
            "__url__": datasets.Value("string"),
            "json": datasets.Json(),
            # Raw bytes: decoding video would need torchcodec, and the bytes are what we check.
            "mp4": datasets.Video(decode=False),
        }
    )
    hf = datasets.load_dataset(
        "webdataset", data_files={"train": tars}, split="train", cache_dir=str(tmp_path), features=features
    )
    assert len(hf) == len(plain)
    mp4_by_key = {s["__key__"]: s["mp4"] for s in plain}
    for row in hf:
        meta = SampleMeta.model_validate(row["json"])
        assert meta.key == row["__key__"]
        assert row["mp4"]["bytes"] == mp4_by_key[meta.key]


def test_failures_list_every_bad_input_with_its_reason(job):
    out, good, bad, _ = job
    videos = {os.path.basename(r["uri"]): r for r in read_manifest(out / "manifests" / "videos.parquet")}
    assert set(videos) == set(good) | set(bad)
    summary = json.loads((out / "summary.json").read_text())
    failed = {os.path.basename(uri): error for uri, error in summary["failed_inputs"].items()}
    assert set(failed) == set(bad)
    for name, words in bad.items():
        assert videos[name]["status"] == "failed" and words in videos[name]["error"], (name, videos[name]["error"])
        assert words in failed[name]
    assert all(videos[name]["status"] == "ok" for name in good)
    assert summary["inputs"] == len(good) + len(bad) and summary["inputs_failed"] == len(bad)
    assert sum(summary["failures_by_reason"].values()) == len(bad)


def test_manifests_summary_and_shards_agree(job):
    out, good, *_ = job
    samples = read_all_shards(out / "shards")
    scenes = read_manifest(out / "manifests" / "scenes.parquet")
    ok = {s["key"]: s for s in scenes if s["status"] == "ok"}
    assert set(ok) == set(samples)
    for key, (meta, _, shard) in samples.items():
        assert ok[key]["shard"] == shard
        assert ok[key]["shot_cut_frames"] == meta.shot_cut_frames
        assert meta.source.video_id == ok[key]["video_id"]
    names = {os.path.basename(s["uri"]) for s in ok.values()}
    assert names == set(good), "every good input, bikes.mp4 included, yields captioned scenes"
    shots = read_manifest(out / "manifests" / "shots.parquet")
    assert all(s["drop_reason"] for s in shots if not s["kept"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["samples"] == len(samples)
    assert summary["scenes_by_tier"] == {
        tier: sum(s["tier"] == tier for s in ok.values()) for tier in {s["tier"] for s in ok.values()}
    }
    duration = sum(m.num_frames / m.fps for m, _, _ in samples.values()) / 3600
    assert summary["hours_out"] == pytest.approx(duration)
    assert summary["hours_in"] > 0 and summary["this_run"]["wall_time_s"] > 0
    assert not [p for p in out.rglob("*") if is_partial(p)] and not (out / "work" / "staging").exists()


def test_progress_and_summary_table_are_printed(job):
    _, good, bad, run = job
    inputs = len(good) + len(bad)
    progress = [line for line in run.stderr.splitlines() if "progress:" in line]
    assert progress and f"{inputs}/{inputs} videos curated" in progress[-1]
    # What a healthy run must not print: Ray Data's 20-line progress blocks, our filter's
    # deprecation warning, a weight-loading bar per actor.
    for noise in ("Running Dataset", "instead of 'fn'", "Loading weights"):
        assert noise not in run.stderr
    assert run.stdout.splitlines()[0].split() == ["stage", "this", "run", "(s)", "all", "runs", "(s)"]
    assert "inputs" in run.stdout and "shards" in run.stdout
    assert f"this run: {inputs} videos curated ({len(bad)} failed)" in run.stdout


def test_report_shows_every_scene_with_a_playable_clip_and_a_frame_per_shot(job):
    out, *_ = job
    index = (out / "report.html").read_text()
    assert "they are noise" in index  # the stand-in model's banner
    pages = {path: path.read_text() for path in sorted((out / "report").glob("*.html"))}
    assert all(f'href="report/{path.name}"' in index for path in pages)
    scene_pages = "".join(text for path, text in pages.items() if path.name.startswith(("3s-", "5s-")))
    samples = read_all_shards(out / "shards")
    for key, (meta, _, _) in samples.items():
        assert f'id="{key}"' in scene_pages
    clips = re.findall(r'<video class="clip" controls preload="metadata" src="([^"]+)">', scene_pages)
    assert len(clips) == len(samples)
    assert all(src.startswith("../clips/") and (out / "report" / src).resolve().is_file() for src in clips)
    frames = re.findall(r'<video preload="metadata" muted width="\d+" src="../clips/[^"#]+#t=[\d.]+">', scene_pages)
    assert len(frames) == sum(len(m.shots) for m, _, _ in samples.values())
    assert scene_pages.count('class="prompt"') == len(samples)
    failures = "".join(text for path, text in pages.items() if path.name.startswith("failed-inputs-"))
    assert "permission denied" in failures and "no video stream" in failures


def test_a_broken_job_exits_non_zero(tmp_path, holocine_cache):
    """Bad inputs exit 0 (above); a job that cannot caption at all (no such model) does not."""
    write_synthetic(tmp_path / "in", 1)
    config = write_config(tmp_path / "config.yaml")
    run = subprocess.run(
        job_command(str(tmp_path / "in"), tmp_path / "out", config, "--model", str(tmp_path / "no-such-model")),
        env=job_env(holocine_cache), capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 1
    # One line says why, before any video is curated; no Ray traceback.
    errors = [line for line in run.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "no-such-model" in errors[0] and "Traceback" not in run.stderr
    assert not (tmp_path / "out" / "work").exists() and not (tmp_path / "out" / "summary.json").exists()
