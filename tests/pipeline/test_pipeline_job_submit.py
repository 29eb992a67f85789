"""The cluster path: a local Ray head (`ray start --head`), then `ray job submit --working-dir .`
runs pipelines/caption.py on it exactly as a data engineer would; the head is stopped afterwards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import httpx
import pytest
from pipeline_helpers import REPO, kill_tree, read_all_shards, write_config, write_synthetic

DASHBOARD = "http://127.0.0.1:8265"


def _wait_for_dashboard(head: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert head.poll() is None, "ray start exited"
        try:
            # 401 counts as up: Ray's token authentication guards the API, and the CLI sends the token.
            if httpx.get(f"{DASHBOARD}/api/version", timeout=2).status_code in (200, 401):
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError("the Ray dashboard did not come up")


@pytest.fixture(scope="module")
def head(tmp_path_factory, holocine_cache):
    """`ray start --head` in the foreground (--block), so the test owns it and every process it starts."""
    ray = shutil.which("ray", path=os.path.dirname(sys.executable))
    assert ray, "the ray CLI is installed with ray[default]"
    env = {
        **os.environ,
        "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
        "HOLOCINE_CACHE": str(holocine_cache),
        "OMP_NUM_THREADS": "1",
        # Ray's token authentication, explicitly on for the head and the CLI (which then sends the
        # token the head generated under ~/.ray).
        "RAY_AUTH_MODE": "token",
    }
    log = open(tmp_path_factory.mktemp("ray-head") / "head.log", "wb")
    process = subprocess.Popen(
        [ray, "start", "--head", "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", "--num-cpus", "2", "--block"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        _wait_for_dashboard(process)
        yield ray, env
    finally:
        kill_tree(process)
        log.close()


def test_ray_job_submit_runs_the_pipeline_on_a_local_head(head, tmp_path):
    ray, env = head
    write_synthetic(tmp_path / "in", 1)
    config = write_config(tmp_path / "config.yaml")
    out = tmp_path / "out"
    command = [ray, "job", "submit", "--address", DASHBOARD, "--working-dir", ".", "--",
               "python", "pipelines/caption.py", "--input", str(tmp_path / "in"), "--output", str(out), "--config", str(config)]
    for _ in range(30):
        submit = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        # The dashboard answers before the head's job agent is up; the CLI says so and asks to retry.
        if "No available agent to submit job" not in submit.stderr:
            break
        time.sleep(2)
    assert submit.returncode == 0, submit.stdout[-5000:] + submit.stderr[-3000:]
    assert "succeeded" in submit.stdout
    summary = json.loads((out / "summary.json").read_text())
    samples = read_all_shards(out / "shards")
    assert summary["inputs"] == 1 and summary["inputs_failed"] == 0
    assert len(samples) == summary["samples"] > 0
    # It joined the head rather than starting Ray of its own: the job ran in the cluster's session.
    assert "Connecting to existing Ray cluster" in submit.stdout or "Connected to Ray cluster" in submit.stdout
