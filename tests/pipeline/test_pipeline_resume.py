"""Kill -9 the job (a real subprocess, Ray's processes included) at several points, rerun it, and
check that every expected scene is in the shards exactly once and no truncated tar is ever visible.

The inputs are given as a ``file://`` glob, so the fsspec listing and the staging of remote
inputs run here too.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from pipeline_helpers import SMALL_CONFIG, job_command, job_env, kill_tree, read_all_shards, write_config, write_synthetic

from curation.config import CurationConfig
from curation.manifests import read_manifest
from curation.files import is_partial
from curation.run import curate_video

# Where to kill: the first moment the output shows each kind of work under way.
KILL_POINTS = {
    "cutting clips": lambda out: any((out / "clips").glob("*.mp4")),
    "captioning": lambda out: any((out / "work" / "captions").glob("*.json")),
    "writing shards": lambda out: any((out / "shards").glob("*")),
}


def _scene_signature(uri: str, scene_index: int, tier: str, starts: list[int], ends: list[int]) -> tuple:
    return (os.path.basename(uri), scene_index, tier, tuple(starts), tuple(ends))


def _run_until(command: list[str], env: dict[str, str], out: Path, event, log: Path) -> bool:
    """Start the job, SIGKILL it as soon as ``event`` is seen; False when it finished first."""
    with open(log, "ab") as stderr:
        job = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 300
            while job.poll() is None and time.monotonic() < deadline:
                if event(out):
                    kill_tree(job)
                    return True
                time.sleep(0.02)
            return False
        finally:
            if job.poll() is None:
                kill_tree(job)


def _assert_published_tars_are_whole(out: Path) -> None:
    # read_shard validates every sample and raises on a sample cut short.
    read_all_shards(out / "shards")


@pytest.fixture(scope="module")
def resumed(tmp_path_factory, holocine_cache):
    root = tmp_path_factory.mktemp("resume")
    names = write_synthetic(root / "in", 2)
    source = f"file://{root / 'in'}/*.mp4"
    out = root / "out"
    config = write_config(root / "config.yaml")
    command, env = job_command(source, out, config), job_env(holocine_cache)
    killed = {}
    for name, event in KILL_POINTS.items():
        killed[name] = _run_until(command, env, out, event, root / "killed.log")
        _assert_published_tars_are_whole(out)
    final = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-5000:]
    summary = json.loads((out / "summary.json").read_text())
    shard_times = {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.tar")}
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-5000:]
    return root, out, names, killed, summary, shard_times


def test_kills_landed_while_the_job_was_running(resumed):
    *_, killed, _, _ = resumed
    assert sum(killed.values()) >= 2, killed


def test_every_expected_scene_is_in_the_shards_exactly_once(resumed, tmp_path):
    root, out, names, *_ = resumed
    curation = CurationConfig.from_dict(SMALL_CONFIG["curation"])
    expected = set()
    for name in names:
        result = curate_video(str(root / "in" / name), tmp_path, curation)
        expected |= {
            _scene_signature(name, s.scene_index, s.tier, [x.start_frame for x in s.shots], [x.end_frame for x in s.shots])
            for s in result.scenes
        }
    assert expected
    samples = read_all_shards(out / "shards")  # raises on a key in two shards
    scenes = {s["key"]: s for s in read_manifest(out / "manifests" / "scenes.parquet")}
    got = {
        _scene_signature(scenes[key]["uri"], scenes[key]["scene_index"], meta.tier,
                         [s.start_frame for s in meta.shots], [s.end_frame for s in meta.shots])
        for key, (meta, _, _) in samples.items()
    }
    assert got == expected
    assert all(scenes[key]["uri"].startswith("file://") for key in samples)
    assert not [p for p in out.rglob("*") if is_partial(p)], "no temporary file is left behind"
    assert not (out / "work" / "staging").exists(), "staged copies of remote inputs are removed"


def test_a_rerun_of_a_finished_job_redoes_nothing(resumed):
    _, out, _, _, summary, shard_times = resumed
    after = json.loads((out / "summary.json").read_text())
    assert after["this_run"]["videos_curated"] == 0
    assert after["this_run"]["scenes_captioned"] == 0 and after["this_run"]["shards_written"] == 0
    # The summary keeps every run's stage seconds apart from this run's, which did no work.
    assert after["this_run"]["stage_seconds"] == {} and after["stage_seconds"] == summary["stage_seconds"]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").glob("*.tar")} == shard_times
    assert after["samples"] == summary["samples"] and after["shards"] == summary["shards"]
