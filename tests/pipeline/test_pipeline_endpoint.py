"""``--endpoint URL --model NAME``: the pipeline captioning through an OpenAI-compatible server.

The server is a small local stand-in that answers from the request's JSON schema (a served VLM's
structured output), so the whole path (flags, actor, HTTP engine, validation, shards) runs for
real; a server whose answers never validate makes the job exit non-zero with per-scene reasons.
"""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pipeline_helpers import job_command, job_env, read_all_shards, write_config, write_synthetic

from curation.manifests import read_manifest


def schema_answer(schema: dict, extra_shots: int) -> str:
    """A caption that satisfies ``schema`` (no characters), with ``extra_shots`` more shots than it asks."""
    num_shots = schema["anyOf"][0]["properties"]["shots"]["minItems"] + extra_shots
    shot = {"caption": "A wide shot of a street.", "camera": "wide, static", "characters": []}
    return json.dumps({"characters": {}, "global_caption": "A quiet street at dusk.", "shots": [shot] * num_shots})


class SchemaServer:
    """Chat completions on loopback; records the model names it was asked for."""

    def __init__(self, extra_shots: int = 0) -> None:
        self.models: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # the model list every OpenAI-compatible server serves
                payload = json.dumps({"object": "list", "data": [{"id": "served-vlm", "object": "model"}]}).encode()
                self.send_response(200 if self.path.endswith("/models") else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.models.append(body["model"])
                content = schema_answer(body["response_format"]["json_schema"]["schema"], extra_shots)
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("endpoint-in")
    write_synthetic(folder, 1)
    return folder


@pytest.mark.parametrize("extra_shots", [0, 1], ids=["valid answers", "answers never validate"])
def test_captioning_through_an_endpoint(inputs, tmp_path, holocine_cache, extra_shots):
    server = SchemaServer(extra_shots)
    try:
        run = subprocess.run(
            job_command(str(inputs), tmp_path / "out", write_config(tmp_path / "config.yaml"),
                        "--endpoint", server.url, "--model", "served-vlm", "--set", "captioning.max_tries=2"),
            env=job_env(holocine_cache), capture_output=True, text=True, timeout=600,
        )
    finally:
        server.close()
    scenes = read_manifest(tmp_path / "out" / "manifests" / "scenes.parquet")
    assert scenes and set(server.models) == {"served-vlm"}
    if extra_shots == 0:
        assert run.returncode == 0, run.stderr[-5000:]
        samples = read_all_shards(tmp_path / "out" / "shards")
        assert set(samples) == {s["key"] for s in scenes}
        for meta, _, _ in samples.values():
            assert meta.captioner["engine"] == "openai" and meta.captioner["model"] == "served-vlm"
            assert meta.global_caption == "A quiet street at dusk."
        assert len(server.models) == len(scenes)  # one request per scene, each valid at once
    else:
        # Every answer has the wrong shot count: asked twice per scene, then recorded as failed.
        assert run.returncode == 3, run.stderr[-5000:]
        assert not list((tmp_path / "out" / "shards").glob("*.tar"))
        assert all(s["status"] == "failed" and "rejected 2 answers" in s["error"] for s in scenes), scenes[0]["error"]
        assert all(s["caption_tries"] == 2 for s in scenes) and len(server.models) == 2 * len(scenes)
