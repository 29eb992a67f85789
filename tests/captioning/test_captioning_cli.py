"""``python -m captioning caption`` on the tiny VLM: with --model and no config, flags over a config,
and one-line errors for a model or server that cannot be used."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from captioning_helpers import SMALL_LIMITS

from captioning.__main__ import main
from captioning.frames import SceneInput
from captioning.render import holocine_prompt

REPO = Path(__file__).resolve().parents[2]


def shots_arg(scene: SceneInput) -> str:
    return ",".join(f"{start}-{end}" for start, end in scene.shots)


def caption_args(scene: SceneInput, *flags: str) -> list[str]:
    return ["caption", *flags, "--video", scene.video_path, "--shots", shots_arg(scene)]


def assert_valid_sample(sample: dict[str, Any], scene: SceneInput) -> None:
    """The printed sample has the scene's shots and HoloCine's prompt built from its own captions."""
    num_shots = len(scene.shots)
    assert [(s["start_frame"], s["end_frame"]) for s in sample["shots"]] == list(scene.shots)
    assert sample["shot_cut_frames"] == [start for start, _ in scene.shots[1:]]
    assert sample["prompt"] == holocine_prompt(sample["global_caption"], [s["caption"] for s in sample["shots"]])
    assert f" This scene contains {num_shots} shots. [per shot caption] " in sample["prompt"]
    assert sample["prompt"].count("[shot cut]") == num_shots - 1
    for shot in sample["shots"]:
        assert set(shot["characters"]) <= set(sample["characters"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_model_flag_needs_no_config(tiny_model, scenes, capsys):
    scene = scenes[0]
    assert main(caption_args(scene, "--model", tiny_model)) == 0
    sample = json.loads(capsys.readouterr().out)
    assert sample["key"] == scene.key  # the video's file name
    assert_valid_sample(sample, scene)
    assert sample["captioner"] == {"engine": "transformers", "model": tiny_model, "prompt_version": "v1", "strategy": "joint"}


def test_flags_override_the_config(tiny_model, scenes, tmp_path, capsys):
    scene = scenes[2]
    config = {
        "engine": "openai",
        "model": "some-served-model",
        "frames_per_shot": 1,
        "limits": dataclasses.asdict(SMALL_LIMITS),
        "transformers": {"device": "cpu"},
    }
    config_path = tmp_path / "captioning.yaml"
    config_path.write_text(yaml.safe_dump(config))
    flags = ["--config", str(config_path), "--engine", "transformers", "--model", tiny_model, "--key", "mine"]
    assert main(caption_args(scene, *flags)) == 0
    sample = json.loads(capsys.readouterr().out)
    assert sample["key"] == "mine"
    assert_valid_sample(sample, scene)
    assert sample["captioner"]["engine"] == "transformers"
    assert sample["captioner"]["model"] == tiny_model


def test_missing_model_directory_is_a_one_line_error(scenes, tmp_path):
    missing = tmp_path / "no-such-model"
    command = [sys.executable, "-m", "captioning", *caption_args(scenes[1], "--model", str(missing))]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and str(missing) in line


def test_endpoint_implies_the_openai_engine(scenes, capsys):
    # Nothing listens on the port: the openai engine's check of the server fails fast, naming the URL.
    url = f"http://127.0.0.1:{free_port()}/v1"
    assert main(caption_args(scenes[1], "--endpoint", url, "--model", "served-name")) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: cannot list the models of the server at {url}")
