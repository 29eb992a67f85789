"""Shot detection: one decode pass at reduced size yields cut scores and frame features.

The pass records, per frame, PySceneDetect's content score, a gray thumbnail and the luma
mean and std. Hard cuts come from PySceneDetect's AdaptiveDetector decision (vectorised) or
its ContentDetector; gradual transitions and black frames come from `curation.transitions`.
Shots are what lies between cuts, with transition frames removed: no frame of a fade or
dissolve is inside a shot.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scenedetect import FrameTimecode
from scenedetect.detectors import ContentDetector

from curation.config import DetectConfig
from curation.decode import open_reader, scaled_size
from curation.transitions import Transition, find_transitions, runs
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
    # Damaged source: the decoder's rejected packets, and the frames that may show lost data
    # (each run is a shot of its own, so the filters can drop it; see curation.decode.DecodeReport).
    decode_errors: list[tuple[int, str]] = field(default_factory=list)
    damaged: list[tuple[int, int]] = field(default_factory=list)

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


def content_score(previous_hsv: np.ndarray | None, hsv: np.ndarray) -> float:
    """PySceneDetect ContentDetector's frame score with its default weights: the mean absolute
    change of the H, S and V values from the previous frame (0 for the very first frame)."""
    if previous_hsv is None:
        return 0.0
    return cv2.norm(previous_hsv, hsv, cv2.NORM_L1) / hsv.size


def adaptive_cuts(scores: np.ndarray, config: DetectConfig, window: int = 2) -> list[int]:
    """PySceneDetect's AdaptiveDetector decision, vectorised over a whole video's scores.

    A frame is a cut when its score is `adaptive_threshold` times the mean score of the
    `window` frames on each side, is at least `min_content_val`, and comes `min_scene_len`
    frames after the previous cut. Driving PySceneDetect frame by frame costs more than
    decoding a small video; tests check this function against AdaptiveDetector itself.
    """
    n = len(scores)
    if n < 2 * window + 1:
        return []
    sums = sliding_window_view(scores, 2 * window + 1).sum(axis=1)
    target = scores[window : n - window]
    neighbours = (sums - target) / (2 * window)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.minimum(target / neighbours, 255.0)
    ratio = np.where(np.abs(neighbours) < 1e-5, np.where(target >= config.min_content_val, 255.0, 0.0), ratio)
    candidates = np.flatnonzero((ratio >= config.adaptive_threshold) & (target >= config.min_content_val)) + window
    cuts, last = [], 0
    for frame in candidates.tolist():
        if frame - last >= config.min_scene_len:
            cuts.append(frame)
            last = frame
    return cuts


def content_cuts(scores: np.ndarray, fps: float, config: DetectConfig) -> list[int]:
    """PySceneDetect's ContentDetector (threshold and flash filter) over precomputed scores."""
    detector = _ScoredContentDetector(threshold=config.content_threshold, min_scene_len=config.min_scene_len)
    cuts = []
    for index, score in enumerate(scores.tolist()):
        detector.next_score = score
        cuts.extend(t.frame_num for t in detector.process_frame(FrameTimecode(index, fps), None))
    if len(scores):
        cuts.extend(t.frame_num for t in detector.post_process(FrameTimecode(len(scores) - 1, fps)))
    return sorted(set(cuts))


class _ScoredContentDetector(ContentDetector):
    """ContentDetector fed scores computed in batches (same formula) instead of frames."""

    next_score: float = 0.0

    def _calculate_frame_score(self, timecode: FrameTimecode, frame_img: np.ndarray | None) -> float:
        return self.next_score


def find_cuts(scores: np.ndarray, fps: float, config: DetectConfig) -> list[int]:
    if config.detector == "adaptive":
        return adaptive_cuts(scores, config)
    if config.detector == "content":
        return content_cuts(scores, fps, config)
    raise ValueError(f"unknown detector {config.detector!r} (expected 'adaptive' or 'content')")


class _Analyzer:
    """Accumulates frames into batches; one OpenCV call per batch gives scores and features."""

    def __init__(self, fps: float, config: DetectConfig, batch: int = 32) -> None:
        self.fps = fps
        self.config = config
        self.batch = batch
        self.scores: list[float] = []
        self.thumbs: list[np.ndarray] = []
        self.stats: list[tuple[float, float]] = []  # luma mean and std per frame
        self.pending: list[np.ndarray] = []
        self.previous_hsv: np.ndarray | None = None

    def add(self, rgb: np.ndarray) -> None:
        self.pending.append(rgb)
        if len(self.pending) == self.batch:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        frames = np.stack(self.pending)
        self.pending = []
        b, h, w, _ = frames.shape
        tall = frames.reshape(b * h, w, 3)  # one OpenCV call converts the whole batch
        hsv = cv2.cvtColor(tall, cv2.COLOR_RGB2HSV).reshape(b, h, w, 3)
        gray = cv2.cvtColor(tall, cv2.COLOR_RGB2GRAY).reshape(b, h, w)
        thumb_w, thumb_h = self.config.thumb_size
        if h % thumb_h == 0:  # whole rows of pixels per thumbnail row: one call for the batch
            tall_thumbs = cv2.resize(gray.reshape(b * h, w), (thumb_w, b * thumb_h), interpolation=cv2.INTER_AREA)
            self.thumbs.extend(tall_thumbs.reshape(b, thumb_h, thumb_w))
        else:
            self.thumbs.extend(cv2.resize(g, self.config.thumb_size, interpolation=cv2.INTER_AREA) for g in gray)
        for frame_hsv, frame_gray in zip(hsv, gray):
            self.scores.append(content_score(self.previous_hsv, frame_hsv))
            self.previous_hsv = frame_hsv
            mean, std = cv2.meanStdDev(frame_gray)
            self.stats.append((mean[0, 0], std[0, 0]))

    def finish(self) -> FrameAnalysis:
        self.flush()
        w, h = self.config.thumb_size
        stats = np.array(self.stats, dtype=np.float32).reshape(-1, 2)
        return FrameAnalysis(
            fps=self.fps,
            cuts=find_cuts(np.array(self.scores), self.fps, self.config),
            luma=stats[:, 0],
            contrast=stats[:, 1],
            thumbs=np.stack(self.thumbs) if self.thumbs else np.zeros((0, h, w), np.uint8),
        )


def analyze_frames(frames: Iterable[np.ndarray], fps: float, config: DetectConfig) -> FrameAnalysis:
    """Run the cut detector and collect thumbnails, luma and contrast over RGB frames in decode order."""
    analyzer = _Analyzer(fps, config)
    for rgb in frames:
        analyzer.add(rgb)
    return analyzer.finish()


def split_shots(
    num_frames: int, cuts: list[int], transitions: list[Transition]
) -> list[tuple[int, int]]:
    """Frame ranges between cuts, with every transition frame removed."""
    in_shot = np.ones(num_frames, dtype=bool)
    for t in transitions:
        in_shot[t.start_frame : t.end_frame] = False
    shots = []
    for start, end in runs(in_shot):
        edges = [start, *(c for c in cuts if start < c < end), end]
        shots.extend(zip(edges, edges[1:]))
    return shots


def analysis_size(width: int, height: int, config: DetectConfig) -> tuple[int, int]:
    """Detection frame size: `analysis_width` wide, height rounded to whole thumbnail rows (a
    sliver of stretch is harmless to detection and lets one call shrink a batch to thumbnails)."""
    target_w, target_h = scaled_size(width, height, config.analysis_width)
    thumb_h = config.thumb_size[1]
    return target_w, max(thumb_h, round(target_h / thumb_h) * thumb_h)


def detect_shots(info: VideoInfo, config: DetectConfig, threads: int = 1) -> ShotDetection:
    """Decode the video once at analysis size and find its shots."""
    reader = open_reader(
        info.uri, info.decoder or "pyav", threads=threads, skip_deblocking=config.skip_deblocking, rotation=info.rotation
    )
    width, height = analysis_size(info.width, info.height, config)
    analysis = analyze_frames(reader.frames(width, height), info.fps, config)
    if reader.report.errors or reader.report.ended_early:
        log.warning(
            "%s: %d damaged packet(s) skipped%s", info.uri, len(reader.report.errors),
            f"; {reader.report.ended_early}" if reader.report.ended_early else "",
        )
    return detection_from_analysis(analysis, config, reader.report.errors, reader.report.damaged)


def detection_from_analysis(
    analysis: FrameAnalysis,
    config: DetectConfig,
    decode_errors: list[tuple[int, str]] | None = None,
    damaged: list[tuple[int, int]] | None = None,
) -> ShotDetection:
    damaged = damaged or []
    transitions = find_transitions(analysis.thumbs, analysis.luma, analysis.contrast, analysis.cuts, config)
    # A cut the detector places inside a transition is the transition itself, not a shot.
    cuts = [c for c in analysis.cuts if not any(t.start_frame <= c <= t.end_frame for t in transitions)]
    # Damage starts and ends a shot: a scene never joins pictures across lost data.
    cuts = sorted({*cuts, *(edge for span in damaged for edge in span)})
    shots = split_shots(analysis.num_frames, cuts, transitions)
    log.debug("%d cuts, %d transitions, %d shots", len(cuts), len(transitions), len(shots))
    return ShotDetection(
        fps=analysis.fps,
        num_frames=analysis.num_frames,
        shots=shots,
        cuts=cuts,
        transitions=transitions,
        analysis=analysis,
        decode_errors=list(decode_errors or []),
        damaged=damaged,
    )
