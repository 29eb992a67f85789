"""Buckets on the test S3 server (``conftest.s3_server``) that ``s3://`` in this process reaches.

A uniquely named module, importable from every test folder (``conftest`` modules shadow each other).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import s3fs

# Variables that would win over the ones we set (a service-specific endpoint) or lead clients to
# other credentials (a profile, a session token): dropped wherever the server's variables are set.
SHADOWING_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN")


@contextlib.contextmanager
def bucket_on(server, uploads: Mapping[str, Path] | None = None) -> Iterator[tuple[str, s3fs.S3FileSystem]]:
    """A new bucket on ``server`` holding ``uploads`` (key -> local file), and an s3fs client of it.

    s3fs reads the endpoint from ``AWS_ENDPOINT_URL`` (through botocore), so setting the variables
    is all the configuration needed while the block runs. s3fs also caches its filesystem instances,
    with their directory listings: the cache is cleared before, so no client made earlier (for
    another endpoint) is reused, and after, so no later test sees this bucket's listings."""
    with pytest.MonkeyPatch.context() as patch:
        for name in SHADOWING_VARS:
            patch.delenv(name, raising=False)
        for name, value in server.aws_vars().items():
            patch.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()
        fs = s3fs.S3FileSystem()
        bucket = f"test-{uuid.uuid4().hex[:16]}"
        fs.mkdir(bucket)
        for key, path in (uploads or {}).items():
            fs.put_file(str(path), f"{bucket}/{key}")
        try:
            yield bucket, fs
        finally:
            fs.rm(bucket, recursive=True)
            s3fs.S3FileSystem.clear_instance_cache()
