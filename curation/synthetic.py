"""Synthetic multi-shot videos with known cuts and transitions.

Used as sample input (``python -m curation sample``), by the tests as ground truth and by the
benchmarks. Each shot is a distinct coloured texture that moves smoothly; shots are joined by
hard cuts, fades through black, or cross-dissolves at known frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from curation.encode import VideoWriter


@dataclass(frozen=True)
class Join:
    """How a shot joins the next one. A fade is `length` frames out, `black` black, `length` in."""

    kind: Literal["cut", "fade", "dissolve"] = "cut"
    length: int = 0
    black: int = 0


@dataclass
class GroundTruth:
    num_frames: int
    fps: float
    # Frames of pure shot content, half-open.
    shots: list[tuple[int, int]] = field(default_factory=list)
    # Frames that belong to no shot (fade ramps, black, dissolve blends), half-open.
    transitions: list[tuple[int, int, str]] = field(default_factory=list)
    # Frames where a hard cut starts a new shot.
    cuts: list[int] = field(default_factory=list)


class _ShotPainter:
    """A smoothly moving texture: a low-frequency colour field plus fine detail, panned over."""

    def __init__(self, seed: int, width: int, height: int) -> None:
        rng = np.random.default_rng(seed)
        self.width, self.height = width, height
        canvas_w, canvas_h = int(width * 1.5), int(height * 1.5)
        coarse = rng.integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
        base = cv2.resize(coarse, (canvas_w, canvas_h), interpolation=cv2.INTER_CUBIC)
        detail = rng.integers(-40, 40, size=(canvas_h // 8, canvas_w // 8, 1), dtype=np.int16)
        detail = cv2.resize(detail.astype(np.float32), (canvas_w, canvas_h), interpolation=cv2.INTER_LINEAR)
        self.canvas = np.clip(base.astype(np.float32) + detail[..., None], 0, 255).astype(np.uint8)
        speed = rng.uniform(0.5, 1.5) * width / 320
        angle = rng.uniform(0, 2 * np.pi)
        self.velocity = (speed * np.cos(angle), speed * np.sin(angle))
        self.travel = (canvas_w - width, canvas_h - height)

    def frame(self, t: int) -> np.ndarray:
        # Ping-pong panning: moves every frame and never jumps, so it never looks like a cut.
        x = _triangle(self.velocity[0] * t + self.travel[0] / 2, self.travel[0])
        y = _triangle(self.velocity[1] * t + self.travel[1] / 2, self.travel[1])
        return self.canvas[y : y + self.height, x : x + self.width]


def _triangle(value: float, period_half: int) -> int:
    if period_half <= 0:
        return 0
    phase = value % (2 * period_half)
    return int(phase if phase <= period_half else 2 * period_half - phase)


def make_multishot_video(
    path: str | Path,
    shot_lengths: list[int],
    joins: list[Join] | None = None,
    width: int = 320,
    height: int = 180,
    fps: int = 25,
    seed: int = 0,
    codec: str = "libx264",
    crf: int = 18,
) -> GroundTruth:
    """Write a video of len(shot_lengths) shots and return where everything is.

    `joins[i]` joins shot i to shot i+1 (default: hard cuts). Transition frames are added
    between the shots' own frames, so each shot keeps its full length of pure frames.
    """
    joins = joins or [Join()] * (len(shot_lengths) - 1)
    if len(joins) != len(shot_lengths) - 1:
        raise ValueError("need one join between each pair of shots")
    painters = [_ShotPainter(seed * 1000 + i, width, height) for i in range(len(shot_lengths))]
    truth = GroundTruth(num_frames=0, fps=fps)
    with VideoWriter(path, width, height, fps, codec=codec, crf=crf) as writer:
        for i, length in enumerate(shot_lengths):
            _write_shot(writer, painters, joins, i, length, truth)
    truth.num_frames = writer.frames_written
    return truth


def _write_shot(
    writer: VideoWriter,
    painters: list[_ShotPainter],
    joins: list[Join],
    i: int,
    length: int,
    truth: GroundTruth,
) -> None:
    """Write shot i and the join that follows it, recording where they land."""
    emit = writer.write
    start = writer.frames_written
    for t in range(length):
        emit(painters[i].frame(t))
    truth.shots.append((start, writer.frames_written))
    if i == len(joins):
        return
    join, nxt = joins[i], painters[i + 1]
    height, width = painters[i].height, painters[i].width
    start = writer.frames_written
    if join.kind == "cut":
        truth.cuts.append(start)
        return
    if join.kind == "fade":
        for k in range(join.length):
            emit(_scale(painters[i].frame(length + k), 1 - (k + 1) / (join.length + 1)))
        for _ in range(join.black):
            emit(np.zeros((height, width, 3), np.uint8))
        for k in range(join.length):
            emit(_scale(nxt.frame(k - join.length), (k + 1) / (join.length + 1)))
    elif join.kind == "dissolve":
        for k in range(join.length):
            alpha = (k + 1) / (join.length + 1)
            a = painters[i].frame(length + k).astype(np.float32)
            b = nxt.frame(k - join.length).astype(np.float32)
            emit(np.clip((1 - alpha) * a + alpha * b + 0.5, 0, 255).astype(np.uint8))
    else:
        raise ValueError(f"unknown join {join.kind!r}")
    truth.transitions.append((start, writer.frames_written, join.kind))


def _scale(image: np.ndarray, factor: float) -> np.ndarray:
    return np.clip(image.astype(np.float32) * factor + 0.5, 0, 255).astype(np.uint8)

