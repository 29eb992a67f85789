import json
import subprocess
import sys

import numpy as np
import pytest
from scenedetect import FrameTimecode
from scenedetect.detectors import AdaptiveDetector

from curation.config import DetectConfig, ProbeConfig
from curation.probe import probe_video
from curation.shots import adaptive_cuts, detect_shots

# Where the cuts of bikes.mp4 are (checked by eye, frame by frame).
BIKES_CUTS = [30, 76, 137, 187, 242]


def _overlaps(shot, span):
    return shot[0] < span[1] and span[0] < shot[1]


def test_synthetic_hard_cuts_exact_and_no_transition_frame_in_a_shot(multishot):
    path, truth = multishot
    detection = detect_shots(probe_video(path), DetectConfig())
    assert detection.num_frames == truth.num_frames
    starts = {s for s, _ in detection.shots}
    ends = {e for _, e in detection.shots}
    for cut in truth.cuts:
        assert cut in starts and cut in ends, f"hard cut at {cut} not found exactly: {detection.shots}"
    for start, end, kind in truth.transitions:
        for shot in detection.shots:
            assert not _overlaps(shot, (start, end)), f"{kind} frames {start}-{end} inside shot {shot}"
    # Every true shot is still found, as one shot that keeps most of its frames.
    for start, end in truth.shots:
        covering = [s for s in detection.shots if _overlaps(s, (start, end))]
        assert len(covering) == 1, f"true shot {start}-{end} split into {covering}"
        kept = min(end, covering[0][1]) - max(start, covering[0][0])
        assert kept >= 0.6 * (end - start)
    kinds = sorted(t.kind for t in detection.transitions)
    assert kinds == ["dissolve", "fade"]
    # Each transition is found where it is, give or take a few frames of margin.
    for found, (start, end, kind) in zip(detection.transitions, truth.transitions):
        assert found.kind == kind
        assert start - 4 <= found.start_frame <= start and end <= found.end_frame <= end + 4, (found, start, end)


@pytest.mark.parametrize("detector", ["adaptive", "content"])
def test_bikes_cuts_found_and_nothing_else(bikes_path, detector):
    detection = detect_shots(probe_video(bikes_path), DetectConfig(detector=detector))
    edges = {s for s, _ in detection.shots} | {e for _, e in detection.shots}
    boundaries = sorted(edges - {0, detection.num_frames})
    assert len(boundaries) == len(BIKES_CUTS), boundaries
    for found, expected in zip(boundaries, BIKES_CUTS):
        assert abs(found - expected) <= 1
    assert detection.transitions == []


def test_decoders_and_deblocking_agree_on_shots(bikes_path):
    info = probe_video(bikes_path, ProbeConfig(decoder="decord"))
    assert info.decoder == "decord"  # an mp4 whose frame count decord reproduces
    by_decord = detect_shots(info, DetectConfig()).shots
    info.decoder = "pyav"
    assert detect_shots(info, DetectConfig()).shots == by_decord
    assert detect_shots(info, DetectConfig(skip_deblocking=False)).shots == by_decord


def test_shots_cli_prints_json(bikes_path):
    out = subprocess.run(
        [sys.executable, "-m", "curation", "shots", bikes_path, "--detector", "adaptive"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(out)
    assert result["video"] == bikes_path
    assert result["num_frames"] == 250 and result["fps"] == 25.0
    assert [s["start_frame"] for s in result["shots"]][1:] == BIKES_CUTS
    assert all(s["end_frame"] > s["start_frame"] for s in result["shots"])


class _ScoredAdaptiveDetector(AdaptiveDetector):
    """PySceneDetect's own AdaptiveDetector, fed a given score per frame."""

    next_score = 0.0

    def _calculate_frame_score(self, timecode, frame_img):
        return self.next_score


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_adaptive_cuts_match_pyscenedetect(seed):
    rng = np.random.default_rng(seed)
    scores = rng.gamma(2.0, 3.0, size=2000)
    scores[rng.choice(2000, 60, replace=False)] += rng.uniform(10, 80, size=60)  # cuts, some close together
    scores[0] = 0.0
    scores[500:520] = 0.0  # a frozen stretch: zero neighbour mean
    scores[510] = 40.0
    config = DetectConfig()
    reference = _ScoredAdaptiveDetector(
        adaptive_threshold=config.adaptive_threshold,
        min_scene_len=config.min_scene_len,
        min_content_val=config.min_content_val,
    )
    expected = []
    for index, score in enumerate(scores):
        reference.next_score = float(score)
        expected.extend(t.frame_num for t in reference.process_frame(FrameTimecode(index, 24.0), None))
    assert expected, "the sequence has cuts"
    assert adaptive_cuts(scores, config) == expected
