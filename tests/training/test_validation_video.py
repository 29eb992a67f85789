"""Transition control during training: validation videos generated from their prompts and cuts, and scored."""

from __future__ import annotations

import json

import av

from holocine_model import ShotLayout
from training.validation_video import cut_frames_of
from training_helpers import read_metrics, train


def test_cut_frames_come_back_from_latent_shot_ids():
    for num_frames, cuts in ((17, []), (65, [21, 41]), (81, [5, 77])):
        assert cut_frames_of(ShotLayout.from_cut_frames(num_frames, cuts).shot_ids[0]) == cuts


def test_training_logs_cut_accuracy_of_its_validation_videos(shards, tmp_path):
    # 33-frame bucket: the validation clips keep their cuts below frame 33 (21 for the first sample).
    train(tmp_path, f"{shards}/shard-*.tar", "optim.max_steps=2", "checkpoint.every=2", "validation.every=0",
          "validation.transition_every=2", "validation.num_samples=2", "validation.sample_steps=1",
          "data.bucket=[33,32,32]")
    rows = [row for row in read_metrics(tmp_path) if "cut_accuracy" in row]
    assert [row["step"] for row in rows] == [2]
    assert 0.0 <= rows[0]["cut_accuracy"] <= 1.0 and rows[0]["extra_cuts"] >= 0
    folder = tmp_path / "samples" / "transitions" / "step-00000002"
    score = json.loads((folder / "score.json").read_text())
    # The first two samples of the stored order: shot plans [21, 20, 24] and [17, 16] cut to 33 frames.
    assert [v["requested"] for v in score["per_video"]] == [[21], [17]]
    for video in score["per_video"]:
        with av.open(video["video"]) as container:
            assert sum(1 for _ in container.decode(video=0)) == 33
    assert score["found_cuts"] == round(rows[0]["cut_accuracy"] * 2)
