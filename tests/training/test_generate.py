"""Generation on CPU with tiny random weights: cut handling, the mp4 and the JSON of what was asked."""

from __future__ import annotations

import json
import logging

import av
import pytest
import torch

from curation.prompt_format import render_prompt
from holocine_model import WanDiT, get_config, save_checkpoint
from training.generate import GenerateConfig, Generator, main, nearest_4k_plus_1, read_prompt, resolve_cuts

PROMPT = render_prompt("abstract blue patterns drifting.", ["red moving textures", "green textures", "wide orange"])
TINY = dict(preset="tiny", encoders="tiny", num_frames=21, height=32, width=32, steps=2)


def frame_count(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_off_grid_cuts_move_to_the_nearest_4k_plus_1_with_a_warning(caplog):
    # Ties go to the even k, as Python's round in HoloCine's script: 3 -> 1, 7 -> 9.
    assert [nearest_4k_plus_1(f) for f in (1, 2, 3, 4, 5, 6, 7, 37, 40)] == [1, 1, 1, 5, 5, 5, 9, 37, 41]
    with caplog.at_level(logging.WARNING, "training.generate"):
        assert resolve_cuts(81, 3, cut_frames=[37, 73]) == [37, 73]
        assert not caplog.records
        assert resolve_cuts(81, 3, cut_frames=[40, 70]) == [41, 69]
    assert "moved to the latent grid" in caplog.text
    assert resolve_cuts(81, 3, frames_per_shot=[37, 36, 8]) == [37, 73]
    # No cuts: equal shots, as HoloCine's helper computes them for its 241-frame, 6-shot example.
    assert resolve_cuts(241, 6) == [41, 81, 121, 161, 201]
    with pytest.raises(ValueError, match="sum to"):
        resolve_cuts(81, 2, frames_per_shot=[40, 40])


def test_generate_cli_writes_the_asked_frames_and_what_was_asked(tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "dit.safetensors"
    save_checkpoint(WanDiT(get_config("tiny")), checkpoint)
    out = tmp_path / "video.mp4"
    main(["--checkpoint", str(checkpoint), "--preset", "tiny", "--encoders", "tiny", "--prompt", PROMPT,
          "--frames", "21", "--cuts", "6,13", "--height", "32", "--width", "48", "--steps", "2", "--out", str(out)])
    assert frame_count(out) == 21
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (48, 32)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["shot_cut_frames"] == [5, 13] and record["requested_cuts"] == [6, 13]
    assert record["prompt"] == PROMPT and record["config"]["checkpoint"] == str(checkpoint)
    assert len(record["shot_spans"]) == 3 and record["global_span"][0] == 0


def test_a_shard_sample_json_gives_prompt_frames_and_cuts(tmp_path):
    sample = tmp_path / "clip-0000.json"
    sample.write_text(json.dumps({"key": "clip-0000", "prompt": PROMPT, "num_frames": 17, "shot_cut_frames": [5, 9]}))
    out = tmp_path / "from-sample.mp4"
    main(["--preset", "tiny", "--prompt", str(sample), "--height", "32", "--width", "32", "--steps", "1",
          "--out", str(out)])
    assert frame_count(out) == 17
    assert json.loads(out.with_suffix(".json").read_text())["shot_cut_frames"] == [5, 9]


def test_frames_per_shot_set_the_length_and_the_cuts(tmp_path):
    out = tmp_path / "shots.mp4"
    main(["--preset", "tiny", "--prompt", PROMPT, "--frames-per-shot", "9,4,8", "--height", "32", "--width", "32",
          "--steps", "1", "--out", str(out)])
    assert frame_count(out) == 21
    assert json.loads(out.with_suffix(".json").read_text())["shot_cut_frames"] == [9, 13]


def test_checkpoints_load_from_the_wan_and_the_diffusers_layouts(tmp_path):
    torch.manual_seed(2)
    model = WanDiT(get_config("tiny"))
    save_checkpoint(model, tmp_path / "wan.safetensors", layout="wan")
    save_checkpoint(model, tmp_path / "diffusers.safetensors", layout="diffusers")
    for name in ("wan", "diffusers"):
        loaded = Generator(GenerateConfig(**TINY, checkpoint=str(tmp_path / f"{name}.safetensors"))).model
        torch.testing.assert_close(loaded.state_dict(), model.state_dict(), rtol=0, atol=0)


def test_a_long_prompt_string_is_not_taken_for_a_file():
    long = render_prompt("a very long global caption " * 40, ["a shot"])
    assert read_prompt(long) == (long, {})


def test_a14b_low_noise_expert_runs_below_the_boundary(tmp_path):
    torch.manual_seed(1)
    low = tmp_path / "low.safetensors"
    save_checkpoint(WanDiT(get_config("tiny")), low)
    config = GenerateConfig(**TINY, guidance=1.0, boundary=0.875)
    single = Generator(config)
    mixture = Generator(GenerateConfig(**TINY, guidance=1.0, boundary=0.875, low_noise_checkpoint=str(low)))
    # Both experts start from the same high-noise weights (same seed, no checkpoint); only the low one differs.
    torch.testing.assert_close(mixture.model.state_dict(), single.model.state_dict())
    calls = {"high": 0, "low": 0}
    mixture.model.register_forward_hook(lambda *_: calls.__setitem__("high", calls["high"] + 1))
    mixture.low_noise_model.register_forward_hook(lambda *_: calls.__setitem__("low", calls["low"] + 1))
    mixture(PROMPT, tmp_path / "mixture.mp4")
    assert calls == {"high": 1, "low": 1}  # 2 steps at shift 5: timesteps 1000 and 833


def test_a_prompt_with_more_shots_than_the_video_keeps_every_span(tmp_path, caplog):
    generator = Generator(GenerateConfig(**TINY, holocine_compat=True))
    seen = []
    generator.model.register_forward_pre_hook(lambda module, args: seen.append(args[4]))
    with caplog.at_level(logging.WARNING, "training.generate"):
        record = generator(PROMPT, tmp_path / "two.mp4", cut_frames=[9])
    assert "describes 3 shots, the video has 2" in caplog.text
    assert record.num_shots == 2 and len(record.shot_spans) == 3
    layout = seen[0]
    assert layout.shot_spans.shape == (1, 3, 2) and layout.shot_ids.max() == 1
    with pytest.raises(ValueError, match="the video has 4 shots, the prompt describes 3"):
        generator(PROMPT, tmp_path / "four.mp4", cut_frames=[5, 9, 13])
