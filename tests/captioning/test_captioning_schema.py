"""Validation and HoloCine rendering on hand-written answers."""

import copy
import json

import jsonschema
import pytest

from captioning.render import caption_prompt, global_text, holocine_prompt, sample_fields
from captioning.schema import (
    CaptionError,
    Limits,
    caption_schema,
    max_answer_chars,
    parse_caption,
    parse_shot_draft,
)

LIMITS = Limits(max_characters=3, global_chars=200, shot_chars=120, camera_chars=40, description_chars=60)

GOOD = {
    "characters": {"[character1]": "a woman in a red coat", "[character2]": "a grey-haired man"},
    "global_caption": "A rainy street at night; [character1] meets [character2].",
    "shots": [
        {"caption": "Wide shot of [character1] walking in the rain.", "camera": "wide shot, slow pan left",
         "characters": ["[character1]"]},
        {"caption": "Close-up of [character2] looking up.", "camera": "close-up, static",
         "characters": ["[character2]", "[character2]"]},
        {"caption": "Medium shot of the two under a lamp.", "camera": "medium shot, static",
         "characters": ["[character1]", "[character2]"]},
    ],
}


def answer(**changes):
    data = copy.deepcopy(GOOD)
    for path, value in changes.items():
        target = data
        *parents, last = path.split("__")
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        target[int(last) if isinstance(target, list) else last] = value
    return json.dumps(data)


def test_good_answer_parses_and_dedupes_tags():
    caption = parse_caption(json.dumps(GOOD), 3, LIMITS)
    assert caption.characters["[character1]"] == "a woman in a red coat"
    assert [shot.characters for shot in caption.shots] == [
        ("[character1]",), ("[character2]",), ("[character1]", "[character2]")
    ]


def test_schema_is_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(caption_schema(3, LIMITS))


@pytest.mark.parametrize(
    "text, needle",
    [
        ("not json", "not valid JSON"),
        (json.dumps({**GOOD, "shots": GOOD["shots"][:2]}), "shots"),  # too few shots
        (json.dumps({**GOOD, "shots": GOOD["shots"] + GOOD["shots"][:1]}), "shots"),  # too many
        (answer(shots__1__caption=""), "shots[1].caption"),  # empty caption
        (answer(shots__1__caption="   "), "shots[1].caption"),  # blank caption
        (answer(global_caption=""), "global_caption"),
        (answer(shots__0__characters=["[character3]"]), "shots[0].characters[0]"),  # undefined tag in list
        (answer(shots__2__caption="Close-up of [character3]."), "shots[2].caption"),  # undefined tag in text
        (answer(global_caption="[character3] waits."), "global_caption"),
        (answer(shots__0__caption="x" * 121), "shots[0].caption"),  # over the length caps
        (answer(global_caption="x" * 201), "global_caption"),
        (answer(shots__0__camera="y" * 41), "shots[0].camera"),
        (answer(characters={"[character1]": "z" * 61, "[character2]": "a man"}), "characters"),
        # Characters must be numbered from 1: [character2] alone leaves [character2] undefined.
        (answer(characters={"[character2]": "a man"}), "characters"),
        (answer(characters={f"[character{i}]": "a" for i in range(1, 5)}), "at most 3"),
        # Markers that would break HoloCine's prompt format, and line breaks.
        (answer(shots__1__caption="A door. [shot cut] A hall."), "shots[1].caption"),
        (answer(global_caption="Night.\nRain."), "global_caption"),
        (answer(shots__0__camera="[character1]"), "shots[0].camera"),
        (json.dumps({**GOOD, "extra": 1}), "extra"),
    ],
)
def test_rejections(text, needle):
    with pytest.raises(CaptionError) as error:
        parse_caption(text, 3, LIMITS)
    assert needle in str(error.value)


def test_length_cap_counts_a_tag_as_one():
    # 119 letters plus a 12-character tag: 120 units, inside the 120 cap.
    parse_caption(answer(shots__0__caption="x" * 119 + "[character1]"), 3, LIMITS)


def test_shot_draft():
    draft = parse_shot_draft('{"caption": "Close-up of a man.", "camera": "close-up, static"}', LIMITS)
    assert draft.camera == "close-up, static"
    with pytest.raises(CaptionError):
        parse_shot_draft('{"caption": "Close-up of [character1].", "camera": "static"}', LIMITS)


def test_answer_bound_covers_the_longest_answer():
    longest = {
        "characters": {f"[character{i}]": "d" * LIMITS.description_chars for i in range(1, 4)},
        "global_caption": "g" * LIMITS.global_chars,
        "shots": [
            {"caption": "c" * LIMITS.shot_chars, "camera": "m" * LIMITS.camera_chars,
             "characters": [f"[character{i}]" for i in range(1, 4)]}
            for _ in range(3)
        ],
    }
    text = json.dumps(longest)  # json.dumps' ", " and ": " separators, as xgrammar's compact form
    parse_caption(text, 3, LIMITS)
    assert len(text) <= max_answer_chars(3, LIMITS)


# HoloCine's README, "Choice 2: Raw String Input" (the format must be exact).
HOLOCINE_EXAMPLE = (
    "[global caption] The scene features a young painter, [character1], with paint-smudged cheeks and intense, "
    "focused eyes. Her hair is tied up messily. The setting is a bright, sun-drenched art studio with large windows, "
    "canvases, and the smell of oil paint. This scene contains 6 shots. [per shot caption] Medium shot of "
    "[character1] standing back from a large canvas, brush in hand, critically observing her work. [shot cut] "
    "Close-up of her hand holding the brush, dabbing it thoughtfully onto a palette of vibrant colors. [shot cut] "
    "Extreme close-up of her eyes, narrowed in concentration as she studies the canvas. [shot cut] Close-up on the "
    "canvas, showing a detailed, textured brushstroke being slowly applied. [shot cut] Medium close-up of "
    "[character1]'s face, a small, satisfied smile appears as she finds the right color. [shot cut] "
    "Over-the-shoulder shot showing her add a final, delicate highlight to the painting."
)


def test_holocine_prompt_matches_the_published_example():
    head, shots = HOLOCINE_EXAMPLE.split(" [per shot caption] ")
    global_caption = head.removeprefix("[global caption] ").removesuffix(" This scene contains 6 shots.")
    shot_captions = shots.split(" [shot cut] ")
    assert holocine_prompt(global_caption, shot_captions) == HOLOCINE_EXAMPLE
    # A shot count the VLM wrote itself is replaced by the true one, not repeated.
    wrong = global_caption + " This scene contains 2 shots."
    assert holocine_prompt(wrong, shot_captions) == HOLOCINE_EXAMPLE


def test_render_and_sample_fields():
    caption = parse_caption(json.dumps(GOOD), 3, LIMITS)
    assert global_text(caption) == (
        "[character1] is a woman in a red coat. [character2] is a grey-haired man. "
        "A rainy street at night; [character1] meets [character2]."
    )
    prompt = caption_prompt(caption)
    assert prompt == (
        f"[global caption] {global_text(caption)} This scene contains 3 shots. [per shot caption] "
        "Wide shot of [character1] walking in the rain. [shot cut] Close-up of [character2] looking up. "
        "[shot cut] Medium shot of the two under a lamp."
    )
    info = {"engine": "e", "model": "m", "prompt_version": "v1"}
    sample = sample_fields(caption, [(0, 37), (37, 73), (73, 121)], info)
    assert sample["shot_cut_frames"] == [37, 73]
    assert [(s["start_frame"], s["end_frame"]) for s in sample["shots"]] == [(0, 37), (37, 73), (73, 121)]
    assert sample["shots"][1]["characters"] == ["[character2]"]
    assert sample["prompt"] == prompt and sample["captioner"] == info
    json.dumps(sample)  # the shard writer serialises it as is
    with pytest.raises(ValueError):
        sample_fields(caption, [(0, 37), (37, 73)], info)
