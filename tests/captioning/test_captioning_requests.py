"""Frame sampling and decoding, prompt loading, request building."""

import pytest
from captioning_helpers import SMALL_LIMITS
from PIL import Image

from captioning.config import CaptionerConfig
from captioning.frames import (
    SceneInput,
    data_url,
    decode_frames,
    image_from_data_url,
    resize,
    sample_indices,
    shot_frame_urls,
)
from captioning.prompts import load_prompts
from captioning.requests import global_request, joint_request, retry_request, shot_request
from captioning.schema import ShotDraft, max_answer_chars
from curation.types import Scene, SceneShot


def test_sample_indices():
    assert sample_indices(0, 16, 4) == [2, 6, 10, 14]
    assert sample_indices(37, 73, 1) == [55]
    assert sample_indices(10, 12, 4) == [10, 11]  # a short shot gives fewer, distinct frames
    assert all(37 <= i < 73 for i in sample_indices(37, 73, 7))


def test_decoded_frames_come_from_their_shot(scenes):
    scene = scenes[0]  # shots of red, green, blue
    frames = decode_frames(scene.video_path, [s for start, end in scene.shots for s in (start, end - 1)])
    expected = [(220, 40, 40), (40, 200, 60), (40, 60, 220)]
    for (start, end), colour in zip(scene.shots, expected):
        for index in (start, end - 1):  # first and last frame of each shot, across the cuts
            pixel = frames[index].getpixel((64, 8))
            assert all(abs(a - b) < 24 for a, b in zip(pixel, colour)), (index, pixel, colour)
    with pytest.raises(ValueError, match="past the end"):
        decode_frames(scene.video_path, [scene.shots[-1][1] + 5])


def test_shot_frame_urls_and_resize(scenes):
    urls = shot_frame_urls(scenes[3], frames_per_shot=2, max_side=64)
    assert [len(u) for u in urls] == [2, 2, 2, 2]
    image = image_from_data_url(urls[0][0])
    assert image.size == (64, 64)
    assert resize(Image.new("RGB", (640, 360)), 448).size == (448, 252)
    assert resize(Image.new("RGB", (100, 50)), 448).size == (100, 50)  # never enlarged
    assert image_from_data_url(data_url(Image.new("RGB", (8, 4), (0, 0, 255)))).size == (8, 4)


def test_scene_input_from_curation_scene():
    shots = [SceneShot(0, 0, 37, tuple(range(37))), SceneShot(1, 37, 81, tuple(range(40, 84)))]
    scene = Scene("vid-0000", "vid", "file:///a.mp4", 0, "short", 16.0, 81, 16.0, shots, clip_path="/c.mp4")
    assert SceneInput.from_scene(scene) == SceneInput("vid-0000", "/c.mp4", ((0, 37), (37, 81)))
    scene.clip_path = None
    with pytest.raises(ValueError):
        SceneInput.from_scene(scene)


def test_prompts_are_versioned(tmp_path):
    prompts = load_prompts("v1")
    assert prompts.version == "v1"
    with pytest.raises(FileNotFoundError):
        load_prompts("v999")
    with pytest.raises(KeyError):
        prompts.render("joint")  # placeholders without values are an error, not silent text


def test_joint_request():
    prompts = load_prompts()
    urls = [["data:image/jpeg;base64,AA==", "data:image/jpeg;base64,AB=="], ["data:image/jpeg;base64,AC=="]]
    request = joint_request(urls, prompts, SMALL_LIMITS)
    system, user = request.messages
    assert system["role"] == "system" and isinstance(system["content"], str)
    parts = user["content"]
    assert [p["text"] for p in parts if p["type"] == "text"][:2] == ["Shot 1:", "Shot 2:"]
    assert [p["image_url"]["url"] for p in parts if p["type"] == "image_url"] == [u for shot in urls for u in shot]
    assert "exactly 2 objects" in parts[-1]["text"] and "$" not in parts[-1]["text"]
    assert request.schema["anyOf"][0]["properties"]["shots"]["minItems"] == 2
    assert request.max_tokens == max_answer_chars(2, SMALL_LIMITS)
    assert joint_request(urls, prompts, SMALL_LIMITS, max_tokens=50).max_tokens == 50


def test_two_pass_requests_and_retry():
    prompts = load_prompts()
    shot = shot_request(["data:image/jpeg;base64,AA=="], 2, 3, prompts, SMALL_LIMITS)
    assert "shot 2 of a 3-shot scene" in shot.messages[1]["content"][-1]["text"]
    assert set(shot.schema["properties"]) == {"caption", "camera"}
    drafts = [ShotDraft(caption="Close-up of a man.", camera="close-up"), ShotDraft(caption="A door.", camera="wide")]
    request = global_request(drafts, [["u1"], ["u2"]], prompts, SMALL_LIMITS)
    assert "Shot 2: A door. (camera: wide)" in request.messages[1]["content"][-1]["text"]
    with pytest.raises(ValueError):
        global_request(drafts, [["u1"]], prompts, SMALL_LIMITS)
    again = retry_request(request, "{bad", "the answer is not valid JSON", prompts)
    assert again.messages[:2] == request.messages
    assert again.messages[2] == {"role": "assistant", "content": "{bad"}
    assert "the answer is not valid JSON" in again.messages[3]["content"]
    assert again.schema == request.schema


def test_config_from_dict():
    config = CaptionerConfig.from_dict(
        {"engine": "openai", "model": "m", "limits": {"shot_chars": 99}, "openai": {"concurrency": 2}}
    )
    assert config.limits.shot_chars == 99 and config.openai.concurrency == 2
    assert CaptionerConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError):
        CaptionerConfig(strategy="three_pass")
    with pytest.raises(TypeError):
        CaptionerConfig.from_dict({"openai": {"api_key": "literal keys are not accepted"}})
