"""A real S3 API server for the whole suite, and a fresh bucket per test.

The server is moto's standalone server (``moto_server``) in its own process on 127.0.0.1, so code
under test reaches it over HTTP exactly as it would reach AWS: s3fs in the test process through
the ``s3_bucket`` fixture, and subprocesses (the job, its Ray workers) through ``S3Server.env()``.
Nothing is patched inside the code under test, and nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from s3_buckets import SHADOWING_VARS, bucket_on

STARTUP_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class S3Server:
    """A running moto server: where it listens, and what it has been asked."""

    endpoint_url: str
    process: subprocess.Popen

    def aws_vars(self) -> dict[str, str]:
        """The variables that point botocore (and so s3fs) at this server with moto's dummy keys."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) pointed at this server, for ``subprocess(env=...)``."""
        base = os.environ if base is None else base
        return {**{k: v for k, v in base.items() if k not in SHADOWING_VARS}, **self.aws_vars()}

    def requests(self, bucket: str | None = None) -> list[tuple[str, str]]:
        """``(method, path?query)`` of every S3 request received so far, in order; with ``bucket``,
        only those addressed to it (clients address buckets by path on an IP endpoint: ``/BUCKET/KEY``).
        Read from moto's request recorder, which the server was started with, so that a test can
        check that its data really went over the wire."""
        url = f"{self.endpoint_url}/moto-api/recorder/download-recording"
        with urllib.request.urlopen(url, timeout=30) as response:
            lines = response.read().decode().splitlines()
        received = []
        for entry in map(json.loads, filter(None, lines)):
            parts = urlsplit(entry["url"])
            if bucket is None or parts.path == f"/{bucket}" or parts.path.startswith(f"/{bucket}/"):
                received.append((entry["method"], f"{parts.path}?{parts.query}" if parts.query else parts.path))
        return received


def _free_port() -> int:
    """A port that is free now; the server binds it a moment later, a race nothing else here runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_answering(process: subprocess.Popen, endpoint_url: str, log: Path) -> None:
    """Poll moto's dashboard until it answers; fail early, with the server's output, if it exits."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{endpoint_url}/moto-api/", timeout=2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise RuntimeError(f"moto_server did not answer within {STARTUP_TIMEOUT_S:.0f} s:\n{log.read_text()}")


def _stop(process: subprocess.Popen) -> None:
    """Stop the server's whole process group (it was started as the group's leader)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's S3 API server on a free port of 127.0.0.1, for the whole session.

    Its output (one line per request) goes to a file rather than a pipe, which nobody would drain.
    Requests are recorded to a file the server owns (``S3Server.requests`` reads them back).
    """
    folder = tmp_path_factory.mktemp("moto")
    log = folder / "server.log"
    port = _free_port()
    env = {**os.environ, "MOTO_ENABLE_RECORDING": "1", "MOTO_RECORDER_FILEPATH": str(folder / "requests.jsonl")}
    command = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{port}", process)
    try:
        _wait_until_answering(process, server.endpoint_url, log)
        yield server
    finally:
        _stop(process)


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """The name of a new, empty bucket on ``s3_server``; ``s3://`` in this process reaches the server."""
    with bucket_on(s3_server) as (bucket, _):
        yield bucket
