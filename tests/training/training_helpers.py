"""Shared helpers for the training tests: real WebDataset shards of synthetic multi-shot clips.

A uniquely named module rather than ``conftest`` imports, which other test folders' conftests shadow.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from webdataset import tariterators

from curation.shards import SampleMeta, shard_name, write_shard
from curation.synthetic import make_multishot_video

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "training" / "configs" / "tiny.yaml"
# Shot lengths whose cuts land on f % 4 == 1 and whose totals are 4k + 1.
SHOT_PLANS = [[21, 20, 24], [17, 16], [33], [9, 12, 12], [13, 20], [25, 8]]
# Settings under which a distributed run (FSDP over torchrun, Ray Train) must match one process.
DISTRIBUTED_SETTINGS = ("optim.max_steps=4", "checkpoint.every=2", "validation.every=2", "data.shuffle_buffer=6")
WORDS = ["red", "green", "blue", "orange", "purple", "bright", "slow", "wide", "close", "moving"]


def holocine_prompt(global_caption: str, shot_captions: list[str]) -> str:
    shots = " [shot cut] ".join(shot_captions)
    return (f"[global caption] {global_caption} This scene contains {len(shot_captions)} shots. "
            f"[per shot caption] {shots}")


def make_sample(folder: Path, index: int, shot_lengths: list[int], size: int = 48) -> tuple[SampleMeta, bytes]:
    path = folder / f"clip{index:03d}.mp4"
    make_multishot_video(path, shot_lengths, width=size, height=size, fps=16, seed=index)
    starts = [sum(shot_lengths[:i]) for i in range(len(shot_lengths))]
    total = sum(shot_lengths)
    captions = [f"{WORDS[(index + i) % len(WORDS)]} moving textures shot {i + 1}" for i in range(len(shot_lengths))]
    meta = SampleMeta(
        key=f"clip-{index:04d}",
        source={"uri": str(path), "video_id": f"v{index}", "start_s": 0.0, "end_s": total / 16},
        fps=16, num_frames=total, width=size, height=size,
        global_caption=f"abstract {WORDS[index % len(WORDS)]} patterns drifting",
        shots=[{"start_frame": s, "end_frame": s + n, "caption": c} for s, n, c in zip(starts, shot_lengths, captions)],
        shot_cut_frames=starts[1:],
        prompt=holocine_prompt(f"abstract {WORDS[index % len(WORDS)]} patterns drifting", captions),
    )
    return meta, path.read_bytes()


def write_shards(folder: Path, num_samples: int, per_shard: int) -> list[Path]:
    """``num_samples`` clips (cycling through SHOT_PLANS) in shards of ``per_shard`` samples."""
    clips = folder / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    samples = [make_sample(clips, i, SHOT_PLANS[i % len(SHOT_PLANS)]) for i in range(num_samples)]
    paths = []
    for n, start in enumerate(range(0, num_samples, per_shard)):
        path = folder / shard_name(n)
        write_shard(path, samples[start:start + per_shard])
        paths.append(path)
    return paths


def append_corrupt_sample(shard: Path, key: str, broken: str) -> None:
    """Append to a tar shard a sample that fails to decode: its mp4 is not a video (``broken="mp4"``)
    or its JSON is cut short (``"json"``); the other half is the shard's first sample's."""
    first = next(tariterators.tarfile_samples([{"url": str(shard)}]))
    parts = {"mp4": first["mp4"], "json": first["json"], broken: {"mp4": b"not a video", "json": b"{broken"}[broken]}
    with tarfile.open(shard, "a") as tar:
        for ext, data in parts.items():
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _run(cmd: list[str], check: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO)}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd[:6]} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


def run_module(module: str, args: list[str], nproc: int = 1, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m module`` (or torchrun with ``nproc`` processes), single-threaded."""
    if nproc > 1:
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
        return _run([sys.executable, *launcher, "-m", module, *args], check)
    return _run([sys.executable, "-m", module, *args], check)


def run_script(path: Path, args: list[str]) -> subprocess.CompletedProcess:
    return _run([sys.executable, str(path), *args], check=True)


def train(output: Path, shards: str, *overrides: str, nproc: int = 1, resume: bool = False,
          check: bool = True) -> subprocess.CompletedProcess:
    """``python -m training.train`` with the tiny config on ``shards`` (a glob) writing to ``output``."""
    args = ["--config", str(TINY_CONFIG), f"output={output}", f"data.shards=[{shards}]", *overrides]
    return run_module("training.train", args + (["--resume"] if resume else []), nproc=nproc, check=check)


def read_metrics(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines() if line]


def losses(output: Path) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in read_metrics(output) if "loss" in row}


def assert_same_metrics(one: list[dict], other: list[dict]) -> None:
    """Two runs' metrics rows agree step by step: loss, validation loss and gradient norm within 1e-5."""
    assert [r["step"] for r in one] == [r["step"] for r in other]
    for a, b in zip(one, other):
        for key in ("loss", "val_loss", "grad_norm"):
            if key in a:
                assert abs(a[key] - b[key]) <= 1e-5 * abs(a[key]), (a, b)


def rewind(run: Path, copy: Path, step: int) -> Path:
    """A copy of a finished run as a run killed right after its checkpoint of ``step`` would have left it."""
    shutil.copytree(run, copy)
    checkpoints = copy / "checkpoints"
    for folder in checkpoints.glob("step-*"):
        if int(folder.name.removeprefix("step-")) > step:
            shutil.rmtree(folder)
    (checkpoints / "latest").write_text(f"step-{step:08d}")
    kept = [line for line in (copy / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] <= step]
    (copy / "metrics.jsonl").write_text("\n".join(kept) + "\n")
    return copy
