"""Shot-cut accuracy against synthetic multi-shot videos whose cuts are known."""

from __future__ import annotations

import json

import pytest

from curation.synthetic import make_multishot_video
from training.evaluate import EvalConfig, main, match_cuts, read_requests, score_videos


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Two synthetic videos at 16 fps: cuts at 24 and 44, and at 30."""
    folder = tmp_path_factory.mktemp("generated")
    truths = {}
    for name, lengths, seed in (("three", [24, 20, 28], 1), ("two", [30, 30], 2)):
        truth = make_multishot_video(folder / f"{name}.mp4", lengths, width=160, height=96, fps=16, seed=seed)
        truths[name] = truth.cuts
    assert truths == {"three": [24, 44], "two": [30]}
    return folder, truths


def test_match_is_one_to_one_nearest_first():
    assert match_cuts([10, 12], [11], 4) == [(10, 11)]
    assert match_cuts([10, 20], [13, 19], 4) == [(10, 13), (20, 19)]
    assert match_cuts([10], [15], 4) == []


def test_every_requested_cut_found_is_a_perfect_score(videos):
    folder, truths = videos
    score = score_videos([(folder / f"{name}.mp4", cuts) for name, cuts in truths.items()])
    assert (score.requested_cuts, score.found_cuts, score.extra_cuts) == (3, 3, 0)
    assert score.cut_accuracy == 1.0 and score.exact_videos == 1.0
    three = score.per_video[0]
    assert three.detected == [24, 44] and three.matched == [(24, 24), (44, 44)]


def test_cuts_within_the_tolerance_count_and_farther_ones_do_not(videos):
    folder, _ = videos
    near = score_videos([(folder / "three.mp4", [27, 41])], EvalConfig(tolerance=4))
    assert near.cut_accuracy == 1.0
    far = score_videos([(folder / "three.mp4", [29, 44])], EvalConfig(tolerance=4))
    assert far.cut_accuracy == 0.5 and far.per_video[0].missing == [29] and far.per_video[0].extra == [24]


def test_missing_and_extra_cuts(videos):
    folder, _ = videos
    score = score_videos([(folder / "three.mp4", [24]),        # asked 1 cut, the video has 2: one extra
                          (folder / "two.mp4", [16, 30, 45])])  # asked 3, the video has 1: two missing
    three, two = score.per_video
    assert three.missing == [] and three.extra == [44]
    assert two.missing == [16, 45] and two.extra == []
    assert (score.requested_cuts, score.found_cuts, score.extra_cuts) == (4, 2, 1)
    assert score.cut_accuracy == 0.5 and score.exact_videos == 0.0


def test_an_unreadable_video_is_a_failed_video_not_a_crash(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    score = score_videos([(bad, [17])])
    assert score.failed_videos == 1 and score.cut_accuracy == 0.0 and score.per_video[0].error


def test_cli_reads_a_folder_of_records_or_a_jsonl(videos, tmp_path, capsys):
    folder, truths = videos
    (folder / "three.json").write_text(json.dumps({"video": "three.mp4", "shot_cut_frames": [24, 44]}))
    (folder / "two.json").write_text(json.dumps({"key": "two", "shot_cut_frames": [30, 50]}))
    assert [(p.name, c) for p, c in read_requests(folder)] == [("three.mp4", [24, 44]), ("two.mp4", [30, 50])]
    out = tmp_path / "score.json"
    main([str(folder), "--out", str(out)])
    summary = json.loads(capsys.readouterr().out)
    assert summary["requested_cuts"] == 4 and summary["found_cuts"] == 3 and summary["cut_accuracy"] == 0.75
    assert json.loads(out.read_text())["per_video"][1]["missing"] == [50]
    jsonl = folder / "cuts.jsonl"
    jsonl.write_text(json.dumps({"video": "two.mp4", "cuts": [30]}) + "\n")
    main([str(jsonl)])
    assert json.loads(capsys.readouterr().out)["cut_accuracy"] == 1.0
