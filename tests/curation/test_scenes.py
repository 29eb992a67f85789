import pytest

from curation.config import SceneConfig
from curation.scenes import assemble_scenes, contiguous_runs
from curation.types import Shot, VideoInfo


def _shots(lengths, fps, kept=None, gap=0):
    shots, start = [], 0
    for i, length in enumerate(lengths):
        shot = Shot("vid", i, start, start + length, fps)
        if kept is not None:
            shot.kept = kept[i]
        shots.append(shot)
        start += length + gap
    return shots


def _info(fps):
    return VideoInfo(video_id="vid", uri="x.mp4", fps=fps, num_frames=10**6, width=1920, height=1080)


@pytest.mark.parametrize("fps", [12.0, 16.0, 23.976, 25.0, 30.0, 60.0])
@pytest.mark.parametrize("lengths_s", [[2.1, 1.7, 3.3, 2.2, 4.0, 1.3, 2.9, 5.0] * 3, [20.0, 1.5, 30.0, 2.5, 70.0]])
def test_scenes_fill_tier_exactly_with_cuts_on_latent_grid(fps, lengths_s):
    shots = _shots([round(s * fps) for s in lengths_s], fps)
    config = SceneConfig()
    scenes = assemble_scenes(_info(fps), shots, config)
    assert scenes, "these shots make at least one scene"
    for scene in scenes:
        assert scene.num_frames == config.tiers[scene.tier]
        assert 2 <= scene.num_shots <= 13
        assert scene.shots[0].start_frame == 0 and scene.shots[-1].end_frame == scene.num_frames
        for before, after in zip(scene.shots, scene.shots[1:]):
            assert before.end_frame == after.start_frame
            assert after.start_frame % 4 == 1, "cut off the latent grid"
        for scene_shot in scene.shots:
            source = shots[scene_shot.shot_index]
            frames = scene_shot.source_frames
            assert len(frames) == scene_shot.num_frames >= config.min_shot_frames
            assert source.start_frame <= frames[0] and frames[-1] < source.end_frame
            assert all(a <= b for a, b in zip(frames, frames[1:]))
            # Resampling keeps real time: one output frame advances fps/16 source frames.
            assert frames[-1] - frames[0] == pytest.approx((len(frames) - 1) * fps / 16, abs=1)
        # Middle shots lose at most 3 output frames, at the cut; the first and last are trimmed
        # at their outer ends only.
        indices = [s.shot_index for s in scene.shots]
        assert indices == list(range(indices[0], indices[0] + len(indices)))
        for scene_shot in scene.shots[1:-1]:
            available = int((shots[scene_shot.shot_index].num_frames - 1) / (fps / 16)) + 1
            assert available - scene_shot.num_frames <= 3
        first_source = shots[scene.shots[0].shot_index]
        assert scene.shots[0].source_frames[-1] >= first_source.end_frame - 1 - fps / 16 * 4
        assert scene.shots[-1].source_frames[0] == shots[scene.shots[-1].shot_index].start_frame
    keys = [s.key for s in scenes]
    assert len(set(keys)) == len(keys)


def test_scenes_use_only_contiguous_kept_shots():
    shots = _shots([40] * 10, 16.0, kept=[True, True, False, True, True, True, False, True, True, True])
    runs = contiguous_runs(shots, 16.0, max_gap_s=2.0)
    assert [[s.shot_index for s in run] for run in runs] == [[0, 1], [3, 4, 5], [7, 8, 9]]
    scenes = assemble_scenes(_info(16.0), shots, SceneConfig(tiers={"5s": 81}))
    for scene in scenes:
        assert all(shots[s.shot_index].kept for s in scene.shots)


def test_long_gap_breaks_contiguity():
    shots = _shots([40, 40, 40], 16.0, gap=40)  # 2.5 s of transition frames between shots
    assert len(contiguous_runs(shots, 16.0, max_gap_s=2.0)) == 3
    assert len(contiguous_runs(shots, 16.0, max_gap_s=3.0)) == 1


def test_tier_lengths_must_be_4k_plus_1():
    with pytest.raises(ValueError, match="4k\\+1"):
        SceneConfig(tiers={"bad": 80})
