"""moto's S3 API server on a free port of 127.0.0.1, for the benchmarks that read and write ``s3://``.

``moto[server]`` is in the dev extra; the tests start the same server (``tests/conftest.py``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


class MotoServer:
    """The server's output (one access-log line per request) goes to ``folder/moto.log``."""

    def __init__(self, folder: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(Path(folder) / "moto.log", "wb")
        self.process = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                                        stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"moto_server did not answer at {self.url}")
        # What points botocore (and so s3fs) at this server, with moto's dummy keys.
        self.env = {**os.environ, "AWS_ENDPOINT_URL": self.url, "AWS_ACCESS_KEY_ID": "bench",
                    "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}

    def requests(self) -> int:
        """Requests served so far: one log line each (werkzeug's access log)."""
        self.log.flush()
        return sum(1 for line in Path(self.log.name).read_text().splitlines() if 'HTTP/1.1"' in line)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()
        self.log.close()
