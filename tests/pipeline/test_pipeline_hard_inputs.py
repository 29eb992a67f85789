"""The main job on awkward inputs (tests/curation/hard_inputs.py) in a folder whose name has glob
characters: the job exits 0, valid footage reaches the shards, and each problem is a row with
its reason."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_helpers import REPO, job_command, job_env, read_all_shards, write_config

from curation.manifests import read_manifest

sys.path.insert(0, str(REPO / "tests" / "curation"))
from hard_inputs import (  # noqa: E402  (a test-helper module beside the curation tests)
    make_corrupt_packet,
    make_extreme_aspect,
    make_mjpeg_avi,
    make_non_utf8_name,
)


@pytest.fixture(scope="module")
def job(tmp_path_factory, holocine_cache):
    root = tmp_path_factory.mktemp("hard")
    # An existing path is taken literally, glob characters and all.
    inputs = root / "films [2020]"
    inputs.mkdir()
    for make in (make_corrupt_packet, make_extreme_aspect, make_mjpeg_avi, make_non_utf8_name):
        make(inputs)
    out = root / "out"
    run = subprocess.run(
        job_command(str(inputs), out, write_config(root / "config.yaml")),
        env=job_env(holocine_cache), capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-5000:]
    return out


def test_every_input_has_a_row_and_valid_footage_reaches_the_shards(job):
    videos = {Path(row["uri"]).name: row for row in read_manifest(job / "manifests" / "videos.parquet")}
    assert set(videos) == {"corrupt_packet.mp4", "extreme_aspect.mp4", "mjpeg.avi", "caf\\xe9.mp4"}
    assert all(row["status"] == "ok" for row in videos.values()), videos
    assert videos["corrupt_packet.mp4"]["decode_errors"] == 1
    sources = {Path(meta.source.uri).name for meta, _, _ in read_all_shards(job / "shards").values()}
    assert sources == {"corrupt_packet.mp4", "mjpeg.avi", "caf\\xe9.mp4"}


def test_problems_are_rows_with_reasons(job):
    scenes = read_manifest(job / "manifests" / "scenes.parquet")
    extreme = [s for s in scenes if s["uri"].endswith("extreme_aspect.mp4")]
    assert extreme and all(s["status"] == "skipped" and "too far from the clip's shape" in s["error"] for s in extreme)
    shots = read_manifest(job / "manifests" / "shots.parquet")
    assert any(s["drop_reason"] and s["drop_reason"].startswith("damaged") for s in shots)
    summary = json.loads((job / "summary.json").read_text())
    assert summary["inputs_failed"] == 0 and summary["scene_failures_by_reason"]
