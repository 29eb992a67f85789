"""The vllm engine's rows and results (vLLM itself cannot be installed here)."""

import json

import pytest
from captioning_helpers import SMALL_LIMITS

from captioning.captioner import build_joint_request, judge_answer
from captioning.config import CaptionerConfig, VllmConfig
from captioning.engines.vllm_engine import VllmEngine, postprocess, preprocess, replies_from_rows, request_row
from captioning.prompts import load_prompts
from captioning.requests import ChatRequest

REQUEST = ChatRequest(
    messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AA=="}},
                                           {"type": "text", "text": "Shot 1:"}]}],
    schema={"type": "object", "properties": {"a": {"type": "string"}}},
    max_tokens=77,
    temperature=0.3,
)


def test_rows_round_trip_through_pre_and_postprocess():
    row = request_row(REQUEST, 5)
    # Flat scalar columns only, so Arrow never has to unify ragged nested structs across rows.
    assert all(isinstance(value, (int, float, str)) for value in row.values())
    prepared = preprocess(row)
    assert prepared["messages"] == REQUEST.messages
    assert prepared["sampling_params"] == {
        "temperature": 0.3,
        "max_tokens": 77,
        "structured_outputs": {"json": json.dumps(REQUEST.schema)},
    }
    out = postprocess({**prepared, "generated_text": '{"a": "b"}'})
    assert out == {"request_index": 5, "text": '{"a": "b"}', "error": None}
    failed = postprocess({**prepared, "generated_text": "", "__inference_error__": "CUDA OOM"})
    assert failed["error"] == "CUDA OOM"


def test_replies_are_put_back_in_order_and_none_is_lost():
    rows = [
        {"request_index": 2, "text": "c", "error": None},
        {"request_index": 0, "text": "", "error": "engine died"},
    ]
    replies = replies_from_rows(rows, 4)
    assert [r.text for r in replies] == [None, None, "c", None]
    assert replies[0].error == "vllm: engine died"
    assert replies[1].error == replies[3].error == "vllm: no output row for this request"


def test_processor_config():
    pytest.importorskip("ray.data.llm")
    engine = VllmEngine("/models/qwen2.5-vl-7b", VllmConfig(engine_kwargs={"max_model_len": 8192}, batch_size=8))
    config = engine.processor_config()
    assert config.model_source == "/models/qwen2.5-vl-7b"
    assert config.batch_size == 8 and config.engine_kwargs["max_model_len"] == 8192
    assert config.should_continue_on_error


def test_row_wise_caption_path(scenes):
    """What a Ray job does per scene row: build the request, later judge the generated text."""
    config = CaptionerConfig(engine="vllm", model="m", frames_per_shot=1, max_side=32, limits=SMALL_LIMITS)
    scene = scenes[2]
    row = request_row(build_joint_request(scene, config, load_prompts()), 0)
    assert len(preprocess(row)["messages"][1]["content"]) == 2 * 2 + 1  # 2 shots x (label + frame) + prompt
    info = {"engine": "vllm", "model": "m", "prompt_version": "v1"}
    shot = {"caption": "Close-up of a cup.", "camera": "close-up", "characters": []}
    text = json.dumps({"characters": {}, "global_caption": "A table.", "shots": [shot, shot]})
    result = judge_answer(scene, text, config, info)
    assert result.ok and result.sample["shot_cut_frames"] == [9]
    short = judge_answer(scene, json.dumps({"characters": {}, "global_caption": "A.", "shots": [shot]}), config, info)
    assert not short.ok and short.sample is None and "shots" in short.error
