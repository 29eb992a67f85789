"""The README's commands, run as written, so that the README cannot drift from the code.

A ```bash block runs when the line above it is ``<!-- readme-test: NAME -->``. Its comment lines
are dropped, and so are commands that need a Ray cluster, a GPU or a real model (the training block
lists some under the tiny one). The rest run with bash, in README order, in one temporary folder in
which the repository's top-level folders are symlinked: each block reads what the blocks before it wrote.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ("curation", "captioning", "pipelines", "training", "holocine_model", "benchmarks")
# The marked blocks, in the order the README shows and the tests run them.
BLOCKS = ("main-job", "curation-alone", "caption-one-scene", "train-tiny")
MARKER = re.compile(r"<!-- readme-test: ([\w-]+) -->")
NEEDS_CLUSTER_GPU_OR_MODEL = re.compile(r"^(ray|torchrun|vllm)\b|\bwan2\.|/models/")


def marked_blocks(readme: str) -> dict[str, list[str]]:
    """NAME -> the lines of the ```bash block directly below ``<!-- readme-test: NAME -->``."""
    lines = readme.splitlines()
    blocks: dict[str, list[str]] = {}
    for i, line in enumerate(lines):
        match = MARKER.fullmatch(line.strip())
        if match is None:
            continue
        name = match.group(1)
        assert lines[i + 1].strip() == "```bash", f"marker {name} is not directly above a ```bash block"
        end = next(j for j in range(i + 2, len(lines)) if lines[j].strip() == "```")
        blocks[name] = lines[i + 2 : end]
    return blocks


def runnable_commands(block: list[str]) -> list[str]:
    """The block's commands (a line ending in a backslash continues on the next one), without
    comment lines and without the commands that need a cluster, a GPU or a real model."""
    commands, current = [], ""
    for line in block:
        if not current and line.lstrip().startswith("#"):
            continue
        current += line + "\n"
        if not line.rstrip().endswith("\\"):
            commands.append(current.strip())
            current = ""
    return [c for c in commands if c and not NEEDS_CLUSTER_GPU_OR_MODEL.search(c)]


BLOCK_COMMANDS = {name: runnable_commands(lines) for name, lines in marked_blocks((REPO / "README.md").read_text()).items()}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("readme")
    for name in FOLDERS:
        (root / name).symlink_to(REPO / name, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    env = dict(os.environ)
    # The README's `python` is this interpreter's: the venv the tests run in.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    # The stand-in VLM is built here rather than in the user's ~/.cache.
    env["HOLOCINE_CACHE"] = str(tmp_path_factory.mktemp("holocine-cache"))
    # The main job must start Ray in-process, as on a machine without a cluster.
    env.pop("RAY_ADDRESS", None)
    return env


def run_block(name: str, workdir: Path, env: dict[str, str]) -> list[subprocess.CompletedProcess[str]]:
    """Run the block's commands one by one; fail with a command's output when it exits non-zero."""
    results = []
    for command in BLOCK_COMMANDS[name]:
        done = subprocess.run(["bash", "-c", command], cwd=workdir, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(
                f"README command exited {done.returncode}:\n$ {command}\n"
                f"--- stdout ---\n{done.stdout}\n--- stderr ---\n{done.stderr}",
                pytrace=False,
            )
        results.append(done)
    return results


def test_readme_marks_the_blocks_in_order() -> None:
    assert tuple(BLOCK_COMMANDS) == BLOCKS
    for name, commands in BLOCK_COMMANDS.items():
        assert commands, f"block {name} has no command this test can run"


def test_main_job(workdir: Path, env: dict[str, str]) -> None:
    run_block("main-job", workdir, env)
    assert list((workdir / "out" / "shards").glob("shard-*.tar"))


def test_curation_alone(workdir: Path, env: dict[str, str]) -> None:
    *_, shots = run_block("curation-alone", workdir, env)
    assert (workdir / "out-curated" / "manifests" / "scenes.parquet").is_file()
    assert json.loads(shots.stdout)["shots"]


def test_caption_one_scene(workdir: Path, env: dict[str, str]) -> None:
    (caption,) = run_block("caption-one-scene", workdir, env)
    sample = json.loads(caption.stdout)
    num_shots = len(sample["shots"])
    assert f" This scene contains {num_shots} shots. [per shot caption] " in sample["prompt"]
    assert sample["prompt"].count("[shot cut]") == num_shots - 1


def test_train_tiny(workdir: Path, env: dict[str, str]) -> None:
    run_block("train-tiny", workdir, env)
    # tiny.yaml's output folder; a run ends by exporting the DiT there.
    assert (workdir / "out" / "train-tiny" / "export" / "dit.safetensors").is_file()
