"""The random-weight Qwen2.5-VL folder: real sizes, token ids, chat template, vision path, captioning.

Qwen2-VL's processor needs torchvision in transformers 5.x, so the tests that go through
``AutoProcessor`` (the engine, vLLM) skip without it; the rest load the parts that do not need it.
"""

import json

import pytest
import torch
from captioning_helpers import SMALL_LIMITS
from PIL import Image

from captioning.random_vlm import (
    IMAGE_PAD,
    VISION_END,
    VISION_START,
    build_random_qwen25_vl,
    build_tokenizer,
    model_config,
)

FRAME = (448, 252)  # width, height: a 16:9 frame at the captioner's max_side
# 252x448 is already a multiple of 28 and under 448*448 pixels: 18x32 patches, 2x2 merged per token.
FRAME_GRID = [1, 18, 32]
FRAME_TOKENS = 18 * 32 // 4
IMAGE_PART = VISION_START + IMAGE_PAD + VISION_END


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    return str(build_random_qwen25_vl(tmp_path_factory.mktemp("qwen") / "tiny", size="tiny"))


def frame() -> Image.Image:
    return Image.new("RGB", FRAME, (200, 40, 40))


@pytest.mark.parametrize(("size", "billions", "tied"), [("7b", 8.29, False), ("3b", 3.75, True)])
def test_real_sizes_have_the_published_parameter_counts(size, billions, tied):
    """Built on the meta device: shapes only. 8.29B and 3.75B are the published counts."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = model_config(size, build_tokenizer())
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    assert round(sum(p.numel() for p in model.parameters()) / 1e9, 2) == billions
    assert (model.lm_head.weight is model.model.language_model.embed_tokens.weight) == tied


def test_config_uses_the_tokenizers_special_tokens(folder):
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    config = AutoConfig.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer.convert_tokens_to_ids
    assert (config.image_token_id, config.video_token_id) == (ids(IMAGE_PAD), ids("<|video_pad|>"))
    assert (config.vision_start_token_id, config.vision_end_token_id) == (ids(VISION_START), ids(VISION_END))
    assert config.text_config.rope_parameters["mrope_section"] == [2, 3, 3]
    # Like the real model, the embedding is larger than the tokenizer.
    assert config.text_config.vocab_size > len(tokenizer)
    generation = GenerationConfig.from_pretrained(folder)
    assert generation.eos_token_id == [ids("<|im_end|>"), ids("<|endoftext|>")] and not generation.do_sample
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    # Special tokens are one token each and never come back in decoded text.
    expected = [ids(VISION_START), ids(IMAGE_PAD), ids(VISION_END), ids("<|im_start|>")]
    assert tokenizer(IMAGE_PART + "<|im_start|>")["input_ids"] == expected
    answer = tokenizer("<|im_start|>a red car<|im_end|>")["input_ids"]
    assert tokenizer.decode(answer, skip_special_tokens=True) == "a red car"


def test_chat_template_marks_every_image_part(folder):
    """OpenAI parts (vLLM, transformers serve) and HF parts (our engine) both become one image each."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    messages = [
        {"role": "system", "content": "Answer in JSON."},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AA=="}},
            {"type": "image"},
            {"type": "text", "text": "Shot 1."},
            {"type": "image"},
        ]},
    ]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nAnswer in JSON.<|im_end|>\n"
        f"<|im_start|>user\n{IMAGE_PART}{IMAGE_PART}Shot 1.{IMAGE_PART}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_prompts_are_not_inflated(folder):
    """The BPE learnt English words: a caption it never saw costs about as many tokens as with a real
    tokenizer (about four characters a token), not one per byte."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    text = "Close-up of a dog asleep on a sofa while the camera slowly tilts across a busy harbour at noon."
    assert len(text) / len(tokenizer(text)["input_ids"]) > 3


def test_a_frame_goes_through_the_vision_tower(folder):
    """Without the processor (torchvision): the image processor's patches for a 448x252 frame and the
    prompt expanded by hand. The model raises if the number of image tokens and features differ."""
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    pixels = AutoImageProcessor.from_pretrained(folder)(images=[frame()], return_tensors="pt")
    assert pixels["image_grid_thw"].tolist() == [FRAME_GRID]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    text = tokenizer.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}], tokenize=False)
    inputs = tokenizer(text.replace(IMAGE_PAD, IMAGE_PAD * FRAME_TOKENS), return_tensors="pt")
    model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.inference_mode():
        logits = model(**inputs, **pixels).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], model.config.text_config.vocab_size)
    assert torch.isfinite(logits).all()
    with pytest.raises(ValueError, match=f"tokens: 1, features: {FRAME_TOKENS}"):
        model(**tokenizer(text, return_tensors="pt"), **pixels)


def test_xgrammar_can_spell_any_json_answer(folder):
    """Every printable ASCII character is one token, so a grammar never meets a dead end, and the
    special tokens are out of the answer's reach."""
    from transformers import AutoTokenizer

    from captioning.engines.transformers_engine import grammar_tokenizer_info

    tokenizer = AutoTokenizer.from_pretrained(folder)
    info = grammar_tokenizer_info(tokenizer, vocab_size=4096)
    vocab = info.decoded_vocab
    assert {chr(c).encode() for c in range(32, 127)} <= set(vocab)
    assert vocab[tokenizer.convert_tokens_to_ids(IMAGE_PAD)] == b""
    assert info.stop_token_ids == [tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_processor_expands_a_frame_into_its_image_tokens(folder):
    pytest.importorskip("torchvision")
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(folder)
    text = processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}]}], tokenize=False)
    inputs = processor(text=[text], images=[frame()], return_tensors="pt")
    assert inputs["image_grid_thw"].tolist() == [FRAME_GRID]
    tokens = processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
    start = tokens.index(VISION_START)
    assert tokens[start + 1 : start + 2 + FRAME_TOKENS] == [IMAGE_PAD] * FRAME_TOKENS + [VISION_END]


def test_constrained_caption_of_a_scene(folder, scenes):
    """A sampled answer of the random model, under the grammar, validates at the first try."""
    pytest.importorskip("torchvision")
    pytest.importorskip("xgrammar")
    from captioning.captioner import Captioner
    from captioning.config import CaptionerConfig, TransformersConfig

    config = CaptionerConfig(
        engine="transformers", model=folder, frames_per_shot=2, limits=SMALL_LIMITS, temperature=1.0,
        transformers=TransformersConfig(device="cpu"),
    )
    scene = scenes[0]
    (result,) = Captioner(config).caption([scene])
    assert result.ok and result.tries == 1, result.error
    assert [(s["start_frame"], s["end_frame"]) for s in result.sample["shots"]] == list(scene.shots)
    json.dumps(result.sample)
