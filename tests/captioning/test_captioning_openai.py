"""The openai engine: a real ``transformers serve`` round trip, and faults from a scripted server."""

import dataclasses
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from captioning_helpers import SMALL_LIMITS

from captioning.captioner import Captioner
from captioning.config import CaptionerConfig, OpenAIConfig
from captioning.engines.openai_engine import OpenAIEngine
from captioning.frames import shot_frame_urls
from captioning.prompts import load_prompts
from captioning.requests import joint_request


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_config(base_url: str, **openai_changes) -> CaptionerConfig:
    openai = OpenAIConfig(base_url=base_url, concurrency=4, timeout_s=30, max_retries=2, backoff_s=0.01)
    return CaptionerConfig(
        engine="openai",
        model="tiny",
        frames_per_shot=1,
        max_side=64,
        limits=SMALL_LIMITS,
        max_tries=2,
        openai=dataclasses.replace(openai, **openai_changes),
    )


# ---------------------------------------------------------------- transformers serve, for real


@pytest.fixture(scope="module")
def served(tiny_model, tmp_path_factory):
    """``transformers serve`` on loopback with the tiny model: one start per module."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    cli = Path(sys.executable).parent / "transformers"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(cli), "serve", tiny_model, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "transformers serve did not start:\n" + log_path.read_text()
            time.sleep(0.5)
        yield base + "/v1", tiny_model
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def test_round_trip_through_transformers_serve(served, scenes):
    base_url, model = served
    config = dataclasses.replace(make_config(base_url), model=model, temperature=0.0, max_tokens=64)
    engine = OpenAIEngine(model, config.openai)
    request = joint_request(shot_frame_urls(scenes[0], 2, 64), load_prompts(), SMALL_LIMITS, max_tokens=16)
    (reply,) = engine.generate([request])
    assert reply.error is None and reply.text and reply.attempts == 1

    # The frames reach the model: the tiny model spends 4 prompt tokens per 28x28 image.
    def prompt_tokens(messages):
        body = {"model": model, "messages": messages, "max_tokens": 1}
        return httpx.post(base_url + "/chat/completions", json=body, timeout=60).json()["usage"]["prompt_tokens"]

    text_only = [request.messages[0], {"role": "user", "content": [
        part for part in request.messages[1]["content"] if part["type"] == "text"
    ]}]
    assert prompt_tokens(request.messages) - prompt_tokens(text_only) == 4 * 6  # 3 shots x 2 frames
    # The reply carries the server's own token counts.
    assert reply.prompt_tokens == prompt_tokens(request.messages)
    assert 0 < reply.output_tokens <= 16

    # Through the captioner: the server ignores response_format, so a random model's free text is
    # rejected by validation, asked again with the error, then recorded as a failure with the reason.
    results = Captioner(config, engine=engine).caption(scenes[:2])
    assert [r.key for r in results] == ["scene0", "scene1"]
    for result in results:
        assert not result.ok and result.tries == 2
        assert result.error.startswith("rejected 2 answers; last: ")
    engine.close()


# ---------------------------------------------------------------- faults on demand


def valid_answer(num_shots: int) -> str:
    shot = {"caption": "Wide shot of a room.", "camera": "wide, static", "characters": []}
    return json.dumps({"characters": {}, "global_caption": "An empty room.", "shots": [shot] * num_shots})


class FaultServer:
    """An OpenAI-style server that follows a per-scene script of faults.

    Requests are told apart by their number of shots: ``script[n]`` lists the actions for the 1st,
    2nd, … request of an n-shot scene (``Shot N:`` parts), the last one repeating; two-pass shot
    requests use ``script[("draft", n)]``.
    """

    def __init__(self, script: dict, delay_s: float = 2.5):
        self.script = script
        self.delay_s = delay_s
        self.hits: Counter[int] = Counter()
        self.records: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.handle(self, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def handle(self, handler: BaseHTTPRequestHandler, body: dict) -> None:
        user = body["messages"][1]["content"]
        num_shots = sum(1 for part in user if part["type"] == "text" and part["text"].startswith("Shot "))
        draft = re.search(r"of a (\d+)-shot scene", user[-1]["text"])
        key = ("draft", int(draft.group(1))) if draft else num_shots
        with self._lock:
            attempt = self.hits[key]
            self.hits[key] += 1
            self.records.append(
                {
                    "num_shots": num_shots,
                    "auth": handler.headers.get("Authorization"),
                    "response_format": "response_format" in body,
                    "messages": body["messages"],
                }
            )
        actions = self.script[key]
        action = actions[min(attempt, len(actions) - 1)]
        if action == "reject_rf" and "response_format" not in body:
            action = "valid"
        if action == "slow":
            time.sleep(self.delay_s)
            action = "valid"
        if action == "valid":
            content = valid_answer(num_shots)
        elif action == "wrong_count":
            content = valid_answer(num_shots + 1)
        elif action in ("draft", "bad_draft"):
            caption = "Close-up of a cup." if action == "draft" else "Close-up of [character1]."
            content = json.dumps({"caption": caption, "camera": "close-up"})
        else:
            content = None
        if content is not None:
            payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
            status = 200
        elif action == "garbage":
            payload, status = b'{"choices": [{"mess', 200
        elif action == "reject_rf":
            payload, status = b'{"error": "unsupported field: response_format"}', 400
        else:
            status = int(action)
            payload = json.dumps({"error": f"scripted {status}"}).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (timeouts), as intended


@pytest.fixture
def fault_server():
    servers = []

    def start(script, **kwargs):
        servers.append(FaultServer(script, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_faults_are_retried_and_recorded_once(fault_server, scenes):
    # scenes have 3, 1, 2 and 4 shots
    server = fault_server(
        {
            1: ["500", "503", "valid"],  # server errors, then an answer
            2: ["garbage", "valid"],  # a malformed HTTP body, then an answer
            3: ["slow"],  # always past the timeout
            4: ["wrong_count", "valid"],  # a wrong caption, asked again with the error
        },
        delay_s=2.5,
    )
    config = make_config(server.base_url, timeout_s=1.0)
    results = Captioner(config).caption(scenes)

    assert [r.key for r in results] == [s.key for s in scenes]  # each scene once, in order
    by_key = {r.key: r for r in results}
    assert by_key["scene1"].ok and by_key["scene1"].tries == 1
    assert by_key["scene2"].ok and by_key["scene2"].tries == 1
    assert by_key["scene3"].ok and by_key["scene3"].tries == 2
    failed = by_key["scene0"]
    assert not failed.ok and failed.sample is None
    assert failed.error == "engine: gave up after 3 attempts: timeout: ReadTimeout"
    # Transport retries (1 + max_retries) and validation retries, and not one request more.
    assert server.hits == Counter({1: 3, 2: 2, 3: 3, 4: 2})
    retried = [r["messages"] for r in server.records if r["num_shots"] == 4][1]
    assert retried[-2]["role"] == "assistant" and "shots" in retried[-1]["content"]
    assert by_key["scene3"].sample["shot_cut_frames"] == [8, 16, 24]


def test_client_errors_are_not_retried(fault_server, scenes):
    server = fault_server({1: ["404"], 2: ["valid"]})
    results = Captioner(make_config(server.base_url)).caption([scenes[1], scenes[2]])
    assert results[0].error.startswith("engine: HTTP 404") and results[1].ok
    assert server.hits == Counter({1: 1, 2: 1})


def test_response_format_is_dropped_when_the_server_refuses_it(fault_server, scenes):
    server = fault_server({n: ["reject_rf"] for n in (1, 2, 3, 4)})
    results = Captioner(make_config(server.base_url, concurrency=1)).caption(scenes)
    assert all(r.ok for r in results)
    assert [r["response_format"] for r in server.records] == [True] + [False] * len(scenes)

    strict = fault_server({n: ["reject_rf"] for n in (1, 2, 3, 4)})
    results = Captioner(make_config(strict.base_url, structured_output="json_schema")).caption(scenes[:1])
    assert results[0].error.startswith("engine: HTTP 400")


def test_api_key_comes_from_the_environment_and_is_never_logged(fault_server, scenes, monkeypatch, caplog):
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("HOLOCINE_TEST_API_KEY", secret)
    server = fault_server({1: ["500", "valid"], 3: ["400"]})
    config = make_config(server.base_url, api_key_env="HOLOCINE_TEST_API_KEY")
    caplog.set_level(logging.DEBUG)
    results = Captioner(config).caption([scenes[1], scenes[0]])
    assert results[0].ok and not results[1].ok
    assert {r["auth"] for r in server.records} == {f"Bearer {secret}"}
    assert secret not in caplog.text and all(secret not in (r.error or "") for r in results)


def test_two_pass_failures_and_retries(fault_server, scenes):
    # scene1 has 1 shot, scene2 has 2 shots
    server = fault_server({("draft", 1): ["bad_draft"], ("draft", 2): ["500", "draft"], 2: ["wrong_count", "valid"]})
    config = dataclasses.replace(make_config(server.base_url), strategy="two_pass")
    failed, done = Captioner(config).caption([scenes[1], scenes[2]])
    # A shot that never validates fails its scene, with the shot named, and no global request is made.
    assert not failed.ok and failed.tries == 2
    assert failed.error.startswith("shot 1: rejected 2 answers; last: ") and "[character1]" in failed.error
    # Two drafts (one after a 500) and a global answer asked twice: 2 + 2 answers requested.
    assert done.ok and done.tries == 4
    assert server.hits == Counter({("draft", 1): 2, ("draft", 2): 3, 2: 2})
    global_text = [r["messages"][1]["content"][-1]["text"] for r in server.records if r["num_shots"] == 2][0]
    assert "Shot 1: Close-up of a cup. (camera: close-up)" in global_text
