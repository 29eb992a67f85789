"""The cluster path on a two-node Ray cluster on this machine: a head (`ray start --head`) and a
worker node (`ray start --address`, its own --temp-dir), both pointed at the S3 API server of
``tests/conftest.py``; `ray job submit --working-dir .` runs pipelines/caption.py with its input and
output in the bucket, exactly as a data engineer would. Ray's state API then says which nodes ran
the job's tasks and actors: both must have. Both nodes are stopped afterwards."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import pytest
from s3_buckets import bucket_on
from pipeline_helpers import REPO, download, kill_tree, read_all_shards, write_config, write_synthetic

DASHBOARD = "http://127.0.0.1:8265"
GCS = "127.0.0.1:6379"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_dashboard(head: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert head.poll() is None, "ray start --head exited"
        try:
            # 401 counts as up: Ray's token authentication guards the API, and the CLI sends the token.
            if httpx.get(f"{DASHBOARD}/api/version", timeout=2).status_code in (200, 401):
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise TimeoutError("the Ray dashboard did not come up")


def _states(ray: str, env: dict[str, str], *queries: list[str]) -> list[list[dict]]:
    """``ray list QUERY`` through the state API for each query, as JSON (the CLI sends the head's
    auth token). The CLIs run at once: each spends seconds importing Ray before it asks."""
    lists = [subprocess.Popen([ray, "list", *query, "--address", DASHBOARD, "--format", "json", "--limit", "10000"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for query in queries]
    answers = []
    for process in lists:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stdout[-2000:] + stderr[-3000:]
        answers.append(json.loads(stdout))
    return answers


def _state(ray: str, env: dict[str, str], *args: str) -> list[dict]:
    return _states(ray, env, list(args))[0]


def _wait_for_nodes(ray: str, env: dict[str, str], count: int, nodes: list[subprocess.Popen], timeout: float = 180) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert all(node.poll() is None for node in nodes), "a `ray start` exited"
        alive = [node for node in _state(ray, env, "nodes") if node["state"] == "ALIVE"]
        if len(alive) >= count:
            return alive
        time.sleep(2)
    raise TimeoutError(f"the cluster did not reach {count} nodes")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, holocine_cache, s3_server):
    """A head with 1 CPU and a worker node with 2, each `ray start ... --block` in the foreground so
    the test owns them and every process they start; both reach the S3 server through their
    environment, which every Ray process they start inherits."""
    ray = shutil.which("ray", path=os.path.dirname(sys.executable))
    assert ray, "the ray CLI is installed with ray[default]"
    env = s3_server.env({
        **os.environ,
        "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
        "HOLOCINE_CACHE": str(holocine_cache),
        "OMP_NUM_THREADS": "1",
        # Ray's token authentication, explicitly on for the head, the worker node and the CLI (which
        # all read the token the head generated under ~/.ray).
        "RAY_AUTH_MODE": "token",
    })
    logs = tmp_path_factory.mktemp("ray-nodes")
    # The worker node's own temp dir: a short path, since Ray puts Unix sockets in it (107 bytes at most).
    worker_temp = tempfile.mkdtemp(prefix="rayw-")
    head_log, worker_log = open(logs / "head.log", "wb"), open(logs / "worker.log", "wb")
    common = ["--node-ip-address=127.0.0.1", "--object-store-memory", str(300 << 20), "--block"]
    head = subprocess.Popen(
        [ray, "start", "--head", "--port", GCS.split(":")[1], "--dashboard-host=127.0.0.1", "--num-cpus", "1", *common],
        env=env, stdout=head_log, stderr=subprocess.STDOUT,
    )
    nodes = [head]
    try:
        _wait_for_dashboard(head)
        # A second node on the same host: its dashboard agent must not take the head's (fixed) port.
        worker = subprocess.Popen(
            [ray, "start", "--address", GCS, "--num-cpus", "2", "--temp-dir", worker_temp,
             "--dashboard-agent-listen-port", str(_free_port()), *common],
            env=env, stdout=worker_log, stderr=subprocess.STDOUT,
        )
        nodes.append(worker)
        alive = _wait_for_nodes(ray, env, 2, nodes)
        yield ray, env, alive
    finally:
        for node in reversed(nodes):
            kill_tree(node)
        head_log.close()
        worker_log.close()
        shutil.rmtree(worker_temp, ignore_errors=True)


@pytest.fixture(scope="module")
def submitted(cluster, s3_server, tmp_path_factory):
    ray, env, alive = cluster
    root = tmp_path_factory.mktemp("submit")
    names = write_synthetic(root / "in", 3)
    config = write_config(root / "config.yaml")
    with bucket_on(s3_server, {f"in/{name}": root / "in" / name for name in names}) as (bucket, fs):
        submission_id = f"holocine-{os.getpid()}-{time.monotonic_ns()}"
        command = [ray, "job", "submit", "--address", DASHBOARD, "--submission-id", submission_id, "--working-dir", ".",
                   "--", "python", "pipelines/caption.py", "--input", f"s3://{bucket}/in/", "--output", f"s3://{bucket}/out",
                   "--config", str(config)]
        for _ in range(30):
            submit = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
            # The dashboard answers before the head's job agent is up; the CLI says so and asks to retry.
            if "No available agent to submit job" not in submit.stderr:
                break
            time.sleep(2)
        out = download(fs, f"{bucket}/out", root / "out")
        jobs = [job for job in _state(ray, env, "jobs", "--detail") if job.get("submission_id") == submission_id]
        assert len(jobs) == 1, jobs
        job_id = jobs[0]["job_id"]
        filters = ["--filter", f"job_id={job_id}", "--detail"]
        tasks, actors = _states(ray, env, ["tasks", *filters], ["actors", *filters])
        yield {
            "submit": submit, "names": names, "out": out, "alive": alive, "job_id": job_id,
            "tasks": tasks, "actors": actors,
        }


def test_ray_job_submit_runs_the_pipeline_on_the_cluster_with_s3_in_and_out(submitted):
    submit, out = submitted["submit"], submitted["out"]
    assert submit.returncode == 0, submit.stdout[-5000:] + submit.stderr[-3000:]
    assert "succeeded" in submit.stdout
    summary = json.loads((out / "summary.json").read_text())
    samples = read_all_shards(out / "shards")
    assert summary["inputs"] == len(submitted["names"]) == 3 and summary["inputs_failed"] == 0
    assert len(samples) == summary["samples"] > 0
    assert {os.path.basename(meta.source.uri) for meta, _, _ in samples.values()} == set(submitted["names"])
    assert all(meta.source.uri.startswith("s3://") for meta, _, _ in samples.values())
    # It joined the cluster rather than starting Ray of its own: the job ran in the cluster's session.
    assert "Connecting to existing Ray cluster" in submit.stdout or "Connected to Ray cluster" in submit.stdout


def test_the_jobs_work_ran_on_both_nodes(submitted):
    assert submitted["job_id"] and len(submitted["alive"]) == 2
    ran = submitted["tasks"] + submitted["actors"]
    assert ran, "the state API lists the job's tasks and actors"
    nodes = {entry["node_id"] for entry in ran if entry.get("node_id")}
    assert nodes <= {node["node_id"] for node in submitted["alive"]}
    assert len(nodes) == 2, f"all of the job's work ran on {nodes}"
    # Not only bookkeeping: the job's own work (curation, captioning) ran on both nodes.
    work = {entry["node_id"] for entry in submitted["tasks"] if entry.get("node_id") and "MapBatches" in entry["name"]}
    assert len(work) == 2, f"the job's map tasks ran on {work}"
