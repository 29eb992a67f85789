"""The transformers engine end to end on the tiny VLM, with and without constrained decoding."""

import dataclasses
import json

import pytest
from captioning_helpers import SMALL_LIMITS

from captioning.captioner import Captioner
from captioning.config import CaptionerConfig, TransformersConfig
from captioning.frames import SceneInput
from captioning.schema import CaptionError, caption_schema, parse_caption

xgr = pytest.importorskip("xgrammar")

SHARD_KEYS = {"global_caption", "characters", "shots", "shot_cut_frames", "prompt", "captioner"}


def make_config(model, **changes):
    base = CaptionerConfig(
        engine="transformers",
        model=model,
        frames_per_shot=2,
        limits=SMALL_LIMITS,
        # Sampling at temperature 1 lets a random model wander: the grammar alone keeps it valid.
        temperature=1.0,
        transformers=TransformersConfig(device="cpu", batch_size=4),
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def engine(tiny_model):
    from captioning.engines.transformers_engine import TransformersEngine

    return TransformersEngine(tiny_model, TransformersConfig(device="cpu", batch_size=4))


@pytest.mark.parametrize("strategy", ["joint", "two_pass"])
def test_constrained_answers_all_validate(tiny_model, engine, scenes, strategy):
    config = make_config(tiny_model, strategy=strategy)
    results = Captioner(config, engine=engine).caption(scenes)
    assert [r.key for r in results] == [s.key for s in scenes]
    for scene, result in zip(scenes, results):
        assert result.ok, result.error
        # Every answer validated at the first try: per scene one request (joint) or shots + 1 (two-pass).
        assert result.tries == (1 if strategy == "joint" else len(scene.shots) + 1)
        sample = result.sample
        assert set(sample) == SHARD_KEYS
        assert [(s["start_frame"], s["end_frame"]) for s in sample["shots"]] == list(scene.shots)
        assert sample["shot_cut_frames"] == [start for start, _ in scene.shots[1:]]
        assert sample["prompt"].startswith("[global caption] ")
        assert f" This scene contains {len(scene.shots)} shots. [per shot caption] " in sample["prompt"]
        assert sample["prompt"].count("[shot cut]") == len(scene.shots) - 1
        assert sample["captioner"] == {
            "engine": "transformers", "model": tiny_model, "prompt_version": "v1", "strategy": strategy
        }
        for shot in sample["shots"]:
            assert set(shot["characters"]) <= set(sample["characters"])
        json.dumps(sample)


def test_many_sampled_answers_validate(engine):
    """Many samples from a random model through every schema branch: none escapes the grammar."""
    from captioning.requests import ChatRequest

    requests = [
        ChatRequest(
            messages=[{"role": "user", "content": [{"type": "text", "text": f"caption {i}"}]}],
            schema=caption_schema(num_shots, SMALL_LIMITS),
            max_tokens=10_000,  # the grammar, not the cap, must end each answer
            temperature=2.0,
        )
        for i, num_shots in enumerate([1, 2, 3, 5] * 4)
    ]
    replies = engine.generate(requests)
    for request, reply in zip(requests, replies):
        num_shots = request.schema["anyOf"][0]["properties"]["shots"]["minItems"]
        parse_caption(reply.text, num_shots, SMALL_LIMITS)


def test_grammar_and_validator_agree(engine):
    """The schema's verdict is the same as decoding-time grammar acceptance, valid or not."""
    compiled = engine._grammar(caption_schema(2, SMALL_LIMITS))
    shot = {"caption": "Close-up of [character1].", "camera": "close-up", "characters": ["[character1]"]}
    good = {"characters": {"[character1]": "a man"}, "global_caption": "A room.", "shots": [shot, shot]}
    cases = [
        good,
        {**good, "shots": [shot]},
        {**good, "characters": {}},  # [character1] used but not defined
        {**good, "global_caption": ""},
        {**good, "global_caption": "x" * (SMALL_LIMITS.global_chars + 1)},
        {**good, "global_caption": "A [shot cut] B"},
    ]
    verdicts = []
    for case in cases:
        text = json.dumps(case)
        matcher = xgr.GrammarMatcher(compiled)
        grammar_ok = matcher.accept_string(text) and matcher.is_completed()
        try:
            parse_caption(text, 2, SMALL_LIMITS)
            schema_ok = True
        except CaptionError:
            schema_ok = False
        assert grammar_ok == schema_ok, text
        verdicts.append(schema_ok)
    assert verdicts == [True, False, False, False, False, False]


def test_replies_count_the_tokens_read_and_written(engine, scenes):
    from captioning.frames import shot_frame_urls
    from captioning.prompts import load_prompts
    from captioning.requests import joint_request

    # Scenes of 3 and 2 shots: prompts of different lengths, so the shorter is padded in a batch.
    long, short = (joint_request(shot_frame_urls(scene, 2, 64), load_prompts(), SMALL_LIMITS, max_tokens=6)
                   for scene in (scenes[0], scenes[2]))
    together = engine.generate([long, short])
    alone = engine.generate([long]) + engine.generate([short])
    assert [r.prompt_tokens for r in together] == [r.prompt_tokens for r in alone]  # padding is not read
    # Images are counted: the third shot's two frames alone are 2 x 4 tokens of the tiny model.
    assert together[0].prompt_tokens - together[1].prompt_tokens >= 2 * 4
    for reply in together + alone:
        assert 0 < reply.output_tokens <= 6
        decoded = engine.processor.tokenizer(reply.text, add_special_tokens=False)["input_ids"]
        assert len(decoded) <= reply.output_tokens


def test_unconstrained_answers_are_rejected_and_recorded(tiny_model, scenes, tmp_path):
    config = make_config(
        tiny_model, max_tries=2, max_tokens=40, transformers=TransformersConfig(device="cpu", constrained=False)
    )
    broken = SceneInput("broken", str(tmp_path / "missing.mp4"), ((0, 8),))
    results = Captioner(config).caption([scenes[1], broken, scenes[2]])
    assert [r.key for r in results] == ["scene1", "broken", "scene2"]
    for result in (results[0], results[2]):
        # A random model without a grammar writes noise: asked twice, then recorded as failed.
        assert not result.ok and result.sample is None and result.tries == 2
        assert result.error.startswith("rejected 2 answers; last: ")
    assert results[1].error.startswith("frames: ") and results[1].tries == 0


def test_a_failing_batch_becomes_errors_not_an_exception(engine):
    from captioning.requests import ChatRequest

    bad = ChatRequest(
        messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AA=="}}]}],
        schema=caption_schema(1, SMALL_LIMITS),
        max_tokens=8,
    )
    (reply,) = engine.generate([bad])
    assert reply.text is None and "UnidentifiedImageError" in reply.error


def test_scenes_without_a_clip_are_recorded_not_raised(engine, tiny_model, scenes):
    from curation.types import Scene, SceneShot

    no_clip = Scene("v-0001", "v", "file:///v.mp4", 1, "short", 16.0, 17, 16.0, [SceneShot(0, 0, 17, tuple(range(17)))])
    results = Captioner(make_config(tiny_model), engine=engine).caption([no_clip, scenes[1]])
    assert [r.key for r in results] == ["v-0001", "scene1"]
    assert results[0].error == "frames: scene v-0001 has no clip_path" and results[1].ok


def test_default_limits_compile_and_caps_are_exact(engine):
    """The default caps (hundreds of characters) compile for a long scene, and the grammar and the
    validator both accept a caption at exactly the cap and reject one character more."""
    from captioning.schema import Limits

    limits = Limits()
    compiled = engine._grammar(caption_schema(13, limits))
    shot = {"caption": "A shot.", "camera": "wide", "characters": []}
    for length, valid in [(limits.global_chars, True), (limits.global_chars + 1, False)]:
        text = json.dumps({"characters": {}, "global_caption": "x" * length, "shots": [shot] * 13})
        matcher = xgr.GrammarMatcher(compiled)
        assert (matcher.accept_string(text) and matcher.is_completed()) == valid
        if valid:
            parse_caption(text, 13, limits)
        else:
            with pytest.raises(CaptionError):
                parse_caption(text, 13, limits)
