"""Shot detection: one decode pass at reduced size feeds PySceneDetect and the frame features.

The pass records, per frame, a gray thumbnail and the mean luma. Hard cuts come from
PySceneDetect's AdaptiveDetector (or ContentDetector); gradual transitions and black frames
come from `curation.transitions` on the thumbnails. Shots are what lies between cuts, with
transition frames removed: no frame of a fade or dissolve is inside a shot.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
from scenedetect import FrameTimecode
from scenedetect.detectors import AdaptiveDetector, ContentDetector

from curation.config import DetectConfig
from curation.decode import open_reader, scaled_size
from curation.transitions import Transition, find_transitions
from curation.types import VideoInfo

log = logging.getLogger(__name__)


@dataclass
class FrameAnalysis:
    """What one decode pass learns about every frame."""

    fps: float
    cuts: list[int]  # frames where PySceneDetect starts a new shot
    luma: np.ndarray  # [N] mean luma, 0-255
    contrast: np.ndarray  # [N] luma standard deviation
    thumbs: np.ndarray  # [N, h, w] uint8 gray thumbnails

    @property
    def num_frames(self) -> int:
        return len(self.luma)

    @property
    def motion(self) -> np.ndarray:
        """[N] mean absolute change from the previous frame's thumbnail (0 for frame 0)."""
        change = np.abs(np.diff(self.thumbs.astype(np.int16), axis=0)).mean(axis=(1, 2))
        return np.concatenate(([0.0], change))


@dataclass
class ShotDetection:
    fps: float
    num_frames: int
    shots: list[tuple[int, int]]  # half-open source frame ranges
    cuts: list[int]
    transitions: list[Transition]
    analysis: FrameAnalysis

    def to_json(self, video: str) -> dict:
        return {
            "video": video,
            "fps": self.fps,
            "num_frames": self.num_frames,
            "shots": [{"start_frame": s, "end_frame": e} for s, e in self.shots],
            "transitions": [
                {"start_frame": t.start_frame, "end_frame": t.end_frame, "kind": t.kind}
                for t in self.transitions
            ],
        }


def make_detector(config: DetectConfig) -> ContentDetector:
    if config.detector == "adaptive":
        return AdaptiveDetector(
            adaptive_threshold=config.adaptive_threshold,
            min_scene_len=config.min_scene_len,
            min_content_val=config.min_content_val,
        )
    if config.detector == "content":
        return ContentDetector(threshold=config.content_threshold, min_scene_len=config.min_scene_len)
    raise ValueError(f"unknown detector {config.detector!r} (expected 'adaptive' or 'content')")


def analyze_frames(frames: Iterable[np.ndarray], fps: float, config: DetectConfig) -> FrameAnalysis:
    """Run the cut detector and collect thumbnails and luma over RGB frames in decode order."""
    detector = make_detector(config)
    cuts: list[int] = []
    thumbs: list[np.ndarray] = []
    stats: list[tuple[float, float]] = []
    index = -1
    for index, rgb in enumerate(frames):
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # PySceneDetect expects OpenCV's BGR
        cuts.extend(t.frame_num for t in detector.process_frame(FrameTimecode(index, fps), bgr))
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        mean, std = cv2.meanStdDev(gray)
        stats.append((mean[0, 0], std[0, 0]))
        thumbs.append(cv2.resize(gray, config.thumb_size, interpolation=cv2.INTER_AREA))
    if index >= 0:
        cuts.extend(t.frame_num for t in detector.post_process(FrameTimecode(index, fps)))
    w, h = config.thumb_size
    luma_stats = np.array(stats, dtype=np.float32).reshape(-1, 2)
    return FrameAnalysis(
        fps=fps,
        cuts=sorted(set(cuts)),
        luma=luma_stats[:, 0],
        contrast=luma_stats[:, 1],
        thumbs=np.stack(thumbs) if thumbs else np.zeros((0, h, w), np.uint8),
    )


def split_shots(
    num_frames: int, cuts: list[int], transitions: list[Transition]
) -> list[tuple[int, int]]:
    """Frame ranges between cuts, with every transition frame removed."""
    in_shot = np.ones(num_frames, dtype=bool)
    for t in transitions:
        in_shot[t.start_frame : t.end_frame] = False
    boundary = np.zeros(num_frames, dtype=bool)
    boundary[[c for c in cuts if 0 < c < num_frames]] = True
    shots = []
    start = None
    for frame in range(num_frames):
        if start is not None and (boundary[frame] or not in_shot[frame]):
            shots.append((start, frame))
            start = None
        if start is None and in_shot[frame]:
            start = frame
    if start is not None:
        shots.append((start, num_frames))
    return shots


def detect_shots(info: VideoInfo, config: DetectConfig, threads: int = 1) -> ShotDetection:
    """Decode the video once at analysis size and find its shots."""
    reader = open_reader(info.uri, info.decoder or "pyav", threads=threads)
    width, height = scaled_size(info.width, info.height, config.analysis_width)
    analysis = analyze_frames(reader.frames(width, height), info.fps, config)
    return detection_from_analysis(analysis, config)


def detection_from_analysis(analysis: FrameAnalysis, config: DetectConfig) -> ShotDetection:
    transitions = find_transitions(analysis.thumbs, analysis.luma, analysis.contrast, config)
    # A cut the detector places inside a transition is the transition itself, not a shot.
    cuts = [c for c in analysis.cuts if not any(t.start_frame <= c <= t.end_frame for t in transitions)]
    shots = split_shots(analysis.num_frames, cuts, transitions)
    log.debug("%d cuts, %d transitions, %d shots", len(cuts), len(transitions), len(shots))
    return ShotDetection(
        fps=analysis.fps,
        num_frames=analysis.num_frames,
        shots=shots,
        cuts=cuts,
        transitions=transitions,
        analysis=analysis,
    )
